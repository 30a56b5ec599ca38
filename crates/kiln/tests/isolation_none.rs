//! `--isolation none`: kiln inside an unprivileged container builds the differential corpus
//! (`tests/build_diff/`) and gets the root build's file systems and configs.
//!
//! A private `dockerd` (kiln-testkit's: its own data root and socket, `--iptables=false
//! --bridge=none`, stopped by PID) runs a container with Docker's default seccomp profile, no
//! added capabilities and `--network none`. Its image is the busybox root plus kiln in `/kiln`
//! (the binary and the glibc libraries `ldd` names, run through their own loader, so that kiln
//! still starts after a build has replaced `/lib`); `/kiln` is passed as `--ignore-path`, the
//! kaniko layout. The test first proves that `unshare` and `mount` fail in it, then builds each
//! case there (`docker exec`, one fresh container per case, the test's temp dir, holding a copy of the
//! case, bind-mounted at the same path so paths need no mapping) and on this machine in kiln's root mode, and compares
//! the two with the comparator of `build_diff.rs` (`support_diff`).
//!
//! With `SOURCE_DATE_EPOCH`, six cases give the root build's image digest byte for byte.
//!
//! The same again as `--user 1000 --cap-drop=ALL` (the container's files owned by 1000) for the
//! cases that need neither a chown nor another user, and a clear error for those that do.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support_diff/mod.rs"]
mod support_diff;
use support_diff::*;

use kiln_testkit::Dockerd;

/// Cases that chown, `COPY --chown`, switch `USER`, or ADD a tarball owned by another user: an
/// unprivileged kiln cannot build them faithfully.
const NEED_PRIVILEGE: &[&str] = &[
    "add_local_tar",
    "copy_chown_chmod",
    "copy_from_stage_index",
    "run_chown_ownership",
    "user_numeric_and_groups",
    "user_supplementary_groups",
    "user_workdir",
];

fn cases() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(CASES_DIR)
        .unwrap_or_else(|e| panic!("{CASES_DIR}: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    // `KILN_NONE_CASES=a,b` narrows the run by hand (while looking at a failure); never set in CI.
    if let Ok(only) = std::env::var("KILN_NONE_CASES") {
        let only: Vec<&str> = only.split(',').collect();
        v.retain(|c| only.contains(&c.as_str()));
        eprintln!("KILN_NONE_CASES: only {v:?}");
    }
    v
}

fn ready() -> bool {
    kiln_testkit::require_root()
        && kiln_testkit::require_tool("dockerd")
        && kiln_testkit::require_tool("docker")
        && kiln_testkit::require_tool("umoci")
        && kiln_testkit::require_tool("tar")
}

fn docker(d: &Dockerd, args: &[&str], what: &str) -> Result<String, String> {
    let out = d.docker(args);
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(format!(
        "{what} failed ({}): docker {}\n  stdout: {}\n  stderr: {}",
        out.status,
        args.join(" "),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    ))
}

/// The glibc libraries and loader the kiln binary needs, from `ldd`.
fn kiln_libraries() -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_kiln")).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect()
}

/// `docker import`s the busybox root plus `/kiln` (see the module doc), every file owned by `uid`.
fn container_image(d: &Dockerd, tmp: &Path, uid: u32) -> String {
    let stage = tmp.join(format!("image-{uid}"));
    fs::create_dir_all(stage.join("kiln/lib")).unwrap();
    let base = tmp.join("image-base.tar");
    busybox_rootfs_tar(&base).unwrap_or_else(|e| panic!("{e}"));
    run(Command::new("tar").arg("-C").arg(&stage).arg("-xf").arg(&base), "unpack busybox").unwrap_or_else(|e| panic!("{e}"));
    fs::copy(env!("CARGO_BIN_EXE_kiln"), stage.join("kiln/kiln")).unwrap();
    for lib in kiln_libraries() {
        fs::copy(&lib, stage.join("kiln/lib").join(lib.file_name().unwrap())).unwrap();
    }
    fs::create_dir_all(stage.join("mnt")).unwrap();
    let tar = tmp.join(format!("image-{uid}.tar"));
    let mut c = Command::new("tar");
    c.args(["--numeric-owner", &format!("--owner={uid}"), &format!("--group={uid}")]);
    c.arg("-C").arg(&stage).arg("-cf").arg(&tar).arg(".");
    run(&mut c, "tar the container image").unwrap_or_else(|e| panic!("{e}"));
    let tag = format!("kiln-isolation-none:{uid}");
    docker(d, &["import", &tar.display().to_string(), &tag], "docker import").unwrap_or_else(|e| panic!("{e}"));
    tag
}

/// One running container (PID 1 a `sleep`), removed when dropped.
struct Container<'a> {
    d: &'a Dockerd,
    id: String,
}

impl<'a> Container<'a> {
    fn start(d: &'a Dockerd, image: &str, tmp: &Path, unprivileged: bool) -> Container<'a> {
        // Only the test's temp dir: a mount point's parents would be made by Docker, as root.
        let vol = format!("{0}:{0}", tmp.display());
        let mut args = vec!["run", "-d", "--network", "none", "-v", &vol];
        if unprivileged {
            args.extend(["--user", "1000:1000", "--cap-drop=ALL"]);
        }
        args.extend([image, "/bin/sleep", "100000"]);
        let id = docker(d, &args, "docker run").unwrap_or_else(|e| panic!("{e}")).trim().to_string();
        Container { d, id }
    }

    fn exec(&self, cmd: &[&str]) -> std::process::Output {
        let mut args = vec!["exec", &self.id];
        args.extend(cmd);
        self.d.docker(&args)
    }

    /// `unshare` and `mount` fail here: the seccomp profile and the missing CAP_SYS_ADMIN see to it.
    fn assert_unprivileged(&self) {
        for cmd in [&["unshare", "-m", "true"][..], &["unshare", "-U", "-r", "true"], &["mount", "-t", "tmpfs", "t", "/mnt"]] {
            let out = self.exec(cmd);
            assert!(
                !out.status.success(),
                "`{}` succeeded in the container: it is not unprivileged, and the test proves nothing",
                cmd.join(" ")
            );
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.d.docker(&["rm", "-f", &self.id]);
    }
}

impl KilnCommand for Container<'_> {
    fn run(&self, args: Vec<String>, what: &str) -> Result<String, String> {
        let mut cmd: Vec<String> = ["/kiln/lib/ld-linux-x86-64.so.2", "--library-path", "/kiln/lib", "/kiln/kiln", "--root", "/kiln/root"]
            .map(String::from)
            .to_vec();
        let build = args.first().is_some_and(|a| a == "build");
        cmd.extend(args);
        if build {
            cmd.extend(["--isolation", "none", "--ignore-path", "/kiln"].map(String::from));
        }
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let mut full = vec!["exec", "-e", "BUILDX_NO_DEFAULT_ATTESTATIONS=1", &self.id];
        full.extend(refs);
        docker(self.d, &full, what)
    }
}

struct World {
    d: Dockerd,
    tmp: tempfile::TempDir,
    rootfs_tar: PathBuf,
}

fn world() -> Option<World> {
    if !ready() {
        return None;
    }
    let d = Dockerd::start_or_skip()?;
    let tmp = tempfile::Builder::new().prefix("kiln-isonone-").tempdir().unwrap();
    // The container's uid 1000 reads the contexts and writes its outputs here.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let rootfs_tar = tmp.path().join("busybox-rootfs.tar");
    busybox_rootfs_tar(&rootfs_tar).unwrap_or_else(|e| panic!("{e}"));
    fs::set_permissions(&rootfs_tar, fs::Permissions::from_mode(0o644)).unwrap();
    Some(World { d, tmp, rootfs_tar })
}

fn open_up(dir: &Path) {
    let _ = Command::new("chmod").args(["-R", "a+rwX"]).arg(dir).status();
}

/// Builds `case` on this machine (root mode) and in a fresh container; the differences.
fn compare(w: &World, image: &str, case: &str, unprivileged: bool) -> Result<Vec<String>, String> {
    let work = w.tmp.path().join(format!("{case}-{}", if unprivileged { "uid1000" } else { "root" }));
    // The case's own files (a base Dockerfile) must be where the container sees them too.
    let case_dir = work.join("case");
    copy_tree(&Path::new(CASES_DIR).join(case), &case_dir, false)?;
    let spec = CaseSpec::load(&case_dir)?;
    let ctx = work.join("context");
    prepare_context(&case_dir, &spec, &ctx)?;
    let (hwork, cwork) = (work.join("root-mode"), work.join("isolation-none"));
    mkdir(&hwork)?;
    mkdir(&cwork)?;
    open_up(&work);
    let expected = build_kiln_via(&HostKiln { root: work.join("host-root") }, case, &case_dir, &ctx, &spec, &w.rootfs_tar, &hwork)
        .map_err(|e| format!("the root-mode build failed: {e}"))?;
    let c = Container::start(&w.d, image, w.tmp.path(), unprivileged);
    let actual = build_kiln_via(&c, case, &case_dir, &ctx, &spec, &w.rootfs_tar, &cwork)
        .map_err(|e| format!("the --isolation none build failed: {e}"))?;
    let mut diffs = diff_trees(&expected.tree, &actual.tree);
    diffs.extend(diff_fields(&expected.fields, &actual.fields));
    Ok(diffs)
}

fn check_all(w: &World, image: &str, cases: &[String], unprivileged: bool) {
    let mut failures = Vec::new();
    for case in cases {
        match compare(w, image, case, unprivileged) {
            Ok(d) if d.is_empty() => eprintln!("case {case}: same file system and config"),
            Ok(d) => failures.push(format!("case `{case}`: {} difference(s) from the root build:\n    {}", d.len(), d.join("\n    "))),
            Err(e) => failures.push(format!("case `{case}`: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n  {}", failures.len(), cases.len(), failures.join("\n  "));
}

#[test]
fn corpus_in_an_unprivileged_container_matches_the_root_build() {
    let Some(w) = world() else { return };
    let image = container_image(&w.d, w.tmp.path(), 0);
    Container::start(&w.d, &image, w.tmp.path(), false).assert_unprivileged();
    let all = cases();
    assert!(all.len() >= 30 || std::env::var_os("KILN_NONE_CASES").is_some(), "the corpus shrank to {} cases", all.len());
    check_all(&w, &image, &all, false);
}

#[test]
fn corpus_as_uid_1000_without_capabilities_matches_where_no_privilege_is_needed() {
    let Some(w) = world() else { return };
    let image = container_image(&w.d, w.tmp.path(), 1000);
    let c = Container::start(&w.d, &image, w.tmp.path(), true);
    c.assert_unprivileged();
    let id = c.exec(&["id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), "1000");
    drop(c);
    let plain: Vec<String> = cases().into_iter().filter(|c| !NEED_PRIVILEGE.contains(&c.as_str())).collect();
    assert!(plain.len() >= 20 || std::env::var_os("KILN_NONE_CASES").is_some(), "{plain:?}");
    check_all(&w, &image, &plain, true);
}

/// A RUN chown, a COPY --chown, a USER switch and an ADD of a tarball whose files belong to
/// 1000:1000 each fail with a message that names the step and says why, as uid 1000 without
/// capabilities.
#[test]
fn chown_and_user_switches_fail_clearly_as_uid_1000() {
    let Some(w) = world() else { return };
    let image = container_image(&w.d, w.tmp.path(), 1000);
    for (case, want) in [
        ("run_chown_ownership", "Operation not permitted"),
        ("copy_chown_chmod", "--chown"),
        ("user_workdir", "without the right to switch users"),
        ("add_local_tar", "belong to owners other than root"),
    ] {
        let err = compare(&w, &image, case, true).err().unwrap_or_else(|| panic!("case {case} built as uid 1000"));
        assert!(err.contains("the --isolation none build failed"), "{case}: {err}");
        assert!(err.contains("Dockerfile:"), "{case}: the error names no Dockerfile line: {err}");
        assert!(err.contains(want), "{case}: the error does not say {want:?}: {err}");
        eprintln!("case {case}: {}", err.lines().find(|l| l.contains("error")).unwrap_or_default());
    }
}

/// On this machine (which shares the host's PID namespace, whatever `/.dockerenv` says), kiln
/// refuses to replace `/` unless forced.
#[test]
fn refuses_outside_a_container_without_force() {
    if fs::read_to_string("/proc/2/comm").map(|c| c.trim() != "kthreadd").unwrap_or(true) {
        eprintln!("skipping: this test runs on a host (PID 2 is not kthreadd here: inside a container already)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(tmp.path().join("root"))
        .arg("build")
        .arg(tmp.path())
        .args(["--isolation", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not look like a container") && err.contains("kthreadd") && err.contains("--force"), "{err}");
    // buildah's other names are answered by name, not ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).arg("build").arg(tmp.path()).args(["--isolation", "chroot"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--isolation chroot is not a mode of kiln's"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).arg("build").arg(tmp.path()).arg("--force").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--force only goes with --isolation none"), "{err}");
}

/// The index.json of an OCI layout tarball: its one manifest's digest.
fn layout_digest(tar: &Path) -> Result<String, String> {
    let index = run(Command::new("tar").arg("-xOf").arg(tar).arg("index.json"), "read index.json")?;
    let v: serde_json::Value = serde_json::from_str(&index).map_err(|e| format!("{}: index.json: {e}", tar.display()))?;
    v["manifests"][0]["digest"].as_str().map(str::to_string).ok_or_else(|| format!("{}: no manifest in index.json", tar.display()))
}

/// With `SOURCE_DATE_EPOCH`, the same Dockerfile gives the same image digest in both modes (the
/// same base in the store: one import, its kiln root copied for the container).
#[test]
fn same_digest_as_the_root_build_with_source_date_epoch() {
    let Some(w) = world() else { return };
    let image = container_image(&w.d, w.tmp.path(), 0);
    let epoch = "1700000000";
    let mut differ = Vec::new();
    for case in ["copy_basic", "hardlinks", "multistage_from_stage", "permissions", "symlinks", "whiteout_files"] {
        let work = w.tmp.path().join(format!("{case}-digest"));
        let case_dir = Path::new(CASES_DIR).join(case);
        let spec = CaseSpec::load(&case_dir).unwrap_or_else(|e| panic!("{e}"));
        let ctx = work.join("context");
        prepare_context(&case_dir, &spec, &ctx).unwrap_or_else(|e| panic!("{e}"));
        let (r1, r2) = (work.join("root-mode-root"), work.join("none-root"));
        run(kiln(&r1).arg("import").arg(&w.rootfs_tar).args(["-t", KILN_BASE]), "kiln import").unwrap_or_else(|e| panic!("{e}"));
        run(Command::new("cp").arg("-a").arg(&r1).arg(&r2), "copy the kiln root").unwrap_or_else(|e| panic!("{e}"));
        let args = |dest: &Path| -> Vec<String> {
            let mut a = vec!["build".into(), ctx.display().to_string(), "--build-arg".into(), format!("BASE={KILN_BASE}")];
            for (k, v) in &spec.build_args {
                a.extend(["--build-arg".into(), format!("{k}={v}")]);
            }
            a.extend(["--output".into(), format!("type=oci,dest={}", dest.display())]);
            a
        };
        let (h, c) = (work.join("root-mode.tar"), work.join("none.tar"));
        run(kiln(&r1).env("SOURCE_DATE_EPOCH", epoch).args(args(&h)), "kiln build (root mode)").unwrap_or_else(|e| panic!("{e}"));
        let ctr = Container::start(&w.d, &image, w.tmp.path(), false);
        let mut cmd: Vec<String> = ["exec", "-e", "BUILDX_NO_DEFAULT_ATTESTATIONS=1", "-e"].map(String::from).to_vec();
        cmd.extend([format!("SOURCE_DATE_EPOCH={epoch}"), ctr.id.clone()]);
        cmd.extend(["/kiln/lib/ld-linux-x86-64.so.2", "--library-path", "/kiln/lib", "/kiln/kiln", "--root"].map(String::from));
        cmd.push(r2.display().to_string());
        cmd.extend(args(&c));
        cmd.extend(["--isolation", "none", "--ignore-path", "/kiln"].map(String::from));
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        docker(&w.d, &refs, "kiln build --isolation none").unwrap_or_else(|e| panic!("case {case}: {e}"));
        let (dh, dc) = (layout_digest(&h).unwrap(), layout_digest(&c).unwrap());
        eprintln!("case {case}: root mode {dh}, --isolation none {dc}");
        if dh != dc {
            differ.push(format!("{case}: root mode {dh}, --isolation none {dc}"));
        }
    }
    assert!(differ.is_empty(), "digests differ:\n  {}", differ.join("\n  "));
}

/// Landlock (which Docker's default seccomp profile lets through) keeps a RUN from removing
/// kiln's store: `rm -rf` of kiln's root fails inside the step, the build goes on, and the image
/// says so.
#[test]
fn a_run_step_cannot_remove_kilns_store() {
    let Some(w) = world() else { return };
    let image = container_image(&w.d, w.tmp.path(), 0);
    let ctx = w.tmp.path().join("landlock-ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nRUN if rm -rf /kiln/root 2>/dev/null; then echo removed; else echo kept; fi > /verdict \
         && test -d /kiln/root/store && mkdir /made-in-slash && echo x > /made-in-slash/f\n",
    )
    .unwrap();
    open_up(&ctx);
    let c = Container::start(&w.d, &image, w.tmp.path(), false);
    c.run(vec!["import".into(), w.rootfs_tar.display().to_string(), "-t".into(), KILN_BASE.into()], "kiln import")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = w.tmp.path().join("landlock-out");
    mkdir(&out).unwrap();
    open_up(&out);
    let log = c
        .run(
            vec![
                "build".into(),
                ctx.display().to_string(),
                "--build-arg".into(),
                format!("BASE={KILN_BASE}"),
                "-o".into(),
                format!("type=local,dest={}", out.display()),
            ],
            "kiln build",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let verdict = fs::read_to_string(out.join("verdict")).unwrap_or_else(|e| panic!("no /verdict in the image ({e}): {log}"));
    assert_eq!(verdict.trim(), "kept", "kiln's root could be removed by a RUN step");
    assert_eq!(fs::read_to_string(out.join("made-in-slash/f")).unwrap(), "x\n", "a new top-level directory is writable");
}
