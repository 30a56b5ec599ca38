//! The build context: the directory COPY and ADD read from, seen through `.dockerignore`.
//!
//! Paths are slash-separated and relative to the context root. A source that climbs out of the
//! context (`../x`) is an error; a symlink inside the context is never followed out of it. Every
//! file's content is hashed at most once per build, whatever the number of steps that read it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_dockerfile::dockerignore::Matcher;
use kiln_oci::Digest;

use crate::error::{BuildError, ContextError, SourceMiss};
use crate::glob::glob_match;

/// One file system object of the context (or of another stage's root) that a COPY reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root it came from, slash-separated, no leading `/`.
    pub rel: String,
    pub kind: Kind,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { size: u64 },
    Dir,
    Symlink { target: String },
}

/// A build context directory.
pub struct Context {
    root: PathBuf,
    ignore: Matcher,
    hashes: Mutex<HashMap<String, Digest>>,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { action, path, source }
}

/// Cleans a slash path the way Go's `path.Clean` does, relative to the root; `None` if it climbs out.
pub fn clean_rel(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl Context {
    /// Opens the context at `root`, with `.dockerignore` patterns `ignore` (already chosen by the
    /// caller: `<Dockerfile>.dockerignore` wins over the context's `.dockerignore`).
    pub fn open(root: &Path, ignore: Matcher) -> Result<Context, BuildError> {
        let root = fs::canonicalize(root).map_err(io_err("open the build context", root))?;
        if !root.is_dir() {
            return Err(ContextError::NotADirectory(root.to_path_buf()).into());
        }
        Ok(Context { root, ignore, hashes: Mutex::new(HashMap::new()) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn excluded(&self, rel: &str) -> bool {
        !rel.is_empty() && self.ignore.matches(rel)
    }

    /// Expands a COPY source (maybe a glob) to the matching paths, in sorted order. A plain path
    /// that does not exist, or is ignored, is an error naming it.
    pub fn expand_source(&self, src: &str) -> Result<Vec<String>, SourceMiss> {
        let Some(clean) = clean_rel(src) else {
            return Err(SourceMiss::Outside { src: src.to_string() });
        };
        if !has_glob(&clean) {
            let host = self.root.join(&clean);
            if fs::symlink_metadata(&host).is_err() || self.excluded(&clean) {
                return Err(SourceMiss::NotFound { src: src.to_string() });
            }
            return Ok(vec![clean]);
        }
        let mut found = Vec::new();
        let parts: Vec<&str> = clean.split('/').collect();
        self.glob_walk("", &parts, &mut found);
        found.sort();
        if found.is_empty() {
            return Err(SourceMiss::NoMatch { src: src.to_string() });
        }
        Ok(found)
    }

    fn glob_walk(&self, prefix: &str, parts: &[&str], out: &mut Vec<String>) {
        let Some((first, rest)) = parts.split_first() else { return };
        let dir = self.root.join(prefix);
        let Ok(rd) = fs::read_dir(&dir) else { return };
        let mut names: Vec<String> = rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for name in names {
            if !glob_match(first, &name) {
                continue;
            }
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            if self.excluded(&rel) {
                continue;
            }
            if rest.is_empty() {
                out.push(rel);
            } else if self.root.join(&rel).is_dir() {
                self.glob_walk(&rel, rest, out);
            }
        }
    }

    /// The object at `rel` and, for a directory, everything below it that `.dockerignore` keeps,
    /// sorted by path. The top object is described through a symlink (as BuildKit follows a source
    /// path), but only when the link stays inside the context.
    pub fn walk(&self, rel: &str) -> Result<Vec<Entry>, BuildError> {
        let host = self.resolve_top(rel)?;
        let mut out = Vec::new();
        let meta = fs::metadata(&host).map_err(io_err("read", &host))?;
        out.push(entry_from(rel, &host, &meta)?);
        if meta.is_dir() {
            self.walk_dir(rel, &host, &mut out)?;
        }
        Ok(out)
    }

    fn resolve_top(&self, rel: &str) -> Result<PathBuf, BuildError> {
        let host = self.root.join(rel);
        let real = fs::canonicalize(&host).map_err(io_err("read", &host))?;
        if !real.starts_with(&self.root) {
            return Err(ContextError::SymlinkOutside(rel.to_string()).into());
        }
        Ok(real)
    }

    fn walk_dir(&self, rel: &str, host: &Path, out: &mut Vec<Entry>) -> Result<(), BuildError> {
        let mut names: Vec<_> = fs::read_dir(host).map_err(io_err("list", host))?.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let child = host.join(&name);
            if self.excluded(&child_rel) {
                // An excluded dir can still hold re-included children (`!` patterns).
                if self.ignore.has_exceptions() && child.is_dir() && !child.is_symlink() {
                    self.walk_dir(&child_rel, &child, out)?;
                }
                continue;
            }
            let meta = fs::symlink_metadata(&child).map_err(io_err("read", &child))?;
            out.push(entry_from(&child_rel, &child, &meta)?);
            if meta.is_dir() {
                self.walk_dir(&child_rel, &child, out)?;
            }
        }
        Ok(())
    }

    /// The host path of a context entry (for copying its content).
    pub fn host_path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Every context file whose content the build read, with its digest, sorted by path.
    pub fn read_files(&self) -> Vec<(String, Digest)> {
        let mut v: Vec<(String, Digest)> =
            self.hashes.lock().map(|m| m.iter().map(|(k, d)| (k.clone(), d.clone())).collect()).unwrap_or_default();
        v.sort();
        v
    }

    /// sha256 of a context file's content, computed once per build.
    pub fn file_digest(&self, rel: &str) -> Result<Digest, BuildError> {
        if let Some(d) = self.hashes.lock().ok().and_then(|m| m.get(rel).cloned()) {
            return Ok(d);
        }
        let path = self.root.join(rel);
        let d = hash_file(&path)?;
        if let Ok(mut m) = self.hashes.lock() {
            m.insert(rel.to_string(), d.clone());
        }
        Ok(d)
    }
}

/// sha256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<Digest, BuildError> {
    let f = fs::File::open(path).map_err(io_err("read", path))?;
    let mut r = kiln_oci::VerifyingReader::new(io::BufReader::with_capacity(1 << 16, f), None);
    io::copy(&mut r, &mut io::sink()).map_err(io_err("read", path))?;
    let (d, _) = r.finish().map_err(io_err("read", path))?;
    Ok(d)
}

fn entry_from(rel: &str, host: &Path, meta: &fs::Metadata) -> Result<Entry, BuildError> {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        let t = fs::read_link(host).map_err(io_err("read link", host))?;
        Kind::Symlink { target: t.to_string_lossy().into_owned() }
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File { size: meta.len() }
    } else {
        return Err(ContextError::UnsupportedType(rel.to_string()).into());
    };
    Ok(Entry { rel: rel.to_string(), kind, mode: meta.permissions().mode() & 0o7777, uid: meta.uid(), gid: meta.gid() })
}

/// Does a cleaned path have glob characters?
pub fn has_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_rel_refuses_climbing_out() {
        assert_eq!(clean_rel("./a/../b/"), Some("b".to_string()));
        assert_eq!(clean_rel("/abs/x"), Some("abs/x".to_string()));
        assert_eq!(clean_rel("."), Some(String::new()));
        assert_eq!(clean_rel("../x"), None);
        assert_eq!(clean_rel("a/../../x"), None);
    }

    #[test]
    fn walk_honours_dockerignore_and_exceptions_and_hashes_once() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src/keep")).unwrap();
        fs::write(d.path().join("src/a.txt"), "a").unwrap();
        fs::write(d.path().join("src/b.log"), "b").unwrap();
        fs::write(d.path().join("src/keep/c.log"), "c").unwrap();
        let m = Matcher::new(&["**/*.log", "!src/keep/c.log"]).unwrap();
        let ctx = Context::open(d.path(), m).unwrap();
        let rels: Vec<String> = ctx.walk("src").unwrap().into_iter().map(|e| e.rel).collect();
        assert_eq!(rels, vec!["src", "src/a.txt", "src/keep", "src/keep/c.log"]);
        assert_eq!(ctx.expand_source("src/b.log"), Err(SourceMiss::NotFound { src: "src/b.log".into() }));
        assert_eq!(ctx.expand_source("src/*.txt").unwrap(), vec!["src/a.txt"]);
        assert_eq!(ctx.expand_source("../etc/passwd"), Err(SourceMiss::Outside { src: "../etc/passwd".into() }));
        let d1 = ctx.file_digest("src/a.txt").unwrap();
        fs::write(d.path().join("src/a.txt"), "changed").unwrap();
        assert_eq!(ctx.file_digest("src/a.txt").unwrap(), d1, "hashed once per build");
    }
}
