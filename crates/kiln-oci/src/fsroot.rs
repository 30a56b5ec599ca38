//! The one way kiln names a path inside a root file system.
//!
//! [`RootDir::resolve`] walks a path one component at a time from a directory fd of the root, with
//! `lstat`-style checks at each step (the `openat` / `O_NOFOLLOW` model of cap-std and runc's
//! `securejoin`):
//!
//! * `..` pops one level and, at the root, stays at the root (the path is evaluated as if the root were
//!   `/`, i.e. as a chroot would see it);
//! * a symlink met on the way is read and its target spliced in: relative targets continue from the
//!   link's directory, absolute targets restart at the *root* (re-rooted), never at the host's `/`;
//! * every directory is entered with `openat(O_DIRECTORY | O_NOFOLLOW)` from the fd of its parent, so
//!   what was checked is what is used;
//! * the final component is returned as (parent fd, name) and is only followed on request; callers
//!   create, replace and link with the `*at` calls on that pair, which never follow a final symlink.
//!
//! The result is *confinement*: a symlink that points outside the root is treated as pointing at the
//! same path inside it, so writing "through" it lands inside the root. Archive entry names are checked
//! before that (see `layer`): a name whose `..` would climb above the root is *refused*.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Symlinks followed in one resolution before giving up (Linux's own limit).
const MAX_SYMLINKS: u32 = 40;

/// Errors from resolving inside a root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{op} {path:?} inside {root}: {source}")]
    Io {
        op: &'static str,
        root: PathBuf,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("resolving {path:?} inside {root}: too many levels of symbolic links")]
    Loop { root: PathBuf, path: String },
    #[error("resolving {path:?} inside {root}: {component:?} is not a directory")]
    NotADirectory { root: PathBuf, path: String, component: String },
}

/// A root directory held open by fd.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// A resolved path: the directory that holds it (open) and its final name. `name` is `None` when the
/// path is the root itself or ended in a symlink/`..` that was followed to a directory.
#[derive(Debug)]
pub struct Resolved {
    pub dir: OwnedFd,
    pub name: Option<OsString>,
    /// Host path of `dir` joined with `name` (for messages and for path-based callers).
    pub host_path: PathBuf,
}

impl Resolved {
    /// The name, or `.` for the directory itself (valid for `*at` calls).
    pub fn name_or_dot(&self) -> &OsStr {
        self.name.as_deref().unwrap_or(OsStr::new("."))
    }
}

/// How to treat missing intermediate directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Fail with `NotFound`.
    Fail,
    /// Create them (mode 0755), as `tar` does for entries whose parents are absent.
    Create,
}

impl RootDir {
    /// Opens `path` as a root.
    pub fn open(path: &Path) -> Result<RootDir, RootError> {
        let fd = rustix::fs::open(path, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| RootError::Io { op: "open root", root: path.to_path_buf(), path: String::new(), source: e.into() })?;
        Ok(RootDir { fd, path: path.to_path_buf() })
    }

    /// The root's host path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root's fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Resolves `path` (absolute or relative, both taken from the root) inside the root. With
    /// `follow_final`, a final symlink is followed too (within the root).
    pub fn resolve(&self, path: &Path, follow_final: bool, missing: Missing) -> Result<Resolved, RootError> {
        let shown = path.to_string_lossy().into_owned();
        let mut pending: Vec<OsString> = Vec::new(); // reversed: last element is next
        push_components(&mut pending, path.as_os_str().as_bytes());
        let mut stack: Vec<(OwnedFd, OsString)> = Vec::new();
        let mut hops = 0;
        let io_err = |op, e: rustix::io::Errno| RootError::Io { op, root: self.path.clone(), path: shown.clone(), source: e.into() };
        while let Some(comp) = pending.pop() {
            if comp == ".." {
                stack.pop();
                continue;
            }
            let is_last = pending.is_empty();
            if is_last && !follow_final {
                return self.finish(stack, Some(comp));
            }
            let cur = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(self.fd.as_fd());
            let st = match rustix::fs::statat(cur, &comp, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) if is_last => return self.finish(stack, Some(comp)),
                Err(rustix::io::Errno::NOENT) if missing == Missing::Create => {
                    match rustix::fs::mkdirat(cur, &comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_err("create directory", e)),
                    }
                    pending.push(comp);
                    continue;
                }
                Err(e) => return Err(io_err("stat", e)),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(RootError::Loop { root: self.path.clone(), path: shown });
                    }
                    let target = rustix::fs::readlinkat(cur, &comp, Vec::new()).map_err(|e| io_err("read link", e))?;
                    let target = target.as_bytes();
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    push_components(&mut pending, target);
                }
                FileType::Directory => {
                    let fd = rustix::fs::openat(
                        cur,
                        &comp,
                        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_err("open directory", e))?;
                    stack.push((fd, comp));
                }
                _ if is_last => return self.finish(stack, Some(comp)),
                _ => {
                    return Err(RootError::NotADirectory {
                        root: self.path.clone(),
                        path: shown,
                        component: comp.to_string_lossy().into_owned(),
                    })
                }
            }
        }
        self.finish(stack, None)
    }

    fn finish(&self, mut stack: Vec<(OwnedFd, OsString)>, name: Option<OsString>) -> Result<Resolved, RootError> {
        let mut host_path = self.path.clone();
        for (_, n) in &stack {
            host_path.push(n);
        }
        if let Some(n) = &name {
            host_path.push(n);
        }
        let dir = match stack.pop() {
            Some((fd, _)) => fd,
            None => self.fd.try_clone().map_err(|e| RootError::Io {
                op: "duplicate root fd",
                root: self.path.clone(),
                path: String::new(),
                source: e,
            })?,
        };
        Ok(Resolved { dir, name, host_path })
    }
}

/// Pushes the components of `path` onto a reversed stack, dropping empty and `.` components.
fn push_components(pending: &mut Vec<OsString>, path: &[u8]) {
    let comps: Vec<&[u8]> = path.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".").collect();
    for c in comps.into_iter().rev() {
        pending.push(OsStr::from_bytes(c).to_os_string());
    }
}

/// Joins `path` onto `root` so that the result never leaves `root` (symlinks followed within the root,
/// `..` stopped at the root, absolute links re-rooted). For COPY/ADD-style callers that need a host path;
/// prefer [`RootDir::resolve`] and the `*at` calls where possible, since a path can be raced.
pub fn safe_join(root: &Path, path: &Path, follow_final: bool) -> Result<PathBuf, RootError> {
    Ok(RootDir::open(root)?.resolve(path, follow_final, Missing::Fail)?.host_path)
}

/// Splits an archive entry name into components, refusing a `..` that would climb above the root.
/// Leading `/` is dropped (absolute names are re-rooted). Returns `None` if the name escapes.
pub fn normalize_entry_name(name: &[u8]) -> Option<Vec<OsString>> {
    let mut out: Vec<OsString> = Vec::new();
    for c in Path::new(OsStr::from_bytes(name)).components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::Normal(n) => out.push(n.to_os_string()),
        }
    }
    Some(out)
}

/// Removes `name` in `dir` and everything below it, never following symlinks.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into);
    }
    clear_dir_at(dir, name, &|_| true)?;
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(Into::into)
}

/// Removes the children of directory `name` in `dir` for which `remove` returns true (it gets the
/// child's name), never following symlinks.
pub fn clear_dir_at(dir: BorrowedFd<'_>, name: &OsStr, remove: &dyn Fn(&OsStr) -> bool) -> io::Result<()> {
    let fd = rustix::fs::openat(dir, name, OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut names = Vec::new();
    let mut d = rustix::fs::Dir::read_from(&fd)?;
    while let Some(entry) = d.read() {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(n).to_os_string());
    }
    for n in names {
        if remove(&n) {
            remove_all_at(fd.as_fd(), &n)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolution_stays_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/", root.join("slash")).unwrap();
        symlink("../../../../etc", root.join("a/up")).unwrap();
        symlink("/a/b", root.join("abs")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let r = RootDir::open(&root).unwrap();
        let j = |p: &str, f| r.resolve(Path::new(p), f, Missing::Fail).map(|x| x.host_path);
        assert_eq!(j("../../x", false).unwrap(), root.join("x"));
        assert_eq!(j("/a/b/c", false).unwrap(), root.join("a/b/c"));
        assert_eq!(j("slash/etc/passwd", false).unwrap(), root.join("etc/passwd"));
        assert_eq!(j("a/up/passwd", false).unwrap(), root.join("etc/passwd"));
        assert_eq!(j("abs/x", false).unwrap(), root.join("a/b/x"));
        assert_eq!(j("abs", true).unwrap(), root.join("a/b"));
        assert_eq!(j("abs", false).unwrap(), root.join("abs"));
        assert!(matches!(j("loop1/x", false), Err(RootError::Loop { .. })));
        assert_eq!(safe_join(&root, Path::new("slash/.."), true).unwrap(), root);
        // Missing intermediate directories are an error unless creation is asked for.
        assert!(j("nope/x", false).is_err());
        let created = r.resolve(Path::new("slash/new/dir/f"), false, Missing::Create).unwrap();
        assert_eq!(created.host_path, root.join("new/dir/f"));
        assert!(root.join("new/dir").is_dir());
    }

    #[test]
    fn entry_names_that_climb_out_are_refused() {
        assert!(normalize_entry_name(b"../x").is_none());
        assert!(normalize_entry_name(b"a/../../x").is_none());
        assert_eq!(normalize_entry_name(b"/etc/./passwd").unwrap(), vec![OsString::from("etc"), OsString::from("passwd")]);
        assert_eq!(normalize_entry_name(b"a/b/../c").unwrap(), vec![OsString::from("a"), OsString::from("c")]);
        assert!(normalize_entry_name(b"./").unwrap().is_empty());
    }
}
