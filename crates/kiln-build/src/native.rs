//! The native snapshotter's differ: what changed between a step's parent root and the copy the step
//! worked on, as layer entries. Used where overlayfs is unavailable (`--snapshotter native`).
//!
//! A path is in the layer when it is new or when its type, mode, owner, size, mtime or link target
//! changed (`cp -a` keeps mtimes to the nanosecond, so an untouched file compares equal); a path of the
//! parent that is gone becomes a whiteout, and nothing below it is looked at.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_oci::layer::{EntrySource, LayerEntry};

fn same(a: &fs::Metadata, b: &fs::Metadata, pa: &Path, pb: &Path) -> bool {
    let ft = |m: &fs::Metadata| m.mode() & 0o170000;
    if ft(a) != ft(b) || a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() {
        return false;
    }
    if a.file_type().is_symlink() {
        return fs::read_link(pa).ok() == fs::read_link(pb).ok();
    }
    if a.file_type().is_dir() {
        return a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec();
    }
    a.size() == b.size() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec() && a.rdev() == b.rdev()
}

/// The entries that turn `old` into `new`, sorted by path.
pub fn diff(old: &Path, new: &Path) -> io::Result<Vec<LayerEntry>> {
    let mut out = Vec::new();
    walk(old, new, "", &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn names(dir: &Path) -> io::Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(dir)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    Ok(v)
}

fn walk(old: &Path, new: &Path, rel: &str, out: &mut Vec<LayerEntry>) -> io::Result<()> {
    let join = |n: &str| if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
    let new_names = names(&new.join(rel))?;
    let old_names = fs::read_dir(old.join(rel)).ok().map(|_| names(&old.join(rel))).transpose()?.unwrap_or_default();
    for n in &old_names {
        if new_names.binary_search(n).is_err() {
            out.push(LayerEntry { path: join(n), source: EntrySource::Whiteout });
        }
    }
    for n in &new_names {
        let r = join(n);
        let (pn, po) = (new.join(&r), old.join(&r));
        let nm = fs::symlink_metadata(&pn)?;
        let om = fs::symlink_metadata(&po).ok();
        let changed = match &om {
            Some(om) => !same(om, &nm, &po, &pn),
            None => true,
        };
        if changed {
            out.push(LayerEntry { path: r.clone(), source: EntrySource::Host(pn.clone()) });
        }
        if nm.is_dir() {
            if om.as_ref().is_some_and(|m| m.is_dir()) {
                walk(old, new, &r, out)?;
            } else {
                // A new directory (or one that replaced a file): everything below it is new.
                add_all(&pn, &r, out)?;
            }
        }
    }
    Ok(())
}

fn add_all(dir: &Path, rel: &str, out: &mut Vec<LayerEntry>) -> io::Result<()> {
    for n in names(dir)? {
        let r = format!("{rel}/{n}");
        let p = dir.join(&n);
        let m = fs::symlink_metadata(&p)?;
        out.push(LayerEntry { path: r.clone(), source: EntrySource::Host(p.clone()) });
        if m.is_dir() {
            add_all(&p, &r, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_new_changed_and_deleted_paths() {
        let old = tempfile::tempdir().unwrap();
        let o = old.path();
        fs::create_dir_all(o.join("keep/sub")).unwrap();
        fs::write(o.join("keep/same.txt"), "x").unwrap();
        fs::write(o.join("keep/edit.txt"), "x").unwrap();
        fs::create_dir_all(o.join("gone/deep")).unwrap();
        fs::write(o.join("gone/deep/f"), "x").unwrap();
        let new = tempfile::tempdir().unwrap();
        let n = new.path().join("root");
        assert!(std::process::Command::new("cp").arg("-a").arg(o).arg(&n).status().unwrap().success());
        fs::write(n.join("keep/edit.txt"), "changed!").unwrap();
        fs::remove_dir_all(n.join("gone")).unwrap();
        fs::create_dir_all(n.join("fresh/a")).unwrap();
        fs::write(n.join("fresh/a/b"), "b").unwrap();
        let got: Vec<(String, bool)> =
            diff(o, &n).unwrap().into_iter().map(|e| (e.path, matches!(e.source, EntrySource::Whiteout))).collect();
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"keep/edit.txt"), "{got:?}");
        assert!(paths.contains(&"fresh") && paths.contains(&"fresh/a") && paths.contains(&"fresh/a/b"), "{got:?}");
        assert!(got.contains(&("gone".to_string(), true)), "{got:?}");
        assert!(!paths.contains(&"keep/same.txt"), "an untouched file is not in the layer: {got:?}");
        assert!(!paths.iter().any(|p| p.starts_with("gone/")), "nothing below a whiteout: {got:?}");
    }
}
