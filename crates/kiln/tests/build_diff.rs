//! Differential tests: `kiln build` against `buildah bud --isolation chroot`.
//!
//! Each directory under `tests/build_diff/` is one case: a `Dockerfile` whose first lines are
//! `ARG BASE` / `FROM ${BASE}`, the context files beside it, an optional `.dockerignore`, and an
//! optional `case.json` (see [`CaseSpec`]) with build args, `--target`, and every deliberate
//! difference from buildah 1.28, each with the reason why. docs/differences.md explains them.
//!
//! A case is built twice from the same busybox root file system tarball:
//!
//! * by buildah, in storage private to the test (`--root`, `--runroot`, `vfs`), pushed to an OCI
//!   layout directory; this is the reference, after the documented overrides are applied;
//! * by kiln, with `--output type=oci,dest=…`.
//!
//! Both layouts are unpacked with `umoci` (not with kiln's own layer code, so the check is
//! independent) and the two root file systems are compared path by path — type, mode with the
//! setuid/setgid/sticky bits, uid, gid, size, sha256 of the content, symlink target, device
//! numbers and which paths share an inode — ignoring times. The image configs are compared on
//! Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal, Healthcheck
//! and the author. Every mismatch is listed, one line per path or field.
//!
//! Context preparation: the case directory is copied to a temporary context, leaving out
//! `case.json`, `Dockerfile.buildah`, `Dockerfile.base` and any top-level entry whose name starts
//! with `_` (sources for generated tarballs, see [`TarSpec`]); tarballs are generated because git
//! keeps neither ownership nor a stable byte layout for them.
//!
//! The base is kiln-testkit's busybox root file system (plus `/run` and `/etc/hostname`, see
//! [`busybox_rootfs_tar`]), imported by each builder its own way.
//!
//! The harness checks itself: `buildah_harness_is_deterministic` builds cases twice with buildah
//! and needs equality, then a mutated Dockerfile whose differences must be reported exactly;
//! `comparator_reports_every_attribute` does the same on synthetic trees. `KILN_DIFF_KEEP=1`
//! keeps a test's work dir (contexts, layouts, unpacked bundles) to look at by hand.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[path = "support_diff/mod.rs"]
mod support_diff;
use support_diff::*;

const BUILDAH_BASE: &str = "localhost/kiln-diff-busybox:latest";

/// Labels buildah stamps on every image; Docker and kiln do not, so they are not compared.
const BUILDAH_ONLY_LABELS: &[&str] = &["io.buildah.version"];

fn tools_available() -> bool {
    kiln_testkit::require_root()
        && kiln_testkit::require_tool("buildah")
        && kiln_testkit::require_tool("umoci")
        && kiln_testkit::require_tool("tar")
}

/// A buildah whose storage lives in the test's temp dir, so parallel tests share nothing.
struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
}

impl Buildah {
    fn new(tmp: &Path) -> Buildah {
        Buildah { root: tmp.join("buildah/storage"), runroot: tmp.join("buildah/run") }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root").arg(&self.root);
        c.arg("--runroot").arg(&self.runroot);
        c.args(["--storage-driver", "vfs"]);
        c
    }

    /// `buildah from scratch` + `add` the rootfs tar at `/` + `commit`.
    fn import(&self, rootfs_tar: &Path, tag: &str) -> Result<(), String> {
        let ctr = run(self.cmd().args(["from", "scratch"]), "buildah from scratch")?;
        let ctr = ctr.trim().to_owned();
        run(self.cmd().arg("add").arg(&ctr).arg(rootfs_tar).arg("/"), "buildah add rootfs")?;
        run(self.cmd().args(["commit", "--quiet", "--format", "oci", &ctr, tag]), "buildah commit")?;
        run(self.cmd().args(["rm", &ctr]), "buildah rm")?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn bud(
        &self,
        ctx: &Path,
        dockerfile: &Path,
        tag: &str,
        base: &str,
        args: &BTreeMap<String, String>,
        target: Option<&str>,
        format: &str,
    ) -> Result<(), String> {
        let mut c = self.cmd();
        c.args(["bud", "--isolation", "chroot", "--layers=false", "--format", format]);
        c.arg("--build-arg").arg(format!("BASE={base}"));
        for (k, v) in args {
            c.arg("--build-arg").arg(format!("{k}={v}"));
        }
        if let Some(t) = target {
            c.args(["--target", t]);
        }
        c.args(["-t", tag]).arg("-f").arg(dockerfile).arg(ctx);
        run(&mut c, "buildah bud").map(drop)
    }

    fn push_layout(&self, tag: &str, dest: &Path) -> Result<(), String> {
        let dest = format!("oci:{}:latest", dest.display());
        run(self.cmd().args(["push", "--quiet", tag, &dest]), "buildah push").map(drop)
    }
}

fn build_buildah(b: &Buildah, case: &str, case_dir: &Path, ctx: &Path, spec: &CaseSpec, work: &Path) -> Result<Built, String> {
    let dev = spec.buildah.as_ref();
    let format = dev.and_then(|d| d.format.as_deref()).unwrap_or("oci");
    let mut base = BUILDAH_BASE.to_owned();
    if let Some(df) = &spec.base_dockerfile {
        let tag = format!("localhost/kiln-diff-{}-base:latest", case.replace('_', "-"));
        b.bud(ctx, &case_dir.join(df), &tag, BUILDAH_BASE, &spec.build_args, None, format)?;
        base = tag;
    }
    let dockerfile = match dev.and_then(|d| d.dockerfile.as_deref()) {
        Some(df) => case_dir.join(df),
        None => ctx.join("Dockerfile"),
    };
    let tag = format!("localhost/kiln-diff-{}:latest", case.replace('_', "-"));
    b.bud(ctx, &dockerfile, &tag, &base, &spec.build_args, spec.target.as_deref(), format)?;
    let layout = work.join("oci");
    b.push_layout(&tag, &layout)?;
    read_built(&layout, &work.join("bundle"), BUILDAH_ONLY_LABELS)
}

/// Everything one test needs: a temp dir with the rootfs tar and buildah's base image.
struct Env {
    /// `None` once kept (see `Drop`).
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    rootfs_tar: PathBuf,
    buildah: Buildah,
}

impl Env {
    fn new() -> Result<Env, String> {
        let tmp = tempfile::Builder::new().prefix("kiln-build-diff-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let rootfs_tar = tmp.path().join("busybox-rootfs.tar");
        busybox_rootfs_tar(&rootfs_tar)?;
        let buildah = Buildah::new(tmp.path());
        buildah.import(&rootfs_tar, BUILDAH_BASE)?;
        let dir = tmp.path().to_path_buf();
        Ok(Env { tmp: Some(tmp), dir, rootfs_tar, buildah })
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// Builds `case_dir` with buildah under `name`, overrides applied.
    fn reference(&self, name: &str, case_dir: &Path) -> Result<(CaseSpec, PathBuf, Built), String> {
        let spec = CaseSpec::load(case_dir)?;
        let work = self.path().join(name);
        let ctx = work.join("context");
        prepare_context(case_dir, &spec, &ctx)?;
        let bwork = work.join("buildah-out");
        mkdir(&bwork)?;
        let mut built = build_buildah(&self.buildah, name, case_dir, &ctx, &spec, &bwork)?;
        apply_overrides(&spec, &mut built.tree, &mut built.fields)?;
        Ok((spec, ctx, built))
    }
}

impl Drop for Env {
    /// `KILN_DIFF_KEEP=1` keeps the work dir (contexts, OCI layouts, unpacked bundles) for
    /// looking at a failure by hand.
    fn drop(&mut self) {
        if std::env::var_os("KILN_DIFF_KEEP").is_some_and(|v| v == "1") {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("kept {}", tmp.keep().display());
            }
        }
    }
}

fn report(case: &str, about: &str, diffs: &[String]) -> String {
    let about = if about.is_empty() { String::new() } else { format!(" ({about})") };
    format!(
        "case `{case}`{about}: kiln's image differs from the reference (buildah 1.28 + the \
         documented overrides in tests/build_diff/{case}/case.json; see docs/differences.md), \
         {} difference(s):\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    )
}

fn run_case(case: &str) {
    if !tools_available() {
        return;
    }
    let case_dir = Path::new(CASES_DIR).join(case);
    let env = Env::new().unwrap_or_else(|e| panic!("case `{case}`: setting up: {e}"));
    let (spec, ctx, expected) =
        env.reference(case, &case_dir).unwrap_or_else(|e| panic!("case `{case}`: building the buildah reference: {e}"));
    let kwork = env.path().join(case).join("kiln-out");
    let kroot = env.path().join("kiln-root");
    let actual = mkdir(&kwork)
        .and_then(|()| build_kiln(&HostKiln { root: kroot }, case, &case_dir, &ctx, &spec, &env.rootfs_tar, &kwork))
        .unwrap_or_else(|e| panic!("case `{case}`: the buildah reference built fine, but kiln did not: {e}"));
    let mut diffs = diff_trees(&expected.tree, &actual.tree);
    diffs.extend(diff_fields(&expected.fields, &actual.fields));
    assert!(diffs.is_empty(), "{}", report(case, &spec.about, &diffs));
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { run_case(stringify!($name)); } )*
        const CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

cases! {
    add_local_tar,
    arg_env_precedence,
    arg_global_scope,
    build_arg_override,
    cmd_entrypoint_forms,
    copy_basic,
    copy_chown_chmod,
    copy_dir_and_globs,
    copy_from_stage_index,
    dockerignore,
    entrypoint_resets_inherited_cmd,
    env_forms,
    env_override_from_base_image,
    hardlinks,
    healthcheck,
    heredoc_copy,
    heredoc_run,
    label_maintainer_stopsignal,
    multistage_from_stage,
    onbuild_stage,
    expose_volume,
    permissions,
    run_chown_ownership,
    run_forms,
    shell_instruction,
    symlinks,
    target_stage,
    user_numeric_and_groups,
    user_supplementary_groups,
    user_workdir,
    whiteout_files,
    whiteout_opaque_dir,
    workdir_relative,
}

/// Every case directory has a test, and every test a directory: a case cannot be silently
/// skipped. Runs everywhere (no root needed).
#[test]
fn every_case_directory_has_a_test() {
    let mut dirs: Vec<String> = fs::read_dir(CASES_DIR)
        .unwrap_or_else(|e| panic!("{CASES_DIR}: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(dirs, listed, "tests/build_diff/ and the cases! list in build_diff.rs disagree");
    assert!(CASES.len() >= 25, "issue 4 asks for at least 25 cases, found {}", CASES.len());
}

/// Every case parses, names BASE, and justifies each deviation. Runs everywhere.
#[test]
fn every_case_file_is_valid() {
    for case in CASES {
        let dir = Path::new(CASES_DIR).join(case);
        CaseSpec::load(&dir).unwrap_or_else(|e| panic!("case `{case}`: {e}"));
        let df = fs::read_to_string(dir.join("Dockerfile")).unwrap_or_else(|e| panic!("case `{case}`: Dockerfile: {e}"));
        let mut lines = df.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        assert_eq!(lines.next(), Some("ARG BASE"), "case `{case}`: the Dockerfile must start with ARG BASE");
        assert!(df.lines().any(|l| l.trim_start().starts_with("FROM ${BASE}")), "case `{case}`: the Dockerfile must build FROM ${{BASE}}");
    }
}

/// The comparator itself: equal builds compare equal, and a known mutation is reported exactly.
#[test]
fn buildah_harness_is_deterministic() {
    if !tools_available() {
        return;
    }
    let env = Env::new().unwrap_or_else(|e| panic!("setting up: {e}"));
    for case in ["permissions", "copy_chown_chmod"] {
        let dir = Path::new(CASES_DIR).join(case);
        let (_, _, a) = env.reference(&format!("{case}_1"), &dir).unwrap_or_else(|e| panic!("{e}"));
        let (_, _, b) = env.reference(&format!("{case}_2"), &dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(a.tree.len() > 250, "{case}: suspiciously small tree ({} paths)", a.tree.len());
        let mut diffs = diff_trees(&a.tree, &b.tree);
        diffs.extend(diff_fields(&a.fields, &b.fields));
        assert!(diffs.is_empty(), "{case}: two buildah builds differ:\n  {}", diffs.join("\n  "));
    }

    // A mutant of `permissions`: one mode changed, one file's content changed, two hard-linked
    // files added, and one label and the user set.
    let orig = Path::new(CASES_DIR).join("permissions");
    let mutant = env.path().join("mutant-case");
    copy_tree(&orig, &mutant, false).unwrap_or_else(|e| panic!("{e}"));
    let df = fs::read_to_string(mutant.join("Dockerfile")).unwrap_or_else(|e| panic!("{e}"));
    let df = format!(
        "{df}\nRUN chmod 0640 /etc/passwd && echo x >> /p/private \
         && echo extra > /mutant && ln /mutant /mutant.link\nLABEL mutant=yes\nUSER 1000\n"
    );
    fs::write(mutant.join("Dockerfile"), df).unwrap_or_else(|e| panic!("{e}"));
    let (_, _, expected) = env.reference("orig", &orig).unwrap_or_else(|e| panic!("{e}"));
    let (_, _, actual) = env.reference("mutant", &mutant).unwrap_or_else(|e| panic!("{e}"));
    let mut diffs = diff_trees(&expected.tree, &actual.tree);
    diffs.extend(diff_fields(&expected.fields, &actual.fields));
    let short = |b: &[u8]| kiln_oci::Digest::sha256_of(b).hex()[..12].to_owned();
    let (private, private_x) = ("secret\n", "secret\nx\n");
    let extra = short(b"extra\n");
    let want = vec![
        "/etc/passwd: mode 0644 expected, kiln has 0640".to_owned(),
        format!(
            "/mutant: only in kiln's image (file size=6 sha256={extra} mode=0644 owner=0:0 \
             hardlinked-with=/mutant.link)"
        ),
        format!(
            "/mutant.link: only in kiln's image (file size=6 sha256={extra} mode=0644 owner=0:0 \
             hardlinked-with=/mutant)"
        ),
        format!(
            "/p/private: file size={} sha256={} expected, kiln has file size={} sha256={} \
             (content {private:?} expected, kiln has {private_x:?})",
            private.len(),
            short(private.as_bytes()),
            private_x.len(),
            short(private_x.as_bytes())
        ),
        r#"config Labels: expected null, kiln has {"mutant":"yes"}"#.to_owned(),
        r#"config User: expected null, kiln has "1000""#.to_owned(),
    ];
    assert_eq!(diffs, want, "the comparator did not report the mutation exactly");
}

/// Every attribute the comparator checks is reported, on synthetic trees (no root needed).
#[test]
fn comparator_reports_every_attribute() {
    let file = |text: &str, mode: u32, uid: u32| Node {
        kind: Kind::File {
            size: text.len() as u64,
            sha256: kiln_oci::Digest::sha256_of(text.as_bytes()).hex().to_owned(),
            text: Some(text.to_owned()),
        },
        mode,
        uid,
        gid: 0,
        links: vec![],
    };
    let link = |target: &str| Node { kind: Kind::Symlink(target.to_owned()), mode: 0o777, uid: 0, gid: 0, links: vec![] };
    let mut expected = Tree::new();
    expected.insert("/a".into(), file("same\n", 0o644, 0));
    expected.insert("/b".into(), Node { links: vec!["/c".into()], ..file("x", 0o4755, 0) });
    expected.insert("/c".into(), Node { links: vec!["/b".into()], ..file("x", 0o4755, 0) });
    expected.insert("/l".into(), link("/a"));
    expected.insert("/d".into(), Node { kind: Kind::Dir, ..file("", 0o1777, 0) });
    let mut actual = expected.clone();
    actual.insert("/a".into(), file("same\n", 0o644, 1000));
    actual.insert("/b".into(), file("x", 0o755, 0));
    actual.insert("/c".into(), file("x", 0o4755, 0));
    actual.insert("/l".into(), link("a"));
    actual.remove("/d");
    assert_eq!(
        diff_trees(&expected, &actual),
        vec![
            "/a: owner 0:0 expected, kiln has 1000:0".to_owned(),
            "/b: mode 4755 expected, kiln has 0755; hard links [/c] expected, kiln has []".to_owned(),
            "/c: hard links [/b] expected, kiln has []".to_owned(),
            "/d: missing in kiln's image (expected dir mode=1777 owner=0:0)".to_owned(),
            "/l: symlink -> /a expected, kiln has symlink -> a".to_owned(),
        ]
    );
    let mut fe = Fields::new();
    fe.insert("Env".into(), serde_json::json!(["PATH=/bin", "A=1"]));
    let mut fa = fe.clone();
    fa.insert("Env".into(), serde_json::json!(["A=1", "PATH=/bin"]));
    assert_eq!(diff_fields(&fe, &fa), vec![r#"config Env: expected ["PATH=/bin","A=1"], kiln has ["A=1","PATH=/bin"]"#.to_owned()]);
    // Unset, null and empty maps are the same thing to a runtime.
    let cfg = |c: Value| config_fields(&serde_json::json!({ "config": c }), BUILDAH_ONLY_LABELS);
    assert_eq!(
        cfg(serde_json::json!({"Labels": {"io.buildah.version": "1.28.2"}, "Volumes": {}})),
        cfg(serde_json::json!({"WorkingDir": ""}))
    );
}
