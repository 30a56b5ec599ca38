//! The files a scan needs, gathered from an unpacked root or from layer tars.
//!
//! A [`Tree`] maps absolute image paths to what the catalogers need of each file: the bytes of a
//! package database (chosen by path, see [`wanted`]), or the build-information sections of an ELF
//! executable (any regular file with an exec bit whose first bytes are `\x7fELF`). Everything else is
//! never read. Two sources fill it and agree on the result for the same image:
//!
//! - [`Tree::from_dir`] walks a root without following symlinks (a symlink is never read through, so
//!   nothing outside the root is touched, and each file is seen once at its real path) and without
//!   entering `/proc`, `/sys` or `/dev`;
//! - [`Tree::from_layers`] reads uncompressed layer tars lowest first and applies each layer to the
//!   layers below as an overlay would: `.wh.NAME` deletes `NAME` and everything under it,
//!   `.wh..wh..opq` hides everything the lower layers had under its directory, and a non-directory
//!   entry replaces whatever a lower layer had at its path and under it. Hard links take the entry of
//!   their target. Symlinks are not followed, as in the directory walk.
//!
//! Sizes are bounded: a database larger than [`DB_LIMIT`] or a binary larger than [`BINARY_LIMIT`] is
//! recorded as skipped with the reason, not read.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::elf::{self, BinaryInfo};
use crate::{SbomError, Skipped};

/// The largest package database file read (dpkg status, rpmdb.sqlite, ...).
pub const DB_LIMIT: u64 = 256 << 20;
/// The largest executable whose build information is read.
pub const BINARY_LIMIT: u64 = 512 << 20;

/// What the scan kept of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A package database or metadata file, whole.
    File(Vec<u8>),
    /// An executable's build information (only binaries that have some are kept).
    Binary(BinaryInfo),
    /// A candidate that was not read, and why (too large).
    Skipped(String),
    /// A file whose presence (and size) is all a cataloger needs: a package database in a format
    /// kiln does not read, which it reports rather than silently omit, or an SQLite WAL file.
    Present(u64),
}

/// The gathered candidate files, by absolute path in the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    items: BTreeMap<String, Item>,
}

/// Whether a path names a file some cataloger reads.
pub fn wanted(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "/etc/os-release",
        "/usr/lib/os-release",
        "/var/lib/dpkg/status",
        "/lib/apk/db/installed",
        "/usr/lib/apk/db/installed",
        "/var/lib/rpm/rpmdb.sqlite",
        "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    ];
    if EXACT.contains(&path) {
        return true;
    }
    if let Some(rest) = path.strip_prefix("/var/lib/dpkg/status.d/") {
        return !rest.contains('/') && !rest.ends_with(".md5sums") && !rest.is_empty();
    }
    if let Some(rest) = path.strip_prefix("/usr/share/doc/") {
        return rest.strip_suffix("/copyright").is_some_and(|p| !p.is_empty() && !p.contains('/'));
    }
    python::is_metadata_path(path) || npm::is_manifest_path(path)
}

/// Whether a path names a file only noted as present (see [`Item::Present`]).
pub fn noted(path: &str) -> bool {
    crate::rpm::is_noted_path(path)
}

use crate::{npm, python};

impl Tree {
    /// The kept item at `path`.
    pub fn get(&self, path: &str) -> Option<&Item> {
        self.items.get(path)
    }

    /// The whole file at `path`, when it was kept as one.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        match self.items.get(path) {
            Some(Item::File(b)) => Some(b),
            _ => None,
        }
    }

    /// Every kept item, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Item)> {
        self.items.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The candidates that were not read, with the reason.
    pub fn skipped(&self) -> Vec<Skipped> {
        self.items
            .iter()
            .filter_map(|(path, item)| match item {
                Item::Skipped(reason) => Some(Skipped { path: path.clone(), reason: reason.clone() }),
                _ => None,
            })
            .collect()
    }

    /// Inserts an item (tests build trees by hand this way).
    pub fn insert(&mut self, path: &str, item: Item) {
        self.items.insert(path.to_string(), item);
    }

    /// Gathers the candidates of an unpacked root.
    pub fn from_dir(root: &Path) -> Result<Tree, SbomError> {
        let io = |path: &Path, source| SbomError::Io { path: path.display().to_string(), source };
        let mut tree = Tree::default();
        // (host path, image path) of the directories still to read.
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, image_dir)) = stack.pop() {
            let entries = fs::read_dir(&dir).map_err(|e| io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io(&dir, e))?;
                // A name that is not UTF-8 cannot be a database path; the layer reader skips it too.
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let image_path = format!("{image_dir}/{name}");
                let host_path = entry.path();
                let meta = fs::symlink_metadata(&host_path).map_err(|e| io(&host_path, e))?;
                if meta.is_dir() {
                    if !is_virtual(&image_path) {
                        stack.push((host_path, image_path));
                    }
                    continue;
                }
                if !meta.is_file() {
                    continue;
                }
                let mode = meta.permissions().mode();
                let kind = classify(&image_path, mode, meta.len());
                match kind {
                    Class::No => {}
                    Class::Present => tree.insert(&image_path, Item::Present(meta.len())),
                    Class::TooLarge(reason) => tree.insert(&image_path, Item::Skipped(reason)),
                    Class::Db => {
                        let bytes = fs::read(&host_path).map_err(|e| io(&host_path, e))?;
                        tree.insert(&image_path, Item::File(bytes));
                    }
                    Class::MaybeElf => {
                        let file = fs::File::open(&host_path).map_err(|e| io(&host_path, e))?;
                        let mut magic = [0u8; 4];
                        if (&file).read_exact(&mut magic).is_err() || magic != elf::MAGIC {
                            continue;
                        }
                        if meta.len() > BINARY_LIMIT {
                            tree.insert(&image_path, too_large_binary(meta.len()));
                            continue;
                        }
                        match elf::inspect(&elf::FileSource::new(&file, meta.len())) {
                            Ok(Some(info)) => tree.insert(&image_path, Item::Binary(info)),
                            Ok(None) => {}
                            Err(e) => tree.insert(&image_path, Item::Skipped(e)),
                        }
                    }
                }
            }
        }
        Ok(tree)
    }

    /// Gathers the candidates of an image from its uncompressed layer tars, lowest first.
    pub fn from_layers<R: Read>(layers: impl IntoIterator<Item = R>) -> Result<Tree, SbomError> {
        let mut tree = Tree::default();
        for (index, layer) in layers.into_iter().enumerate() {
            let err = |source| SbomError::Layer { index, source };
            let mut layer_tree = LayerChanges::default();
            let mut archive = tar::Archive::new(layer);
            for entry in archive.entries().map_err(err)? {
                let mut entry = entry.map_err(err)?;
                let raw = entry.path_bytes().into_owned();
                let Some(path) = normalize(&raw) else { continue };
                if path == "/" || is_virtual(&path) {
                    continue;
                }
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
                if name == ".wh..wh..opq" {
                    layer_tree.opaque.push(parent.to_string());
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    layer_tree.deleted.push(format!("{parent}/{hidden}"));
                    continue;
                }
                let header = entry.header();
                let kind = header.entry_type();
                if kind.is_dir() {
                    layer_tree.dirs.push(path);
                    continue;
                }
                layer_tree.replaced.push(path.clone());
                if kind.is_hard_link() {
                    let target = entry
                        .link_name_bytes()
                        .and_then(|t| normalize(&t))
                        .and_then(|t| layer_tree.added.get(&t).or(tree.items.get(&t)).cloned());
                    if let Some(item) = target {
                        layer_tree.added.insert(path, item);
                    }
                    continue;
                }
                if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                    continue;
                }
                let mode = header.mode().map_err(err)?;
                let size = header.size().map_err(err)?;
                match classify(&path, mode, size) {
                    Class::No => {}
                    Class::Present => {
                        layer_tree.added.insert(path, Item::Present(size));
                    }
                    Class::TooLarge(reason) => {
                        layer_tree.added.insert(path, Item::Skipped(reason));
                    }
                    Class::Db => {
                        let mut bytes = Vec::with_capacity(size as usize);
                        entry.read_to_end(&mut bytes).map_err(err)?;
                        layer_tree.added.insert(path, Item::File(bytes));
                    }
                    Class::MaybeElf => {
                        let mut magic = [0u8; 4];
                        if entry.read_exact(&mut magic).is_err() || magic != elf::MAGIC {
                            continue;
                        }
                        if size > BINARY_LIMIT {
                            layer_tree.added.insert(path, too_large_binary(size));
                            continue;
                        }
                        // One binary at a time is held, then only its build-info sections are kept.
                        let mut bytes = Vec::with_capacity(size as usize);
                        bytes.extend_from_slice(&magic);
                        entry.read_to_end(&mut bytes).map_err(err)?;
                        match elf::inspect(&bytes.as_slice()) {
                            Ok(Some(info)) => {
                                layer_tree.added.insert(path, Item::Binary(info));
                            }
                            Ok(None) => {}
                            Err(e) => {
                                layer_tree.added.insert(path, Item::Skipped(e));
                            }
                        }
                    }
                }
            }
            layer_tree.apply(&mut tree.items);
        }
        Ok(tree)
    }
}

/// One layer's effect on the layers below it.
#[derive(Default)]
struct LayerChanges {
    /// `.wh.NAME` targets: the path and everything under it go.
    deleted: Vec<String>,
    /// `.wh..wh..opq` directories: everything under them from lower layers goes.
    opaque: Vec<String>,
    /// Non-directory entries: they replace the lower path and anything under it.
    replaced: Vec<String>,
    /// Directory entries: they replace a lower non-directory at the same path.
    dirs: Vec<String>,
    /// This layer's candidates.
    added: BTreeMap<String, Item>,
}

impl LayerChanges {
    fn apply(self, items: &mut BTreeMap<String, Item>) {
        for path in self.deleted.iter().chain(&self.replaced) {
            items.remove(path);
            remove_under(items, path);
        }
        for dir in &self.opaque {
            remove_under(items, dir);
        }
        for dir in &self.dirs {
            items.remove(dir);
        }
        items.extend(self.added);
    }
}

fn remove_under(items: &mut BTreeMap<String, Item>, dir: &str) {
    let prefix = format!("{dir}/");
    let doomed: Vec<String> = items.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(k, _)| k.clone()).collect();
    for k in doomed {
        items.remove(&k);
    }
}

enum Class {
    No,
    Db,
    Present,
    MaybeElf,
    TooLarge(String),
}

/// What to do with a regular file, from its path, mode and size alone.
fn classify(path: &str, mode: u32, size: u64) -> Class {
    if wanted(path) {
        if size > DB_LIMIT {
            return Class::TooLarge(format!("{size} bytes, larger than the {DB_LIMIT}-byte limit for package databases"));
        }
        return Class::Db;
    }
    if noted(path) {
        return Class::Present;
    }
    // Smaller than an ELF header: cannot be an executable worth reading.
    if mode & 0o111 != 0 && size >= 64 {
        return Class::MaybeElf;
    }
    Class::No
}

fn too_large_binary(size: u64) -> Item {
    Item::Skipped(format!("ELF executable of {size} bytes, larger than the {BINARY_LIMIT}-byte limit for binaries"))
}

/// The kernel's virtual file systems, never part of an image's content.
fn is_virtual(path: &str) -> bool {
    ["/proc", "/sys", "/dev"].iter().any(|v| path == *v || path.starts_with(&format!("{v}/")))
}

/// A tar entry's path as an absolute image path (`./usr/bin/x` → `/usr/bin/x`); `None` for a path
/// that is not UTF-8 or climbs with `..` (a broken or hostile layer; nothing it names is read).
fn normalize(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let mut out = String::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => {
                out.push('/');
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_paths() {
        assert!(wanted("/var/lib/dpkg/status"));
        assert!(wanted("/var/lib/dpkg/status.d/base"));
        assert!(!wanted("/var/lib/dpkg/status.d/base.md5sums"));
        assert!(wanted("/usr/share/doc/bash/copyright"));
        assert!(!wanted("/usr/share/doc/bash/examples/copyright"));
        assert!(wanted("/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"));
        assert!(wanted("/app/node_modules/@scope/x/package.json"));
        assert!(!wanted("/app/node_modules/x/test/package.json"));
        assert!(!wanted("/etc/passwd"));
    }

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize(b"./usr/bin/x").as_deref(), Some("/usr/bin/x"));
        assert_eq!(normalize(b"usr//lib/").as_deref(), Some("/usr/lib"));
        assert_eq!(normalize(b"./").as_deref(), Some("/"));
        assert_eq!(normalize(b"../etc/passwd"), None);
    }
}
