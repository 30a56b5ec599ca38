//! Rootless mode (kiln-rootless): kiln started by an ordinary user becomes uid 0 of a user
//! namespace of its own, with the user's `/etc/subuid` and `/etc/subgid` ranges mapped.
//!
//! The corpus test builds every case of the differential corpus (`tests/build_diff/`) twice, once
//! as root and once as an unprivileged user (`kiln-rootless-test`, with 65,536 subordinate ids;
//! created by the test when missing, never removed), started with `setpriv --reuid --regid
//! --init-groups` and that user's own HOME and XDG dirs, no sudo. Both images are unpacked by
//! `umoci` and compared with the differential harness's comparator (`support_diff`): the same
//! file system, owners included (a rootless chown writes the *image's* id into the layer, not the
//! host's subordinate id), and the same config.
//!
//! The negative tests check that each thing rootless mode needs, when missing, gives the message
//! that says so: `no_new_privs` set, no `newuidmap`, user namespaces off (set to 0 inside a user
//! namespace made for the test: the limit is per namespace and inherited, so the host's stays as
//! it is), and a user without subordinate ranges (a build that needs no chown still works, with a
//! note; one that chowns fails with a hint).

#[macro_use]
mod support_diff;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support_diff::*;

/// The unprivileged user with subordinate ranges.
const USER: &str = "kiln-rootless-test";
/// A user without any, for the one-id mode.
const NOSUB_USER: &str = "kiln-rootless-nosub";
const RANGE: u32 = 65536;

#[derive(Clone)]
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn ready() -> bool {
    kiln_testkit::require_root()
        && kiln_testkit::require_tool("setpriv")
        && Path::new("/usr/bin/setpriv").exists()
        && kiln_testkit::require_tool("useradd")
        && kiln_testkit::require_tool("newuidmap")
        && kiln_testkit::require_tool("umoci")
        && kiln_testkit::require_tool("tar")
}

fn sh(cmd: &mut Command, what: &str) -> String {
    run(cmd, what).unwrap_or_else(|e| panic!("{e}"))
}

/// Parallel tests create the users under one lock (useradd and usermod rewrite /etc files).
fn lock() -> fs::File {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/kiln-rootless-test-users.lock")
        .unwrap_or_else(|e| panic!("open the user lock: {e}"));
    f.lock().unwrap_or_else(|e| panic!("take the user lock: {e}"));
    f
}

/// `(start, count)` lines of `file` for `name` (or its uid).
fn ranges(file: &str, name: &str, uid: u32) -> Vec<(u64, u64)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            if f.len() != 3 || (f[0] != name && f[0] != uid.to_string()) {
                return None;
            }
            Some((f[1].parse().ok()?, f[2].parse().ok()?))
        })
        .collect()
}

/// The end of the highest range anyone has in either file: a new range starts above it.
fn free_start() -> u64 {
    ["/etc/subuid", "/etc/subgid"]
        .iter()
        .flat_map(|f| fs::read_to_string(f).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            (f.len() == 3).then(|| Some(f[1].parse::<u64>().ok()? + f[2].parse::<u64>().ok()?)).flatten()
        })
        .max()
        .unwrap_or(100_000)
        .max(100_000)
}

/// Creates `name` when missing (a home, a shell), and gives it a range of [`RANGE`] ids in both
/// files when `with_range` and it has none that big. Idempotent; removes nothing.
fn ensure_user(name: &str, with_range: bool) -> TestUser {
    let _guard = lock();
    let exists = Command::new("id").arg("-u").arg(name).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !exists {
        let mut c = Command::new("useradd");
        c.args(["--create-home", "--shell", "/bin/sh"]);
        if !with_range {
            // useradd gives new users ranges by default (SUB_UID_COUNT in login.defs).
            c.args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]);
        }
        sh(c.arg(name), "useradd");
    }
    let num = |flag: &str| sh(Command::new("id").arg(flag).arg(name), "id").trim().parse::<u32>().expect("numeric id");
    let (uid, gid) = (num("-u"), num("-g"));
    let passwd = sh(Command::new("getent").args(["passwd", name]), "getent passwd");
    let home = PathBuf::from(passwd.trim().split(':').nth(5).expect("a home in passwd"));
    let has = |file: &str| ranges(file, name, uid).iter().any(|(_, n)| *n >= u64::from(RANGE));
    if with_range {
        for (file, flag) in [("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")] {
            if !has(file) {
                let start = free_start();
                sh(Command::new("usermod").arg(flag).arg(format!("{start}-{}", start + u64::from(RANGE) - 1)).arg(name), "usermod");
            }
        }
        assert!(has("/etc/subuid") && has("/etc/subgid"), "{name} still has no range of {RANGE} ids in /etc/subuid and /etc/subgid");
    } else {
        let any = !ranges("/etc/subuid", name, uid).is_empty() || !ranges("/etc/subgid", name, uid).is_empty();
        assert!(!any, "user {name} has a range in /etc/subuid or /etc/subgid, and this test needs it to have none: remove its lines");
    }
    TestUser { name: name.to_owned(), uid, gid, home }
}

/// One test's work dir: world-traversable, with a part the user owns.
struct Work {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// Owned by the user: its XDG dirs (so kiln's default root) and its outputs.
    mine: PathBuf,
    rootfs_tar: PathBuf,
    kiln: PathBuf,
    user: TestUser,
}

impl Work {
    fn new(user: TestUser) -> Work {
        Work::with_base(user, false)
    }

    /// `all_root`: the base with every file owned by 0:0 (kiln-testkit's has a user's home), for
    /// a user that can map no other id.
    fn with_base(user: TestUser, all_root: bool) -> Work {
        let tmp = tempfile::Builder::new().prefix("kiln-rootless-").tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod work dir");
        let mine = dir.join("user");
        fs::create_dir(&mine).expect("user dir");
        std::os::unix::fs::chown(&mine, Some(user.uid), Some(user.gid)).expect("chown user dir");
        let rootfs_tar = dir.join("busybox-rootfs.tar");
        busybox_rootfs_tar(&rootfs_tar).unwrap_or_else(|e| panic!("{e}"));
        if all_root {
            let tree = dir.join("base-tree");
            mkdir(&tree).unwrap_or_else(|e| panic!("{e}"));
            sh(Command::new("tar").arg("-C").arg(&tree).arg("-xpf").arg(&rootfs_tar), "untar the base");
            let mut c = Command::new("tar");
            c.args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name", "-C"]).arg(&tree).arg("-cf").arg(&rootfs_tar).arg(".");
            sh(&mut c, "retar the base as 0:0");
        }
        let mut w = Work { _tmp: tmp, dir, mine, rootfs_tar, kiln: PathBuf::from(KILN), user };
        // The user runs the binary the tests built when it can reach it, else a copy.
        let reach = w.user_cmd(&[]).arg("test").arg("-x").arg(KILN).status().is_ok_and(|s| s.success());
        if !reach {
            let copy = w.dir.join("kiln");
            fs::copy(KILN, &copy).expect("copy kiln for the user");
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod kiln copy");
            w.kiln = copy;
        }
        w
    }

    /// `setpriv` to the user with a clean environment of theirs (HOME, XDG dirs under [`Work::mine`]).
    fn user_cmd(&self, setpriv_extra: &[&str]) -> Command {
        // By path: the environment given to kiln may have a PATH without it.
        let mut c = Command::new("/usr/bin/setpriv");
        c.env_clear();
        c.env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        c.env("HOME", &self.user.home).env("USER", &self.user.name).env("LOGNAME", &self.user.name);
        c.env("XDG_DATA_HOME", self.mine.join("data"));
        c.env("XDG_CONFIG_HOME", self.mine.join("config"));
        c.env("XDG_CACHE_HOME", self.mine.join("cache"));
        c.env("TMPDIR", "/tmp");
        c.env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
        c.args(["--reuid", &self.user.uid.to_string(), "--regid", &self.user.gid.to_string(), "--init-groups"]);
        c.args(setpriv_extra);
        c.arg("--");
        c
    }

    /// kiln as the user, on its default root (`$XDG_DATA_HOME/kiln`).
    fn kiln_as_user(&self, setpriv_extra: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = self.user_cmd(setpriv_extra);
        c.arg(&self.kiln);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// A dir the user can write, for a build's outputs.
    fn user_dir(&self, name: &str) -> PathBuf {
        let d = self.mine.join(name);
        fs::create_dir_all(&d).expect("user out dir");
        std::os::unix::fs::chown(&d, Some(self.user.uid), Some(self.user.gid)).expect("chown out dir");
        d
    }
}

/// Builds `case` as root and as `work`'s user; returns both, unpacked.
fn both_builds(work: &Work, case: &str) -> Result<(Built, Built), String> {
    let case_dir = Path::new(CASES_DIR).join(case);
    let spec = CaseSpec::load(&case_dir)?;
    let ctx = work.dir.join(format!("{case}-context"));
    prepare_context(&case_dir, &spec, &ctx)?;
    let root_out = work.dir.join(format!("{case}-root"));
    mkdir(&root_out)?;
    let kroot = work.dir.join("root-kiln");
    let as_root = build_kiln(&|| kiln(&kroot), case, &case_dir, &ctx, &spec, &work.rootfs_tar, &root_out)
        .map_err(|e| format!("the root build failed: {e}"))?;
    let user_out = work.user_dir(&format!("{case}-rootless"));
    let rootless = build_kiln(&|| work.kiln_as_user(&[], &[]), case, &case_dir, &ctx, &spec, &work.rootfs_tar, &user_out)
        .map_err(|e| format!("the root build worked, the rootless one did not: {e}"))?;
    Ok((as_root, rootless))
}

fn differences(a: &Built, b: &Built) -> Vec<String> {
    let mut diffs = diff_trees(&a.tree, &b.tree);
    diffs.extend(diff_fields(&a.fields, &b.fields));
    diffs
}

fn rootless_case(case: &str) {
    if !ready() {
        return;
    }
    let work = Work::new(ensure_user(USER, true));
    let (as_root, rootless) = both_builds(&work, case).unwrap_or_else(|e| panic!("case `{case}`: {e}"));
    let diffs = differences(&as_root, &rootless);
    assert!(
        diffs.is_empty(),
        "case `{case}`: the rootless build (as {USER}) differs from the root build, {} difference(s) (\"expected\" is root's, \"kiln\" the rootless one):\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
    assert!(as_root.tree.len() > 100, "case `{case}`: suspiciously small tree ({} paths)", as_root.tree.len());
    // It really was the user's kiln, on the user's default root, with overlayfs (`userxattr`):
    // the copying snapshotter's directory appears only when kiln falls back to it.
    let root = work.mine.join("data/kiln");
    assert!(root.join("store").is_dir(), "case `{case}`: no store under the user's $XDG_DATA_HOME/kiln");
    assert!(!root.join("snapshots-native").exists(), "case `{case}`: the rootless build fell back to the native snapshotter");
}

macro_rules! rootless_cases {
    ($($name:ident),* $(,)?) => {
        mod corpus {
            $( #[test] fn $name() { super::rootless_case(stringify!($name)); } )*
        }
    };
}

for_each_case!(rootless_cases);

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A small context the user can read: one Dockerfile.
fn small_context(work: &Work, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = work.dir.join(name);
    fs::create_dir_all(&ctx).expect("context dir");
    fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    ctx
}

fn import_base(work: &Work, setpriv_extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = work.kiln_as_user(setpriv_extra, env);
    c.arg("import").arg(&work.rootfs_tar).args(["-t", KILN_BASE]);
    c.output().expect("start kiln")
}

/// A command that needs the user namespace (`kiln run`: a sandbox), so that rootless mode's
/// refusal is the answer (store-only commands such as `kiln import` go on as the user instead).
fn run_in_sandbox(work: &Work, setpriv_extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = work.kiln_as_user(setpriv_extra, env);
    c.args(["run", KILN_BASE, "--", "true"]);
    c.output().expect("start kiln")
}

fn assert_refused(o: &Output, needles: &[&str], what: &str) {
    let t = text(o);
    assert!(!o.status.success(), "{what}: kiln should have refused, but succeeded:\n{t}");
    assert_eq!(o.status.code(), Some(1), "{what}: exit code\n{t}");
    for n in needles {
        assert!(t.contains(n), "{what}: the message should say {n:?}:\n{t}");
    }
    assert!(!t.contains("panicked"), "{what}: a panic\n{t}");
}

#[test]
fn rootless_refuses_no_new_privs_by_name() {
    if !ready() {
        return;
    }
    let work = Work::new(ensure_user(USER, true));
    let o = run_in_sandbox(&work, &["--no-new-privs"], &[]);
    assert_refused(&o, &["no_new_privs", "newuidmap", "setpriv --no-new-privs", "or run it as root"], "no-new-privs");
    // A command that only reads the store goes on as the user without a namespace.
    let o = work.kiln_as_user(&["--no-new-privs"], &[]).arg("images").output().expect("start kiln");
    assert!(o.status.success(), "kiln images needs no user namespace:\n{}", text(&o));
}

#[test]
fn rootless_without_newuidmap_says_what_to_install() {
    if !ready() {
        return;
    }
    let work = Work::new(ensure_user(USER, true));
    let missing = work.dir.join("no-such-dir/newuidmap");
    let o = run_in_sandbox(&work, &[], &[("KILN_NEWUIDMAP", missing.to_str().expect("utf-8 path"))]);
    assert_refused(
        &o,
        &["newuidmap", &format!("KILN_NEWUIDMAP={} is not an executable file", missing.display()), "apt-get install uidmap"],
        "KILN_NEWUIDMAP pointing at a missing file",
    );
    // Commands that keep no state need no namespace: they work for such a user all the same.
    let ctx = small_context(&work, "dump-ctx", "FROM scratch\n");
    let env = [("KILN_NEWUIDMAP", missing.to_str().expect("utf-8 path"))];
    let o = work.kiln_as_user(&[], &env).arg("dockerfile").arg("dump").arg(ctx.join("Dockerfile")).output().expect("start kiln");
    assert!(
        o.status.success() && text(&o).to_lowercase().contains("scratch"),
        "kiln dockerfile dump needs no rootless mode:\n{}",
        text(&o)
    );
    let o = work.kiln_as_user(&[], &env).arg("--version").output().expect("start kiln");
    assert!(o.status.success(), "kiln --version needs no rootless mode:\n{}", text(&o));
    // And when PATH has none: the fallback dirs are searched too, so only an override can hide
    // the installed one; a PATH without it must still find /usr/bin/newuidmap.
    let o = import_base(&work, &[], &[("PATH", "/nonexistent")]);
    assert!(o.status.success(), "newuidmap in /usr/bin should be found without PATH:\n{}", text(&o));
}

#[test]
fn rootless_with_user_namespaces_off_says_so() {
    if !ready() || !kiln_testkit::require_tool("unshare") {
        return;
    }
    let work = Work::new(ensure_user(USER, true));
    // A user namespace of the test's own, mapped one to one, in which user.max_user_namespaces
    // is set to 0: the limit belongs to that namespace (and its children), so the host's and the
    // other tests' stay as they are. The shell re-executes itself once the map is written, as
    // only an exec by a mapped uid 0 gets the namespace's capabilities.
    let inner = work.kiln_as_user(&[], &[]);
    let mut argv: Vec<String> = vec![inner.get_program().to_string_lossy().into_owned()];
    argv.extend(inner.get_args().map(|a| a.to_string_lossy().into_owned()));
    argv.extend(["run".into(), KILN_BASE.into(), "--".into(), "true".into()]);
    let mut c = Command::new("unshare");
    c.args([
        "--user",
        "--",
        "sh",
        "-c",
        "read go && exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"' sh \"$@\"",
        "sh",
    ]);
    c.args(&argv);
    c.env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("start unshare");
    let pid = child.id();
    let ours = fs::read_link("/proc/self/ns/user").expect("our user namespace");
    let mut waited = 0;
    while fs::read_link(format!("/proc/{pid}/ns/user")).ok().as_ref() == Some(&ours) {
        assert!(waited < 1000, "unshare did not make a user namespace");
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    for map in ["uid_map", "gid_map"] {
        fs::write(format!("/proc/{pid}/{map}"), "0 0 4294967295\n").unwrap_or_else(|e| panic!("write {map}: {e}"));
    }
    child.stdin.take().expect("stdin").write_all(b"go\n").expect("release the shell");
    let o = child.wait_with_output().expect("wait for unshare");
    assert_refused(
        &o,
        &["user namespaces are disabled", "user.max_user_namespaces is 0", "sysctl -w user.max_user_namespaces="],
        "userns off",
    );
    assert_ne!(fs::read_to_string("/proc/sys/user/max_user_namespaces").expect("host limit").trim(), "0", "the host's limit changed");
}

#[test]
fn rootless_without_a_range_maps_one_id_and_says_what_fails() {
    if !ready() {
        return;
    }
    let work = Work::with_base(ensure_user(NOSUB_USER, false), true);
    // A corpus case that needs no id but 0 builds the same as root, with one note.
    let (as_root, rootless) = both_builds(&work, "copy_basic").unwrap_or_else(|e| panic!("copy_basic without a range: {e}"));
    let diffs = differences(&as_root, &rootless);
    assert!(diffs.is_empty(), "copy_basic without a range differs from root's:\n  {}", diffs.join("\n  "));
    let o = import_base(&work, &[], &[]);
    assert!(o.status.success(), "import without a range:\n{}", text(&o));
    let t = text(&o);
    assert_eq!(t.matches("note: rootless:").count(), 1, "one note per run:\n{t}");
    assert!(t.contains(&format!("/etc/subuid and /etc/subgid have no range for user {NOSUB_USER}")), "{t}");
    assert!(t.contains("chown") && t.contains("usermod --add-subuids"), "{t}");

    // A step that chowns to another id fails, and says why.
    let ctx = small_context(&work, "chown-ctx", &format!("FROM {KILN_BASE}\nRUN touch /f && chown 1000:1000 /f\n"));
    let mut c = work.kiln_as_user(&[], &[]);
    c.arg("build").arg(&ctx).args(["--progress", "plain"]);
    let o = c.output().expect("start kiln");
    assert_refused(&o, &["chown", "hint: kiln runs rootless with only your own id mapped", "/etc/subuid"], "RUN chown without a range");
    // So does COPY --chown, which kiln does itself.
    fs::write(ctx.join("f"), "x").expect("context file");
    fs::write(ctx.join("Dockerfile"), format!("FROM {KILN_BASE}\nCOPY --chown=7:7 f /f\n")).expect("Dockerfile");
    let o = work.kiln_as_user(&[], &[]).arg("build").arg(&ctx).output().expect("start kiln");
    assert_refused(&o, &["hint: kiln runs rootless with only your own id mapped"], "COPY --chown without a range");
}
