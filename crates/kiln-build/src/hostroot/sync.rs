//! Making `/` equal to a flat snapshot: the reset before a `--isolation none` step (kaniko
//! deletes and unpacks; kiln copies only what differs).
//!
//! A file is left alone when its type, mode, owner, size, link count and mtime match *and* it is
//! known to be the same: either kiln copied it there from this very source file (its inode and
//! ctime are still the ones kiln saw after copying, and the source's too: [`Origins`]), or the
//! two contents compare equal. mtimes alone would not do: images built with a fixed
//! `SOURCE_DATE_EPOCH` give every file the same one.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{HostRootError, Skip};

/// Where each file kiln copied into `/` came from, so an unchanged one is recognised without
/// reading it.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    map: HashMap<PathBuf, Origin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    dst: (u64, i64, i64),
    src: (u64, u64, i64, i64),
}

fn dst_key(md: &fs::Metadata) -> (u64, i64, i64) {
    (md.ino(), md.ctime(), md.ctime_nsec())
}

fn src_key(md: &fs::Metadata) -> (u64, u64, i64, i64) {
    (md.dev(), md.ino(), md.ctime(), md.ctime_nsec())
}

/// What a sync did, for the progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub copied: u64,
    pub removed: u64,
    pub kept: u64,
}

struct Syncer<'a> {
    src: &'a Path,
    dst: &'a Path,
    skip: &'a Skip,
    origins: &'a mut Origins,
    /// Source inode → the destination path it was first copied to or found at (hard links).
    links: HashMap<(u64, u64), PathBuf>,
    unprivileged: bool,
    report: SyncReport,
}

/// Makes `dst` (normally `/`) hold exactly what `src` holds, leaving what `skip` covers alone.
pub fn sync(src: &Path, dst: &Path, skip: &Skip, origins: &mut Origins) -> Result<SyncReport, HostRootError> {
    let mut s = Syncer {
        src,
        dst,
        skip,
        origins,
        links: HashMap::new(),
        // SAFETY: no arguments.
        unprivileged: unsafe { libc::geteuid() } != 0,
        report: SyncReport::default(),
    };
    s.dir(Path::new(""))?;
    Ok(s.report)
}

fn io_at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> HostRootError {
    let path = path.to_path_buf();
    move |source| HostRootError::Io { what, path, source }
}

fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>, HostRootError> {
    let mut v: Vec<_> = fs::read_dir(dir).map_err(io_at("read", dir))?.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    v.sort();
    Ok(v)
}

impl Syncer<'_> {
    fn dir(&mut self, rel: &Path) -> Result<(), HostRootError> {
        let (sdir, ddir) = (self.src.join(rel), self.dst.join(rel));
        if self.unprivileged {
            // An unprivileged kiln owns everything here; a read-only directory must still take
            // entries until its mode is set back below.
            let _ = fs::set_permissions(
                &ddir,
                fs::Permissions::from_mode(0o700 | (fs::symlink_metadata(&ddir).map(|m| m.mode()).unwrap_or(0) & 0o7777)),
            );
        }
        let want = names(&sdir)?;
        for name in names(&ddir)? {
            if want.binary_search(&name).is_ok() {
                continue;
            }
            let d = ddir.join(&name);
            self.remove(&d)?;
        }
        for name in want {
            let r = rel.join(&name);
            let (s, d) = (self.src.join(&r), self.dst.join(&r));
            if self.skip.covers(&d) {
                continue;
            }
            let smd = fs::symlink_metadata(&s).map_err(io_at("stat", &s))?;
            let mut dmd = fs::symlink_metadata(&d).ok();
            if let Some(m) = &dmd {
                if m.mode() & libc::S_IFMT != smd.mode() & libc::S_IFMT {
                    if self.skip.leads_to(&d) {
                        // A directory kiln needs (it holds a skipped path) where the image has
                        // something else: the image's entry cannot be there.
                        continue;
                    }
                    self.remove(&d)?;
                    dmd = None;
                }
            }
            if smd.is_dir() {
                if dmd.is_none() {
                    fs::create_dir(&d).map_err(io_at("create", &d))?;
                    self.report.copied += 1;
                }
                self.dir(&r)?;
                self.set_meta(&d, &smd, true)?;
            } else if smd.file_type().is_file() {
                self.file(&r, &s, &d, &smd, dmd.as_ref())?;
            } else if smd.file_type().is_symlink() {
                let same = dmd
                    .as_ref()
                    .is_some_and(|m| m.uid() == smd.uid() && m.gid() == smd.gid() && fs::read_link(&d).ok() == fs::read_link(&s).ok());
                if same {
                    self.report.kept += 1;
                } else {
                    if dmd.is_some() {
                        self.remove(&d)?;
                    }
                    let target = fs::read_link(&s).map_err(io_at("read link", &s))?;
                    std::os::unix::fs::symlink(&target, &d).map_err(io_at("create symlink", &d))?;
                    self.report.copied += 1;
                }
                self.set_meta(&d, &smd, false)?;
            } else {
                let same = dmd.as_ref().is_some_and(|m| m.mode() == smd.mode() && m.rdev() == smd.rdev());
                if !same {
                    if dmd.is_some() {
                        self.remove(&d)?;
                    }
                    mknod(&d, smd.mode(), smd.rdev()).map_err(io_at("create device or fifo", &d))?;
                    self.report.copied += 1;
                }
                self.set_meta(&d, &smd, false)?;
            }
        }
        Ok(())
    }

    fn file(&mut self, rel: &Path, s: &Path, d: &Path, smd: &fs::Metadata, dmd: Option<&fs::Metadata>) -> Result<(), HostRootError> {
        let key = (smd.dev(), smd.ino());
        if let Some(m) = dmd {
            let alike = m.mode() == smd.mode()
                && self.owner_ok(m, smd)
                && m.size() == smd.size()
                && m.nlink() == smd.nlink()
                && (m.mtime(), m.mtime_nsec()) == (smd.mtime(), smd.mtime_nsec());
            let known = self.origins.map.get(rel).is_some_and(|o| o.dst == dst_key(m) && o.src == src_key(smd));
            if alike && (known || same_content(s, d)) {
                self.origins.map.insert(rel.to_path_buf(), Origin { dst: dst_key(m), src: src_key(smd) });
                self.links.entry(key).or_insert_with(|| d.to_path_buf());
                self.report.kept += 1;
                return Ok(());
            }
            self.remove(d)?;
        }
        if smd.nlink() > 1 {
            if let Some(first) = self.links.get(&key) {
                fs::hard_link(first, d).map_err(io_at("hard link", d))?;
                let m = fs::symlink_metadata(d).map_err(io_at("stat", d))?;
                self.origins.map.insert(rel.to_path_buf(), Origin { dst: dst_key(&m), src: src_key(smd) });
                self.report.copied += 1;
                return Ok(());
            }
        }
        fs::copy(s, d).map_err(io_at("copy into", d))?;
        self.set_meta(d, smd, false)?;
        let m = fs::symlink_metadata(d).map_err(io_at("stat", d))?;
        self.origins.map.insert(rel.to_path_buf(), Origin { dst: dst_key(&m), src: src_key(smd) });
        self.links.insert(key, d.to_path_buf());
        self.report.copied += 1;
        Ok(())
    }

    /// An unprivileged kiln's files are its own whatever the source says (it cannot chown).
    fn owner_ok(&self, m: &fs::Metadata, smd: &fs::Metadata) -> bool {
        self.unprivileged || (m.uid(), m.gid()) == (smd.uid(), smd.gid())
    }

    /// Owner, xattrs, mode, times from `smd`/the source, in that order (chown clears setuid).
    fn set_meta(&mut self, d: &Path, smd: &fs::Metadata, is_dir: bool) -> Result<(), HostRootError> {
        let is_link = smd.file_type().is_symlink();
        let cur = fs::symlink_metadata(d).map_err(io_at("stat", d))?;
        if !self.unprivileged && (cur.uid(), cur.gid()) != (smd.uid(), smd.gid()) {
            std::os::unix::fs::lchown(d, Some(smd.uid()), Some(smd.gid())).map_err(io_at("chown", d))?;
        }
        let src = self.src.join(d.strip_prefix(self.dst).unwrap_or(d));
        copy_xattrs(&src, d);
        if !is_link && (cur.mode() & 0o7777 != smd.mode() & 0o7777 || !self.unprivileged || is_dir) {
            fs::set_permissions(d, fs::Permissions::from_mode(smd.mode() & 0o7777)).map_err(io_at("chmod", d))?;
        }
        set_times(d, smd).map_err(io_at("set the times of", d))?;
        Ok(())
    }

    /// Removes `d` and what is below it, except skipped paths and the way to them.
    fn remove(&mut self, d: &Path) -> Result<(), HostRootError> {
        if self.skip.covers(d) {
            return Ok(());
        }
        let md = match fs::symlink_metadata(d) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at("stat", d)(e)),
        };
        if !md.is_dir() {
            fs::remove_file(d).map_err(io_at("remove", d))?;
            self.report.removed += 1;
            return Ok(());
        }
        if self.unprivileged {
            let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o700));
        }
        for name in names(d)? {
            self.remove(&d.join(name))?;
        }
        if self.skip.leads_to(d) {
            return Ok(());
        }
        fs::remove_dir(d).map_err(io_at("remove", d))?;
        self.report.removed += 1;
        Ok(())
    }
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (fs::File::open(a), fs::File::open(b)) else { return false };
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = match read_full(&mut fa, &mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        let nb = match read_full(&mut fb, &mut bb) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: a valid C string and integer arguments.
    if unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_times(p: &Path, md: &fs::Metadata) -> io::Result<()> {
    let c = cpath(p)?;
    let ts = [
        libc::timespec { tv_sec: md.atime() as libc::time_t, tv_nsec: md.atime_nsec() as libc::c_long },
        libc::timespec { tv_sec: md.mtime() as libc::time_t, tv_nsec: md.mtime_nsec() as libc::c_long },
    ];
    // SAFETY: a valid C string and a two-element timespec array.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies the extended attributes kiln may set here (`security.capability`, `user.*`; a
/// `trusted.*` one needs CAP_SYS_ADMIN and is left out, as when extracting a layer unprivileged).
fn copy_xattrs(src: &Path, dst: &Path) {
    let (Ok(s), Ok(d)) = (cpath(src), cpath(dst)) else { return };
    let mut list = vec![0u8; 4096];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(s.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    if n <= 0 {
        return;
    }
    for name in list[..n as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else { continue };
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: valid C strings and buffer.
        let vn = unsafe { libc::lgetxattr(s.as_ptr(), cname.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if vn < 0 {
            continue;
        }
        // SAFETY: valid C strings and buffer of `vn` bytes.
        unsafe { libc::lsetxattr(d.as_ptr(), cname.as_ptr(), val.as_ptr().cast(), vn as usize, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_copies_what_differs_removes_the_rest_and_spares_skipped_paths() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/sh"), "shell").unwrap();
        std::os::unix::fs::symlink("sh", src.join("bin/ash")).unwrap();
        fs::hard_link(src.join("bin/sh"), src.join("bin/sh2")).unwrap();
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/hostname"), "image\n").unwrap();
        fs::set_permissions(src.join("etc"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::create_dir_all(dst.join("old/deep")).unwrap();
        fs::write(dst.join("old/deep/x"), "x").unwrap();
        fs::create_dir_all(dst.join("kiln/root")).unwrap();
        fs::write(dst.join("kiln/root/blob"), "keep").unwrap();
        fs::create_dir_all(dst.join("etc")).unwrap();
        fs::write(dst.join("etc/hostname"), "mounted by the runtime\n").unwrap();
        let skip = Skip::new(vec![dst.join("kiln/root"), dst.join("etc/hostname")]);
        let mut origins = Origins::default();
        let r = sync(&src, &dst, &skip, &mut origins).unwrap();
        assert!(!dst.join("old").exists());
        assert_eq!(fs::read_to_string(dst.join("kiln/root/blob")).unwrap(), "keep");
        assert!(dst.join("kiln").is_dir(), "the way to a skipped path stays");
        assert_eq!(fs::read_to_string(dst.join("etc/hostname")).unwrap(), "mounted by the runtime\n");
        assert_eq!(fs::read_link(dst.join("bin/ash")).unwrap(), PathBuf::from("sh"));
        let (a, b) = (fs::metadata(dst.join("bin/sh")).unwrap(), fs::metadata(dst.join("bin/sh2")).unwrap());
        assert_eq!(a.ino(), b.ino(), "hard links stay linked");
        assert_eq!(fs::metadata(dst.join("etc")).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(fs::metadata(dst.join("bin/sh")).unwrap().mtime(), fs::metadata(src.join("bin/sh")).unwrap().mtime());
        assert!(r.copied >= 4 && r.removed >= 3, "{r:?}");
        // Again: everything is known and kept, nothing read or copied.
        let again = sync(&src, &dst, &skip, &mut origins).unwrap();
        assert_eq!((again.copied, again.removed), (0, 0), "{again:?}");
        // A step edits a file in place keeping size and mtime: the origin no longer matches.
        let before = fs::metadata(dst.join("bin/sh")).unwrap();
        fs::write(dst.join("bin/sh"), "SHELL").unwrap();
        set_times(&dst.join("bin/sh"), &before).unwrap();
        sync(&src, &dst, &skip, &mut origins).unwrap();
        assert_eq!(fs::read_to_string(dst.join("bin/sh")).unwrap(), "shell");
    }
}
