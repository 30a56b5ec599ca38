//! COPY and ADD: putting files into a step's root file system.
//!
//! Every destination path is resolved with [`kiln_oci::fsroot::RootDir`], so a symlink in the image
//! (`/usr/local -> /opt`) is followed *inside* the root and nothing is ever written outside it. The
//! final component is never followed: an existing file or symlink there is replaced.
//!
//! Docker's rules: a directory source copies its *contents*; a file source lands at the destination
//! path, or inside it when the destination ends in `/` or is an existing directory; new files and
//! directories belong to 0:0 unless `--chown` says otherwise (files from another stage keep their
//! owners); `--chmod` applies to every copied entry; modes and mtimes are kept.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_oci::fsroot::{Missing, RootDir};

use crate::context::{Entry, Kind};
use crate::error::{BuildError, SnapshotError};

/// Where a source's bytes are read from.
pub struct SourceRoot<'a> {
    /// Host directory the entries' `rel` paths are relative to.
    pub dir: &'a Path,
    /// Keep the entries' own uid/gid when no `--chown` is given (true for stage/image sources).
    pub keep_owner: bool,
}

/// One resolved COPY source: its entries as [`crate::context::Context::walk`] lists them.
pub struct Source<'a> {
    pub root: SourceRoot<'a>,
    /// The source path as matched (the top entry's `rel`).
    pub rel: String,
    pub entries: Vec<Entry>,
    /// `COPY --parents`: keep the source's path (relative to its root) under the destination.
    pub parents: bool,
}

/// The owner and mode options of a COPY.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs {
    pub chown: Option<(u32, u32)>,
    pub chmod: Option<u32>,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { action, path, source }
}

fn root_err(e: kiln_oci::fsroot::RootError) -> BuildError {
    BuildError::Snapshot(SnapshotError::Root(e))
}

/// Copies `sources` to `dest` (an absolute path inside `root`). `dest_is_dir` is Docker's rule:
/// the destination ends in `/`, or there are several sources, or a source is a directory or glob.
pub fn copy_into(root: &Path, sources: &[Source<'_>], dest: &str, dest_is_dir: bool, attrs: Attrs) -> Result<(), BuildError> {
    let rootdir = RootDir::open(root).map_err(root_err)?;
    let dest_path = PathBuf::from(dest);
    let dest_exists_dir =
        rootdir.resolve(&dest_path, true, Missing::Fail).ok().and_then(|r| fs::metadata(&r.host_path).ok()).is_some_and(|m| m.is_dir());
    for src in sources {
        let Some(top) = src.entries.first() else { continue };
        let top_is_dir = top.kind == Kind::Dir;
        let into_dir = dest_is_dir || dest_exists_dir || top_is_dir || src.parents;
        if into_dir {
            make_dirs(&rootdir, &dest_path, attrs)?;
        } else if let Some(parent) = dest_path.parent() {
            // Parents COPY creates belong to --chown's owner too (BuildKit's CreateDestPath).
            make_dirs(&rootdir, parent, attrs)?;
        }
        for e in &src.entries {
            let target = if src.parents {
                dest_path.join(&e.rel)
            } else if top_is_dir {
                let sub = e.rel.strip_prefix(&src.rel).unwrap_or(&e.rel).trim_start_matches('/');
                if sub.is_empty() {
                    continue; // the directory itself: only its contents are copied
                }
                dest_path.join(sub)
            } else if into_dir {
                let base = Path::new(&e.rel).file_name().map(PathBuf::from).unwrap_or_default();
                dest_path.join(base)
            } else {
                dest_path.clone()
            };
            let host_src = src.root.dir.join(&e.rel);
            put_entry(&rootdir, &target, e, &host_src, &src.root, attrs, top_is_dir)?;
        }
    }
    Ok(())
}

pub(crate) fn make_dirs(rootdir: &RootDir, path: &Path, attrs: Attrs) -> Result<(), BuildError> {
    // Create each missing component, owned as --chown says (BuildKit's CreateDestPath).
    let mut cur = PathBuf::from("/");
    for comp in path.components().skip_while(|c| matches!(c, std::path::Component::RootDir)) {
        cur.push(comp);
        let r = rootdir.resolve(&cur, true, Missing::Create).map_err(root_err)?;
        match fs::symlink_metadata(&r.host_path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BuildError::CopyDestination { dest: path.to_path_buf(), component: cur });
            }
            Err(_) => {
                fs::create_dir(&r.host_path).map_err(io_err("create", &r.host_path))?;
                fs::set_permissions(&r.host_path, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &r.host_path))?;
                if let Some((u, g)) = attrs.chown {
                    chown_as_image(&r.host_path, u, g).map_err(io_err("chown", &r.host_path))?;
                }
            }
        }
    }
    Ok(())
}

fn put_entry(
    rootdir: &RootDir,
    target: &Path,
    e: &Entry,
    host_src: &Path,
    src_root: &SourceRoot<'_>,
    attrs: Attrs,
    in_dir_source: bool,
) -> Result<(), BuildError> {
    let r = rootdir.resolve(target, false, Missing::Create).map_err(root_err)?;
    let dst = r.host_path;
    let existing = fs::symlink_metadata(&dst).ok();
    let (uid, gid) = match attrs.chown {
        Some(o) => o,
        None if src_root.keep_owner => (e.uid, e.gid),
        None => (0, 0),
    };
    let mode = attrs.chmod.unwrap_or(e.mode);
    match &e.kind {
        Kind::Dir => {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    fs::remove_file(&dst).map_err(io_err("replace", &dst))?;
                    fs::create_dir(&dst).map_err(io_err("create", &dst))?;
                }
                None => fs::create_dir(&dst).map_err(io_err("create", &dst))?,
            }
            chown_as_image(&dst, uid, gid).map_err(io_err("chown", &dst))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &dst))?;
        }
        Kind::File { .. } => {
            remove_existing(&dst, existing.as_ref())?;
            fs::copy(host_src, &dst).map_err(io_err("copy into", &dst))?;
            chown_as_image(&dst, uid, gid).map_err(io_err("chown", &dst))?;
            // chown clears setuid bits, so the mode goes last.
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &dst))?;
            copy_mtime(host_src, &dst);
        }
        Kind::Symlink { target: link } => {
            // A top-level symlink source was already followed by the walk; only links inside a
            // copied directory reach here, and they are copied as links.
            let _ = in_dir_source;
            remove_existing(&dst, existing.as_ref())?;
            symlink(link, &dst).map_err(io_err("create symlink", &dst))?;
            chown_as_image(&dst, uid, gid).map_err(io_err("chown", &dst))?;
        }
    }
    Ok(())
}

/// `lchown`, except that an unprivileged kiln (`--isolation none` as an ordinary user, where its
/// own ids stand for the image's root: see `hostroot`) gives root's files to itself, as it must.
fn chown_as_image(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: no arguments.
    let me = unsafe { (libc::geteuid(), libc::getegid()) };
    if me.0 != 0 && (uid, gid) == (0, 0) {
        return lchown(p, Some(me.0), Some(me.1));
    }
    lchown(p, Some(uid), Some(gid))
}

fn remove_existing(dst: &Path, existing: Option<&fs::Metadata>) -> Result<(), BuildError> {
    match existing {
        Some(m) if m.is_dir() => fs::remove_dir_all(dst).map_err(io_err("replace", dst)),
        Some(_) => fs::remove_file(dst).map_err(io_err("replace", dst)),
        None => Ok(()),
    }
}

fn copy_mtime(src: &Path, dst: &Path) {
    if let Ok(m) = fs::metadata(src) {
        if let Ok(t) = m.modified() {
            if let Ok(f) = fs::File::options().write(true).open(dst) {
                let _ = f.set_modified(t);
            }
        }
    }
}

/// Lists a directory tree of a mounted root (another stage's, for `COPY --from`) like the context
/// walk does: `rel` is resolved inside `root` (symlinks followed within it), then walked.
pub fn walk_root(root: &Path, rel: &str) -> Result<(PathBuf, Vec<Entry>), BuildError> {
    use std::os::unix::fs::MetadataExt;
    let rootdir = RootDir::open(root).map_err(root_err)?;
    let r = rootdir
        .resolve(Path::new(&format!("/{rel}")), true, Missing::Fail)
        .map_err(|source| BuildError::NotInImage { rel: rel.to_string(), source })?;
    let host = r.host_path;
    let base_rel = host.strip_prefix(root).unwrap_or(&host).to_string_lossy().into_owned();
    let mut out = Vec::new();
    fn visit(host: &Path, rel: &str, out: &mut Vec<Entry>, top: bool) -> Result<(), BuildError> {
        let meta = if top { fs::metadata(host) } else { fs::symlink_metadata(host) }.map_err(io_err("read", host))?;
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            Kind::Symlink { target: fs::read_link(host).map_err(io_err("read link", host))?.to_string_lossy().into_owned() }
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File { size: meta.len() }
        } else {
            return Ok(()); // devices and fifos are not copied between stages
        };
        out.push(Entry {
            rel: rel.to_string(),
            kind: kind.clone(),
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
        if kind == Kind::Dir {
            let mut names: Vec<_> =
                fs::read_dir(host).map_err(io_err("list", host))?.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            names.sort();
            for n in names {
                let n = n.to_string_lossy().into_owned();
                let child_rel = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
                visit(&host.join(&n), &child_rel, out, false)?;
            }
        }
        Ok(())
    }
    visit(&host, &base_rel, &mut out, true)?;
    Ok((root.to_path_buf(), out))
}
