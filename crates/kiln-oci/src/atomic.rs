//! Replacing a small file atomically: the one way kiln writes a file that a later run reads.
//!
//! The bytes go to a temp file beside the target (same directory, so the rename cannot cross file
//! systems), which is then renamed over the target: a reader sees the old file or the new one,
//! never a half-written one, even if kiln dies mid-write. What a crash (of the machine, not of
//! kiln) may do to the file is the caller's explicit choice, [`Durability`]:
//! * [`Durability::Synced`]: file and directory are fsynced, so once the call returns the new file
//!   survives a power cut. For what later runs *trust*: the store's `index.json`, credentials,
//!   metadata files other tools read.
//! * [`Durability::Unsynced`]: no fsync. For shortcuts whose loss costs only time (memos, the local
//!   cache's records, `last-build.json`): a torn or lost one reads as a miss.
//!
//! A temp file left by a crash is named `.<name>.kiln-tmp-<pid>-<n>` and is never read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a machine crash may do to a file written with [`write()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and the directory after it.
    Synced,
    /// No fsync: atomic for readers, but a crash may keep the old file or none.
    Unsynced,
}

/// Replaces `path` with `bytes` atomically (see the module doc), creating the file with mode 0644.
pub fn write(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    write_with_mode(path, bytes, durability, 0o644)
}

/// [`write()`] with the file's mode set from its creation (0600 for credentials: never readable by
/// others, not even for a moment).
pub fn write_with_mode(path: &Path, bytes: &[u8], durability: Durability, mode: u32) -> io::Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        if durability == Durability::Synced {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, path)?;
        if durability == Durability::Synced {
            sync_dir_of(path)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs the directory holding `path`, so that a rename into it is durable.
pub fn sync_dir_of(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

fn temp_beside(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = format!(".{name}.kiln-tmp-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join(tmp),
        None => PathBuf::from(tmp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_file_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("index.json");
        for (bytes, dur) in [(&b"one"[..], Durability::Synced), (&b"two"[..], Durability::Unsynced)] {
            write(&p, bytes, dur).unwrap();
            assert_eq!(fs::read(&p).unwrap(), bytes);
        }
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["index.json"]);
    }

    #[test]
    fn a_private_file_is_0600_and_a_failed_write_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        write_with_mode(&p, b"secret", Durability::Synced, 0o600).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // A target that cannot be replaced (a non-empty directory): the error comes back, the temp
        // file goes, and nothing else changes.
        let dir = d.path().join("dir");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("keep"), "x").unwrap();
        assert!(write(&dir, b"new", Durability::Synced).is_err());
        assert_eq!(fs::read(dir.join("keep")).unwrap(), b"x");
        let mut names: Vec<_> = fs::read_dir(d.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["config.json", "dir"]);
    }
}
