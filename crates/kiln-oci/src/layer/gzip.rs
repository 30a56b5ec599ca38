//! Compressing for export: the store keeps the layers kiln builds as plain tar (as BuildKit's and
//! buildah's local stores do), so a build never waits on gzip; an image is compressed when it leaves
//! the machine (a push, a registry or directory cache, an OCI or Docker tarball).
//!
//! Compression is deterministic (same tar, same gzip bytes: [`super::pgzip`]'s fixed blocks at
//! [`GZIP_LEVEL`], whatever the thread count, no name, no mtime) and remembered:
//! `<store>/gzip-v3/<algo>/<hex>` holds the compressed descriptor of a plain layer, so the cache export
//! and the push of one build, or a later `kiln push`, compress a layer once and name the same blob. A
//! remembered blob that `kiln prune` collected is compressed again. (`gzip-v3`: kiln before parallel
//! gzip wrote single-stream bytes under `gzip/`, and before it stored incompressible blocks under
//! `gzip-v2/`; each new name keeps a store from mixing forms.)
//! The diff ids (what the config lists) do not change, so a config is shared by both forms; only the
//! manifests that list the layers do.

use std::fs;
use std::io::{self, BufReader};

use super::{LayerError, GZIP_LEVEL};
use crate::manifest::{Descriptor, ImageIndex, Manifest};
use crate::media;
use crate::store::Store;
use crate::Digest;

/// The gzip media type for a plain-tar layer media type, `None` for any other type (already
/// compressed, or not a layer).
fn gzip_media_type(media_type: &str) -> Option<&'static str> {
    match media_type {
        media::OCI_LAYER_TAR => Some(media::OCI_LAYER_GZIP),
        media::OCI_LAYER_NONDIST_TAR => Some(media::OCI_LAYER_NONDIST_GZIP),
        media::DOCKER_LAYER_TAR => Some(media::DOCKER_LAYER_GZIP),
        _ => None,
    }
}

/// Whether `layer` is stored plain and would be compressed by [`gzip_layer`].
pub fn is_plain_layer(layer: &Descriptor) -> bool {
    gzip_media_type(&layer.media_type).is_some()
}

fn memo_path(store: &Store, d: &Digest) -> std::path::PathBuf {
    store.dir().join("gzip-v3").join(d.algorithm().as_str()).join(d.hex())
}

/// The gzip form of `layer`: the layer itself when it is not plain tar (it may then be absent from
/// the store: a layer known only from a registry cache), else the remembered or freshly written
/// compressed blob. Annotations and other extras of `layer` are kept.
pub fn gzip_layer(store: &Store, layer: &Descriptor) -> Result<Descriptor, LayerError> {
    gzip_layer_with(store, layer, super::pgzip::default_threads())
}

/// [`gzip_layer`] on `threads` compression threads (the bytes are the same for any count).
pub fn gzip_layer_with(store: &Store, layer: &Descriptor, threads: usize) -> Result<Descriptor, LayerError> {
    let Some(media_type) = gzip_media_type(&layer.media_type) else {
        return Ok(layer.clone());
    };
    let with = |digest: Digest, size: u64| Descriptor { media_type: media_type.to_string(), digest, size, ..layer.clone() };
    let memo = memo_path(store, &layer.digest);
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
    let src = store.open_blob(&layer.digest)?;
    let w = store.blob_writer()?;
    let io_err = |op: &'static str| {
        let path = store.blob_path(&layer.digest);
        move |source: io::Error| LayerError::Io { op, path, source }
    };
    let mut src = BufReader::with_capacity(1 << 20, src);
    let w = super::pgzip::gzip_stream(&mut src, w, GZIP_LEVEL, threads).map_err(io_err("compress"))?;
    let info = w.commit(None)?;
    // The memo is only a shortcut: a failure to write it costs a recompression later, nothing more.
    if let Some(dir) = memo.parent() {
        if fs::create_dir_all(dir).is_ok() {
            let _ = crate::atomic::write(&memo, format!("{} {}\n", info.digest, info.size).as_bytes(), crate::atomic::Durability::Unsynced);
        }
    }
    Ok(with(info.digest, info.size))
}

/// The gzip form of the image or index `root` (in the store): the same descriptor when nothing in it
/// is plain, else a new manifest (and, for an index, new child manifests) written to the store, its
/// descriptor carrying `root`'s platform and annotations. Layers of one image are compressed in
/// parallel, one thread per core.
pub fn gzip_image(store: &Store, root: &Descriptor) -> Result<Descriptor, LayerError> {
    let raw = store.read_manifest(root)?;
    let manifest = match &raw.value {
        Manifest::Image(m) => {
            if !m.layers.iter().any(is_plain_layer) {
                return Ok(root.clone());
            }
            let layers = gzip_layers(store, &m.layers)?;
            Manifest::Image(crate::manifest::ImageManifest { layers, ..m.clone() })
        }
        Manifest::Index(ix) => {
            let mut manifests = Vec::with_capacity(ix.manifests.len());
            for child in &ix.manifests {
                let is_manifest = media::is_image_manifest(&child.media_type) || media::is_index(&child.media_type);
                manifests.push(if is_manifest && store.has_blob(&child.digest) { gzip_image(store, child)? } else { child.clone() });
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

/// [`gzip_layer`] of each of `layers`, in order, on every core: big layers one at a time on all
/// threads, small ones side by side on one thread each.
pub fn gzip_layers(store: &Store, layers: &[Descriptor]) -> Result<Vec<Descriptor>, LayerError> {
    let plain: Vec<usize> = (0..layers.len()).filter(|&i| is_plain_layer(&layers[i])).collect();
    let out = std::sync::Mutex::new(layers.to_vec());
    for_each_layer(layers, &plain, super::pgzip::default_threads(), |i, threads| {
        let gz = gzip_layer_with(store, &layers[i], threads)?;
        out.lock().unwrap_or_else(|p| p.into_inner())[i] = gz;
        Ok(())
    })?;
    Ok(out.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// A layer at least this big is compressed alone on all threads; smaller ones share the threads,
/// one each (a layer of a few blocks gains little from splitting, and running `n` of them at once on
/// `n` threads each would hold `n²` blocks in memory).
const BIG_LAYER: u64 = 16 * super::pgzip::BLOCK_SIZE as u64;

/// Runs `f(index, threads)` for each of `todo` (indices into `layers`): the big layers one after the
/// other with all `threads`, then the small ones `threads` at a time with one thread each. The thread
/// count changes only the speed, never the bytes, so this split is free to be a heuristic.
pub(super) fn for_each_layer(
    layers: &[Descriptor],
    todo: &[usize],
    threads: usize,
    f: impl Fn(usize, usize) -> Result<(), LayerError> + Sync,
) -> Result<(), LayerError> {
    let (big, small): (Vec<usize>, Vec<usize>) = todo.iter().partition(|&&i| layers[i].size >= BIG_LAYER);
    for i in big {
        f(i, threads)?;
    }
    crate::run_parallel(&small, threads, |&i| f(i, 1))
}
