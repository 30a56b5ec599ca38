//! Layer tarballs: applying them to a directory ([`apply_layer`]) and writing them deterministically
//! ([`write_layer_from_dir`], [`write_layer_from_entries`], [`write_layer_from_overlay_upper`]).
//!
//! Safety model for applying (see [`crate::fsroot`] for the resolver every path goes through):
//! * an entry (or hard-link target) whose name climbs above the root with `..` is **refused** with
//!   [`LayerError::Hostile`] naming the entry, and the apply stops;
//! * an absolute name is **confined**: `/etc/x` is `etc/x` in the root;
//! * a symlink met while resolving a parent is followed *inside* the root (absolute targets re-rooted),
//!   so writing through a link that points outside lands inside the root (**confined**);
//! * the final component is never followed: an existing entry there is replaced, so a symlink planted
//!   by an earlier entry cannot redirect a write;
//! * a whiteout naming `.`/`..`/empty is refused; device nodes are created only when running as root
//!   (otherwise skipped and reported); GNU long names and PAX records larger than 1 MiB are refused.
//!
//! Writing: entries sorted by path, numeric uid/gid, modes (incl. setuid), xattrs as PAX
//! `SCHILY.xattr.*` records, no user/group names, mtimes clamped to `SOURCE_DATE_EPOCH` when given, PAX
//! records for long names, gzip at level [`GZIP_LEVEL`] in independent blocks on every core
//! ([`pgzip`]: flate2 + zlib-rs, pinned versions; the bytes do not depend on the thread count); the
//! compressed digest and the diff id are computed in the same streaming pass.
//!
//! Compression: `kiln build` writes its layers plain (an uncompressed blob's digest is its diff id,
//! hashed once) and [`gzip_image`] compresses an image when it is exported; see `gzip.rs`, and
//! [`compress_image`] for the other codecs (`compression=zstd|uncompressed`, levels, forced).

mod apply;
mod codec;
mod gzip;
pub mod pgzip;
mod write;

use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

pub use apply::{apply_layer, ApplyOptions, ApplyReport};
pub use codec::{compress_image, compress_layer, compress_layer_with, compress_layers, Codec, CodecError};
pub use gzip::{gzip_image, gzip_layer, gzip_layer_with, gzip_layers, is_plain_layer};
pub use pgzip::{default_threads, GzipWriter};
pub use write::{
    write_layer_from_dir, write_layer_from_entries, write_layer_from_overlay_upper, write_layer_from_tar, write_layer_to_store,
    EntrySource, LayerEntry, LayerInfo, WriteOptions, GZIP_LEVEL, ZSTD_LEVEL,
};

use crate::digest::DigestError;
use crate::Compression;

/// Layer codec failures. Each names the entry or path involved.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {entry:?} refused: {reason}; the layer is hostile or corrupt and was not applied further")]
    Hostile { entry: String, reason: String },
    #[error("layer entry {entry:?}: {what} is not supported")]
    Unsupported { entry: String, what: String },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Entry {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer tar: {0}; the layer is corrupt or truncated")]
    Tar(#[source] io::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} holds the overlayfs xattr {xattr}: overlayfs kept part of this change in a lower layer \
         (redirect_dir or metacopy was on when it was made), so its upper dir is not a faithful diff and \
         no layer was written; remove the root's snapshots dir (or `kiln prune`) and build again"
    )]
    NotFaithful { path: PathBuf, xattr: String },
    #[error("{path} changed while it was being written into a layer; retry when nothing writes to it")]
    Changed { path: PathBuf },
    #[error("layer path {0:?} is not a valid relative path inside the layer")]
    BadPath(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Root(#[from] crate::fsroot::RootError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Detects the compression of a layer stream from its magic bytes.
pub fn detect_compression<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    let buf = r.fill_buf()?;
    Ok(if buf.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if buf.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// Wraps a (possibly compressed) layer stream in the matching decompressor, judged by magic bytes.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    Ok(match detect_compression(&mut br)? {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
        Compression::None => Box::new(br),
    })
}
