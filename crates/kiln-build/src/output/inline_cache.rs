//! Writing a `--cache-to type=inline` into the images an output writes: each image's config gets
//! its own build's records under `kiln_cache::INLINE_CONFIG_KEY` (see `kiln_cache::inline` for the
//! model), which makes a new config blob and so a new manifest; an index is rewritten over them.
//! Done on the form that leaves the machine, after compression, because the records must name the
//! layers as the image holds them.

use kiln_oci::{Descriptor, Digest, ImageManifest, Manifest, Store};

use crate::error::BuildError;
use crate::Built;

/// `root` with the inline caches of `builds` (in the order of the root's images) written in; `root`
/// itself when no build kept one.
pub fn embed(store: &Store, root: &Descriptor, builds: &[Built]) -> Result<Descriptor, BuildError> {
    if builds.iter().all(|b| b.inline_cache.is_none()) {
        return Ok(root.clone());
    }
    match store.read_manifest(root)?.value {
        Manifest::Image(m) => match builds {
            [b] => embed_one(store, root, m, b),
            _ => Ok(root.clone()),
        },
        Manifest::Index(mut ix) => {
            for (child, b) in ix.manifests.iter_mut().zip(builds) {
                if let Manifest::Image(m) = store.read_manifest(child)?.value {
                    let d = embed_one(store, child, m, b)?;
                    child.digest = d.digest;
                    child.size = d.size;
                }
            }
            let d = store.put_manifest(&Manifest::Index(ix))?;
            Ok(Descriptor { digest: d.digest, size: d.size, ..root.clone() })
        }
    }
}

fn embed_one(store: &Store, desc: &Descriptor, mut m: ImageManifest, b: &Built) -> Result<Descriptor, BuildError> {
    let Some(records) = &b.inline_cache else { return Ok(desc.clone()) };
    let bytes = store.read_blob(&m.config.digest)?;
    let bad = |e: serde_json::Error| BuildError::Io {
        action: "read the image config of",
        path: m.config.digest.to_string().into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    let mut config: serde_json::Value = serde_json::from_slice(&bytes).map_err(bad)?;
    let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_str().and_then(|s| s.parse().ok())).collect())
        .unwrap_or_default();
    let cache = kiln_cache::inline::encode_for_image(records, &m.layers, &diff_ids);
    if let Some(obj) = config.as_object_mut() {
        obj.insert(kiln_cache::INLINE_CONFIG_KEY.to_string(), cache);
    }
    let info = store.put_blob_bytes(&serde_json::to_vec(&config).map_err(bad)?)?;
    m.config = Descriptor { digest: info.digest, size: info.size, ..m.config.clone() };
    let d = store.put_manifest(&Manifest::Image(m))?;
    Ok(Descriptor { digest: d.digest, size: d.size, ..desc.clone() })
}
