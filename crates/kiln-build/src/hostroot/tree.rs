//! The whole-tree snapshot and diff that makes a `--isolation none` step's layer (see the parent
//! module for why metadata, with ctime, is enough).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_oci::layer::{EntrySource, LayerEntry};

use super::Skip;

/// What is compared of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub rdev: u64,
}

impl Meta {
    pub fn of(md: &std::fs::Metadata) -> Meta {
        Meta {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
            nlink: md.nlink(),
            rdev: md.rdev(),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// Every path under a root (relative, `usr/bin/sh`), skipped ones left out.
pub type Snapshot = BTreeMap<String, Meta>;

/// Walks `root` without following symlinks, leaving out what `skip` covers (its paths are
/// absolute in the same namespace as `root`).
pub fn snapshot(root: &Path, skip: &Skip) -> io::Result<Snapshot> {
    let mut out = Snapshot::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            // Removed while walking (a step's leftover process); what is gone is gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        };
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let abs = root.join(&r);
            if skip.covers(&abs) {
                continue;
            }
            let md = match std::fs::symlink_metadata(&abs) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", abs.display()))),
            };
            let m = Meta::of(&md);
            if m.is_dir() {
                stack.push(r.clone());
            }
            out.insert(r, m);
        }
    }
    Ok(out)
}

fn parent(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(d, _)| d)
}

/// The layer entries that turn `before` into `after` (both of `root`), as an overlay upper dir
/// would hold them.
pub fn diff(before: &Snapshot, after: &Snapshot, root: &Path) -> Vec<LayerEntry> {
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut opaque: BTreeSet<String> = BTreeSet::new();
    // A directory replaced by a new one: everything below it is new, and what was below the old
    // one is hidden by the opaque marker instead of by whiteouts.
    let replaced_dir = |p: &str, a: &Meta| before.get(p).is_some_and(|b| b.is_dir() && a.is_dir() && b.ino != a.ino);
    for (p, a) in after {
        match before.get(p) {
            None => {
                changed.insert(p.clone());
            }
            Some(b) if b != a => {
                changed.insert(p.clone());
                if replaced_dir(p, a) {
                    opaque.insert(p.clone());
                }
            }
            Some(_) => {}
        }
    }
    let mut whiteouts: Vec<String> = Vec::new();
    for (p, b) in before {
        if after.contains_key(p) && !(b.is_dir() && after.get(p).is_some_and(|a| !a.is_dir())) {
            continue;
        }
        // Only the topmost removed path: below it, the parent's whiteout (or replacement) hides it.
        let hidden = {
            let mut cur = parent(p);
            let mut hidden = false;
            while let Some(d) = cur {
                let gone = !after.contains_key(d);
                let retyped = after.get(d).is_some_and(|a| !a.is_dir());
                if gone || retyped || opaque.contains(d) {
                    hidden = true;
                    break;
                }
                cur = parent(d);
            }
            hidden
        };
        if !hidden && !after.contains_key(p) {
            whiteouts.push(p.clone());
        }
    }
    // Parents of whatever is in the layer, as overlay copies them up.
    let mut with_parents = changed.clone();
    for p in changed.iter().chain(whiteouts.iter()) {
        let mut cur = parent(p);
        while let Some(d) = cur {
            if !with_parents.insert(d.to_string()) {
                break;
            }
            cur = parent(d);
        }
    }
    let mut out: Vec<LayerEntry> = Vec::new();
    for p in with_parents {
        if !after.contains_key(&p) {
            continue;
        }
        if opaque.contains(&p) {
            out.push(LayerEntry { path: p.clone(), source: EntrySource::Opaque });
        }
        out.push(LayerEntry { source: EntrySource::Host(root.join(&p)), path: p });
    }
    out.extend(whiteouts.into_iter().map(|p| LayerEntry { path: p, source: EntrySource::Whiteout }));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entries(root: &Path, f: impl FnOnce(&Path)) -> Vec<(String, &'static str)> {
        let skip = Skip::new(vec![root.join("skipped")]);
        let before = snapshot(root, &skip).unwrap();
        // ctime has the clock's granularity: make sure a change lands on a later tick.
        std::thread::sleep(std::time::Duration::from_millis(20));
        f(root);
        let after = snapshot(root, &skip).unwrap();
        diff(&before, &after, root)
            .into_iter()
            .map(|e| {
                let k = match e.source {
                    EntrySource::Host(_) => "host",
                    EntrySource::Whiteout => "whiteout",
                    EntrySource::Opaque => "opaque",
                };
                (e.path, k)
            })
            .collect()
    }

    fn base() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc/deep")).unwrap();
        fs::write(r.join("etc/passwd"), "root\n").unwrap();
        fs::write(r.join("etc/deep/f"), "f").unwrap();
        fs::create_dir_all(r.join("w/gone/sub")).unwrap();
        fs::write(r.join("w/gone/sub/g"), "g").unwrap();
        fs::write(r.join("w/keep"), "k").unwrap();
        fs::create_dir_all(r.join("skipped")).unwrap();
        d
    }

    #[test]
    fn an_in_place_edit_brings_its_parents_as_overlay_would() {
        let d = base();
        let got = entries(d.path(), |r| fs::write(r.join("etc/deep/f"), "F").unwrap());
        assert_eq!(got, vec![("etc".into(), "host"), ("etc/deep".into(), "host"), ("etc/deep/f".into(), "host")]);
    }

    #[test]
    fn a_chmod_alone_is_seen_through_ctime() {
        let d = base();
        let got = entries(d.path(), |r| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(r.join("w/keep"), fs::Permissions::from_mode(0o600)).unwrap();
            fs::set_permissions(r.join("w/keep"), fs::Permissions::from_mode(0o644)).unwrap();
        });
        assert_eq!(got, vec![("w".into(), "host"), ("w/keep".into(), "host")]);
    }

    #[test]
    fn removals_are_topmost_whiteouts_and_skipped_paths_never_show() {
        let d = base();
        let got = entries(d.path(), |r| {
            fs::remove_dir_all(r.join("w/gone")).unwrap();
            fs::write(r.join("skipped/noise"), "x").unwrap();
        });
        assert_eq!(got, vec![("w".into(), "host"), ("w/gone".into(), "whiteout")]);
    }

    #[test]
    fn a_directory_made_again_is_opaque() {
        let d = base();
        let got = entries(d.path(), |r| {
            fs::remove_dir_all(r.join("w")).unwrap();
            fs::create_dir_all(r.join("w/new")).unwrap();
        });
        // A new inode number shows the replacement: an opaque directory, as overlay makes. When
        // the file system hands the old number out again, the same tree comes as whiteouts.
        let opaque = vec![("w".into(), "opaque"), ("w".into(), "host"), ("w/new".into(), "host")];
        let whiteouts = vec![("w".into(), "host"), ("w/gone".into(), "whiteout"), ("w/keep".into(), "whiteout"), ("w/new".into(), "host")];
        assert!(got == opaque || got == whiteouts, "{got:?}");
    }

    #[test]
    fn a_file_that_became_a_directory_replaces_it() {
        let d = base();
        let got = entries(d.path(), |r| {
            fs::remove_file(r.join("w/keep")).unwrap();
            fs::create_dir(r.join("w/keep")).unwrap();
            fs::write(r.join("w/keep/in"), "i").unwrap();
        });
        assert_eq!(got, vec![("w".into(), "host"), ("w/keep".into(), "host"), ("w/keep/in".into(), "host")]);
    }

    #[test]
    fn nothing_changed_is_an_empty_layer() {
        let d = base();
        assert!(entries(d.path(), |r| drop(fs::read(r.join("etc/passwd")).unwrap())).is_empty());
    }
}
