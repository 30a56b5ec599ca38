//! Landlock for `--isolation none`: keeping a step's command off kiln's own files.
//!
//! # What Landlock can say, and what kiln asks
//!
//! A Landlock ruleset names the access rights it *handles*; every handled right is then denied
//! unless a rule grants it on a directory (or file), and a right granted on a directory reaches
//! everything below it, including what is created there later. There are no deny rules. So
//! "write anywhere but in `/kiln`" cannot be said as such: any right granted on `/` reaches
//! `/kiln` too.
//!
//! kiln handles only the rights that change the file system (write, truncate, remove, make any
//! kind of entry, and refer: rename or link across directories); reading and executing are never
//! restricted. Then, for the protected paths (kiln's binary, its root with the store, cache and
//! snapshots, the build context):
//! * every directory that is *not* on the way to a protected path, in `/` and in each directory
//!   on the way, gets every handled right: the command can do anything there, as in a sandbox;
//! * the directories *on* the way (`/` itself, and e.g. `/var/lib` for a root in `/var/lib/kiln`)
//!   get the rights that cannot destroy what is already there: make entries, write to files,
//!   remove empty directories, and refer (hard links across directories: Landlock itself refuses
//!   a link or rename whose destination would give the file rights it lacks where it is, so a
//!   kiln file cannot be linked out to a directory where it could be removed). These reach kiln's
//!   files too (inheritance), so that is what a command can still do to them: create new files
//!   beside them, write into existing ones in place, and remove kiln's *empty* directories
//!   (`rm -r /root` needs the right to remove a directory in `/`, and that right reaches down;
//!   kiln makes the directories it needs again before use). It cannot remove, rename or (ABI 3
//!   and later) truncate kiln's files, so no directory that holds one can go. A blob written over in place is caught when it is read: layers are
//!   applied with their diff id checked.
//! * the price, for a command: in a directory it creates directly in `/` (or in another
//!   directory on the way), it can make and write files, but not remove or rename them, until the
//!   next step, when that directory exists and gets the full rights. `RUN mkdir /a && touch /a/x
//!   && rm /a/x` fails; split the `rm` into its own step, or keep kiln's files in a directory of
//!   their own beside the others (a top-level `/kiln`, the usual container layout), which changes
//!   nothing for `/`.
//!
//! The ruleset is made in kiln before the fork; the child only calls `prctl(PR_SET_NO_NEW_PRIVS)`
//! (Landlock's condition without `CAP_SYS_ADMIN`; it also keeps setuid binaries in the step from
//! gaining privileges) and `landlock_restrict_self`. Where the kernel lacks Landlock, or a seccomp
//! profile refuses its system calls, commands run unconfined and [`abi`] says why.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const WRITE_FILE: u64 = 1 << 1;
const REMOVE_DIR: u64 = 1 << 4;
const REMOVE_FILE: u64 = 1 << 5;
/// MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM.
const MAKE_ANY: u64 = 0b111_1111 << 6;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
/// What the directories on the way to a protected path get (see the module doc).
const ON_THE_WAY: u64 = MAKE_ANY | WRITE_FILE | REMOVE_DIR | REFER;
/// The rights that make sense on a file (not a directory) rule.
const FILE_RIGHTS: u64 = WRITE_FILE | TRUNCATE;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version of the running kernel, or why there is none.
pub fn abi() -> Result<u32, String> {
    // SAFETY: the documented probe: NULL attribute, size 0, the version flag.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<RulesetAttr>(), 0usize, CREATE_RULESET_VERSION) };
    if v >= 1 {
        return Ok(v as u32);
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no Landlock (ENOSYS)".to_string(),
        Some(libc::EOPNOTSUPP) => "Landlock is built in but not enabled (add it to the lsm= boot parameter)".to_string(),
        Some(libc::EPERM) => "a seccomp profile refuses the Landlock system calls".to_string(),
        _ => format!("landlock_create_ruleset: {e}"),
    })
}

/// The rights kiln handles on this ABI.
fn handled(abi: u32) -> u64 {
    let mut h = WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_ANY;
    if abi >= 2 {
        h |= REFER;
    }
    if abi >= 3 {
        h |= TRUNCATE;
    }
    h
}

/// What one rule grants: a path and its rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub path: PathBuf,
    pub rights: u64,
    pub is_dir: bool,
}

/// The rules for `protect` (see the module doc), from what is on disk now.
pub(crate) fn grants(protect: &[PathBuf], all: u64) -> io::Result<Vec<Grant>> {
    let protect: Vec<PathBuf> = protect.iter().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())).collect();
    let on_the_way = |d: &Path| protect.iter().any(|p| p != d && p.starts_with(d));
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/")];
    while let Some(dir) = stack.pop() {
        out.push(Grant { path: dir.clone(), rights: all & ON_THE_WAY, is_dir: true });
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if protect.contains(&path) {
                continue;
            }
            let md = std::fs::symlink_metadata(&path)?;
            if md.is_dir() && on_the_way(&path) {
                stack.push(path);
            } else if md.is_dir() {
                out.push(Grant { path, rights: all, is_dir: true });
            } else if !md.file_type().is_symlink() {
                out.push(Grant { path, rights: all & FILE_RIGHTS, is_dir: false });
            }
        }
    }
    Ok(out)
}

/// A ruleset fd for `protect`, or `None` where Landlock is unavailable (or nothing is protected).
pub(crate) fn ruleset(protect: &[PathBuf]) -> io::Result<Option<OwnedFd>> {
    let Ok(abi) = abi() else { return Ok(None) };
    if protect.is_empty() {
        return Ok(None);
    }
    let all = handled(abi);
    let attr = RulesetAttr { handled_access_fs: all };
    // SAFETY: a live attribute struct and its size.
    let fd =
        unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, std::mem::size_of::<RulesetAttr>(), 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor (close-on-exec) and nothing else owns it.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    for g in grants(protect, all)? {
        if g.rights == 0 {
            continue;
        }
        let c = CString::new(g.path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: a valid C string; O_PATH opens without reading.
        let pfd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
        if pfd < 0 {
            // Gone since it was listed (a racing step), or not openable: nothing to grant.
            continue;
        }
        // SAFETY: just opened, owned here.
        let pfd = unsafe { OwnedFd::from_raw_fd(pfd) };
        let rule = PathBeneathAttr { allowed_access: g.rights, parent_fd: std::os::fd::AsRawFd::as_raw_fd(&pfd) };
        // SAFETY: live ruleset fd and rule struct.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                std::os::fd::AsRawFd::as_raw_fd(&ruleset),
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("landlock_add_rule on {}: {e}", g.path.display())));
        }
    }
    Ok(Some(ruleset))
}

/// In the forked child: confines this process (and what it execs) to the ruleset. Only system
/// calls, as befits a `pre_exec` hook.
pub(crate) fn restrict_self(ruleset: RawFd) -> io::Result<()> {
    // SAFETY: integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: integer arguments.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_rights_beside_the_protected_path_and_safe_ones_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let kiln = dir.path().join("kiln");
        std::fs::create_dir_all(kiln.join("store")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let all = handled(3);
        let g = grants(std::slice::from_ref(&kiln), all).unwrap();
        let of = |p: &Path| g.iter().find(|x| x.path == p).map(|x| x.rights);
        assert_eq!(of(Path::new("/")), Some(ON_THE_WAY));
        assert_eq!(of(&dir.path().canonicalize().unwrap()), Some(ON_THE_WAY));
        assert_eq!(of(&dir.path().canonicalize().unwrap().join("work")), Some(all));
        assert_eq!(of(&kiln.canonicalize().unwrap()), None, "the protected dir gets no rule of its own");
        assert_eq!(of(&kiln.canonicalize().unwrap().join("store")), None, "nor anything below it");
    }

    /// A real ruleset: a command can write beside the protected dir but not remove what is in it.
    #[test]
    fn a_confined_command_cannot_remove_protected_files() {
        if let Err(why) = abi() {
            eprintln!("skipping: no Landlock here: {why}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let kiln = dir.path().join("kiln");
        std::fs::create_dir_all(&kiln).unwrap();
        std::fs::write(kiln.join("blob"), "keep").unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let script = format!(
            "echo new > {w}/f && rm {w}/f && ! rm -f {k}/blob 2>/dev/null && ! mv {k}/blob {w}/b 2>/dev/null && ! ln {k}/blob {w}/l 2>/dev/null && mkdir -p {t}/n/s && echo x > {t}/n/a && ln {t}/n/a {t}/n/s/b && echo ok",
            w = dir.path().join("work").display(),
            k = kiln.display(),
            t = dir.path().display()
        );
        let spec = crate::Spec::new("/", vec!["sh".into(), "-c".into(), script]);
        let mut out = Vec::new();
        let o = crate::direct::Direct::new()
            .protecting(vec![kiln.clone()])
            .run(&spec, &mut |_, l| out.push(String::from_utf8_lossy(l).into_owned()))
            .unwrap();
        assert!(o.success() && out == ["ok"], "{o:?} {out:?}");
        assert_eq!(std::fs::read_to_string(kiln.join("blob")).unwrap(), "keep");
    }
}
