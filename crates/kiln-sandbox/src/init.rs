//! The re-executed side: kiln's own binary started in a hidden init mode.
//!
//! Two processes live here:
//! - the *outer init* (in the host PID namespace) ties its life to the caller's (parent-death
//!   signal), leaves the caller's process group, reads the spec, unshares a PID namespace and
//!   forks; it then only waits, and reports how its child ended;
//! - the *child* becomes PID 1 of the new PID namespace. It unshares mount, UTS, IPC (and, for
//!   `Network::None`, network) namespaces, builds the mounts under the root, pivots into it,
//!   switches to the user and execs the command, which therefore runs as PID 1, as under
//!   `docker run` and BuildKit. When it exits the kernel kills everything else in the namespace,
//!   which is how a background process left by a step is cleaned up.
//!
//! Everything here runs single-threaded (required for `fork`), and never prints: failures go to
//! the report pipe as `Report::SetupFailed`.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use crate::protocol::{CreatedPath, Report, INIT_ARG, INIT_ENV, PARENT_ENV, PROTOCOL_VERSION, REPORT_FD, SPEC_FD};
use crate::spec::{HostEntry, Mount, Network, SecretSource, Spec};
use crate::sys;
use crate::user;

/// Docker's default `PATH`, used to find `argv[0]` when the spec's env has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Call first thing in `main()`: when this process was started by [`crate::Sandbox`] as its init
/// process, runs the sandbox and returns the exit code to return from `main`; otherwise returns
/// `None` at once and costs nothing.
pub fn maybe_run() -> Option<ExitCode> {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(INIT_ARG)) {
        return None;
    }
    if std::env::var_os(INIT_ENV).as_deref() != Some(OsStr::new(PROTOCOL_VERSION)) {
        return None;
    }
    Some(ExitCode::from(outer_main()))
}

pub(crate) struct Failure {
    pub(crate) stage: &'static str,
    pub(crate) message: String,
}

fn fail<E: std::fmt::Display>(stage: &'static str) -> impl FnOnce(E) -> Failure {
    move |e| Failure { stage, message: e.to_string() }
}

fn send(report: &File, msg: &Report) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        // Nothing useful can be done if the parent stopped listening.
        let _ = (&*report).write_all(&line);
    }
}

/// Exit code of an init that found its caller already gone, as if the parent-death signal had
/// killed it.
const PARENT_GONE: u8 = 137;

/// Makes the kernel SIGKILL us when the caller dies, so that a SIGKILLed kiln takes every `RUN`
/// process with it (PID 1 has the same signal towards us, and its death kills the namespace).
///
/// The signal fires when the *thread* that forked us exits, not the process. That thread is the
/// one in [`crate::Sandbox::run`]: it spawns us and then blocks until it has reaped us, so it
/// outlives us unless the whole caller dies, which is the case we want.
///
/// A caller that died between forking us and the `prctl` would never signal us: by then we have
/// been re-parented to a reaper. [`PARENT_ENV`] names the pid that started us; any other parent
/// means that has happened, and we leave without doing anything.
fn tie_to_parent() -> Result<(), u8> {
    sys::kill_me_with_parent().map_err(|_| 125u8)?;
    let expected = std::env::var(PARENT_ENV).ok().and_then(|v| v.parse::<libc::pid_t>().ok()).ok_or(125u8)?;
    if sys::getppid() != expected {
        return Err(PARENT_GONE);
    }
    Ok(())
}

fn outer_main() -> u8 {
    if let Err(code) = tie_to_parent() {
        return code;
    }
    let Ok(report) = sys::adopt_fd(REPORT_FD).map(File::from) else {
        return 125;
    };
    // The child's exec must close its copy so the parent sees EOF only from us.
    if sys::set_cloexec(REPORT_FD).is_err() {
        return 125;
    }
    // Our own process group: a terminal's Ctrl-C (SIGINT to the foreground process group, which
    // is kiln's) must reach kiln alone. kiln decides what an interrupt means (cancel every step
    // through `Cancel`, export what finished, unmount, then exit); an init killed behind its back
    // would turn each running step into an "init died" error before kiln had a say. `Sandbox`
    // already starts us in a new group (`process_group(0)`, which also covers the moment before
    // this line); this keeps the property for any other caller. PID 1 has its own session anyway.
    if let Err(e) = sys::setpgid_self() {
        // EPERM means we lead a session (a caller used setsid), so our group is ours already.
        if e.raw_os_error() != Some(libc::EPERM) {
            send(&report, &Report::SetupFailed { stage: "leave the caller's process group".into(), message: e.to_string() });
            return 125;
        }
    }
    let spec = match read_spec() {
        Ok(s) => s,
        Err(f) => {
            send(&report, &Report::SetupFailed { stage: f.stage.into(), message: f.message });
            return 125;
        }
    };
    sys::umask(0o022);
    let forked = sys::unshare(libc::CLONE_NEWPID)
        .map_err(fail("unshare the PID namespace"))
        .and_then(|()| sys::pipe().map_err(fail("create the liveness pipe")))
        .and_then(|alive| Ok((sys::fork().map_err(fail("fork PID 1"))?, alive)));
    let (forked, (alive_r, alive_w)) = match forked {
        Ok(f) => f,
        Err(f) => {
            send(&report, &Report::SetupFailed { stage: f.stage.into(), message: f.message });
            return 125;
        }
    };
    match forked {
        sys::Forked::Child => {
            drop(alive_w);
            let code = child_main(&spec, &report, alive_r);
            std::process::exit(code);
        }
        sys::Forked::Parent(pid) => {
            drop(alive_r);
            send(&report, &Report::Started { pid });
            let ended = sys::wait_for(pid);
            drop(alive_w);
            match ended {
                Ok(sys::Ended::Exited(c)) => {
                    send(&report, &Report::Exit { code: Some(c), signal: None });
                    c.clamp(0, 255) as u8
                }
                Ok(sys::Ended::Signaled(s)) => {
                    send(&report, &Report::Exit { code: None, signal: Some(s) });
                    (128 + s).clamp(0, 255) as u8
                }
                Err(e) => {
                    send(&report, &Report::SetupFailed { stage: "wait for PID 1".into(), message: e.to_string() });
                    125
                }
            }
        }
    }
}

fn read_spec() -> Result<Spec, Failure> {
    let mut f = File::from(sys::adopt_fd(SPEC_FD).map_err(fail("open the spec pipe"))?);
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(fail("read the spec"))?;
    serde_json::from_slice(&buf).map_err(fail("parse the spec"))
}

/// PID 1 of the new namespace. Returns only on failure (or with the exec'd command's code).
///
/// `alive` is the read end of a pipe whose only writer is the outer init: it hangs up when the
/// outer init dies, which tells whether it died before a parent-death signal was armed.
fn child_main(spec: &Spec, report: &File, alive: OwnedFd) -> i32 {
    if sys::kill_me_with_parent().is_err() || sys::peer_closed(alive.as_fd()) {
        return i32::from(PARENT_GONE);
    }
    let mut mounts = Mounter { root_fd: None, root_host: PathBuf::new(), report };
    let setup = prepare(spec, &mut mounts);
    let err = match setup {
        Ok(()) => match exec_command(spec, &alive) {
            Ok(never) => match never {},
            Err(f) => f,
        },
        Err(f) => f,
    };
    send(report, &Report::SetupFailed { stage: err.stage.into(), message: err.message });
    126
}

/// Namespaces, mounts and the pivot into the root.
fn prepare(spec: &Spec, m: &mut Mounter<'_>) -> Result<(), Failure> {
    // Our own session, without a controlling terminal: nothing the terminal sends (SIGINT,
    // SIGHUP, SIGTSTP) reaches the step directly. kiln handles an interrupt and stops the step
    // through the outer init, whose death kills us (PDEATHSIG).
    sys::setsid().map_err(fail("setsid"))?;
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    sys::unshare(flags).map_err(fail("unshare namespaces"))?;
    if spec.network == Network::None {
        sys::loopback_up().map_err(fail("bring up lo in the new network namespace"))?;
    }
    sys::sethostname(&spec.hostname).map_err(fail("set the host name"))?;
    // Nothing mounted from here on may propagate back to the host.
    sys::mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None).map_err(fail("make mounts private"))?;
    // pivot_root needs the new root to be a mount point.
    sys::mount(Some(&spec.root), &spec.root, None, libc::MS_BIND | libc::MS_REC, None).map_err(fail("bind the root onto itself"))?;
    let root_fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&spec.root)
        .map_err(fail("open the root"))?
        .into();
    m.root_host = std::fs::read_link(sys::fd_path(root_fd.as_fd())).map_err(fail("locate the root"))?;
    m.root_fd = Some(root_fd);

    m.mount_proc()?;
    m.mount_dev(spec.shm_size)?;
    if spec.mount_sys {
        m.mount_sys()?;
    }
    if spec.extra_hosts.is_empty() {
        let host = Path::new("/etc/hosts");
        if host.exists() {
            m.bind(host, host, true, Kind::File).map_err(fail("bind /etc/hosts"))?;
        }
    } else {
        // The host's file with the extra lines, staged in our private /dev tmpfs like a secret:
        // it is a read-only mount over the image's file (or over a mount point removed after the
        // run), so neither the host's file nor the image's layer ever holds the extra lines.
        let content = hosts_with(std::fs::read("/etc/hosts").unwrap_or_default(), &spec.extra_hosts);
        m.bind_content(".kiln-hosts", &content, Path::new("/etc/hosts"), 0o644, 0, 0, 0).map_err(fail("write /etc/hosts"))?;
    }
    let resolv = Path::new("/etc/resolv.conf");
    if resolv.exists() {
        m.bind(resolv, resolv, true, Kind::File).map_err(fail("bind /etc/resolv.conf"))?;
    }
    let mut extra: Vec<&Mount> = spec.mounts.iter().collect();
    // Parents before children, whatever order the caller used (as Docker sorts mounts).
    extra.sort_by_key(|mnt| normalize(&mnt.target()).components().count());
    for (i, mnt) in extra.into_iter().enumerate() {
        m.step_mount(i, mnt).map_err(|e| Failure { stage: "mount", message: format!("{}: {e}", mount_name(mnt)) })?;
    }

    let root_fd = m.root_fd.take().ok_or_else(|| Failure { stage: "pivot_root", message: "root fd missing".into() })?;
    sys::fchdir(root_fd.as_fd()).map_err(fail("enter the root"))?;
    sys::pivot_root_here().map_err(fail("pivot_root"))?;
    sys::umount_detach(Path::new(".")).map_err(fail("detach the old root"))?;
    std::env::set_current_dir("/").map_err(fail("chdir /"))?;
    Ok(())
}

fn mount_name(m: &Mount) -> String {
    match m {
        Mount::Bind { source, .. } => {
            format!("bind {} on {}", source.display(), m.target().display())
        }
        Mount::Tmpfs { .. } => format!("tmpfs on {}", m.target().display()),
        Mount::Cache { source, .. } => {
            format!("cache {} on {}", source.display(), m.target().display())
        }
        Mount::Secret { id, .. } => format!("secret {id} on {}", m.target().display()),
        Mount::Ssh { id, .. } => format!("ssh agent {id} on {}", m.target().display()),
    }
}

/// Inside the root: user, working dir, signals, exec. Returns only on failure.
fn exec_command(spec: &Spec, alive: &OwnedFd) -> Result<std::convert::Infallible, Failure> {
    let passwd = read_optional("/etc/passwd")?;
    let group = read_optional("/etc/group")?;
    let id = user::resolve(&spec.user, passwd.as_deref(), group.as_deref()).map_err(fail("resolve the user"))?;
    let workdir = normalize(&spec.workdir);
    make_workdir(&workdir, id.uid, id.gid)?;
    std::env::set_current_dir(&workdir)
        .map_err(|e| Failure { stage: "enter the working directory", message: format!("{}: {e}", workdir.display()) })?;

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", id.home));
    }
    let path_var = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH).to_string();
    let to_c =
        |s: &str| CString::new(s).map_err(|_| Failure { stage: "prepare the command", message: format!("{s:?} contains a NUL byte") });
    let argv: Vec<CString> = spec.argv.iter().map(|a| to_c(a)).collect::<Result<_, _>>()?;
    let secret_names: Vec<String> = spec.secret_env.iter().map(|s| format!("{}=", s.name)).collect();
    let mut envp: Vec<CString> =
        env.iter().filter(|e| !secret_names.iter().any(|n| e.starts_with(n.as_str()))).map(|e| to_c(e)).collect::<Result<_, _>>()?;
    for (s, prefix) in spec.secret_env.iter().zip(&secret_names) {
        let mut bytes = prefix.clone().into_bytes();
        bytes.extend_from_slice(s.value.as_bytes());
        // The message names the variable, never the value.
        let c = CString::new(bytes)
            .map_err(|_| Failure { stage: "prepare the command", message: format!("the secret for ${} contains a NUL byte", s.name) })?;
        envp.push(c);
    }

    // Before giving up root: raising a hard limit needs CAP_SYS_RESOURCE.
    for r in &spec.rlimits {
        sys::setrlimit(r.resource, r.soft, r.hard).map_err(|e| Failure {
            stage: "set the ulimits",
            message: format!("{}={}:{}: {e}", r.resource.name(), show_limit(r.soft), show_limit(r.hard)),
        })?;
    }

    sys::set_identity(id.uid, id.gid, &id.groups).map_err(fail("switch to the user"))?;
    // Changing credentials clears the parent-death signal; arm it again, and make sure the outer
    // init did not die while it was off (`alive` is close-on-exec: the command never sees it).
    sys::kill_me_with_parent().map_err(fail("prctl"))?;
    if sys::peer_closed(alive.as_fd()) {
        std::process::exit(i32::from(PARENT_GONE));
    }
    let program = spec.argv.first().map(String::as_str).unwrap_or_default();
    let exe = find_executable(program, &path_var)?;
    sys::reset_signals();
    sys::cloexec_from(3).map_err(fail("close inherited fds"))?;
    let err = sys::execve(&exe, &argv, &envp);
    let mut message = format!("exec {program}: {err}");
    if err.raw_os_error() == Some(libc::ENOEXEC) {
        let path = Path::new(OsStr::from_bytes(exe.as_bytes()));
        if let Err(e) = crate::arch::ensure_binary_runnable(path, Path::new("/proc/sys/fs/binfmt_misc")) {
            message = format!("{message}: {e}");
        }
    }
    Err(Failure { stage: "exec", message })
}

fn show_limit(v: u64) -> String {
    if v == crate::spec::Rlimit::INFINITY {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

/// `base` (an `/etc/hosts`) with one `IP<TAB>NAME` line per entry after it.
fn hosts_with(mut base: Vec<u8>, extra: &[HostEntry]) -> Vec<u8> {
    if !base.is_empty() && !base.ends_with(b"\n") {
        base.push(b'\n');
    }
    for h in extra {
        base.extend_from_slice(format!("{}\t{}\n", h.ip, h.name).as_bytes());
    }
    base
}

pub(crate) fn read_optional(path: &str) -> Result<Option<String>, Failure> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure { stage: "read the image's user database", message: format!("{path}: {e}") }),
    }
}

/// Creates missing components of the working dir, each owned by the user, as BuildKit's
/// executor does (`MkdirAllAndChown`); existing components are left alone.
pub(crate) fn make_workdir(workdir: &Path, uid: u32, gid: u32) -> Result<(), Failure> {
    let mut cur = PathBuf::from("/");
    for c in workdir.components().skip(1) {
        cur.push(c);
        match std::fs::metadata(&cur) {
            Ok(md) if md.is_dir() => continue,
            Ok(_) => {
                return Err(Failure {
                    stage: "create the working directory",
                    message: format!("{} exists and is not a directory", cur.display()),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Failure { stage: "create the working directory", message: format!("{}: {e}", cur.display()) }),
        }
        let made = std::fs::create_dir(&cur).and_then(|()| std::os::unix::fs::lchown(&cur, Some(uid), Some(gid)));
        made.map_err(|e| Failure { stage: "create the working directory", message: format!("{}: {e}", cur.display()) })?;
    }
    Ok(())
}

pub(crate) fn find_executable(program: &str, path_var: &str) -> Result<CString, Failure> {
    let not_found = |detail: String| Failure { stage: "exec", message: detail };
    let to_c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
    if program.is_empty() {
        return Err(not_found("empty command".into()));
    }
    if program.contains('/') {
        return to_c(Path::new(program)).ok_or_else(|| not_found(format!("bad path {program:?}")));
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        let Ok(md) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
            continue;
        }
        if let Some(c) = to_c(&candidate) {
            if sys::can_execute(&c) {
                return Ok(c);
            }
        }
    }
    Err(not_found(format!("exec: \"{program}\": executable file not found in $PATH ({path_var})")))
}

/// Lexically normalised absolute path (`.` dropped, `..` popped, never above `/`). Symlinks are
/// resolved later, by the kernel, inside the root.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Dir,
    File,
}

/// Builds the mounts under the root before the pivot. Targets are resolved with
/// `openat2(RESOLVE_IN_ROOT)` and mounted through `/proc/self/fd/N`, so a symlink in the image
/// can never redirect a mount onto the host. Each path it creates is reported at once.
struct Mounter<'a> {
    root_fd: Option<OwnedFd>,
    root_host: PathBuf,
    report: &'a File,
}

const SYMLINK_LIMIT: u32 = 40;

impl Mounter<'_> {
    fn root(&self) -> io::Result<BorrowedFd<'_>> {
        self.root_fd.as_ref().map(|f| f.as_fd()).ok_or_else(|| io::Error::other("root not open"))
    }

    /// The path of an fd, as seen from inside the root.
    fn inner_path(&self, fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
        let host = std::fs::read_link(sys::fd_path(fd))?;
        let rel =
            host.strip_prefix(&self.root_host).map_err(|_| io::Error::other(format!("{} resolved outside the root", host.display())))?;
        Ok(Path::new("/").join(rel))
    }

    /// Opens (`O_PATH`) the mount target, creating it and missing parents when absent, and
    /// recording everything created.
    fn ensure(&mut self, target: &Path, kind: Kind, depth: u32) -> io::Result<OwnedFd> {
        if depth > SYMLINK_LIMIT {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let rel = normalize(target);
        match sys::open_in_root(self.root()?, &rel) {
            Ok(fd) => {
                let st = sys::lstatat(fd.as_fd(), OsStr::new(""))?;
                return match (kind, st.is_dir()) {
                    (Kind::Dir, false) => {
                        Err(io::Error::other(format!("mount target {} exists in the image and is not a directory", rel.display())))
                    }
                    (Kind::File, true) => Err(io::Error::other(format!(
                        "mount target {} exists in the image and is a directory, but the source is a file",
                        rel.display()
                    ))),
                    _ => Ok(fd),
                };
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", rel.display()))),
        }
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(io::Error::other("cannot mount over the root itself"));
        };
        let pfd = self.ensure(parent, Kind::Dir, depth + 1)?;
        match sys::lstatat(pfd.as_fd(), name) {
            Ok(st) if st.is_symlink() => {
                // A dangling symlink (e.g. /etc/resolv.conf -> /run/systemd/...): create what it
                // points at, as runc does, still inside the root.
                let link = std::fs::read_link(sys::fd_path(pfd.as_fd()).join(name))?;
                let next = self.inner_path(pfd.as_fd())?.join(link);
                return self.ensure(&next, kind, depth + 1);
            }
            Ok(_) => return Err(io::Error::other(format!("{} exists but cannot be opened", rel.display()))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let before = sys::lstatat(pfd.as_fd(), OsStr::new(""))?;
        match kind {
            Kind::Dir => sys::mkdirat(pfd.as_fd(), name, 0o755)?,
            Kind::File => {
                sys::openat(pfd.as_fd(), name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644)?;
            }
        }
        let after = sys::lstatat(pfd.as_fd(), OsStr::new(""))?;
        let path = self.inner_path(pfd.as_fd())?.join(name);
        // Now rather than after setup: when a cancelled run kills us half-way through it, the
        // caller still knows what to remove.
        let created = CreatedPath {
            path,
            is_dir: kind == Kind::Dir,
            parent_times_before: (before.atime, before.mtime),
            parent_mtime_after: after.mtime,
        };
        send(self.report, &Report::Created(vec![created]));
        let dir_flag = if kind == Kind::Dir { libc::O_DIRECTORY } else { 0 };
        sys::openat(pfd.as_fd(), name, libc::O_PATH | dir_flag, 0)
    }

    /// Re-resolves a target after mounting on it, to reach the new mount rather than the
    /// directory underneath.
    fn reopen(&self, target: &Path) -> io::Result<OwnedFd> {
        sys::open_in_root(self.root()?, &normalize(target))
    }

    fn mount_fs(&mut self, target: &str, fstype: &str, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
        let fd = self.ensure(Path::new(target), Kind::Dir, 0)?;
        sys::mount(Some(Path::new(fstype)), &sys::fd_path(fd.as_fd()), Some(fstype), flags, data)
            .map_err(|e| io::Error::new(e.kind(), format!("mount {fstype} on {target}: {e}")))
    }

    fn mount_proc(&mut self) -> Result<(), Failure> {
        self.mount_fs("/proc", "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None).map_err(fail("mount /proc"))
    }

    fn mount_sys(&mut self) -> Result<(), Failure> {
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        match self.mount_fs("/sys", "sysfs", flags, None) {
            Ok(()) => Ok(()),
            // Some hosts refuse a fresh sysfs (e.g. inside another container); the host's,
            // read-only, is what Docker falls back to as well.
            Err(_) => self.bind(Path::new("/sys"), Path::new("/sys"), true, Kind::Dir).map_err(fail("mount /sys")),
        }
    }

    fn mount_dev(&mut self, shm_size: Option<u64>) -> Result<(), Failure> {
        self.mount_dev_inner(shm_size).map_err(fail("set up /dev"))
    }

    fn mount_dev_inner(&mut self, shm_size: Option<u64>) -> io::Result<()> {
        self.mount_fs("/dev", "tmpfs", libc::MS_NOSUID | libc::MS_STRICTATIME, Some("mode=755,size=65536k"))?;
        let dev = self.reopen(Path::new("/dev"))?;
        let d = dev.as_fd();
        // Device nodes must be world-usable whatever the umask; restore Docker's 022 after.
        sys::umask(0);
        let made = Self::make_nodes(d);
        sys::umask(0o022);
        made?;
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            sys::symlinkat(OsStr::new(target), d, OsStr::new(link))?;
        }
        sys::mkdirat(d, OsStr::new("pts"), 0o755)?;
        let pts = sys::openat(d, OsStr::new("pts"), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let devpts = |data: &str| {
            sys::mount(Some(Path::new("devpts")), &sys::fd_path(pts.as_fd()), Some("devpts"), libc::MS_NOSUID | libc::MS_NOEXEC, Some(data))
        };
        match devpts("newinstance,ptmxmode=0666,mode=0620,gid=5") {
            // gid 5 (tty) is not mapped in a user namespace that maps one id (rootless, no range).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => devpts("newinstance,ptmxmode=0666,mode=0620")?,
            other => other?,
        }
        sys::mkdirat(d, OsStr::new("shm"), 0o1777)?;
        let shm = sys::openat(d, OsStr::new("shm"), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        sys::mount(
            Some(Path::new("shm")),
            &sys::fd_path(shm.as_fd()),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(&format!("mode=1777,size={}", shm_size.map_or_else(|| "65536k".to_string(), |n| n.to_string()))),
        )?;
        Ok(())
    }

    fn make_nodes(d: BorrowedFd<'_>) -> io::Result<()> {
        for (name, major, minor) in [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)] {
            match sys::mknod_char(d, OsStr::new(name), 0o666, major, minor) {
                Ok(()) => {}
                // Root of a user namespace (kiln rootless) may not make device nodes: bind the
                // host's over an empty file instead, as rootless Podman does. Our /dev tmpfs is
                // nodev there anyway; a bind keeps the host mount's own flags.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    drop(sys::openat(d, OsStr::new(name), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o666)?);
                    let target = sys::openat(d, OsStr::new(name), libc::O_PATH, 0)?;
                    let host = Path::new("/dev").join(name);
                    sys::mount(Some(&host), &sys::fd_path(target.as_fd()), None, libc::MS_BIND, None).map_err(|e| {
                        io::Error::new(e.kind(), format!("bind the host's {} (no mknod in a user namespace): {e}", host.display()))
                    })?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn bind(&mut self, source: &Path, target: &Path, readonly: bool, kind: Kind) -> io::Result<()> {
        let fd = self.ensure(target, kind, 0)?;
        sys::mount(Some(source), &sys::fd_path(fd.as_fd()), None, libc::MS_BIND | libc::MS_REC, None)?;
        if readonly {
            self.remount_ro(target, 0)?;
        }
        Ok(())
    }

    fn remount_ro(&self, target: &Path, extra: libc::c_ulong) -> io::Result<()> {
        let fd = self.reopen(target)?;
        let path = sys::fd_path(fd.as_fd());
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | extra;
        match sys::mount(None, &path, None, flags, None) {
            // In a user namespace (kiln rootless) the flags of a mount inherited from the host
            // (nosuid, nodev, noexec, atime) are locked: a remount must keep them.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => sys::mount(None, &path, None, flags | sys::mount_flags(&path)?, None),
            other => other,
        }
    }

    fn step_mount(&mut self, index: usize, m: &Mount) -> io::Result<()> {
        let target = m.target();
        match m {
            Mount::Bind { source, readonly, .. } => {
                let kind = if std::fs::metadata(source)?.is_dir() { Kind::Dir } else { Kind::File };
                self.bind(source, &target, *readonly, kind)
            }
            Mount::Cache { source, .. } => self.bind(source, &target, false, Kind::Dir),
            Mount::Tmpfs { size_bytes, .. } => {
                let fd = self.ensure(&target, Kind::Dir, 0)?;
                let data = match size_bytes {
                    Some(n) => format!("mode=1777,size={n}"),
                    None => "mode=1777".to_string(),
                };
                sys::mount(
                    Some(Path::new("tmpfs")),
                    &sys::fd_path(fd.as_fd()),
                    Some("tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    Some(&data),
                )
            }
            Mount::Secret { source, mode, uid, gid, .. } => {
                let content = match source {
                    SecretSource::File(path) => std::fs::read(path)?,
                    SecretSource::Value(v) => v.as_bytes().to_vec(),
                };
                let extra = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                self.bind_content(&format!(".kiln-secret-{index}"), &content, &target, mode.unwrap_or(0o400), *uid, *gid, extra)
            }
            // Read-only: connecting to a socket is not a write to the mount, and nothing else
            // should be done to it. The socket's owner and mode are the caller's to set.
            Mount::Ssh { socket, .. } => {
                self.bind(socket, &target, false, Kind::File)?;
                self.remount_ro(&target, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC)
            }
        }
    }

    /// Stages `content` in our private /dev tmpfs (it never touches the root's disk), binds the
    /// staged file read-only at `target`, then unlinks the staging name: the mount keeps the
    /// inode alive and /dev shows nothing.
    #[allow(clippy::too_many_arguments)]
    fn bind_content(
        &mut self,
        staging: &str,
        content: &[u8],
        target: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
        extra: libc::c_ulong,
    ) -> io::Result<()> {
        let dev = self.reopen(Path::new("/dev"))?;
        let staged = File::from(sys::openat(dev.as_fd(), OsStr::new(staging), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600)?);
        (&staged).write_all(content)?;
        std::os::unix::fs::fchown(&staged, Some(uid), Some(gid))?;
        staged.set_permissions(PermissionsExt::from_mode(mode))?;
        let bound = self.bind(&sys::fd_path(staged.as_fd()), target, false, Kind::File);
        let removed = sys::unlinkat(dev.as_fd(), OsStr::new(staging), false);
        bound?;
        removed?;
        self.remount_ro(target, extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts_follow_the_hosts_file_one_line_each() {
        let extra = [HostEntry { name: "db".into(), ip: "10.0.0.5".into() }, HostEntry { name: "v6".into(), ip: "::1".into() }];
        assert_eq!(hosts_with(b"127.0.0.1 localhost".to_vec(), &extra), b"127.0.0.1 localhost\n10.0.0.5\tdb\n::1\tv6\n");
        assert_eq!(hosts_with(b"a\n".to_vec(), &extra[..1]), b"a\n10.0.0.5\tdb\n");
        assert_eq!(hosts_with(Vec::new(), &extra[..1]), b"10.0.0.5\tdb\n");
        assert_eq!(show_limit(crate::spec::Rlimit::INFINITY), "unlimited");
    }

    #[test]
    fn normalize_never_climbs_above_root() {
        assert_eq!(normalize(Path::new("/a/../../b/./c")), PathBuf::from("/b/c"));
        assert_eq!(normalize(Path::new("rel/x")), PathBuf::from("/rel/x"));
        assert_eq!(normalize(Path::new("/..")), PathBuf::from("/"));
    }

    #[test]
    fn executable_lookup_uses_the_given_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, PermissionsExt::from_mode(0o755)).unwrap();
        let plain = dir.path().join("data");
        std::fs::write(&plain, "x").unwrap();
        let path_var = format!("/nonexistent:{}", dir.path().display());
        let found = find_executable("tool", &path_var).ok().unwrap();
        assert_eq!(found.as_bytes(), exe.as_os_str().as_bytes());
        let missing = find_executable("data", &path_var).err().unwrap();
        assert!(missing.message.contains("not found in $PATH"), "{}", missing.message);
        assert!(find_executable("/abs/x", "").is_ok());
        assert!(find_executable("", DEFAULT_PATH).is_err());
    }
}
