//! Applying a layer tarball to a directory. Every path goes through [`RootDir::resolve`].

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};

use super::{decompress, LayerError};
use crate::digest::{Digest, DigestError, VerifyingReader};
use crate::fsroot::{clear_dir_at, normalize_entry_name, remove_all_at, Missing, RootDir};

/// Largest GNU long name / long link / PAX record block accepted (real ones are a few hundred bytes).
const MAX_EXTENSION: u64 = 1024 * 1024;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How to apply a layer.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Set uid/gid from the archive (default: when running as root).
    pub preserve_owner: bool,
    /// Fail (after applying) when the uncompressed stream's digest differs; the caller must then
    /// discard the directory.
    pub expected_diff_id: Option<Digest>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { preserve_owner: rustix::process::geteuid().is_root(), expected_diff_id: None }
    }
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries applied (whiteouts included, extension headers not).
    pub entries: u64,
    /// Digest of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Entries or attributes that could not be applied here and were skipped, with the reason
    /// (device nodes without root, xattrs the file system refuses, unknown entry types).
    pub skipped: Vec<String>,
    /// Without [`ApplyOptions::preserve_owner`]: every entry's owner as the archive gives it
    /// (path as in a layer, `usr/bin/sh`; uid; gid), in archive order, since the files now belong
    /// to the caller instead. A caller that stands for the image's root keeps these itself, or
    /// refuses the archive ([`ApplyReport::owners_lost`]). Empty when owners are kept.
    pub unkept_owners: Vec<(String, u64, u64)>,
}

impl ApplyReport {
    /// The entries given to an owner other than 0:0 that an apply without
    /// [`ApplyOptions::preserve_owner`] could not keep: how many, and the first (`path (uid:gid)`).
    pub fn owners_lost(&self) -> (u64, Option<String>) {
        let mut lost = self.unkept_owners.iter().filter(|(_, u, g)| (*u, *g) != (0, 0));
        let first = lost.next().map(|(p, u, g)| format!("{p} ({u}:{g})"));
        (first.iter().count() as u64 + lost.count() as u64, first)
    }
}

#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Vec<(String, Vec<u8>)>,
}

impl Extensions {
    fn pax(&self, key: &str) -> Option<&[u8]> {
        self.pax.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }
}

struct State<'a> {
    root: &'a RootDir,
    opts: &'a ApplyOptions,
    is_root: bool,
    created: HashSet<Vec<OsString>>,
    dir_times: Vec<(Vec<OsString>, Timespec)>,
    report_entries: u64,
    skipped: Vec<String>,
    unkept_owners: Vec<(String, u64, u64)>,
}

/// Applies a layer (gzip, zstd or plain tar, detected by magic bytes) on top of the directory `root`.
/// Refuses hostile entries with [`LayerError::Hostile`]; see the module docs for the model.
pub fn apply_layer<R: Read>(layer: R, root: &Path, opts: &ApplyOptions) -> Result<ApplyReport, LayerError> {
    let root_dir = RootDir::open(root)?;
    let stream = decompress(layer).map_err(LayerError::Tar)?;
    let mut vr = VerifyingReader::new(stream, opts.expected_diff_id.as_ref());
    let mut st = State {
        root: &root_dir,
        opts,
        is_root: rustix::process::geteuid().is_root(),
        created: HashSet::new(),
        dir_times: Vec::new(),
        report_entries: 0,
        skipped: Vec::new(),
        unkept_owners: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut vr);
        let entries = archive.entries().map_err(tar_err)?.raw(true);
        let mut ext = Extensions::default();
        for entry in entries {
            let mut entry = entry.map_err(tar_err)?;
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::GNULongName => {
                    ext.long_name = Some(read_extension(&mut entry, "GNU long name")?);
                    continue;
                }
                tar::EntryType::GNULongLink => {
                    ext.long_link = Some(read_extension(&mut entry, "GNU long link name")?);
                    continue;
                }
                tar::EntryType::XHeader => {
                    let data = read_extension(&mut entry, "PAX header")?;
                    for rec in tar::PaxExtensions::new(&data) {
                        let rec = rec.map_err(|e| LayerError::Tar(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                        let key = String::from_utf8_lossy(rec.key_bytes()).into_owned();
                        ext.pax.push((key, rec.value_bytes().to_vec()));
                    }
                    continue;
                }
                tar::EntryType::XGlobalHeader => continue,
                _ => {}
            }
            let ext = std::mem::take(&mut ext);
            st.apply_entry(&mut entry, &ext)?;
        }
    }
    // Hash the rest of the stream (end-of-archive blocks and any padding) so the diff id covers it all.
    io::copy(&mut vr, &mut io::sink()).map_err(digest_or_tar)?;
    let (diff_id, uncompressed_size) = vr.finish().map_err(digest_or_tar)?;
    st.finish_dir_times();
    Ok(ApplyReport { entries: st.report_entries, diff_id, uncompressed_size, skipped: st.skipped, unkept_owners: st.unkept_owners })
}

fn tar_err(e: io::Error) -> LayerError {
    digest_or_tar(e)
}

fn digest_or_tar(e: io::Error) -> LayerError {
    if let Some(d) = e.get_ref().and_then(|x| x.downcast_ref::<DigestError>()) {
        return LayerError::Digest(d.clone());
    }
    LayerError::Tar(e)
}

fn read_extension<R: Read>(entry: &mut tar::Entry<'_, R>, what: &str) -> Result<Vec<u8>, LayerError> {
    let size = entry.header().entry_size().map_err(tar_err)?;
    if size > MAX_EXTENSION {
        return Err(LayerError::Hostile {
            entry: format!("<{what}>"),
            reason: format!("{what} of {size} bytes is larger than the 1 MiB kiln accepts"),
        });
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut v).map_err(tar_err)?;
    while v.last() == Some(&0) {
        v.pop();
    }
    Ok(v)
}

/// `io::copy` with a larger buffer: layer files are often big, and 8 KiB writes cost syscalls.
fn copy_buffered<R: Read, W: io::Write>(r: &mut R, w: &mut W) -> io::Result<u64> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn parse_num(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX mtime is decimal seconds with an optional fraction.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
    Some(Timespec { tv_sec, tv_nsec })
}

fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

impl State<'_> {
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, ext: &Extensions) -> Result<(), LayerError> {
        let header = entry.header().clone();
        let path_bytes: Vec<u8> = match (ext.pax("path"), &ext.long_name) {
            (Some(p), _) => p.to_vec(),
            (None, Some(l)) => l.clone(),
            (None, None) => header.path_bytes().into_owned(),
        };
        let name = String::from_utf8_lossy(&path_bytes).into_owned();
        let hostile = |reason: &str| LayerError::Hostile { entry: name.clone(), reason: reason.to_string() };
        let op_err = |op: &'static str| {
            let name = name.clone();
            move |e: rustix::io::Errno| LayerError::Entry { entry: name, op, source: e.into() }
        };
        if path_bytes.contains(&0) {
            return Err(hostile("its name contains a NUL byte"));
        }
        let comps = normalize_entry_name(&path_bytes).ok_or_else(|| hostile("its path climbs above the root with '..'"))?;
        if let Some(pax_size) = ext.pax("size").and_then(parse_num) {
            if Some(pax_size) != header.entry_size().ok() {
                return Err(LayerError::Unsupported { entry: name, what: "a PAX size record (files over 8 GiB)".into() });
            }
        }
        self.report_entries += 1;
        let kind = header.entry_type();

        if let Some(base) = comps.last().map(|b| b.as_bytes().to_vec()) {
            if base.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return self.whiteout(&comps, &base, &name);
            }
        }

        let uid = ext.pax("uid").and_then(parse_num).or_else(|| header.uid().ok()).unwrap_or(0);
        let gid = ext.pax("gid").and_then(parse_num).or_else(|| header.gid().ok()).unwrap_or(0);
        let mode = header.mode().map_err(tar_err)? & 0o7777;
        let mtime =
            ext.pax("mtime").and_then(parse_pax_time).unwrap_or(Timespec { tv_sec: header.mtime().unwrap_or(0) as i64, tv_nsec: 0 });
        let xattrs: Vec<(&str, &[u8])> =
            ext.pax.iter().filter_map(|(k, v)| k.strip_prefix("SCHILY.xattr.").map(|n| (n, v.as_slice()))).collect();

        if comps.is_empty() {
            if !kind.is_dir() {
                return Err(hostile("a non-directory entry names the root itself"));
            }
            let fd = self.root.fd();
            self.set_owner_mode_fd(fd, uid, gid, mode, &name)?;
            return Ok(());
        }

        let rel: PathBuf = comps.iter().collect();
        let res = self.root.resolve(&rel, false, Missing::Create)?;
        let Some(fname) = res.name.clone() else {
            return Err(hostile("its path resolves to a directory through a symlink"));
        };
        let dir = res.dir.as_fd();

        match kind {
            tar::EntryType::Directory => {
                let existing = rustix::fs::statat(dir, &fname, AtFlags::SYMLINK_NOFOLLOW).ok();
                let is_dir = existing.as_ref().is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory);
                if !is_dir {
                    if existing.is_some() {
                        remove_all_at(dir, &fname).map_err(|e| LayerError::Entry { entry: name.clone(), op: "replace", source: e })?;
                    }
                    rustix::fs::mkdirat(dir, &fname, Mode::from_raw_mode(0o700)).map_err(op_err("create directory"))?;
                }
                let fd =
                    rustix::fs::openat(dir, &fname, OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                        .map_err(op_err("open directory"))?;
                self.set_owner_mode_fd(fd.as_fd(), uid, gid, mode, &name)?;
                self.set_xattrs_fd(fd.as_fd(), &xattrs, &name);
                self.dir_times.push((comps.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.replace(dir, &fname, &name)?;
                let fd = rustix::fs::openat(
                    dir,
                    &fname,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(op_err("create file"))?;
                let mut file = File::from(fd);
                copy_buffered(entry, &mut file).map_err(|e| match digest_or_tar(e) {
                    LayerError::Tar(e) => LayerError::Entry { entry: name.clone(), op: "write file", source: e },
                    other => other,
                })?;
                self.set_owner_mode_fd(file.as_fd(), uid, gid, mode, &name)?;
                self.set_xattrs_fd(file.as_fd(), &xattrs, &name);
                rustix::fs::futimens(&file, &Timestamps { last_access: mtime, last_modification: mtime }).map_err(op_err("set times"))?;
            }
            tar::EntryType::Symlink => {
                let target = match (ext.pax("linkpath"), &ext.long_link) {
                    (Some(p), _) => p.to_vec(),
                    (None, Some(l)) => l.clone(),
                    (None, None) => header.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default(),
                };
                if target.is_empty() || target.contains(&0) {
                    return Err(hostile("symlink with an empty or NUL-containing target"));
                }
                self.replace(dir, &fname, &name)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), dir, &fname).map_err(op_err("create symlink"))?;
                self.set_owner_at(dir, &fname, uid, gid, &name)?;
                self.set_xattrs_at(dir, &fname, &xattrs, &name);
                self.set_times_at(dir, &fname, mtime, &name)?;
            }
            tar::EntryType::Link => {
                let target = match (ext.pax("linkpath"), &ext.long_link) {
                    (Some(p), _) => p.to_vec(),
                    (None, Some(l)) => l.clone(),
                    (None, None) => header.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default(),
                };
                let tcomps =
                    normalize_entry_name(&target).ok_or_else(|| hostile("its hard-link target climbs above the root with '..'"))?;
                if tcomps.is_empty() {
                    return Err(hostile("hard link to the root directory"));
                }
                let trel: PathBuf = tcomps.iter().collect();
                let tres = self.root.resolve(&trel, false, Missing::Fail).map_err(|e| LayerError::Hostile {
                    entry: name.clone(),
                    reason: format!("hard-link target {:?} cannot be resolved inside the root: {e}", String::from_utf8_lossy(&target)),
                })?;
                let tname = tres.name_or_dot().to_os_string();
                let tst = rustix::fs::statat(tres.dir.as_fd(), &tname, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|_| hostile(&format!("hard-link target {:?} does not exist in the root", String::from_utf8_lossy(&target))))?;
                if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
                    return Err(hostile("hard link to a directory"));
                }
                if let Ok(cur) = rustix::fs::statat(dir, &fname, AtFlags::SYMLINK_NOFOLLOW) {
                    if cur.st_dev == tst.st_dev && cur.st_ino == tst.st_ino {
                        self.created.insert(comps);
                        return Ok(());
                    }
                }
                self.replace(dir, &fname, &name)?;
                rustix::fs::linkat(tres.dir.as_fd(), &tname, dir, &fname, AtFlags::empty()).map_err(op_err("create hard link"))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if ft != FileType::Fifo && !self.is_root {
                    self.skip(format!("{name}: device node not created (needs root)"));
                    return Ok(());
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                self.replace(dir, &fname, &name)?;
                rustix::fs::mknodat(dir, &fname, ft, Mode::from_raw_mode(0o600), rustix::fs::makedev(major, minor))
                    .map_err(op_err("create device node"))?;
                self.set_owner_at(dir, &fname, uid, gid, &name)?;
                // Just created by us and not a symlink, so following is harmless; fchmodat has no
                // no-follow mode on Linux.
                rustix::fs::chmodat(dir, &fname, Mode::from_raw_mode(mode), AtFlags::empty()).map_err(op_err("set mode"))?;
                self.set_xattrs_at(dir, &fname, &xattrs, &name);
                self.set_times_at(dir, &fname, mtime, &name)?;
            }
            tar::EntryType::GNUSparse => {
                return Err(LayerError::Unsupported { entry: name, what: "a GNU sparse file".into() });
            }
            other => {
                self.skip(format!("{name}: entry type {other:?} ignored"));
                return Ok(());
            }
        }
        self.created.insert(comps);
        Ok(())
    }

    fn whiteout(&mut self, comps: &[OsString], base: &[u8], name: &str) -> Result<(), LayerError> {
        let parent: PathBuf = comps[..comps.len() - 1].iter().collect();
        let parent_comps = comps[..comps.len() - 1].to_vec();
        let res = self.root.resolve(&parent, true, Missing::Fail);
        let res = match res {
            Ok(r) if r.name.is_none() => r,
            // The directory is not there (or is not a directory): nothing below it to hide.
            Ok(_) => return Ok(()),
            Err(crate::fsroot::RootError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(crate::fsroot::RootError::NotADirectory { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if base == OPAQUE_MARKER.as_bytes() {
            let created = &self.created;
            clear_dir_at(res.dir.as_fd(), OsStr::new("."), &|child| {
                let mut p = parent_comps.clone();
                p.push(child.to_os_string());
                !created.contains(&p)
            })
            .map_err(|e| LayerError::Entry { entry: name.to_string(), op: "apply opaque whiteout", source: e })?;
            return Ok(());
        }
        let target = &base[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
            return Err(LayerError::Hostile {
                entry: name.to_string(),
                reason: format!("whiteout of {:?} is not a removable name", String::from_utf8_lossy(target)),
            });
        }
        remove_all_at(res.dir.as_fd(), OsStr::from_bytes(target)).map_err(|e| LayerError::Entry {
            entry: name.to_string(),
            op: "apply whiteout",
            source: e,
        })
    }

    /// Removes whatever is at `name` (a directory with its contents), never following a symlink there.
    fn replace(&self, dir: BorrowedFd<'_>, fname: &OsStr, name: &str) -> Result<(), LayerError> {
        remove_all_at(dir, fname).map_err(|e| LayerError::Entry { entry: name.to_string(), op: "replace existing entry", source: e })
    }

    fn skip(&mut self, what: String) {
        tracing::warn!("{what}");
        self.skipped.push(what);
    }

    fn set_owner_mode_fd(&mut self, fd: BorrowedFd<'_>, uid: u64, gid: u64, mode: u32, name: &str) -> Result<(), LayerError> {
        let err = |op: &'static str| move |e: rustix::io::Errno| LayerError::Entry { entry: name.to_string(), op, source: e.into() };
        self.note_owner(uid, gid, name);
        if self.opts.preserve_owner {
            let (u, g) =
                ids(uid, gid).ok_or_else(|| LayerError::Hostile { entry: name.to_string(), reason: "uid or gid out of range".into() })?;
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(err("set owner"))?;
        }
        // After chown, which clears setuid/setgid bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(err("set mode"))
    }

    /// Records an owner that is not kept (see [`ApplyReport::unkept_owners`]).
    fn note_owner(&mut self, uid: u64, gid: u64, name: &str) {
        if self.opts.preserve_owner {
            return;
        }
        let path = match normalize_entry_name(name.as_bytes()) {
            Some(comps) => comps.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/"),
            None => return,
        };
        self.unkept_owners.push((path, uid, gid));
    }

    fn set_owner_at(&mut self, dir: BorrowedFd<'_>, fname: &OsStr, uid: u64, gid: u64, name: &str) -> Result<(), LayerError> {
        self.note_owner(uid, gid, name);
        if !self.opts.preserve_owner {
            return Ok(());
        }
        let (u, g) =
            ids(uid, gid).ok_or_else(|| LayerError::Hostile { entry: name.to_string(), reason: "uid or gid out of range".into() })?;
        rustix::fs::chownat(dir, fname, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| LayerError::Entry {
            entry: name.to_string(),
            op: "set owner",
            source: e.into(),
        })
    }

    fn set_times_at(&mut self, dir: BorrowedFd<'_>, fname: &OsStr, t: Timespec, name: &str) -> Result<(), LayerError> {
        rustix::fs::utimensat(dir, fname, &Timestamps { last_access: t, last_modification: t }, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| LayerError::Entry { entry: name.to_string(), op: "set times", source: e.into() })
    }

    fn set_xattrs_fd(&mut self, fd: BorrowedFd<'_>, xattrs: &[(&str, &[u8])], name: &str) {
        for (k, v) in xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, *k, v, XattrFlags::empty()) {
                self.skip(format!("{name}: xattr {k} not set: {e}"));
            }
        }
    }

    fn set_xattrs_at(&mut self, dir: BorrowedFd<'_>, fname: &OsStr, xattrs: &[(&str, &[u8])], name: &str) {
        if xattrs.is_empty() {
            return;
        }
        // /proc/self/fd/N names the already-resolved directory; lsetxattr does not follow the final name.
        let p = proc_path(dir, fname);
        for (k, v) in xattrs {
            if let Err(e) = rustix::fs::lsetxattr(&p, *k, v, XattrFlags::empty()) {
                self.skip(format!("{name}: xattr {k} not set: {e}"));
            }
        }
    }

    fn finish_dir_times(&mut self) {
        // Directory times last: creating entries inside a directory changes its mtime.
        for (comps, t) in std::mem::take(&mut self.dir_times) {
            let rel: PathBuf = comps.iter().collect();
            if let Ok(res) = self.root.resolve(&rel, false, Missing::Fail) {
                let ts = Timestamps { last_access: t, last_modification: t };
                let _ = rustix::fs::utimensat(res.dir.as_fd(), res.name_or_dot(), &ts, AtFlags::SYMLINK_NOFOLLOW);
            }
        }
    }
}

fn ids(uid: u64, gid: u64) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
    let u = u32::try_from(uid).ok().filter(|u| *u != u32::MAX)?;
    let g = u32::try_from(gid).ok().filter(|g| *g != u32::MAX)?;
    Some((rustix::fs::Uid::from_raw(u), rustix::fs::Gid::from_raw(g)))
}
