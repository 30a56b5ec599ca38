//! Compression for export, in any of the forms `docker buildx build`'s `compression=` offers: gzip
//! (the default, at [`GZIP_LEVEL`]), zstd, or uncompressed, at a chosen level, optionally forced onto
//! layers that arrived compressed another way (`force-compression=true`).
//!
//! The model is the one of `gzip.rs`, generalised: a layer's export form is a pure function of its
//! bytes and the [`Codec`], so it is remembered per codec under
//! `<store>/compressed-v2/<codec>/<algo>/<hex>` (`"<digest> <size>"`), and the default gzip keeps its
//! own memo (`gzip.rs`), so builds made before this module name the same blobs. Every codec is
//! deterministic: the same input bytes and codec give the same output bytes whatever the number of
//! threads ([`super::pgzip`]: gzip in fixed blocks with flate2 + zlib-rs, zstd in its multi-threaded
//! mode; pinned versions, no names or times), which is what keeps pushed digests reproducible across
//! machines. (`compressed-v2`: kiln before parallel compression wrote other bytes under `compressed/`;
//! the gzip memos are `gzip-<level>-s` since incompressible blocks are stored.)
//!
//! Without `force`, a layer that is already compressed (a base image's gzip layer, say) is exported
//! as it is, as BuildKit does: recompressing it would change its digest and cost a download.

use std::fs;
use std::io::{self, BufReader, Read, Write};

use super::{decompress, LayerError, GZIP_LEVEL, ZSTD_LEVEL};
use crate::manifest::{Descriptor, ImageIndex, Manifest};
use crate::media;
use crate::store::Store;
use crate::{Compression, Digest};

/// Why a `compression=`/`compression-level=` pair is not a codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("compression-level={0:?} is not a number")]
    NotANumber(String),
    #[error("compression-level={level}: {codec} takes 0 to {max}")]
    Level { codec: &'static str, level: i64, max: u32 },
    #[error("compression-level={0}: uncompressed layers have no level")]
    NoLevel(i64),
    #[error("compression=estargz is not supported by kiln (use gzip, zstd or uncompressed)")]
    Estargz,
    #[error("compression={0:?}: use gzip, zstd or uncompressed")]
    Unknown(String),
}

/// How layers leave the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// gzip at a level 0–9.
    Gzip { level: u32 },
    /// zstd at a level 1–22.
    Zstd { level: i32 },
    /// Plain tar.
    Uncompressed,
}

impl Codec {
    /// The default: what `kiln build` has always exported.
    pub const DEFAULT: Codec = Codec::Gzip { level: GZIP_LEVEL };

    /// `compression=` and `compression-level=` as buildx spells them (`gzip`, `zstd`,
    /// `uncompressed`; levels 0–9 for gzip, 0–22 for zstd where 0 is zstd's default). `Err` says what
    /// is accepted.
    pub fn parse(name: &str, level: Option<&str>) -> Result<Codec, CodecError> {
        let level = match level {
            None => None,
            Some(l) => Some(l.trim().parse::<i64>().map_err(|_| CodecError::NotANumber(l.to_string()))?),
        };
        match name {
            "gzip" => match level {
                None => Ok(Codec::DEFAULT),
                Some(l @ 0..=9) => Ok(Codec::Gzip { level: l as u32 }),
                Some(l) => Err(CodecError::Level { codec: "gzip", level: l, max: 9 }),
            },
            "zstd" => match level {
                None | Some(0) => Ok(Codec::Zstd { level: ZSTD_LEVEL }),
                Some(l @ 1..=22) => Ok(Codec::Zstd { level: l as i32 }),
                Some(l) => Err(CodecError::Level { codec: "zstd", level: l, max: 22 }),
            },
            "uncompressed" => match level {
                None => Ok(Codec::Uncompressed),
                Some(l) => Err(CodecError::NoLevel(l)),
            },
            "estargz" => Err(CodecError::Estargz),
            other => Err(CodecError::Unknown(other.to_string())),
        }
    }

    /// The stream format this codec writes.
    pub fn compression(self) -> Compression {
        match self {
            Codec::Gzip { .. } => Compression::Gzip,
            Codec::Zstd { .. } => Compression::Zstd,
            Codec::Uncompressed => Compression::None,
        }
    }

    /// The memo's directory name: one per codec and level.
    fn memo_name(self) -> String {
        match self {
            // `-s`: since gzip stores incompressible blocks (other bytes than before).
            Codec::Gzip { level } => format!("gzip-{level}-s"),
            Codec::Zstd { level } => format!("zstd-{level}"),
            Codec::Uncompressed => "tar".to_string(),
        }
    }
}

/// The layer media type families kiln converts within.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Oci,
    OciNondist,
    Docker,
}

fn layer_kind(media_type: &str) -> Option<(Family, Compression)> {
    Some(match media_type {
        media::OCI_LAYER_TAR => (Family::Oci, Compression::None),
        media::OCI_LAYER_GZIP => (Family::Oci, Compression::Gzip),
        media::OCI_LAYER_ZSTD => (Family::Oci, Compression::Zstd),
        media::OCI_LAYER_NONDIST_TAR => (Family::OciNondist, Compression::None),
        media::OCI_LAYER_NONDIST_GZIP => (Family::OciNondist, Compression::Gzip),
        media::OCI_LAYER_NONDIST_ZSTD => (Family::OciNondist, Compression::Zstd),
        media::DOCKER_LAYER_TAR => (Family::Docker, Compression::None),
        media::DOCKER_LAYER_GZIP => (Family::Docker, Compression::Gzip),
        media::DOCKER_LAYER_ZSTD => (Family::Docker, Compression::Zstd),
        _ => return None,
    })
}

fn layer_media(family: Family, c: Compression) -> &'static str {
    match (family, c) {
        (Family::Oci, Compression::None) => media::OCI_LAYER_TAR,
        (Family::Oci, Compression::Gzip) => media::OCI_LAYER_GZIP,
        (Family::Oci, Compression::Zstd) => media::OCI_LAYER_ZSTD,
        (Family::OciNondist, Compression::None) => media::OCI_LAYER_NONDIST_TAR,
        (Family::OciNondist, Compression::Gzip) => media::OCI_LAYER_NONDIST_GZIP,
        (Family::OciNondist, Compression::Zstd) => media::OCI_LAYER_NONDIST_ZSTD,
        (Family::Docker, Compression::None) => media::DOCKER_LAYER_TAR,
        (Family::Docker, Compression::Gzip) => media::DOCKER_LAYER_GZIP,
        (Family::Docker, Compression::Zstd) => media::DOCKER_LAYER_ZSTD,
    }
}

/// The media type `layer` takes under `codec`, or `None` when it stays as it is (not a layer kiln
/// converts, already in the codec's format, or compressed another way without `force`).
fn target_media(layer: &Descriptor, codec: Codec, force: bool) -> Option<&'static str> {
    let (family, now) = layer_kind(&layer.media_type)?;
    let want = codec.compression();
    if now == want || (now != Compression::None && !force) {
        return None;
    }
    Some(layer_media(family, want))
}

fn memo_path(store: &Store, codec: Codec, d: &Digest) -> std::path::PathBuf {
    store.dir().join("compressed-v2").join(codec.memo_name()).join(d.algorithm().as_str()).join(d.hex())
}

/// The export form of `layer` under `codec` (see the module doc): the layer itself when it stays as
/// it is, else the remembered or freshly written blob. Annotations and other extras are kept.
pub fn compress_layer(store: &Store, layer: &Descriptor, codec: Codec, force: bool) -> Result<Descriptor, LayerError> {
    compress_layer_with(store, layer, codec, force, super::pgzip::default_threads())
}

/// [`compress_layer`] on `threads` compression threads (the bytes are the same for any count).
pub fn compress_layer_with(store: &Store, layer: &Descriptor, codec: Codec, force: bool, threads: usize) -> Result<Descriptor, LayerError> {
    if codec == Codec::DEFAULT && !force {
        return super::gzip_layer_with(store, layer, threads);
    }
    let Some(media_type) = target_media(layer, codec, force) else {
        return Ok(layer.clone());
    };
    let with = |digest: Digest, size: u64| Descriptor { media_type: media_type.to_string(), digest, size, ..layer.clone() };
    let memo = memo_path(store, codec, &layer.digest);
    if let Ok(text) = fs::read_to_string(&memo) {
        // "<digest> <size>"; anything else (a torn write) is recomputed.
        if let Some((d, n)) = text.trim().split_once(' ') {
            if let (Ok(d), Ok(n)) = (Digest::parse(d), n.parse::<u64>()) {
                if store.has_blob(&d) {
                    return Ok(with(d, n));
                }
            }
        }
    }
    let io_err = |op: &'static str| {
        let path = store.blob_path(&layer.digest);
        move |source: io::Error| LayerError::Io { op, path, source }
    };
    // Whatever the layer is stored as, the codec reads its plain tar.
    let src = store.open_blob(&layer.digest)?;
    let mut plain = decompress(BufReader::with_capacity(1 << 20, src)).map_err(io_err("decompress"))?;
    let w = store.blob_writer()?;
    let w = encode(&mut plain, w, codec, threads).map_err(io_err("compress"))?;
    let info = w.commit(None)?;
    // The memo is only a shortcut: a failure to write it costs a recompression later, nothing more.
    if let Some(dir) = memo.parent() {
        if fs::create_dir_all(dir).is_ok() {
            let _ = crate::atomic::write(&memo, format!("{} {}\n", info.digest, info.size).as_bytes(), crate::atomic::Durability::Unsynced);
        }
    }
    Ok(with(info.digest, info.size))
}

/// Copies `plain` into `w` through `codec`'s encoder on `threads` threads, and returns `w` flushed.
fn encode<R: Read, W: Write>(plain: &mut R, w: W, codec: Codec, threads: usize) -> io::Result<W> {
    let mut w = match codec {
        Codec::Gzip { level } => super::pgzip::gzip_stream(plain, w, level, threads)?,
        Codec::Zstd { level } => {
            let mut enc = super::pgzip::zstd_encoder(w, level, threads)?;
            io::copy(plain, &mut enc)?;
            enc.finish()?
        }
        Codec::Uncompressed => {
            let mut w = w;
            io::copy(plain, &mut w)?;
            w
        }
    };
    w.flush()?;
    Ok(w)
}

/// [`compress_layer`] of each of `layers`, in order, on every core (big layers one at a time on all
/// threads, small ones side by side).
pub fn compress_layers(store: &Store, layers: &[Descriptor], codec: Codec, force: bool) -> Result<Vec<Descriptor>, LayerError> {
    let todo: Vec<usize> = (0..layers.len()).filter(|&i| target_media(&layers[i], codec, force).is_some()).collect();
    let out = std::sync::Mutex::new(layers.to_vec());
    super::gzip::for_each_layer(layers, &todo, super::pgzip::default_threads(), |i, threads| {
        let d = compress_layer_with(store, &layers[i], codec, force, threads)?;
        out.lock().unwrap_or_else(|p| p.into_inner())[i] = d;
        Ok(())
    })?;
    Ok(out.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// The export form of the image or index `root` under `codec`: `root` itself when no layer changes,
/// else new manifests written to the store (for an index, its children too), the descriptor keeping
/// `root`'s platform and annotations.
pub fn compress_image(store: &Store, root: &Descriptor, codec: Codec, force: bool) -> Result<Descriptor, LayerError> {
    if codec == Codec::DEFAULT && !force {
        return super::gzip_image(store, root);
    }
    let raw = store.read_manifest(root)?;
    let manifest = match &raw.value {
        Manifest::Image(m) => {
            if !m.layers.iter().any(|l| target_media(l, codec, force).is_some()) {
                return Ok(root.clone());
            }
            let layers = compress_layers(store, &m.layers, codec, force)?;
            Manifest::Image(crate::manifest::ImageManifest { layers, ..m.clone() })
        }
        Manifest::Index(ix) => {
            let mut manifests = Vec::with_capacity(ix.manifests.len());
            for child in &ix.manifests {
                let is_manifest = media::is_image_manifest(&child.media_type) || media::is_index(&child.media_type);
                manifests.push(if is_manifest && store.has_blob(&child.digest) {
                    compress_image(store, child, codec, force)?
                } else {
                    child.clone()
                });
            }
            if manifests == ix.manifests {
                return Ok(root.clone());
            }
            Manifest::Index(ImageIndex { manifests, ..ix.clone() })
        }
    };
    let d = store.put_manifest(&manifest)?;
    Ok(Descriptor { digest: d.digest, size: d.size, media_type: d.media_type, ..root.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_parse_as_buildx_spells_them() {
        assert_eq!(Codec::parse("gzip", None), Ok(Codec::DEFAULT));
        assert_eq!(Codec::parse("gzip", Some("9")), Ok(Codec::Gzip { level: 9 }));
        assert_eq!(Codec::parse("zstd", None), Ok(Codec::Zstd { level: ZSTD_LEVEL }));
        assert_eq!(Codec::parse("zstd", Some("0")), Ok(Codec::Zstd { level: ZSTD_LEVEL }));
        assert_eq!(Codec::parse("zstd", Some("19")), Ok(Codec::Zstd { level: 19 }));
        assert_eq!(Codec::parse("uncompressed", None), Ok(Codec::Uncompressed));
        assert_eq!(Codec::parse("gzip", Some("10")).unwrap_err().to_string(), "compression-level=10: gzip takes 0 to 9");
        assert_eq!(Codec::parse("zstd", Some("23")).unwrap_err().to_string(), "compression-level=23: zstd takes 0 to 22");
        assert!(Codec::parse("estargz", None).unwrap_err().to_string().contains("estargz is not supported"));
        assert_eq!(Codec::parse("lz4", None).unwrap_err().to_string(), "compression=\"lz4\": use gzip, zstd or uncompressed");
        assert_eq!(Codec::parse("gzip", Some("x")).unwrap_err().to_string(), "compression-level=\"x\" is not a number");
    }

    #[test]
    fn only_plain_layers_change_unless_forced() {
        let l = |m: &str| Descriptor::new(m, Digest::sha256_of(b"x"), 1);
        let zstd = Codec::Zstd { level: 3 };
        assert_eq!(target_media(&l(media::OCI_LAYER_TAR), zstd, false), Some(media::OCI_LAYER_ZSTD));
        assert_eq!(target_media(&l(media::OCI_LAYER_GZIP), zstd, false), None, "a base's gzip layer stays");
        assert_eq!(target_media(&l(media::OCI_LAYER_GZIP), zstd, true), Some(media::OCI_LAYER_ZSTD));
        assert_eq!(target_media(&l(media::DOCKER_LAYER_GZIP), Codec::Uncompressed, true), Some(media::DOCKER_LAYER_TAR));
        assert_eq!(target_media(&l(media::OCI_LAYER_ZSTD), zstd, true), None, "already zstd");
        assert_eq!(target_media(&l(media::OCI_CONFIG), zstd, true), None, "not a layer");
    }
}
