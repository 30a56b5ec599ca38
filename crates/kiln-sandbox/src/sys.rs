//! Every `unsafe` block of the crate lives here, each behind a safe wrapper.
//!
//! The wrappers are thin: they convert Rust paths to C strings, call one libc function or raw
//! syscall, and turn `-1`/`errno` into `io::Error`. The rest of the crate never touches raw
//! pointers. Each `unsafe` block states why it is sound; the common argument is that we pass
//! pointers to live, NUL-terminated buffers that outlive the call, and that the kernel does not
//! keep them.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{:?} contains a NUL byte", s)))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A pipe whose both ends are close-on-exec, so that no unrelated child spawned concurrently by
/// another thread inherits them (which would delay EOF).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Arranges for `fds[i].0` to appear as fd number `fds[i].1` in the spawned child, without the
/// close-on-exec flag, while the parent's copies stay close-on-exec.
pub fn pass_fds(cmd: &mut Command, fds: [(RawFd, RawFd); 2]) {
    // SAFETY: the closure runs between fork and exec in the child; it only calls fcntl and dup2,
    // which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sources out of the way first so that dup2 onto a target cannot clobber a
            // source that happens to already have a target's number.
            let mut moved = [0 as libc::c_int; 2];
            for (i, (src, _)) in fds.iter().enumerate() {
                moved[i] = check(libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 10))?;
            }
            for (i, (_, dst)) in fds.iter().enumerate() {
                check(libc::dup2(moved[i], *dst))?;
            }
            Ok(())
        });
    }
}

/// Marks an fd close-on-exec.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on any integer is memory-safe; a bad fd yields EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(|_| ())
}

/// Takes ownership of an inherited fd number.
///
/// Returns an error when the number is not open, so that a missing fd is reported instead of
/// silently adopting a number that something else will later reuse.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries flags.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the fd is open (checked above) and was handed to this process for it alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes no pointers.
    check(unsafe { libc::unshare(flags) }).map(|_| ())
}

fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

/// fork(2), refused unless the process is single-threaded: after forking a multi-threaded
/// process only async-signal-safe calls are allowed, and the init code allocates freely.
pub fn fork() -> io::Result<Forked> {
    if thread_count() != Some(1) {
        return Err(io::Error::other("fork refused: the sandbox init process must be single-threaded"));
    }
    // SAFETY: the process has exactly one thread (checked above), so the child inherits a
    // consistent heap and may keep running ordinary Rust code.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

pub fn wait_for(pid: libc::pid_t) -> io::Result<Ended> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid writable int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if libc::WIFEXITED(status) {
            return Ok(Ended::Exited(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Ended::Signaled(libc::WTERMSIG(status)));
        }
    }
}

/// Asks the kernel to SIGKILL this process when its parent dies, so that killing the sandbox's
/// init process also tears down the namespace it created.
pub fn kill_me_with_parent() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes an integer argument only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) }).map(|_| ())
}

/// True when the other end of a pipe has been closed (used to detect that the parent died).
pub fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r > 0 && (pfd.revents & (libc::POLLHUP | libc::POLLIN)) != 0
}

/// The parent's pid, or the reaper's once the parent has died (0 when the parent is outside our
/// PID namespace).
pub fn getppid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getppid() }
}

/// `setpgid(0, 0)`: makes this process the leader of a new process group.
pub fn setpgid_self() -> io::Result<()> {
    // SAFETY: integer arguments.
    check(unsafe { libc::setpgid(0, 0) }).map(|_| ())
}

/// kill(2); a process that is already gone is not an error.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments.
    match check(unsafe { libc::kill(pid, sig) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// pidfd_open(2): an fd that refers to this very process (not to whichever later reuses the
/// number), and becomes readable when it exits.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the syscall returned a new fd (close-on-exec) that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until `fd` is readable (or hung up), for at most `timeout`; true when it is.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return true;
        }
        if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() }).map(|_| ())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s live bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(|_| ())
}

pub fn umask(mask: u32) {
    // SAFETY: umask takes an integer and cannot fail.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

pub fn geteuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// mount(2). `target` may be a `/proc/self/fd/N` path, which makes the kernel mount onto the
/// object the fd refers to rather than re-resolving a path that could have been swapped.
pub fn mount(source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
    let source = source.map(|s| cstr(s.as_os_str())).transpose()?;
    let target = cstr(target.as_os_str())?;
    let fstype = fstype.map(|s| cstr(OsStr::new(s))).transpose()?;
    let data = data.map(|s| cstr(OsStr::new(s))).transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a live NUL-terminated string owned above.
    check(unsafe { libc::mount(p(&source), target.as_ptr(), p(&fstype), flags, p(&data).cast()) }).map(|_| ())
}

pub fn umount_detach(target: &Path) -> io::Result<()> {
    let target = cstr(target.as_os_str())?;
    // SAFETY: live NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(|_| ())
}

/// `pivot_root(".", ".")`: the current directory becomes `/`, and the old root ends up stacked
/// on it, to be lazily unmounted by the caller. This avoids needing a `put_old` directory inside
/// the image.
pub fn pivot_root_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: two live NUL-terminated strings.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) }).map(|_| ())
}

pub fn fchdir(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: integer argument.
    check(unsafe { libc::fchdir(fd.as_raw_fd()) }).map(|_| ())
}

/// openat2(2) with `RESOLVE_IN_ROOT`: `path` is resolved as if `dir` were `/`, so neither `..`
/// nor an absolute or relative symlink can lead outside it. Returns an `O_PATH` fd.
pub fn open_in_root(dir: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let path = cstr(path.as_os_str())?;
    let mut how: libc::open_how = open_how_zeroed();
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `path` is a live C string, `how` a live open_how whose size we pass.
    let fd = check_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: the syscall returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn open_how_zeroed() -> libc::open_how {
    // SAFETY: open_how is a plain struct of integers, for which all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// openat(2) of one directory entry, never following a symlink in the last component.
/// The flags of the mount that holds `path` (nosuid, nodev, noexec and the atime ones), as
/// `MS_*` bits: statvfs's `ST_*` values are the same numbers.
pub fn mount_flags(path: &Path) -> io::Result<libc::c_ulong> {
    let p = cstr(path.as_os_str())?;
    // SAFETY: all-zero is a valid statvfs to be overwritten; live C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: live C string and a valid out pointer.
    check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
    let keep = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME | libc::MS_NODIRATIME | libc::MS_RELATIME;
    Ok(st.f_flag & keep)
}

pub fn openat(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: live C string; the mode is passed as the variadic argument openat expects.
    let fd =
        check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, mode as libc::c_uint) })?;
    // SAFETY: new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: live C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

pub fn mknod_char(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let name = cstr(name)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: live C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), libc::S_IFCHR | mode as libc::mode_t, dev) }).map(|_| ())
}

pub fn symlinkat(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let target = cstr(target)?;
    let name = cstr(name)?;
    // SAFETY: two live C strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(|_| ())
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let name = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: live C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(|_| ())
}

/// The subset of stat(2) the crate needs.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub mode: u32,
    pub size: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

impl Stat {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

/// fstatat(2) without following a final symlink; an empty `name` stats `dir` itself (which
/// works on `O_PATH` fds too).
pub fn lstatat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    let cname = cstr(name)?;
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: live C string and a writable stat buffer.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), cname.as_ptr(), &mut st, flags) })?;
    Ok(Stat { mode: st.st_mode, size: st.st_size as u64, atime: (st.st_atime, st.st_atime_nsec), mtime: (st.st_mtime, st.st_mtime_nsec) })
}

/// Sets a directory's access and modification times; `fd` must be a real (non-`O_PATH`) fd.
pub fn futimens(fd: BorrowedFd<'_>, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let times = [
        libc::timespec { tv_sec: atime.0 as libc::time_t, tv_nsec: atime.1 as libc::c_long },
        libc::timespec { tv_sec: mtime.0 as libc::time_t, tv_nsec: mtime.1 as libc::c_long },
    ];
    // SAFETY: a live array of two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(|_| ())
}

/// Brings the loopback interface of the current network namespace up, as `ip link set lo up`
/// would, with the SIOCSIFFLAGS ioctl (no netlink needed for a single flag).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation.
    let sock = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: the fd was just created and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a live ifreq; SIOCGIFFLAGS fills its flags member.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: reading the union member SIOCGIFFLAGS just wrote.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: `req` is a live ifreq with the name and flags set.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// setrlimit(2) for one resource of this process (inherited across fork and exec).
pub fn setrlimit(resource: crate::spec::Resource, soft: u64, hard: u64) -> io::Result<()> {
    use crate::spec::Resource as R;
    let which = match resource {
        R::As => libc::RLIMIT_AS,
        R::Core => libc::RLIMIT_CORE,
        R::Cpu => libc::RLIMIT_CPU,
        R::Data => libc::RLIMIT_DATA,
        R::Fsize => libc::RLIMIT_FSIZE,
        R::Locks => libc::RLIMIT_LOCKS,
        R::Memlock => libc::RLIMIT_MEMLOCK,
        R::Msgqueue => libc::RLIMIT_MSGQUEUE,
        R::Nice => libc::RLIMIT_NICE,
        R::Nofile => libc::RLIMIT_NOFILE,
        R::Nproc => libc::RLIMIT_NPROC,
        R::Rss => libc::RLIMIT_RSS,
        R::Rtprio => libc::RLIMIT_RTPRIO,
        R::Rttime => libc::RLIMIT_RTTIME,
        R::Sigpending => libc::RLIMIT_SIGPENDING,
        R::Stack => libc::RLIMIT_STACK,
    };
    let lim = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: a live rlimit struct, read by the kernel during the call only.
    check(unsafe { libc::setrlimit(which, &lim) }).map(|_| ())
}

/// Switches to the given identity: supplementary groups first (needs root), then the group, then
/// the user, which drops the right to change the other two. `groups` is set exactly as given
/// (the kernel sorts it); [`crate::user::resolve`] already put `gid` in it, as runc is handed
/// it by Docker and BuildKit, so an empty list really means no supplementary group at all.
pub fn set_identity(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: pointer and length describe `groups`.
    if let Err(e) = check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }) {
        // A user namespace that maps one id (kiln rootless without a subgid range) denies
        // setgroups(2) for good; the groups cannot be changed there, only kept.
        let denied = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
        if !(e.raw_os_error() == Some(libc::EPERM) && denied) {
            return Err(e);
        }
    }
    // SAFETY: integer arguments.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: integer arguments.
    check(unsafe { libc::setresuid(uid, uid, uid) })?;
    Ok(())
}

/// Restores default dispositions and an empty signal mask. Dispositions set to "ignore" survive
/// exec, and the Rust runtime ignores SIGPIPE at startup, which would otherwise leak into the
/// command (breaking `yes | head`).
pub fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL is always valid; errors for reserved signals are ignored.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    // SAFETY: all-zero sigset_t then sigemptyset initialises it; a null old-set pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Marks every fd from `first` upwards close-on-exec, so that fds leaked into the init process
/// by whoever started kiln never reach the command.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: integer arguments.
    check_long(unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) })
        .map(|_| ())
}

/// execve(2); only returns on failure.
pub fn execve(path: &CStr, argv: &[CString], env: &[CString]) -> io::Error {
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of pointers to live C strings owned by the caller.
    unsafe {
        libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
    }
    io::Error::last_os_error()
}

/// Whether `path` is executable by the current (already switched) identity.
pub fn can_execute(path: &CStr) -> bool {
    // SAFETY: live C string.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

pub fn fd_path(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
