//! Attestations in an image index, exactly as BuildKit lays them out (its
//! `docs/attestations/attestation-storage.md`):
//!
//! ```text
//! index
//! ├── image manifest            platform linux/amd64
//! ├── image manifest            platform linux/arm64
//! ├── attestation manifest      platform unknown/unknown
//! │     annotations: vnd.docker.reference.digest = <amd64 image digest>
//! │                  vnd.docker.reference.type   = attestation-manifest
//! │     config: {"architecture":"unknown","os":"unknown","config":{},"rootfs":{…diff_ids…}}
//! │     layers: application/vnd.in-toto+json   in-toto.io/predicate-type = …   (one per statement)
//! └── attestation manifest      (the arm64 image's)
//! ```
//!
//! Images first, then their attestation manifests in the same order. The config exists only
//! because an image manifest needs one; its diff ids are the statement blobs' digests (the blobs
//! are stored uncompressed, so the blob digest is the diff id).

use std::collections::BTreeMap;

use kiln_oci::{media, Descriptor, Digest, ImageIndex, ImageManifest, Manifest, Platform, Store, StoreError};
use serde_json::Value;

use crate::statement::Statement;
use crate::{ATTESTATION_MANIFEST, IN_TOTO, PREDICATE_TYPE_ANNOTATION, REFERENCE_DIGEST, REFERENCE_TYPE};

/// Why attestations could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{digest}: not an image manifest or an index")]
    NotAnImage { digest: Digest },
    #[error("{digest}: an index inside an index cannot carry attestations")]
    NestedIndex { digest: Digest },
    #[error("SBOM of {image}: {source}")]
    Sbom {
        image: Digest,
        #[source]
        source: kiln_sbom::SbomError,
    },
    #[error("attestation blob {digest}: {what}")]
    Blob { digest: Digest, what: String },
}

/// Whether an index entry is an attestation manifest (BuildKit's annotation, or the platform it
/// lists them under).
pub fn is_attestation(d: &Descriptor) -> bool {
    d.annotation(REFERENCE_TYPE) == Some(ATTESTATION_MANIFEST)
        || d.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// The config BuildKit gives an attestation manifest, byte for byte in its field order.
fn config_bytes(diff_ids: &[Digest]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    format!(r#"{{"architecture":"unknown","os":"unknown","config":{{}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#, ids.join(","))
        .into_bytes()
}

/// Writes the attestation manifest of the image `image` (its statements, config and manifest) to
/// the store, and returns its index entry.
pub fn write_manifest(store: &Store, image: &Digest, statements: &[Statement]) -> Result<Descriptor, LayoutError> {
    let mut layers = Vec::new();
    for s in statements {
        let bytes = s.to_bytes();
        let info = store.put_blob_bytes(&bytes)?;
        let mut d = Descriptor::new(IN_TOTO, info.digest, info.size);
        d.annotations = Some(BTreeMap::from([(PREDICATE_TYPE_ANNOTATION.to_string(), s.predicate_type.clone())]));
        layers.push(d);
    }
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
    let cfg = store.put_blob_bytes(&config_bytes(&diff_ids))?;
    let m = ImageManifest::new_oci(Descriptor::new(media::OCI_CONFIG, cfg.digest, cfg.size), layers);
    let mut d = store.put_manifest(&Manifest::Image(m))?;
    d.platform = Some(Platform::new("unknown", "unknown", None));
    d.annotations = Some(BTreeMap::from([
        (REFERENCE_DIGEST.to_string(), image.to_string()),
        (REFERENCE_TYPE.to_string(), ATTESTATION_MANIFEST.to_string()),
    ]));
    Ok(d)
}

/// `root` (one image manifest, or an index of them) with `attestations` (index entries from
/// [`write_manifest`]) added after the images, written to the store; the new root. A single image
/// becomes an index (its entry given `platform`). Entries for the same images that were there
/// already are replaced. The index keeps its media type and annotations.
pub fn attach(
    store: &Store,
    root: &Descriptor,
    platform: Option<&Platform>,
    attestations: &[Descriptor],
) -> Result<Descriptor, LayoutError> {
    if attestations.is_empty() {
        return Ok(root.clone());
    }
    let mut index = match store.read_manifest(root)?.value {
        Manifest::Index(ix) => ix,
        Manifest::Image(_) => {
            let mut ix = ImageIndex::new_oci();
            let mut entry = Descriptor::new(&root.media_type, root.digest.clone(), root.size);
            entry.platform = platform.cloned().or_else(|| root.platform.clone());
            entry.annotations = root.annotations.clone();
            ix.manifests.push(entry);
            ix
        }
    };
    let described: Vec<&str> = attestations.iter().filter_map(|a| a.annotation(REFERENCE_DIGEST)).collect();
    index.manifests.retain(|d| !(is_attestation(d) && d.annotation(REFERENCE_DIGEST).is_some_and(|r| described.contains(&r))));
    index.manifests.extend(attestations.iter().cloned());
    let mut d = store.put_manifest(&Manifest::Index(index))?;
    d.annotations = root.annotations.clone().filter(|_| media::is_index(&root.media_type));
    Ok(d)
}

/// One image's attestations as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct AttestationOf {
    /// The image the attestation manifest names.
    pub image: Digest,
    /// That image's platform in the index (when the index lists it).
    pub platform: Option<Platform>,
    /// The attestation manifest's digest.
    pub manifest: Digest,
    /// Each statement, parsed.
    pub statements: Vec<Value>,
}

/// Every attestation manifest of `index` and its statements; `fetch` reads a blob or manifest
/// (from a registry, the store or a layout).
pub fn read_attestations(
    index: &ImageIndex,
    mut fetch: impl FnMut(&Descriptor) -> Result<Vec<u8>, String>,
) -> Result<Vec<AttestationOf>, LayoutError> {
    let mut out = Vec::new();
    for d in index.manifests.iter().filter(|d| is_attestation(d)) {
        let Some(image) = d.annotation(REFERENCE_DIGEST).and_then(|s| Digest::parse(s).ok()) else { continue };
        let blob_err = |digest: &Digest, what: String| LayoutError::Blob { digest: digest.clone(), what };
        let bytes = fetch(d).map_err(|e| blob_err(&d.digest, e))?;
        let Manifest::Image(m) = Manifest::parse(&bytes, Some(&d.media_type)).map_err(|e| blob_err(&d.digest, e.to_string()))? else {
            return Err(LayoutError::NestedIndex { digest: d.digest.clone() });
        };
        let mut statements = Vec::new();
        for l in m.layers.iter().filter(|l| l.media_type == IN_TOTO) {
            let b = fetch(l).map_err(|e| blob_err(&l.digest, e))?;
            if Digest::sha256_of(&b) != l.digest {
                return Err(blob_err(&l.digest, "content does not match its digest".into()));
            }
            statements.push(serde_json::from_slice(&b).map_err(|e| blob_err(&l.digest, format!("not JSON: {e}")))?);
        }
        let platform = index.manifests.iter().find(|x| x.digest == image && !is_attestation(x)).and_then(|x| x.platform.clone());
        out.push(AttestationOf { image, platform, manifest: d.digest.clone(), statements });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::Subject;

    fn statement(image: &Digest) -> Statement {
        Statement {
            predicate_type: crate::SLSA_V02.into(),
            subjects: vec![Subject { name: "x".into(), digest: image.clone() }],
            predicate: serde_json::json!({"k": 1}),
        }
    }

    #[test]
    fn a_single_image_becomes_an_index_with_its_attestation_manifest() {
        let dir = std::env::temp_dir().join(format!("kiln-attest-layout-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let cfg = store.put_blob_bytes(b"{}").unwrap();
        let img = store
            .put_manifest(&Manifest::Image(ImageManifest::new_oci(Descriptor::new(media::OCI_CONFIG, cfg.digest, cfg.size), vec![])))
            .unwrap();
        let att = write_manifest(&store, &img.digest, &[statement(&img.digest)]).unwrap();
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let root = attach(&store, &img, Some(&amd64), std::slice::from_ref(&att)).unwrap();
        let Manifest::Index(ix) = store.read_manifest(&root).unwrap().value else { panic!("not an index") };
        assert_eq!(ix.manifests.len(), 2);
        assert_eq!(ix.manifests[0].digest, img.digest);
        assert_eq!(ix.manifests[0].platform.as_ref(), Some(&amd64));
        let a = &ix.manifests[1];
        assert!(is_attestation(a));
        assert_eq!(a.annotation(REFERENCE_DIGEST), Some(img.digest.to_string().as_str()));
        assert_eq!(a.annotation(REFERENCE_TYPE), Some(ATTESTATION_MANIFEST));
        assert_eq!(a.platform.as_ref().map(|p| (p.os.as_str(), p.architecture.as_str())), Some(("unknown", "unknown")));
        let Manifest::Image(m) = store.read_manifest(a).unwrap().value else { panic!("not a manifest") };
        assert_eq!(m.layers[0].media_type, IN_TOTO);
        assert_eq!(m.layers[0].annotation(PREDICATE_TYPE_ANNOTATION), Some(crate::SLSA_V02));
        let cfg: Value = serde_json::from_slice(&store.read_blob(&m.config.digest).unwrap()).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"][0], m.layers[0].digest.to_string());
        // Attaching again replaces, never duplicates.
        let again = attach(&store, &root, None, std::slice::from_ref(&att)).unwrap();
        let Manifest::Index(ix2) = store.read_manifest(&again).unwrap().value else { panic!("not an index") };
        assert_eq!(ix2.manifests.len(), 2);
        let read = read_attestations(&ix2, |d| store.read_blob(&d.digest).map_err(|e| e.to_string())).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].image, img.digest);
        assert_eq!(read[0].platform.as_ref(), Some(&amd64));
        assert_eq!(read[0].statements[0]["subject"][0]["digest"]["sha256"], img.digest.hex());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
