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
    copy_into_with(root, sources, dest, dest_is_dir, attrs, copy_threads)
}

/// [`copy_into`] with the number of threads for `n` files chosen by `threads` (tests compare 1 and many).
fn copy_into_with(
    root: &Path,
    sources: &[Source<'_>],
    dest: &str,
    dest_is_dir: bool,
    attrs: Attrs,
    threads: fn(usize) -> usize,
) -> Result<(), BuildError> {
    let rootdir = RootDir::open(root).map_err(root_err)?;
    let dest_path = PathBuf::from(dest);
    let mut leaves: Vec<Leaf<'_>> = Vec::new();
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
            if matches!(e.kind, Kind::Dir) {
                put_entry(&rootdir, &target, e, &host_src, &src.root, attrs)?;
            } else {
                leaves.push(Leaf { target, entry: e, host_src, src_root: &src.root });
            }
        }
        // A later source may write where an earlier one did: keep the sources' order exactly.
        if sources.len() > 1 {
            put_leaves(&rootdir, &leaves, attrs, 1)?;
            leaves.clear();
        }
    }
    put_leaves(&rootdir, &leaves, attrs, threads(leaves.len()))
}

/// A file or symlink to put once every directory of its source exists.
struct Leaf<'a> {
    target: PathBuf,
    entry: &'a Entry,
    host_src: PathBuf,
    src_root: &'a SourceRoot<'a>,
}

/// Below this many files one thread does it: starting threads would cost more than it saves.
const PARALLEL_FROM: usize = 64;

/// Threads for putting `n` files: `KILN_COPY_THREADS`, else one per core (2 to 8). Each file is a
/// handful of metadata system calls, mostly kernel time in the file system (a COPY of 5,000 small
/// files spends ~75% of its time there), so a thread per core is what pays: on 2 cores, 2 threads
/// took a 5,000-file COPY from 0.85-1.3 s to 0.62-0.75 s and 4 or 8 gained nothing more. Order does
/// not matter for the result (see [`put_leaves`]), so the count changes only the speed.
pub(crate) fn copy_threads(n: usize) -> usize {
    if n < PARALLEL_FROM {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get()).clamp(2, 8);
    std::env::var("KILN_COPY_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&t| t > 0).unwrap_or(cores)
}

/// Puts the files and symlinks of one source; their directories exist already and their targets
/// are distinct (one walk of one source), so the order between them does not matter and they can
/// be put by several threads. The first error stops the others and is returned.
fn put_leaves(rootdir: &RootDir, leaves: &[Leaf<'_>], attrs: Attrs, threads: usize) -> Result<(), BuildError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let put = |cache: &mut ParentDir, l: &Leaf<'_>| put_leaf(rootdir, cache, l, attrs);
    if threads <= 1 {
        let mut cache = ParentDir::default();
        return leaves.iter().try_for_each(|l| put(&mut cache, l));
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<(usize, BuildError)>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.min(leaves.len()) {
            s.spawn(|| {
                let mut cache = ParentDir::default();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(l) = leaves.get(i) else { break };
                    if let Err(e) = put(&mut cache, l) {
                        failed.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        // The error of the earliest entry, as one thread would have reported it.
                        if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                            *slot = Some((i, e));
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
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
) -> Result<(), BuildError> {
    let r = rootdir.resolve(target, false, Missing::Create).map_err(root_err)?;
    let dst = r.host_path;
    let existing = fs::symlink_metadata(&dst).ok();
    let (uid, gid) = copied_owner(attrs, e, src_root);
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
            remove_existing(&dst, existing.as_ref().map(fs::Metadata::is_dir))?;
            copy_file(host_src, &r.dir, r.name.as_deref(), &dst, (uid, gid), mode)?;
        }
        Kind::Symlink { target: link } => {
            // A top-level symlink source was already followed by the walk; only links inside a
            // copied directory reach here, and they are copied as links.
            remove_existing(&dst, existing.as_ref().map(fs::Metadata::is_dir))?;
            symlink(link, &dst).map_err(io_err("create symlink", &dst))?;
            chown_as_image(&dst, uid, gid).map_err(io_err("chown", &dst))?;
        }
    }
    Ok(())
}

/// The directory the last leaf of a thread went into, kept open: the leaves of one source come in
/// walk order, directory by directory, so the next one most often goes into the same directory,
/// and the path walk through the root (a `stat` and an `open` per component, through overlayfs)
/// is done once per directory instead of once per file.
///
/// Holding the descriptor is safe for the whole [`put_leaves`]: the leaves' parents are
/// directories of the source walk, and no leaf can replace one (a leaf's target is never a walk
/// directory nor above one).
#[derive(Default)]
struct ParentDir {
    /// The leaf target's parent as given (`/app/d00`), its descriptor, and its host path.
    open: Option<(PathBuf, std::os::fd::OwnedFd, PathBuf)>,
}

/// Puts one file or symlink (see [`put_leaves`]) into its parent directory by name, the parent
/// resolved once per directory ([`ParentDir`]). What is in the way is removed first, as
/// [`put_entry`] does.
fn put_leaf(rootdir: &RootDir, cache: &mut ParentDir, l: &Leaf<'_>, attrs: Attrs) -> Result<(), BuildError> {
    let (Some(parent), Some(name)) = (l.target.parent(), l.target.file_name()) else {
        return put_entry(rootdir, &l.target, l.entry, &l.host_src, l.src_root, attrs);
    };
    if cache.open.as_ref().is_none_or(|(p, _, _)| p != parent) {
        let r = rootdir.resolve(&l.target, false, Missing::Create).map_err(root_err)?;
        let host_parent = r.host_path.parent().map(Path::to_path_buf).unwrap_or_default();
        if r.name.as_deref() != Some(name) {
            // `..` or the like at the end: not a plain name in a directory.
            cache.open = None;
            return put_entry(rootdir, &l.target, l.entry, &l.host_src, l.src_root, attrs);
        }
        cache.open = Some((parent.to_path_buf(), r.dir, host_parent));
    }
    let Some((_, dir, host_parent)) = cache.open.as_ref() else { unreachable!("set above") };
    let dst = host_parent.join(name);
    let existing = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory);
    let e = l.entry;
    let (uid, gid) = copied_owner(attrs, e, l.src_root);
    match &e.kind {
        Kind::File { .. } => {
            remove_existing(&dst, existing)?;
            copy_file(&l.host_src, dir, Some(name), &dst, (uid, gid), attrs.chmod.unwrap_or(e.mode))
        }
        Kind::Symlink { target: link } => {
            remove_existing(&dst, existing)?;
            rustix::fs::symlinkat(link.as_str(), dir, name).map_err(|e| io_err("create symlink", &dst)(e.into()))?;
            let (u, g) = image_owner(uid, gid);
            rustix::fs::chownat(
                dir,
                name,
                Some(rustix::process::Uid::from_raw(u)),
                Some(rustix::process::Gid::from_raw(g)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err("chown", &dst)(e.into()))
        }
        Kind::Dir => put_entry(rootdir, &l.target, e, &l.host_src, l.src_root, attrs),
    }
}

/// `lchown`, except that an unprivileged kiln (`--isolation none` as an ordinary user, where its
/// own ids stand for the image's root: see `hostroot`) gives root's files to itself, as it must.
fn chown_as_image(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let (u, g) = image_owner(uid, gid);
    lchown(p, Some(u), Some(g))
}

/// The ids to give a file the image owns as `uid:gid` (see [`chown_as_image`]).
fn image_owner(uid: u32, gid: u32) -> (u32, u32) {
    // SAFETY: no arguments.
    let me = unsafe { (libc::geteuid(), libc::getegid()) };
    if me.0 != 0 && (uid, gid) == (0, 0) {
        return me;
    }
    (uid, gid)
}

/// Removes what is at `dst` (`existing`: nothing, or whether it is a directory) to make room.
fn remove_existing(dst: &Path, existing: Option<bool>) -> Result<(), BuildError> {
    match existing {
        Some(true) => fs::remove_dir_all(dst).map_err(io_err("replace", dst)),
        Some(false) => fs::remove_file(dst).map_err(io_err("replace", dst)),
        None => Ok(()),
    }
}

/// The owner a copied entry gets: `--chown`'s, else its own when the source keeps owners
/// (`COPY --from`), else root.
fn copied_owner(attrs: Attrs, e: &Entry, src_root: &SourceRoot<'_>) -> (u32, u32) {
    match attrs.chown {
        Some(o) => o,
        None if src_root.keep_owner => (e.uid, e.gid),
        None => (0, 0),
    }
}

/// Copies one regular file to `name` in the open directory `dir` (a new file: the caller removed
/// what was there), then sets its owner, mode and mtime through the open descriptor: a third of the
/// path lookups and system calls of copy-then-chown-then-chmod by path, which is what a COPY of
/// thousands of small files spends its time on.
fn copy_file(
    src: &Path,
    dir: &std::os::fd::OwnedFd,
    name: Option<&std::ffi::OsStr>,
    dst: &Path,
    (uid, gid): (u32, u32),
    mode: u32,
) -> Result<(), BuildError> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let mut from = fs::File::open(src).map_err(io_err("read", src))?;
    let src_meta = from.metadata().map_err(io_err("read", src))?;
    let Some(name) = name else {
        return Err(BuildError::Io { action: "copy into", path: dst.to_path_buf(), source: io::ErrorKind::IsADirectory.into() });
    };
    let cname = CString::new(name.as_bytes()).map_err(|_| BuildError::Io {
        action: "copy into",
        path: dst.to_path_buf(),
        source: io::ErrorKind::InvalidInput.into(),
    })?;
    // O_EXCL|O_NOFOLLOW: never write through something that appeared at the name meanwhile.
    // SAFETY: `dir` is an open directory descriptor and `cname` a NUL-terminated name; the returned
    // descriptor is owned by the File from here on.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(BuildError::Io { action: "create", path: dst.to_path_buf(), source: io::Error::last_os_error() });
    }
    // SAFETY: `fd` was just opened above and nothing else owns it.
    let mut to = unsafe { fs::File::from_raw_fd(fd) };
    send_all(&mut from, &mut to, src_meta.len()).map_err(io_err("copy into", dst))?;
    let (uid, gid) = image_owner(uid, gid);
    std::os::unix::fs::fchown(&to, Some(uid), Some(gid)).map_err(io_err("chown", dst))?;
    // chown clears setuid bits, so the mode goes after it.
    to.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("chmod", dst))?;
    if let Ok(t) = src_meta.modified() {
        let _ = to.set_modified(t);
    }
    Ok(())
}

/// Copies the file (`len` bytes, its size when opened) with `sendfile`, one system call for a small
/// file, and falls back to `io::copy` where `sendfile` is refused. Not `io::copy` alone: between two
/// file systems (the context and an overlay mount) it first tries `copy_file_range`, which fails
/// with EXDEV for every file. A file that shrank meanwhile ends where its data ends.
fn send_all(from: &mut fs::File, to: &mut fs::File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call; a null offset means the
        // input file's own offset is used and advanced.
        let n = unsafe { libc::sendfile(to.as_raw_fd(), from.as_raw_fd(), std::ptr::null_mut(), chunk) };
        match n {
            // Both offsets are where sendfile left them: the rest goes the ordinary way.
            n if n < 0 => return io::copy(from, to).map(drop),
            0 => break,
            n => left -= n as u64,
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A source tree of many files (setuid and odd modes, owners, symlinks, nested dirs, empty and
    /// big files) and an image root that already holds some of the targets (a file, a directory
    /// and a symlink where the copy puts a file).
    fn fixture(base: &Path) -> (PathBuf, PathBuf) {
        let src = base.join("src");
        for i in 0..400u32 {
            let d = src.join(format!("tree/d{:02}/e{}", i % 23, i % 3));
            fs::create_dir_all(&d).unwrap();
            let f = d.join(format!("f{i:03}"));
            fs::write(&f, vec![(i % 251) as u8; (i as usize * 37) % 9000]).unwrap();
            lchown(&f, Some(i % 7), Some(i % 5)).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode([0o644, 0o755, 0o4755, 0o600, 0o2711][i as usize % 5])).unwrap();
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + u64::from(i));
            fs::File::options().write(true).open(&f).unwrap().set_modified(t).unwrap();
            if i % 17 == 0 {
                symlink(format!("../f{i:03}"), d.join(format!("l{i:03}"))).unwrap();
            }
        }
        let root = base.join("root");
        fs::create_dir_all(root.join("app/tree/d00/e0/f000")).unwrap(); // a dir where a file goes
        fs::write(root.join("app/tree/d01/e1/f001").tap_parent(), b"old").unwrap();
        symlink("/etc/passwd", root.join("app/tree/d02/e2/f002").tap_parent()).unwrap();
        (src, root)
    }

    trait TapParent {
        fn tap_parent(self) -> Self;
    }
    impl TapParent for PathBuf {
        fn tap_parent(self) -> Self {
            fs::create_dir_all(self.parent().unwrap()).unwrap();
            self
        }
    }

    fn listing(root: &Path) -> Vec<String> {
        let (_, entries) = walk_root(root, "").unwrap();
        entries
            .iter()
            .map(|e| {
                let p = root.join(&e.rel);
                let m = fs::symlink_metadata(&p).unwrap();
                let body = match e.kind {
                    Kind::File { .. } => format!("{:?} mtime={}", fs::read(&p).unwrap().len(), m.mtime()),
                    Kind::Symlink { ref target } => format!("-> {target}"),
                    Kind::Dir => String::new(),
                };
                format!("{} {:?} {:o} {}:{} {body}", e.rel, e.kind, e.mode, e.uid, e.gid)
            })
            .collect()
    }

    fn copy(src: &Path, root: &Path, attrs: Attrs, threads: fn(usize) -> usize) -> Result<(), BuildError> {
        let (dir, entries) = walk_root(src, "tree")?;
        let source = Source { root: SourceRoot { dir: &dir, keep_owner: true }, rel: "tree".into(), entries, parents: false };
        copy_into_with(root, &[source], "/app/tree", true, attrs, threads)
    }

    #[test]
    fn many_files_put_by_several_threads_equal_one_thread() {
        for attrs in [Attrs::default(), Attrs { chown: Some((1234, 99)), chmod: Some(0o4750) }] {
            let one = tempfile::tempdir().unwrap();
            let many = tempfile::tempdir().unwrap();
            let (src1, root1) = fixture(one.path());
            let (src2, root2) = fixture(many.path());
            copy(&src1, &root1, attrs, |_| 1).unwrap();
            copy(&src2, &root2, attrs, |_| 6).unwrap();
            let (a, b) = (listing(&root1), listing(&root2));
            assert!(a.len() > 400, "the copy put every entry: {}", a.len());
            assert_eq!(a, b, "{attrs:?}");
            // What was at three targets was replaced by the source's file, owner and mode kept.
            let f = root2.join("app/tree/d00/e0/f000");
            let m = fs::symlink_metadata(&f).unwrap();
            assert!(m.is_file());
            if attrs.chown.is_none() {
                assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 0, 0));
                let s = fs::symlink_metadata(root2.join("app/tree/d03/e0/f003")).unwrap();
                assert_eq!((s.mode() & 0o7777, s.uid(), s.gid(), s.mtime()), (0o600, 3, 3, 1_000_003));
                let s = fs::symlink_metadata(root2.join("app/tree/d02/e2/f002")).unwrap();
                assert_eq!(s.mode() & 0o7777, 0o4755, "setuid survives the chown");
            } else {
                assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4750, 1234, 99));
            }
            assert_eq!(fs::read(root2.join("app/tree/d01/e1/f001")).unwrap().len(), 37);
            assert!(fs::symlink_metadata(root2.join("app/tree/d02/e2/f002")).unwrap().is_file());
        }
    }

    #[test]
    fn a_failing_file_stops_the_copy_with_the_error_of_its_path() {
        let d = tempfile::tempdir().unwrap();
        let (src, root) = fixture(d.path());
        let bad = src.join("tree/d05/e2/f005");
        // Root reads any file, so the failure is a file the walk listed and that is gone when the
        // copy reaches it (a context changed under the build).
        let (dir, entries) = walk_root(&src, "tree").unwrap();
        fs::remove_file(&bad).unwrap();
        let source = Source { root: SourceRoot { dir: &dir, keep_owner: true }, rel: "tree".into(), entries, parents: false };
        let err = copy_into_with(&root, &[source], "/app/tree", true, Attrs::default(), |_| 4).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("tree/d05/e2/f005"), "{msg}");
    }
}
