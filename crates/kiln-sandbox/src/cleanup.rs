//! Removing the mount points the sandbox created in the root, so they do not end up in a layer.
//!
//! Like BuildKit's "mount stub cleaner": only what the sandbox created is removed, and only if it
//! is still an empty directory or an empty regular file. The walk opens each component with
//! `O_NOFOLLOW`, so a step that swapped a created directory for a symlink cannot make kiln
//! delete anything outside the root. The parent directory's times are put back when nothing
//! but the sandbox touched it, so an otherwise unchanged directory looks unchanged to the
//! layer differ.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::protocol::CreatedPath;
use crate::sys;

/// What happened to one mount point the sandbox created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Absolute path inside the root.
    pub path: PathBuf,
    pub is_dir: bool,
    /// False when it was left in place: the step wrote into it, replaced it, or removal failed.
    pub removed: bool,
}

/// Removes `created` (children first) under `root`.
pub fn remove_created(root: &Path, created: &[CreatedPath]) -> Vec<MountPoint> {
    let mut out: Vec<MountPoint> = created
        .iter()
        .rev()
        .map(|c| {
            let removed = match remove_one(root, c) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(path = %c.path.display(), error = %e, "could not remove a sandbox mount point");
                    false
                }
            };
            MountPoint { path: c.path.clone(), is_dir: c.is_dir, removed }
        })
        .collect();
    out.reverse();
    out
}

fn remove_one(root: &Path, c: &CreatedPath) -> io::Result<bool> {
    let mut names: Vec<&OsStr> = Vec::new();
    for comp in c.path.components() {
        match comp {
            Component::RootDir => {}
            Component::Normal(n) => names.push(n),
            _ => return Ok(false),
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return Ok(false);
    };
    let mut dir: OwnedFd = File::open(root)?.into();
    for name in dirs {
        dir = match sys::openat(dir.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            Ok(fd) => fd,
            // Gone (or replaced by a non-directory): nothing of ours is left to remove there.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
            Err(e) => return Err(e),
        };
    }
    let st = match sys::lstatat(dir.as_fd(), last) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
        Err(e) => return Err(e),
    };
    let is_reg = st.mode & libc::S_IFMT == libc::S_IFREG;
    if c.is_dir != st.is_dir() || (!c.is_dir && (!is_reg || st.size != 0)) {
        return Ok(false);
    }
    let parent = sys::lstatat(dir.as_fd(), OsStr::new(""))?;
    match sys::unlinkat(dir.as_fd(), last, c.is_dir) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => return Ok(false),
        Err(e) => return Err(e),
    }
    let (atime, mtime) = if parent.mtime == c.parent_mtime_after { c.parent_times_before } else { (parent.atime, parent.mtime) };
    sys::futimens(dir.as_fd(), atime, mtime)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn created(root: &Path, rel: &str, is_dir: bool) -> CreatedPath {
        let parent = root.join(rel.trim_start_matches('/')).parent().unwrap().to_path_buf();
        let f = File::open(&parent).unwrap();
        let before = sys::lstatat(f.as_fd(), OsStr::new("")).unwrap();
        let p = root.join(rel.trim_start_matches('/'));
        if is_dir {
            std::fs::create_dir(&p).unwrap();
        } else {
            std::fs::write(&p, "").unwrap();
        }
        let after = sys::lstatat(f.as_fd(), OsStr::new("")).unwrap();
        CreatedPath { path: PathBuf::from(rel), is_dir, parent_times_before: (before.atime, before.mtime), parent_mtime_after: after.mtime }
    }

    #[test]
    fn removes_empty_stubs_and_restores_parent_mtime() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        // A fixed, old mtime on etc so that a change is visible whatever the clock resolution.
        let etc = File::open(root.join("etc")).unwrap();
        sys::futimens(etc.as_fd(), (1000, 0), (1000, 0)).unwrap();
        let list = vec![
            created(root, "/etc/hosts", false),
            created(root, "/run", true),
            created(root, "/run/secrets", true),
            created(root, "/run/secrets/tok", false),
        ];
        let out = remove_created(root, &list);
        assert!(out.iter().all(|m| m.removed), "{out:?}");
        assert!(!root.join("run").exists());
        assert!(!root.join("etc/hosts").exists());
        assert_eq!(std::fs::metadata(root.join("etc")).unwrap().mtime(), 1000);
    }

    #[test]
    fn keeps_what_the_step_filled() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let list = vec![created(root, "/data", true), created(root, "/stub", false)];
        std::fs::write(root.join("data/file"), "x").unwrap();
        std::fs::write(root.join("stub"), "written").unwrap();
        let out = remove_created(root, &list);
        assert_eq!(out.iter().map(|m| m.removed).collect::<Vec<_>>(), vec![false, false]);
        assert!(root.join("data/file").exists() && root.join("stub").exists());
    }

    #[test]
    fn never_follows_a_symlink_swapped_in() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("victim")).unwrap();
        let root = d.path();
        let list = vec![created(root, "/run", true), created(root, "/run/victim", true)];
        // The step replaces /run with a symlink pointing outside the root.
        std::fs::remove_dir(root.join("run/victim")).unwrap();
        std::fs::remove_dir(root.join("run")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("run")).unwrap();
        let out = remove_created(root, &list);
        assert!(outside.path().join("victim").exists(), "followed a symlink out of the root");
        assert!(out.iter().all(|m| !m.removed), "{out:?}");
        assert!(root.join("run").symlink_metadata().unwrap().file_type().is_symlink());
    }
}
