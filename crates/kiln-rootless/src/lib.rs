//! kiln-rootless: run kiln as an ordinary user, as uid 0 of a user namespace of its own.
//!
//! # Model
//!
//! kiln's work needs root: overlay mounts, namespaces for `RUN`, and files owned by the ids an
//! image names. An ordinary user can have all three inside a *user namespace* in which they are
//! uid 0: mounts and namespaces are then the namespace's, and a chown to image id N lands on a
//! host id the user was given for that purpose in `/etc/subuid` (and `/etc/subgid`).
//!
//! [`enter`] is called early in `main` (after the sandbox's init check and the parsing of the
//! command line, for every command that keeps state), while the process has one thread:
//! `unshare(CLONE_NEWUSER)` fails in a threaded process. When kiln is already
//! root (the usual case, and also every process the sandbox re-executes inside the namespace) it
//! does nothing. Otherwise it:
//!
//! 1. reads the user's ranges from `/etc/subuid` and `/etc/subgid` ([`subid`]: names and numeric
//!    ids, several ranges);
//! 2. checks what would make the next steps fail, and says so with what to do ([`Error`]):
//!    `user.max_user_namespaces` is 0, `no_new_privs` is set (the setuid `newuidmap` then gains
//!    nothing), `newuidmap`/`newgidmap` are missing;
//! 3. forks a helper that stays in the host's namespace, then unshares a user and a mount
//!    namespace itself, tells the helper (a pipe), which runs `newuidmap PID 0 UID 1 1 START
//!    COUNT…` and `newgidmap` on kiln's pid and reports back (another pipe); only then does kiln
//!    go on, now uid 0 with every capability in the namespace. The user's own id is image id 0 and
//!    the ranges follow from 1 ([`subid::mappings`]), the layout rootless Podman and BuildKit use;
//! 4. makes the mounts of its new mount namespace slaves of the host's, so that nothing kiln
//!    mounts is seen outside, and everything it mounts goes away with it.
//!
//! With no range in either file, kiln maps its one id itself (no helper needed: a process may
//! map its own id) and [`Entered::Namespace`] carries a note that a chown to any other id, a
//! `USER` other than root and a base image with files of other owners will fail.
//!
//! # Why the same process rather than a re-exec
//!
//! The helper maps *kiln's* ids, so kiln itself carries on inside the namespace: one process, the
//! pid, the terminal's process group, signals (kiln's graceful cancel) and the exit code all stay
//! what the caller started, with nothing to forward. The fork-a-mapper pattern is what
//! `unshare --map-users` and rootlesskit do for the same reason.
//!
//! `KILN_ROOTLESS=0` turns all of this off (kiln then runs as the plain user, which fails at the
//! first mount: for debugging only). `KILN_NEWUIDMAP`/`KILN_NEWGIDMAP` name the helpers when they
//! are not in `PATH`.
//!
//! Overlayfs in a user namespace keeps its markers in `user.overlay.*` xattrs (mount option
//! `userxattr`); [`in_user_namespace`] tells the snapshotter to ask for it.

pub mod subid;

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use subid::Mapping;

/// Why kiln could not become root of its own user namespace. Each message says what is missing
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "kiln is not root, so it runs rootless, in a user namespace; but user namespaces are disabled on this machine: \
         {reason}. Ask an administrator to enable them ({fix}), or run kiln as root"
    )]
    UserNamespacesDisabled { reason: String, fix: String },
    #[error(
        "kiln is not root, so it runs rootless, mapping the ids of /etc/subuid and /etc/subgid with the setuid \
         newuidmap and newgidmap; but this process has no_new_privs set (NoNewPrivs: 1 in /proc/self/status), under \
         which a setuid program gains no privilege. Start kiln without no-new-privileges (setpriv --no-new-privs, \
         docker's --security-opt no-new-privileges, systemd's NoNewPrivileges=yes), or run it as root"
    )]
    NoNewPrivs,
    #[error(
        "kiln is not root, so it runs rootless, mapping the ids of {file} with {tool}; but {where_}. Install it \
         (Debian/Ubuntu: apt-get install uidmap; Fedora/RHEL: dnf install shadow-utils; Alpine: apk add shadow-uidmap) \
         or name it with {env}, or run kiln as root"
    )]
    MissingHelper { tool: &'static str, file: &'static str, env: &'static str, where_: String },
    #[error("kiln is not root, so it runs rootless; but {tool} could not map the ids of {file} for user {user}: {message}")]
    MapFailed { tool: &'static str, file: &'static str, user: String, message: String },
    #[error("{}:{line}: {why}; fix or remove that line", path.display())]
    BadSubid { path: PathBuf, line: usize, why: String },
    #[error("rootless mode: {what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("rootless mode: {what}: {source}")]
    Sys { what: &'static str, source: io::Error },
    #[error("rootless mode must be entered before any thread starts, but this process has {0} threads (a bug in kiln)")]
    Threaded(usize),
}

/// What [`enter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entered {
    /// kiln is root already (or rootless mode is off): nothing changed.
    AlreadyRoot,
    /// kiln is now uid 0 of a new user namespace; `note` is for the user, once.
    Namespace { note: Option<String> },
}

const MODE_NONE: u8 = 0;
const MODE_RANGES: u8 = 1;
const MODE_SINGLE: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);

/// True when this process entered a user namespace in which only its own id is mapped (no
/// subuid/subgid range): a chown to any other id fails with EINVAL.
pub fn single_id() -> bool {
    MODE.load(Ordering::Relaxed) == MODE_SINGLE
}

/// True when this process is in a user namespace other than the host's (kiln's own rootless one,
/// or a rootless container's): the kernel then refuses what needs real root (device nodes,
/// `trusted.*` xattrs), and overlayfs needs `userxattr`. The initial namespace is the only one
/// whose uid map is the whole identity.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

/// A hint for an error of a rootless build that mapped only one id, when the error looks like a
/// chown or a `USER` switch to an unmapped id (the kernel says EINVAL).
pub fn hint_for(error_text: &str) -> Option<String> {
    if !single_id() {
        return None;
    }
    let t = error_text.to_ascii_lowercase();
    (t.contains("invalid argument") || t.contains("chown") || t.contains("switch to the user")).then(|| SINGLE_ID_HINT.to_string())
}

const SINGLE_ID_HINT: &str = "kiln runs rootless with only your own id mapped (you have no range in /etc/subuid and \
     /etc/subgid), so a chown to any other id, a USER other than root and base image files of other owners fail; ask \
     an administrator for a range (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER) or run kiln \
     as root";

/// Enters rootless mode when kiln is not root; see the crate doc. Call it while the process has
/// one thread.
pub fn enter() -> Result<Entered, Error> {
    // SAFETY: no arguments; cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return Ok(Entered::AlreadyRoot);
    }
    if matches!(std::env::var("KILN_ROOTLESS").as_deref(), Ok("0" | "false" | "no" | "off")) {
        return Ok(Entered::AlreadyRoot);
    }
    let threads = status_field("Threads").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
    if threads > 1 {
        return Err(Error::Threaded(threads));
    }
    let user = user_name(uid);
    let uranges = subid::read(Path::new("/etc/subuid"), user.as_deref(), uid)?;
    let granges = subid::read(Path::new("/etc/subgid"), user.as_deref(), uid)?;
    check_userns_enabled()?;
    let who = user.clone().unwrap_or_else(|| uid.to_string());
    if uranges.is_empty() || granges.is_empty() {
        unshare()?;
        map_own_ids(uid, gid)?;
        make_mounts_slave()?;
        MODE.store(MODE_SINGLE, Ordering::Relaxed);
        let missing = match (uranges.is_empty(), granges.is_empty()) {
            (true, true) => "/etc/subuid and /etc/subgid have",
            (true, false) => "/etc/subuid has",
            _ => "/etc/subgid has",
        };
        let note = format!(
            "rootless: {missing} no range for user {who}, so kiln maps only your own id (as root of the build); a chown \
             to any other id (COPY --chown, RUN chown, USER 1000, base images with files of other owners) will fail. \
             For full builds: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {who}"
        );
        return Ok(Entered::Namespace { note: Some(note) });
    }
    if status_field("NoNewPrivs").as_deref() == Some("1") {
        return Err(Error::NoNewPrivs);
    }
    let newuidmap = helper("newuidmap", "KILN_NEWUIDMAP", "/etc/subuid")?;
    let newgidmap = helper("newgidmap", "KILN_NEWGIDMAP", "/etc/subgid")?;
    let plan = [
        (newuidmap, "newuidmap", "/etc/subuid", subid::mappings(uid, &uranges)),
        (newgidmap, "newgidmap", "/etc/subgid", subid::mappings(gid, &granges)),
    ];
    map_through_helper(&plan, &who)?;
    make_mounts_slave()?;
    MODE.store(MODE_RANGES, Ordering::Relaxed);
    Ok(Entered::Namespace { note: None })
}

fn status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

fn user_name(uid: u32) -> Option<String> {
    // /etc/passwd first: no NSS module loaded into a process that is about to fork. getpwuid for
    // users that live elsewhere (LDAP, systemd-homed).
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid) {
                return Some(f[0].to_string());
            }
        }
    }
    // SAFETY: getpwuid returns null or a pointer to a static record, read at once; single-threaded.
    unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_name.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned())
    }
}

fn check_userns_enabled() -> Result<(), Error> {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err(Error::UserNamespacesDisabled {
            reason: "user.max_user_namespaces is 0 (/proc/sys/user/max_user_namespaces)".into(),
            fix: "sysctl -w user.max_user_namespaces=28633".into(),
        });
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err(Error::UserNamespacesDisabled {
            reason: "kernel.unprivileged_userns_clone is 0".into(),
            fix: "sysctl -w kernel.unprivileged_userns_clone=1".into(),
        });
    }
    Ok(())
}

fn unshare() -> Result<(), Error> {
    // SAFETY: plain syscall with flag arguments.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").map(|s| s.trim().to_string()).unwrap_or_default();
    let (reason, fix) = match e.raw_os_error() {
        Some(libc::ENOSPC) => (
            format!(
                "creating one failed with ENOSPC: the limit user.max_user_namespaces ({max}) is reached or is 0 in an enclosing namespace"
            ),
            "sysctl -w user.max_user_namespaces=28633".to_string(),
        ),
        Some(libc::EINVAL) => (
            "creating one failed with EINVAL: this kernel has no user namespace support (CONFIG_USER_NS)".to_string(),
            "a kernel built with CONFIG_USER_NS=y".to_string(),
        ),
        Some(libc::EPERM) | Some(libc::EACCES) => (
            format!(
                "creating one was refused ({e}): unprivileged user namespaces are off (kernel.unprivileged_userns_clone=0, \
                 Ubuntu's kernel.apparmor_restrict_unprivileged_userns=1), or a seccomp profile blocks unshare (as in a \
                 container: there, use --isolation none)"
            ),
            "sysctl -w kernel.unprivileged_userns_clone=1, or an AppArmor profile that allows userns for kiln".to_string(),
        ),
        _ => return Err(Error::Sys { what: "unshare a user and a mount namespace", source: e }),
    };
    Err(Error::UserNamespacesDisabled { reason, fix })
}

/// No range: map our own ids ourselves. A process may map its own uid; for its gid, the kernel
/// first wants setgroups(2) denied in the namespace (so that dropping a group cannot grant access).
fn map_own_ids(uid: u32, gid: u32) -> Result<(), Error> {
    let write = |p: &str, s: String| std::fs::write(p, s).map_err(|e| Error::Io { what: "write", path: PathBuf::from(p), source: e });
    write("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
    write("/proc/self/setgroups", "deny\n".into())?;
    write("/proc/self/gid_map", format!("0 {gid} 1\n"))
}

fn make_mounts_slave() -> Result<(), Error> {
    let root = c"/";
    // SAFETY: valid NUL-terminated path, null source/type/data.
    let rc = unsafe { libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) };
    if rc != 0 {
        return Err(Error::Sys { what: "make the mounts of the new namespace private", source: io::Error::last_os_error() });
    }
    Ok(())
}

/// The helper named by `env`, else the first `name` in `PATH` (then /usr/bin and /usr/sbin).
fn helper(name: &'static str, env: &'static str, file: &'static str) -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(Error::MissingHelper { tool: name, file, env, where_: format!("{env}={} is not an executable file", p.display()) });
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').filter(|d| !d.is_empty()).chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"]) {
        let p = Path::new(dir).join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(Error::MissingHelper { tool: name, file, env, where_: format!("{name} is not in PATH ({path}) nor in /usr/bin") })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else { return false };
    // SAFETY: valid NUL-terminated path.
    p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

fn pipe() -> Result<(File, File), Error> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Sys { what: "create a pipe", source: io::Error::last_os_error() });
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    unsafe { Ok((File::from(OwnedFd::from_raw_fd(fds[0])), File::from(OwnedFd::from_raw_fd(fds[1])))) }
}

type Plan = (PathBuf, &'static str, &'static str, Vec<Mapping>);

/// Forks the mapper, unshares, lets the mapper write our maps, and waits for its verdict.
fn map_through_helper(plan: &[Plan; 2], who: &str) -> Result<(), Error> {
    let (go_r, mut go_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let kiln_pid = unsafe { libc::getpid() };
    // SAFETY: single-threaded (checked by the caller), so the child may run ordinary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Sys { what: "fork the id mapper", source: io::Error::last_os_error() });
    }
    if pid == 0 {
        drop(go_w);
        drop(done_r);
        let code = mapper(go_r, done_w, kiln_pid, plan);
        // SAFETY: leave without running the parent's atexit handlers or destructors twice.
        unsafe { libc::_exit(code) };
    }
    drop(go_r);
    drop(done_w);
    let unshared = unshare();
    // Told to go on (1) or to give up (EOF), the mapper always ends.
    if unshared.is_ok() {
        let _ = go_w.write_all(b"1");
    }
    drop(go_w);
    let mut verdict = String::new();
    let _ = (&done_r).read_to_string(&mut verdict);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    unshared?;
    if verdict == "ok" {
        return Ok(());
    }
    let (tool, file, message) = match verdict.split_once('\t').and_then(|(t, rest)| Some((t, rest.split_once('\t')?))) {
        Some((tool, (file, msg))) => (
            plan.iter().find(|p| p.1 == tool).map_or("newuidmap", |p| p.1),
            plan.iter().find(|p| p.2 == file).map_or("/etc/subuid", |p| p.2),
            msg.to_string(),
        ),
        None => ("newuidmap", "/etc/subuid", format!("the id mapper ended without a verdict (status {status})")),
    };
    Err(Error::MapFailed { tool, file, user: who.to_string(), message })
}

/// The mapper's side (host namespace): wait until kiln has unshared, run both helpers on its pid.
fn mapper(mut go: File, mut done: File, kiln_pid: libc::pid_t, plan: &[Plan; 2]) -> i32 {
    let mut b = [0u8; 1];
    if !matches!(go.read(&mut b), Ok(1)) {
        return 1;
    }
    for (exe, tool, file, maps) in plan {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg(kiln_pid.to_string());
        for m in maps {
            cmd.args([m.inside.to_string(), m.outside.to_string(), m.count.to_string()]);
        }
        let out = cmd.stdin(std::process::Stdio::null()).output();
        let failure = match out {
            Ok(o) if o.status.success() => continue,
            Ok(o) => format!("{} ({}): {}", exe.display(), o.status, String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => format!("cannot run {}: {e}", exe.display()),
        };
        let _ = write!(done, "{tool}\t{file}\t{}", failure.replace('\n', " "));
        return 1;
    }
    let _ = done.write_all(b"ok");
    0
}
