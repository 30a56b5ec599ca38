//! Reclaiming what a dead kiln left under its root.
//!
//! A kiln process works in temp dirs under `<root>/snapshots/tmp/` (and `snapshots-native/tmp/`),
//! named `<what>-<pid>-<n>`, and mounts overlays inside some of them. A process that is SIGKILLed,
//! or exits on a second signal without waiting for its threads, leaves those dirs and mounts behind;
//! on a self-hosted CI runner they pile up. So every build (and `kiln run`) starts by reclaiming them.
//!
//! Whose a temp dir is comes from the pid in its name; whether that owner still lives comes from an
//! *owner lock*: each process holds an exclusive flock on `<snapshot dir>/owners/<pid>.lock` from
//! its first temp dir until it exits (the kernel drops the lock with the process, however it dies).
//! A lock file that can be locked belongs to a dead process, even when its pid was reused since.
//! A temp dir whose pid has no lock file came from a kiln before owner locks: it is reclaimed only
//! when no process has that pid. Reclaiming a dir detaches every mount under it (deepest first,
//! from `/proc/self/mountinfo`) and then removes it; a concurrent live kiln is never touched.

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::BuildError;
use crate::snapshot::{remove_tree, sys_umount};

/// The owner locks this process holds, by snapshot dir (a process may use several roots).
static HELD: Mutex<Option<HashMap<PathBuf, fs::File>>> = Mutex::new(None);

/// What one reclaim pass found and removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// Temp dirs of dead processes removed.
    pub dirs: usize,
    /// Mounts of dead processes detached.
    pub mounts: usize,
}

/// Takes this process's owner lock on `snap_dir` (once; later calls return at once).
pub(crate) fn hold_owner_lock(snap_dir: &Path) -> Result<(), BuildError> {
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    let map = held.get_or_insert_with(HashMap::new);
    if map.contains_key(snap_dir) {
        return Ok(());
    }
    let owners = snap_dir.join("owners");
    fs::create_dir_all(&owners).map_err(|source| BuildError::Io { action: "create", path: owners.clone(), source })?;
    let path = owners.join(format!("{}.lock", std::process::id()));
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|source| BuildError::Io {
        action: "open",
        path: path.clone(),
        source,
    })?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let source = std::io::Error::last_os_error();
        return Err(BuildError::Io { action: "lock", path, source });
    }
    map.insert(snap_dir.to_path_buf(), f);
    Ok(())
}

/// Reclaims the temp dirs and mounts that dead kiln processes left under `root`.
pub fn reclaim(root: &Path) -> Reclaimed {
    let mut out = Reclaimed::default();
    let mounts = mount_points();
    for snap_dir in [root.join("snapshots"), root.join("snapshots-native")] {
        let Ok(entries) = fs::read_dir(snap_dir.join("tmp")) else { continue };
        let mut verdicts: HashMap<u32, bool> = HashMap::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner_pid(&name) else { continue };
            let dead = *verdicts.entry(pid).or_insert_with(|| owner_is_dead(&snap_dir, pid));
            if !dead {
                continue;
            }
            let dir = e.path();
            let mut inside: Vec<&PathBuf> = mounts.iter().filter(|m| m.starts_with(&dir)).collect();
            // Deepest first: a mount inside another mount's tree goes before its parent.
            inside.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            for m in inside {
                match sys_umount(m) {
                    Ok(()) => out.mounts += 1,
                    Err(e) => tracing::warn!(path = %m.display(), error = %e, "could not detach a dead kiln's mount"),
                }
            }
            remove_tree(&dir);
            if !dir.exists() {
                out.dirs += 1;
            }
        }
        for (pid, dead) in verdicts {
            if dead {
                let _ = fs::remove_file(snap_dir.join("owners").join(format!("{pid}.lock")));
            }
        }
    }
    if out != Reclaimed::default() {
        tracing::info!(dirs = out.dirs, mounts = out.mounts, "reclaimed what a dead kiln left under {}", root.display());
    }
    out
}

/// The pid in a temp dir's name `<what>-<pid>-<n>`.
fn owner_pid(name: &str) -> Option<u32> {
    let mut parts = name.rsplitn(3, '-');
    let _n: u64 = parts.next()?.parse().ok()?;
    parts.next()?.parse().ok()
}

fn owner_is_dead(snap_dir: &Path, pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let lock = snap_dir.join("owners").join(format!("{pid}.lock"));
    match fs::OpenOptions::new().write(true).open(&lock) {
        // SAFETY: flock on a descriptor owned here; the lock goes with the file when it drops.
        Ok(f) => unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 },
        Err(_) => !Path::new("/proc").join(pid.to_string()).exists(),
    }
}

/// Mount points of this mount namespace, decoded (`/proc/self/mountinfo` escapes space, tab,
/// newline and backslash as octal).
fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    text.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| PathBuf::from(unescape(p))).collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dir_names_give_their_owner() {
        assert_eq!(owner_pid("mnt-1234-7"), Some(1234));
        assert_eq!(owner_pid("private-cache-99-0"), Some(99));
        assert_eq!(owner_pid("add-url-5-12"), Some(5));
        assert_eq!(owner_pid("stray"), None);
        assert_eq!(owner_pid("mnt-x-1"), None);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn a_dead_owners_dirs_go_and_a_live_ones_stay() {
        let root = tempfile::tempdir().unwrap();
        let snaps = root.path().join("snapshots");
        fs::create_dir_all(snaps.join("tmp")).unwrap();
        fs::create_dir_all(snaps.join("owners")).unwrap();
        // A dead owner: its lock file exists and nobody holds it.
        let dead = snaps.join("tmp/mnt-4000001-0");
        fs::create_dir_all(dead.join("merged/sub")).unwrap();
        fs::write(snaps.join("owners/4000001.lock"), "").unwrap();
        // A live owner: a child process holds its lock (flock is per open file, so this test
        // process's own descriptor would not conflict; a separate process does).
        let live = snaps.join("tmp/mnt-4000002-0");
        fs::create_dir_all(&live).unwrap();
        let lock = snaps.join("owners/4000002.lock");
        fs::write(&lock, "").unwrap();
        // The shell takes the lock on fd 9 and becomes `sleep`, so the lock's holder is the child
        // itself: killing it releases the lock and leaves nothing running.
        let mut holder = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec 9>>{}; flock -x 9; exec sleep 30", lock.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while owner_is_dead(&snaps, 4000002) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Ours: never reclaimed, lock or not.
        let mine = snaps.join(format!("tmp/mnt-{}-0", std::process::id()));
        fs::create_dir_all(&mine).unwrap();
        let r = reclaim(root.path());
        let _ = holder.kill();
        let _ = holder.wait();
        assert_eq!(r, Reclaimed { dirs: 1, mounts: 0 });
        assert!(!dead.exists() && !snaps.join("owners/4000001.lock").exists());
        assert!(live.exists() && lock.exists(), "a live owner's dir was reclaimed");
        assert!(mine.exists());
    }
}
