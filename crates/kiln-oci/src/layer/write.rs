//! Writing layers deterministically, streaming: tar → diff-id hasher → compressor → digest hasher → out.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{decompress, LayerError};
use crate::digest::{Digest, DigestWriter};
use crate::manifest::Descriptor;
use crate::store::{BlobWriter, Store};
use crate::{media, Compression};

/// The gzip level kiln always uses (flate2's default; changing it changes every layer digest).
pub const GZIP_LEVEL: u32 = 6;
/// The zstd level kiln uses when zstd is asked for.
pub const ZSTD_LEVEL: i32 = 3;
const USTAR_MAX_ID: u64 = 0o7777777;

/// How to write a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    pub compression: Compression,
    /// Clamp every mtime to at most this many seconds since the epoch.
    pub source_date_epoch: Option<i64>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { compression: Compression::Gzip, source_date_epoch: None }
    }
}

impl WriteOptions {
    /// Gzip, with `SOURCE_DATE_EPOCH` from the environment when it is set and numeric.
    pub fn from_env() -> WriteOptions {
        let sde = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok());
        WriteOptions { compression: Compression::Gzip, source_date_epoch: sde }
    }
}

/// The result of writing a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the blob as written (compressed).
    pub digest: Digest,
    /// Size of the blob as written.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub compression: Compression,
}

impl LayerInfo {
    /// The OCI layer media type for this compression.
    pub fn media_type(&self) -> &'static str {
        match self.compression {
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
            Compression::None => media::OCI_LAYER_TAR,
        }
    }
    /// A manifest descriptor for the layer.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type(), self.digest.clone(), self.size)
    }
}

/// What one layer entry is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntrySource {
    /// A host file system object, taken as `lstat` sees it (directories are not descended into).
    Host(PathBuf),
    /// A deletion: written as `.wh.<name>` beside it.
    Whiteout,
    /// The directory at this path hides everything below it in lower layers: `<path>/.wh..wh..opq`.
    Opaque,
}

/// One entry for [`write_layer_from_entries`]: `path` is relative to the layer root (`usr/bin/sh`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: String,
    pub source: EntrySource,
}

enum Compressor<W: Write> {
    Gzip(super::pgzip::GzipWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    fn new(c: Compression, w: W) -> io::Result<Self> {
        Ok(match c {
            // The same encoders as export (`pgzip`), so a layer written compressed here is the blob
            // an export of its plain form would name.
            Compression::Gzip => Compressor::Gzip(super::pgzip::GzipWriter::new(w, GZIP_LEVEL, super::pgzip::default_threads())?),
            Compression::Zstd => Compressor::Zstd(super::pgzip::zstd_encoder(w, ZSTD_LEVEL, super::pgzip::default_threads())?),
            Compression::None => Compressor::None(w),
        })
    }
    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
            Compressor::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

type Chain<W> = DigestWriter<Compressor<DigestWriter<W>>>;

fn open_chain<W: Write>(out: W, c: Compression) -> Result<Chain<W>, LayerError> {
    // Uncompressed, the blob is the tar itself: its digest is the diff id, hashed once (outside).
    let out = if c == Compression::None { DigestWriter::counting(out) } else { DigestWriter::new(out) };
    let comp = Compressor::new(c, out).map_err(|e| LayerError::Io { op: "start compressor for", path: "layer".into(), source: e })?;
    Ok(DigestWriter::new(comp))
}

fn close_chain<W: Write>(chain: Chain<W>, c: Compression) -> Result<(W, LayerInfo), LayerError> {
    let (comp, diff_id, uncompressed_size) = chain.finish();
    let outer = comp.finish().map_err(|e| LayerError::Io { op: "finish compressing", path: "layer".into(), source: e })?;
    let (mut out, digest, size) = outer.finish();
    let digest = if c == Compression::None { diff_id.clone() } else { digest };
    out.flush().map_err(|e| LayerError::Io { op: "flush", path: "layer".into(), source: e })?;
    Ok((out, LayerInfo { digest, size, diff_id, uncompressed_size, compression: c }))
}

/// Writes a layer holding everything below `dir` (not `dir` itself), sorted, deterministic.
pub fn write_layer_from_dir<W: Write>(dir: &Path, out: W, opts: &WriteOptions) -> Result<(W, LayerInfo), LayerError> {
    let entries = walk(dir, false)?;
    write_layer_from_entries(entries, out, opts)
}

/// Writes a layer from an overlay upper dir: char devices 0/0 become `.wh.` whiteouts, directories with
/// `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`) get a `.wh..wh..opq` marker.
pub fn write_layer_from_overlay_upper<W: Write>(upper: &Path, out: W, opts: &WriteOptions) -> Result<(W, LayerInfo), LayerError> {
    let entries = walk(upper, true)?;
    write_layer_from_entries(entries, out, opts)
}

/// Writes a layer from an explicit list of entries (sorted here by their tar names; a later duplicate
/// path wins).
pub fn write_layer_from_entries<W: Write, I: IntoIterator<Item = LayerEntry>>(
    entries: I,
    out: W,
    opts: &WriteOptions,
) -> Result<(W, LayerInfo), LayerError> {
    let mut named: Vec<(String, EntrySource)> = Vec::new();
    for e in entries {
        let clean = clean_path(&e.path)?;
        let name = match &e.source {
            EntrySource::Host(_) => clean,
            EntrySource::Whiteout => match clean.rsplit_once('/') {
                Some((dir, base)) => format!("{dir}/.wh.{base}"),
                None => format!(".wh.{clean}"),
            },
            EntrySource::Opaque => format!("{clean}/.wh..wh..opq"),
        };
        named.push((name, e.source));
    }
    // Stable sort, then keep the last of equal names.
    named.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut deduped: Vec<(String, EntrySource)> = Vec::with_capacity(named.len());
    for item in named {
        match deduped.last_mut() {
            Some(last) if last.0 == item.0 => *last = item,
            _ => deduped.push(item),
        }
    }
    let mut builder = tar::Builder::new(open_chain(out, opts.compression)?);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    for (name, source) in deduped {
        match source {
            EntrySource::Host(p) => append_host(&mut builder, &name, &p, opts, &mut links)?,
            EntrySource::Whiteout | EntrySource::Opaque => append_marker(&mut builder, &name, opts)?,
        }
    }
    let chain = builder.into_inner().map_err(|e| LayerError::Io { op: "finish tar", path: "layer".into(), source: e })?;
    close_chain(chain, opts.compression)
}

/// Re-compresses an existing tar stream (plain, gzip or zstd) verbatim as a layer, for `kiln import`.
pub fn write_layer_from_tar<R: Read, W: Write>(tar: R, out: W, opts: &WriteOptions) -> Result<(W, LayerInfo), LayerError> {
    let mut input = decompress(tar).map_err(LayerError::Tar)?;
    let mut chain = open_chain(out, opts.compression)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LayerError::Tar(e)),
        };
        chain.write_all(&buf[..n]).map_err(|e| LayerError::Io { op: "write", path: "layer".into(), source: e })?;
    }
    close_chain(chain, opts.compression)
}

/// Runs one of the writers straight into the store and commits the blob under its digest.
pub fn write_layer_to_store<F>(store: &Store, write: F) -> Result<LayerInfo, LayerError>
where
    F: FnOnce(&mut dyn Write) -> Result<LayerInfo, LayerError>,
{
    // The writers hash exactly what they write, so the store need not hash it again.
    let mut tracked = WriteTracker { inner: store.blob_writer_trusting()?, failed: None };
    let info = match write(&mut tracked) {
        Ok(info) => info,
        // A failed write to the store (a full disk) says so, with the store's path, rather than
        // as a failure of whichever tar entry happened to be written at the time.
        Err(e) => {
            return Err(match tracked.failed.take() {
                Some(source) => {
                    LayerError::Io { op: "write the layer into the store at", path: tracked.inner.temp_path().to_path_buf(), source }
                }
                None => e,
            })
        }
    };
    store_commit(tracked.inner, &info)?;
    Ok(info)
}

/// A [`BlobWriter`] that remembers the first write error it returned.
struct WriteTracker {
    inner: BlobWriter,
    failed: Option<io::Error>,
}

impl WriteTracker {
    fn remember(&mut self, e: &io::Error) {
        if self.failed.is_none() {
            self.failed = Some(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            });
        }
    }
}

impl Write for WriteTracker {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        if let Err(e) = &r {
            self.remember(e);
        }
        r
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        if let Err(e) = &r {
            self.remember(e);
        }
        r
    }
}

fn store_commit(w: BlobWriter, info: &LayerInfo) -> Result<(), LayerError> {
    w.commit(Some(&info.digest))?;
    Ok(())
}

fn clean_path(p: &str) -> Result<String, LayerError> {
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(LayerError::BadPath(p.to_string())),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(LayerError::BadPath(p.to_string()));
    }
    Ok(parts.join("/"))
}

fn walk(root: &Path, overlay: bool) -> Result<Vec<LayerEntry>, LayerError> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| LayerError::Io { op: "list", path: dir.clone(), source: e })?;
        for e in rd {
            let e = e.map_err(|e| LayerError::Io { op: "list", path: dir.clone(), source: e })?;
            let host = e.path();
            let name = e.file_name();
            let name = name.to_str().ok_or_else(|| LayerError::BadPath(host.display().to_string()))?;
            let path = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
            let md = fs::symlink_metadata(&host).map_err(|e| LayerError::Io { op: "stat", path: host.clone(), source: e })?;
            let ft = md.file_type();
            if overlay && ft.is_char_device() && md.rdev() == 0 {
                out.push(LayerEntry { path, source: EntrySource::Whiteout });
                continue;
            }
            if overlay {
                if let Some(xattr) = unfaithful_xattr(&host) {
                    return Err(LayerError::NotFaithful { path: host, xattr });
                }
            }
            if ft.is_dir() {
                if overlay && is_opaque(&host) {
                    out.push(LayerEntry { path: path.clone(), source: EntrySource::Opaque });
                }
                stack.push((host.clone(), path.clone()));
            }
            out.push(LayerEntry { path, source: EntrySource::Host(host) });
        }
    }
    Ok(out)
}

/// An overlayfs xattr that means the object's content or children live in a lower layer: a
/// redirected directory (renamed from below) or a metacopy file (only its inode was copied up).
/// The kernel sets them only with `redirect_dir`/`metacopy` on, which kiln mounts with off.
fn unfaithful_xattr(p: &Path) -> Option<String> {
    // One syscall for the common case of no xattrs at all.
    let n = rustix::fs::llistxattr_query(p).ok()?;
    if n == 0 {
        return None;
    }
    let mut names = vec![0u8; n];
    let n = rustix::fs::llistxattr(p, &mut names[..]).ok()?;
    names[..n]
        .split(|b| *b == 0)
        .filter_map(|raw| std::str::from_utf8(raw).ok())
        .find(|name| {
            let rest = name.strip_prefix("trusted.overlay.").or_else(|| name.strip_prefix("user.overlay."));
            matches!(rest, Some("redirect" | "metacopy"))
        })
        .map(str::to_string)
}

fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"].iter().any(|k| {
        let mut buf = [0u8; 8];
        matches!(rustix::fs::lgetxattr(dir, *k, &mut buf[..]), Ok(n) if &buf[..n] == b"y")
    })
}

/// xattrs worth carrying in a layer, sorted by name (overlay's own bookkeeping is dropped).
fn read_xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(n) = rustix::fs::llistxattr_query(p) else { return Vec::new() };
    if n == 0 {
        return Vec::new();
    }
    let mut names = vec![0u8; n];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else { return Vec::new() };
    let mut out = Vec::new();
    for raw in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else { continue };
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        let Ok(len) = rustix::fs::lgetxattr_query(p, name) else { continue };
        let mut v = vec![0u8; len];
        if let Ok(len) = rustix::fs::lgetxattr(p, name, &mut v[..]) {
            v.truncate(len);
            out.push((name.to_string(), v));
        }
    }
    out.sort();
    out
}

fn clamp(mtime: i64, opts: &WriteOptions) -> u64 {
    let t = match opts.source_date_epoch {
        Some(sde) => mtime.min(sde),
        None => mtime,
    };
    t.max(0) as u64
}

fn append_marker<W: Write>(b: &mut tar::Builder<W>, name: &str, opts: &WriteOptions) -> Result<(), LayerError> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(clamp(0, opts));
    let mut pax = Vec::new();
    set_name(&mut h, name, &mut pax);
    finish_append(b, h, pax, io::empty(), name)
}

fn append_host<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    src: &Path,
    opts: &WriteOptions,
    links: &mut HashMap<(u64, u64), String>,
) -> Result<(), LayerError> {
    let md = fs::symlink_metadata(src).map_err(|e| LayerError::Io { op: "stat", path: src.to_path_buf(), source: e })?;
    let ft = md.file_type();
    let mut h = tar::Header::new_ustar();
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    h.set_mode(md.mode() & 0o7777);
    h.set_mtime(clamp(md.mtime(), opts));
    for (key, v, set) in [("uid", md.uid() as u64, 0), ("gid", md.gid() as u64, 1)] {
        let shown = if v > USTAR_MAX_ID {
            pax.push((key.to_string(), v.to_string().into_bytes()));
            0
        } else {
            v
        };
        if set == 0 {
            h.set_uid(shown)
        } else {
            h.set_gid(shown)
        }
    }
    h.set_size(0);
    let mut data: Option<File> = None;
    let mut tar_name = name.to_string();
    if ft.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        tar_name.push('/');
    } else if ft.is_file() {
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if let Some(first) = links.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                set_link(&mut h, first, &mut pax);
            } else {
                links.insert(key, name.to_string());
            }
        }
        if h.entry_type() != tar::EntryType::Link {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            let fd = rustix::fs::open(
                src,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| LayerError::Io { op: "open", path: src.to_path_buf(), source: e.into() })?;
            data = Some(File::from(fd));
        }
    } else if ft.is_symlink() {
        h.set_entry_type(tar::EntryType::Symlink);
        let target = fs::read_link(src).map_err(|e| LayerError::Io { op: "read link", path: src.to_path_buf(), source: e })?;
        let target = target.as_os_str().to_str().ok_or_else(|| LayerError::BadPath(src.display().to_string()))?.to_string();
        set_link(&mut h, &target, &mut pax);
    } else if ft.is_char_device() || ft.is_block_device() {
        h.set_entry_type(if ft.is_char_device() { tar::EntryType::Char } else { tar::EntryType::Block });
        let rdev = md.rdev();
        let err = |e| LayerError::Io { op: "record device numbers of", path: src.to_path_buf(), source: e };
        h.set_device_major(rustix::fs::major(rdev)).map_err(err)?;
        h.set_device_minor(rustix::fs::minor(rdev)).map_err(err)?;
    } else if ft.is_fifo() {
        h.set_entry_type(tar::EntryType::Fifo);
    } else {
        tracing::warn!("{}: sockets cannot be stored in a layer; skipped", src.display());
        return Ok(());
    }
    set_name(&mut h, &tar_name, &mut pax);
    for (k, v) in read_xattrs(src) {
        pax.push((format!("SCHILY.xattr.{k}"), v));
    }
    let expected = h.entry_size().unwrap_or(0);
    match data {
        Some(f) => {
            let mut counted = Counted { inner: f.take(expected), n: 0 };
            finish_append(b, h, pax, &mut counted, name)?;
            if counted.n != expected {
                return Err(LayerError::Changed { path: src.to_path_buf() });
            }
            Ok(())
        }
        None => finish_append(b, h, pax, io::empty(), name),
    }
}

struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn finish_append<W: Write, R: Read>(
    b: &mut tar::Builder<W>,
    mut h: tar::Header,
    pax: Vec<(String, Vec<u8>)>,
    data: R,
    name: &str,
) -> Result<(), LayerError> {
    let err = |e| LayerError::Io { op: "write layer entry", path: PathBuf::from(name), source: e };
    if !pax.is_empty() {
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).map_err(err)?;
    }
    h.set_cksum();
    b.append(&h, data).map_err(err)
}

/// Short ASCII names go in the ustar header (split into prefix and name as ustar allows); anything
/// else also gets a PAX `path` record, with a truncated placeholder in the header.
fn set_name(h: &mut tar::Header, name: &str, pax: &mut Vec<(String, Vec<u8>)>) {
    if name.is_ascii() && set_ustar_name(h, name.as_bytes()) {
        return;
    }
    pax.push(("path".to_string(), name.as_bytes().to_vec()));
    set_ustar_name(h, truncate_ascii(name, 100).as_bytes());
}

fn set_ustar_name(h: &mut tar::Header, b: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else { return false };
    let (prefix, name): (&[u8], &[u8]) = if b.len() <= 100 {
        (&[], b)
    } else {
        let split = (0..b.len().min(156)).rev().find(|&i| b[i] == b'/' && b.len() - i - 1 <= 100 && b.len() - i - 1 > 0);
        match split {
            Some(i) => (&b[..i], &b[i + 1..]),
            None => return false,
        }
    };
    u.name = [0; 100];
    u.prefix = [0; 155];
    u.name[..name.len()].copy_from_slice(name);
    u.prefix[..prefix.len()].copy_from_slice(prefix);
    true
}

fn set_link(h: &mut tar::Header, target: &str, pax: &mut Vec<(String, Vec<u8>)>) {
    if target.is_ascii() && target.len() <= 100 && h.set_link_name_literal(target).is_ok() {
        return;
    }
    pax.push(("linkpath".to_string(), target.as_bytes().to_vec()));
    let _ = h.set_link_name_literal(truncate_ascii(target, 100));
}

fn truncate_ascii(s: &str, max: usize) -> String {
    s.chars().map(|c| if c.is_ascii() && c != '\0' { c } else { '_' }).take(max).collect()
}
