//! The differential harness's machinery, shared by `build_diff.rs` (kiln against buildah) and
//! `rootless.rs` (kiln as an ordinary user against kiln as root): case files, contexts, the busybox
//! base, building with either tool, unpacking with umoci, and the comparator of root file systems
//! and configs. `build_diff.rs`'s doc explains what is compared and why.

// Each test binary uses a different subset.
#![allow(dead_code)]

/// Calls macro `$m` with the name of every case under `tests/build_diff/`, so that each test
/// binary that runs the corpus runs all of it (`every_case_directory_has_a_test` in
/// `build_diff.rs` checks the list against the directories).
#[allow(unused_macros)] // isolation_none.rs walks the case directories in one test instead
macro_rules! for_each_case {
    ($m:ident) => {
        $m! {
        add_local_tar,
        base_owned_dir,
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
    };
}
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

pub const CASES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/build_diff");
pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");
pub const KILN_BASE: &str = "kiln.test/busybox:latest";
pub const BUILDAH_BASE: &str = "localhost/kiln-diff-busybox:latest";

/// Config fields compared between the two images (names as in the OCI/Docker config JSON).
pub const CONFIG_FIELDS: &[&str] =
    &["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes", "StopSignal", "Healthcheck"];

/// Labels buildah stamps on every image; Docker and kiln do not, so they are not compared.
pub const BUILDAH_ONLY_LABELS: &[&str] = &["io.buildah.version"];

// ---------------------------------------------------------------------------------------------
// Case description
// ---------------------------------------------------------------------------------------------

/// `case.json`. Every field is optional; every deliberate difference carries a `why`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// What the case covers (documentation only).
    #[serde(default)]
    pub about: String,
    /// `--build-arg K=V` for both builders (BASE is always passed by the harness).
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    #[serde(default)]
    pub target: Option<String>,
    /// A Dockerfile in the case directory built first (FROM the busybox base) and tagged; the
    /// case's own Dockerfile then gets it as BASE. Used where the behaviour under test depends on
    /// the base being an image rather than a stage (ENV inherited from an image config).
    #[serde(default)]
    pub base_dockerfile: Option<String>,
    /// How buildah is run differently so that its result is Docker's result.
    #[serde(default)]
    pub buildah: Option<BuildahDeviation>,
    /// Tarballs generated into the context before the build.
    #[serde(default)]
    pub tars: Vec<TarSpec>,
    /// Config fields where Docker's result is asserted instead of buildah's.
    #[serde(default)]
    pub expect_config: Vec<ConfigOverride>,
    /// Paths where Docker's result is asserted instead of buildah's.
    #[serde(default)]
    pub expect_files: Vec<FileOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildahDeviation {
    /// `--format` for buildah (`docker` makes buildah 1.28 honour SHELL for RUN and ONBUILD).
    #[serde(default)]
    pub format: Option<String>,
    /// An equivalent Dockerfile that buildah 1.28 can build (it lacks heredocs).
    #[serde(default)]
    pub dockerfile: Option<String>,
    pub why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarSpec {
    /// File name in the context.
    pub name: String,
    /// Directory in the case directory (normally `_something`) whose entries go in the tarball.
    pub dir: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub gzip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverride {
    pub field: String,
    /// Docker's value; `null` means the field is absent.
    pub value: Value,
    pub why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOverride {
    pub path: String,
    /// Docker's content for a regular file (mode and owner stay buildah's).
    #[serde(default)]
    pub content: Option<String>,
    /// Docker does not create this path at all.
    #[serde(default)]
    pub absent: bool,
    pub why: String,
}

impl CaseSpec {
    pub fn load(case_dir: &Path) -> Result<CaseSpec, String> {
        let path = case_dir.join("case.json");
        let spec: CaseSpec = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: invalid case file: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CaseSpec::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        spec.validate(case_dir)?;
        Ok(spec)
    }

    /// A deviation without a reason, or one that names a missing file, is a broken case.
    pub fn validate(&self, case_dir: &Path) -> Result<(), String> {
        let loc = case_dir.join("case.json");
        let loc = loc.display();
        let need_why = |why: &str, what: &str| {
            if why.trim().is_empty() {
                Err(format!("{loc}: {what} has no `why`; say which Docker behaviour it asserts"))
            } else {
                Ok(())
            }
        };
        if let Some(b) = &self.buildah {
            need_why(&b.why, "`buildah`")?;
            if let Some(df) = &b.dockerfile {
                if !case_dir.join(df).is_file() {
                    return Err(format!("{loc}: buildah.dockerfile `{df}` does not exist"));
                }
            }
        }
        if let Some(df) = &self.base_dockerfile {
            if !case_dir.join(df).is_file() {
                return Err(format!("{loc}: base_dockerfile `{df}` does not exist"));
            }
        }
        for o in &self.expect_config {
            need_why(&o.why, &format!("expect_config `{}`", o.field))?;
            if !CONFIG_FIELDS.contains(&o.field.as_str()) {
                return Err(format!("{loc}: expect_config field `{}` is not compared", o.field));
            }
        }
        for o in &self.expect_files {
            need_why(&o.why, &format!("expect_files `{}`", o.path))?;
            if o.absent == o.content.is_some() {
                return Err(format!("{loc}: expect_files `{}` needs exactly one of `content` and `absent`", o.path));
            }
        }
        for t in &self.tars {
            if !t.dir.starts_with('_') || !case_dir.join(&t.dir).is_dir() {
                return Err(format!("{loc}: tar `{}` needs an existing source dir whose name starts with `_`", t.name));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------------------------

pub fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: cannot start {cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = |s: &str| -> String {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    Err(format!(
        "{what} failed ({}):\n  command: {cmd:?}\n  stdout (last lines):\n{}\n  stderr (last lines):\n{}",
        out.status,
        tail(&stdout),
        tail(&stderr)
    ))
}

pub fn tools_available() -> bool {
    kiln_testkit::require_root()
        && kiln_testkit::require_tool("buildah")
        && kiln_testkit::require_tool("umoci")
        && kiln_testkit::require_tool("tar")
}

/// A buildah whose storage lives in the test's temp dir, so parallel tests share nothing.
pub struct Buildah {
    pub root: PathBuf,
    pub runroot: PathBuf,
}

impl Buildah {
    pub fn new(tmp: &Path) -> Buildah {
        Buildah { root: tmp.join("buildah/storage"), runroot: tmp.join("buildah/run") }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root").arg(&self.root);
        c.arg("--runroot").arg(&self.runroot);
        c.args(["--storage-driver", "vfs"]);
        c
    }

    /// `buildah from scratch` + `add` the rootfs tar at `/` + `commit`.
    pub fn import(&self, rootfs_tar: &Path, tag: &str) -> Result<(), String> {
        let ctr = run(self.cmd().args(["from", "scratch"]), "buildah from scratch")?;
        let ctr = ctr.trim().to_owned();
        run(self.cmd().arg("add").arg(&ctr).arg(rootfs_tar).arg("/"), "buildah add rootfs")?;
        run(self.cmd().args(["commit", "--quiet", "--format", "oci", &ctr, tag]), "buildah commit")?;
        run(self.cmd().args(["rm", &ctr]), "buildah rm")?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn bud(
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

    pub fn push_layout(&self, tag: &str, dest: &Path) -> Result<(), String> {
        let dest = format!("oci:{}:latest", dest.display());
        run(self.cmd().args(["push", "--quiet", tag, &dest]), "buildah push").map(drop)
    }
}

pub fn kiln(root: &Path) -> Command {
    let mut c = Command::new(KILN);
    c.arg("--root").arg(root);
    // buildx's default provenance makes every pushed image an index (tests/attestations.rs).
    c.env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
    c
}

// ---------------------------------------------------------------------------------------------
// The busybox base
// ---------------------------------------------------------------------------------------------

/// Writes the busybox root file system tarball both builders start from: kiln-testkit's, plus
/// `/run` and `/etc/hostname`.
///
/// A build sandbox mounts over /proc, /dev, /sys, /run, /etc/hosts, /etc/resolv.conf and
/// /etc/hostname. Where the base lacks a target, buildah leaves an empty stub behind in the
/// image, and whether Docker does depends on the runtime; with every target present in the base
/// no case differs for a reason that is not its Dockerfile's.
pub fn busybox_rootfs_tar(dest: &Path) -> Result<(), String> {
    kiln_testkit::busybox_rootfs_tar(dest).map_err(|e| format!("busybox rootfs: {e}"))?;
    let io = |what: &str, e: std::io::Error| format!("busybox rootfs: {what}: {e}");
    let stage = dest.with_extension("extra");
    fs::create_dir_all(stage.join("run")).map_err(|e| io("run", e))?;
    fs::create_dir_all(stage.join("etc")).map_err(|e| io("etc", e))?;
    fs::write(stage.join("etc/hostname"), "busybox\n").map_err(|e| io("etc/hostname", e))?;
    fs::set_permissions(stage.join("run"), fs::Permissions::from_mode(0o755)).map_err(|e| io("run", e))?;
    fs::set_permissions(stage.join("etc/hostname"), fs::Permissions::from_mode(0o644)).map_err(|e| io("etc/hostname", e))?;
    let mut c = Command::new("tar");
    c.args(["--numeric-owner", "--owner=0", "--group=0", "--mtime=@946684800", "--no-recursion"]);
    c.arg("-C").arg(&stage).arg("-rf").arg(dest).args(["run", "etc/hostname"]);
    run(&mut c, "tar --append to the busybox rootfs")?;
    fs::remove_dir_all(&stage).map_err(|e| io("clean stage", e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Context preparation
// ---------------------------------------------------------------------------------------------

pub fn excluded_from_context(name: &str) -> bool {
    name.starts_with('_') || matches!(name, "case.json" | "Dockerfile.buildah" | "Dockerfile.base")
}

/// Copies a tree keeping symlinks and permission bits (git keeps nothing else worth keeping).
pub fn copy_tree(src: &Path, dst: &Path, top: bool) -> Result<(), String> {
    let io = |p: &Path, e: std::io::Error| format!("copy context {}: {e}", p.display());
    fs::create_dir_all(dst).map_err(|e| io(dst, e))?;
    let mut entries: Vec<_> = fs::read_dir(src).map_err(|e| io(src, e))?.collect::<Result<_, _>>().map_err(|e| io(src, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if top && excluded_from_context(&name.to_string_lossy()) {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        let meta = fs::symlink_metadata(&from).map_err(|e| io(&from, e))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&from).map_err(|e| io(&from, e))?;
            std::os::unix::fs::symlink(target, &to).map_err(|e| io(&to, e))?;
        } else if meta.is_dir() {
            copy_tree(&from, &to, false)?;
            fs::set_permissions(&to, meta.permissions()).map_err(|e| io(&to, e))?;
        } else {
            fs::copy(&from, &to).map_err(|e| io(&from, e))?;
        }
    }
    Ok(())
}

pub fn make_tar(case_dir: &Path, ctx: &Path, t: &TarSpec) -> Result<(), String> {
    let src = case_dir.join(&t.dir);
    let mut names: Vec<String> = fs::read_dir(&src)
        .map_err(|e| format!("tar source {}: {e}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    // Members are named without a leading `./` entry, so extraction never touches the
    // destination directory's own metadata (an ambiguity between implementations).
    let mut c = Command::new("tar");
    c.args(["--numeric-owner", "--sort=name", "--mtime=@0"]);
    c.arg(format!("--owner={}", t.uid)).arg(format!("--group={}", t.gid));
    if t.gzip {
        c.arg("-z");
    }
    c.arg("-C").arg(&src).arg("-cf").arg(ctx.join(&t.name)).args(&names);
    run(&mut c, &format!("tar {}", t.name)).map(drop)
}

pub fn prepare_context(case_dir: &Path, spec: &CaseSpec, ctx: &Path) -> Result<(), String> {
    copy_tree(case_dir, ctx, true)?;
    for t in &spec.tars {
        make_tar(case_dir, ctx, t)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading an OCI layout
// ---------------------------------------------------------------------------------------------

pub fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

pub fn blob_path(layout: &Path, digest: &Value) -> Result<PathBuf, String> {
    let d = digest.as_str().ok_or_else(|| format!("{}: descriptor without digest", layout.display()))?;
    let (alg, hex) = d.split_once(':').ok_or_else(|| format!("bad digest {d}"))?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{}: bad digest {d}", layout.display()));
    }
    Ok(layout.join("blobs").join(alg).join(hex))
}

/// The image config of the manifest tagged `latest` in an OCI layout.
pub fn layout_config(layout: &Path) -> Result<Value, String> {
    let index = read_json(&layout.join("index.json"))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let desc = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .ok_or_else(|| format!("{}/index.json: no manifest annotated org.opencontainers.image.ref.name=latest", layout.display()))?;
    let manifest = read_json(&blob_path(layout, &desc["digest"])?)?;
    read_json(&blob_path(layout, &manifest["config"]["digest"])?)
}

pub fn unpack(layout: &Path, bundle: &Path) -> Result<PathBuf, String> {
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(bundle), "umoci unpack")?;
    Ok(bundle.join("rootfs"))
}

// ---------------------------------------------------------------------------------------------
// Root file system snapshots
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `text` is the content of a small UTF-8 file, shown in reports (it adds nothing to
    /// equality beyond `sha256`).
    File {
        size: u64,
        sha256: String,
        text: Option<String>,
    },
    Dir,
    Symlink(String),
    Char(u64),
    Block(u64),
    Fifo,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Other paths in the tree that share this path's inode (hard links), sorted.
    pub links: Vec<String>,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::File { size, sha256, .. } => {
                write!(f, "file size={size} sha256={}", &sha256[..12])
            }
            Kind::Dir => f.write_str("dir"),
            Kind::Symlink(t) => write!(f, "symlink -> {t}"),
            Kind::Char(r) => write!(f, "char device {r:#x}"),
            Kind::Block(r) => write!(f, "block device {r:#x}"),
            Kind::Fifo => f.write_str("fifo"),
            Kind::Socket => f.write_str("socket"),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} mode={:04o} owner={}:{}", self.kind, self.mode, self.uid, self.gid)?;
        if !self.links.is_empty() {
            write!(f, " hardlinked-with={}", self.links.join(","))?;
        }
        Ok(())
    }
}

pub fn sha256_file(path: &Path) -> Result<String, String> {
    let mut f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = kiln_oci::Hasher::new(kiln_oci::Algorithm::Sha256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish().hex().to_owned())
}

pub type Tree = BTreeMap<String, Node>;

/// Every path under `root` (as `/a/b`), without following symlinks.
pub fn snapshot(root: &Path) -> Result<Tree, String> {
    let mut tree = Tree::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let rel = path.strip_prefix(root).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = format!("/{}", rel.to_string_lossy());
            let ft = meta.file_type();
            let kind = if ft.is_symlink() {
                let t = fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Kind::Symlink(t.to_string_lossy().into_owned())
            } else if ft.is_dir() {
                stack.push(path.clone());
                Kind::Dir
            } else if ft.is_file() {
                let text = if meta.len() <= 256 { fs::read(&path).ok().and_then(|b| String::from_utf8(b).ok()) } else { None };
                Kind::File { size: meta.len(), sha256: sha256_file(&path)?, text }
            } else if ft.is_char_device() {
                Kind::Char(meta.rdev())
            } else if ft.is_block_device() {
                Kind::Block(meta.rdev())
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            if !ft.is_dir() && meta.nlink() > 1 {
                inodes.entry((meta.dev(), meta.ino())).or_default().push(name.clone());
            }
            let node = Node { kind, mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid(), links: vec![] };
            tree.insert(name, node);
        }
    }
    for group in inodes.values().filter(|g| g.len() > 1) {
        for p in group {
            let mut others: Vec<String> = group.iter().filter(|o| *o != p).cloned().collect();
            others.sort();
            if let Some(n) = tree.get_mut(p) {
                n.links = others;
            }
        }
    }
    Ok(tree)
}

pub fn diff_trees(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    let paths: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for p in paths {
        match (expected.get(p), actual.get(p)) {
            (Some(e), None) => out.push(format!("{p}: missing in kiln's image (expected {e})")),
            (None, Some(a)) => out.push(format!("{p}: only in kiln's image ({a})")),
            (Some(e), Some(a)) if e != a => {
                let mut parts = Vec::new();
                if e.kind != a.kind {
                    let mut part = format!("{} expected, kiln has {}", e.kind, a.kind);
                    if let (Kind::File { text: Some(et), .. }, Kind::File { text: Some(at), .. }) = (&e.kind, &a.kind) {
                        part.push_str(&format!(" (content {et:?} expected, kiln has {at:?})"));
                    }
                    parts.push(part);
                }
                if e.mode != a.mode {
                    parts.push(format!("mode {:04o} expected, kiln has {:04o}", e.mode, a.mode));
                }
                if (e.uid, e.gid) != (a.uid, a.gid) {
                    parts.push(format!("owner {}:{} expected, kiln has {}:{}", e.uid, e.gid, a.uid, a.gid));
                }
                if e.links != a.links {
                    parts.push(format!("hard links [{}] expected, kiln has [{}]", e.links.join(","), a.links.join(",")));
                }
                out.push(format!("{p}: {}", parts.join("; ")));
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Image configs
// ---------------------------------------------------------------------------------------------

/// The compared fields; absent, `null` and an empty map all mean "not set", as they do to a
/// container runtime.
pub type Fields = BTreeMap<String, Value>;

pub fn config_fields(config: &Value, drop_labels: &[&str]) -> Fields {
    let mut out = Fields::new();
    let inner = &config["config"];
    for f in CONFIG_FIELDS {
        let mut v = inner.get(*f).cloned().unwrap_or(Value::Null);
        if *f == "Labels" {
            if let Value::Object(m) = &mut v {
                for l in drop_labels {
                    m.remove(*l);
                }
            }
        }
        let unset = match &v {
            Value::Null => true,
            Value::Object(m) => m.is_empty(),
            Value::String(s) => s.is_empty(),
            _ => false,
        };
        out.insert((*f).to_owned(), if unset { Value::Null } else { v });
    }
    let author = config.get("author").cloned().unwrap_or(Value::Null);
    out.insert("author".to_owned(), if author == "" { Value::Null } else { author });
    out
}

pub fn diff_fields(expected: &Fields, actual: &Fields) -> Vec<String> {
    expected
        .iter()
        .filter(|(k, e)| actual.get(*k) != Some(*e))
        .map(|(k, e)| {
            let a = actual.get(k).unwrap_or(&Value::Null);
            format!("config {k}: expected {e}, kiln has {a}")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Overrides: Docker's result where buildah 1.28 departs from it
// ---------------------------------------------------------------------------------------------

/// Applies the case's overrides to buildah's result. An override that changes nothing is stale
/// (buildah now does what Docker does, or the case no longer shows the departure) and fails.
pub fn apply_overrides(spec: &CaseSpec, tree: &mut Tree, fields: &mut Fields) -> Result<(), String> {
    for o in &spec.expect_config {
        let cur = fields.get(&o.field).cloned().unwrap_or(Value::Null);
        if cur == o.value {
            return Err(format!("stale override: buildah already gives {} = {} ({}); remove it from case.json", o.field, o.value, o.why));
        }
        fields.insert(o.field.clone(), o.value.clone());
    }
    for o in &spec.expect_files {
        if o.absent {
            if tree.remove(&o.path).is_none() {
                return Err(format!("stale override: buildah does not create {} either ({}); remove it", o.path, o.why));
            }
            let prefix = format!("{}/", o.path);
            tree.retain(|p, _| !p.starts_with(&prefix));
            continue;
        }
        let content = o.content.as_deref().unwrap_or_default();
        let node = tree.get_mut(&o.path).ok_or_else(|| format!("override for {}: buildah's image has no such path ({})", o.path, o.why))?;
        let kind = Kind::File {
            size: content.len() as u64,
            sha256: kiln_oci::Digest::sha256_of(content.as_bytes()).hex().to_owned(),
            text: Some(content.to_owned()),
        };
        let same = matches!((&node.kind, &kind),
            (Kind::File { sha256: x, .. }, Kind::File { sha256: y, .. }) if x == y);
        if same {
            return Err(format!("stale override: buildah already writes Docker's content to {} ({}); remove it", o.path, o.why));
        }
        node.kind = kind;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------

/// One built image, unpacked.
pub struct Built {
    pub tree: Tree,
    pub fields: Fields,
}

pub fn read_built(layout: &Path, bundle: &Path, drop_labels: &[&str]) -> Result<Built, String> {
    let config = layout_config(layout)?;
    let rootfs = unpack(layout, bundle)?;
    Ok(Built { tree: snapshot(&rootfs)?, fields: config_fields(&config, drop_labels) })
}

pub fn build_buildah(b: &Buildah, case: &str, case_dir: &Path, ctx: &Path, spec: &CaseSpec, work: &Path) -> Result<Built, String> {
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

/// Builds a case with the kiln that `kiln()` starts (as root, or as another user: `rootless.rs`).
pub fn build_kiln(
    kiln: &dyn Fn() -> Command,
    case: &str,
    case_dir: &Path,
    ctx: &Path,
    spec: &CaseSpec,
    rootfs_tar: &Path,
    work: &Path,
) -> Result<Built, String> {
    run(kiln().arg("import").arg(rootfs_tar).args(["-t", KILN_BASE]), "kiln import")?;
    let args = |c: &mut Command| {
        for (k, v) in &spec.build_args {
            c.arg("--build-arg").arg(format!("{k}={v}"));
        }
    };
    let mut base = KILN_BASE.to_owned();
    if let Some(df) = &spec.base_dockerfile {
        // A base image in kiln's store (the default output), like the tagged buildah base.
        let tag = format!("kiln.test/{case}-base:latest");
        let mut c = kiln();
        c.arg("build").arg(ctx).arg("-f").arg(case_dir.join(df)).args(["-t", &tag]);
        c.arg("--build-arg").arg(format!("BASE={KILN_BASE}"));
        args(&mut c);
        run(&mut c, "kiln build (base image)")?;
        base = tag;
    }
    let layout = work.join("oci");
    let mut c = kiln();
    c.arg("build").arg(ctx).arg("-f").arg(ctx.join("Dockerfile"));
    c.args(["-t", &format!("kiln.test/{case}:latest")]);
    c.arg("--build-arg").arg(format!("BASE={base}"));
    args(&mut c);
    if let Some(t) = &spec.target {
        c.args(["--target", t]);
    }
    c.arg("--output").arg(format!("type=oci,dest={}", layout.display()));
    run(&mut c, "kiln build")?;
    // buildx writes `type=oci` as a tarball of the layout unless told `tar=false`; accept both.
    let layout = if layout.is_file() {
        let dir = work.join("oci-layout");
        mkdir(&dir)?;
        run(Command::new("tar").arg("-C").arg(&dir).arg("-xf").arg(&layout), "untar kiln's OCI output")?;
        dir
    } else {
        layout
    };
    read_built(&layout, &work.join("bundle"), &[])
}

/// How a test runs kiln: on this machine as root ([`HostKiln`]), or elsewhere (in a container).
pub trait KilnCommand {
    /// Runs `kiln ARGS…` (paths in `args` are this machine's: a runner elsewhere shares them).
    fn run(&self, args: Vec<String>, what: &str) -> Result<String, String>;
}

/// kiln on this machine, with its own root.
pub struct HostKiln {
    pub root: PathBuf,
}

impl KilnCommand for HostKiln {
    fn run(&self, args: Vec<String>, what: &str) -> Result<String, String> {
        run(kiln(&self.root).args(args), what)
    }
}

/// Imports the busybox base into kiln's store and builds the case, as buildah does it (a base
/// image first when the case has one), with `--output type=oci`; then unpacks the result.
/// [`build_kiln`] through a [`KilnCommand`] (a kiln that runs elsewhere, e.g. in a container:
/// `isolation_none.rs`): arguments as strings, paths this machine's.
pub fn build_kiln_via(
    k: &dyn KilnCommand,
    case: &str,
    case_dir: &Path,
    ctx: &Path,
    spec: &CaseSpec,
    rootfs_tar: &Path,
    work: &Path,
) -> Result<Built, String> {
    let s = |p: &Path| p.display().to_string();
    k.run(vec!["import".into(), s(rootfs_tar), "-t".into(), KILN_BASE.into()], "kiln import")?;
    let mut build_args: Vec<String> = Vec::new();
    for (key, v) in &spec.build_args {
        build_args.push("--build-arg".into());
        build_args.push(format!("{key}={v}"));
    }
    let mut base = KILN_BASE.to_owned();
    if let Some(df) = &spec.base_dockerfile {
        // A base image in kiln's store (the default output), like the tagged buildah base.
        let tag = format!("kiln.test/{case}-base:latest");
        let mut a = vec!["build".into(), s(ctx), "-f".into(), s(&case_dir.join(df)), "-t".into(), tag.clone()];
        a.extend(["--build-arg".into(), format!("BASE={KILN_BASE}")]);
        a.extend(build_args.iter().cloned());
        k.run(a, "kiln build (base image)")?;
        base = tag;
    }
    let layout = work.join("oci");
    let mut a = vec!["build".into(), s(ctx), "-f".into(), s(&ctx.join("Dockerfile"))];
    a.extend(["-t".into(), format!("kiln.test/{case}:latest"), "--build-arg".into(), format!("BASE={base}")]);
    a.extend(build_args);
    if let Some(t) = &spec.target {
        a.extend(["--target".into(), t.clone()]);
    }
    a.extend(["--output".into(), format!("type=oci,dest={}", layout.display())]);
    k.run(a, "kiln build")?;
    // buildx writes `type=oci` as a tarball of the layout unless told `tar=false`; accept both.
    let layout = if layout.is_file() {
        let dir = work.join("oci-layout");
        mkdir(&dir)?;
        run(Command::new("tar").arg("-C").arg(&dir).arg("-xf").arg(&layout), "untar kiln's OCI output")?;
        dir
    } else {
        layout
    };
    read_built(&layout, &work.join("bundle"), &[])
}

pub fn mkdir(p: &Path) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Everything one test needs: a temp dir with the rootfs tar and buildah's base image.
pub struct Env {
    /// `None` once kept (see `Drop`).
    pub tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    pub rootfs_tar: PathBuf,
    pub buildah: Buildah,
}

impl Env {
    pub fn new() -> Result<Env, String> {
        let tmp = tempfile::Builder::new().prefix("kiln-build-diff-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let rootfs_tar = tmp.path().join("busybox-rootfs.tar");
        busybox_rootfs_tar(&rootfs_tar)?;
        let buildah = Buildah::new(tmp.path());
        buildah.import(&rootfs_tar, BUILDAH_BASE)?;
        let dir = tmp.path().to_path_buf();
        Ok(Env { tmp: Some(tmp), dir, rootfs_tar, buildah })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Builds `case_dir` with buildah under `name`, overrides applied.
    pub fn reference(&self, name: &str, case_dir: &Path) -> Result<(CaseSpec, PathBuf, Built), String> {
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
