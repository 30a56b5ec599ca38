//! `oci-mediatypes=false`: the same image under Docker's schema 2 media types (a manifest list, image
//! manifests, `application/vnd.docker.container.image.v1+json` configs and `…rootfs.diff.tar[.gzip]`
//! layers). Only descriptors change: every blob keeps its bytes, so layers are shared with the OCI
//! form. What schema 2 cannot say is refused rather than dropped: zstd layers and annotations.

use kiln_oci::{media, Descriptor, ImageManifest, Manifest, Store};

use crate::error::BuildError;

/// Why an image cannot take Docker's media types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerTypesError {
    #[error("oci-mediatypes=false: layer {digest} is {media_type}, which Docker's media types cannot name; add oci-mediatypes=true")]
    Layer { digest: String, media_type: String },
    #[error("oci-mediatypes=false: {what} carries annotations, which Docker's media types cannot hold; add oci-mediatypes=true")]
    Annotated { what: String },
}

fn layer_type(d: &Descriptor) -> Result<&'static str, DockerTypesError> {
    Ok(match d.media_type.as_str() {
        media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => media::DOCKER_LAYER_GZIP,
        media::OCI_LAYER_TAR | media::DOCKER_LAYER_TAR => media::DOCKER_LAYER_TAR,
        media::OCI_LAYER_NONDIST_GZIP | media::DOCKER_FOREIGN_LAYER => media::DOCKER_FOREIGN_LAYER,
        other => return Err(DockerTypesError::Layer { digest: d.digest.to_string(), media_type: other.to_string() }),
    })
}

fn image(store: &Store, desc: &Descriptor, mut m: ImageManifest) -> Result<Descriptor, BuildError> {
    if m.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(super::OutputError::from(DockerTypesError::Annotated { what: format!("manifest {}", desc.digest) }).into());
    }
    m.media_type = Some(media::DOCKER_MANIFEST.to_string());
    m.config.media_type = media::DOCKER_CONFIG.to_string();
    for l in &mut m.layers {
        l.media_type = layer_type(l).map_err(super::OutputError::from)?.to_string();
    }
    let d = store.put_manifest(&Manifest::Image(m))?;
    Ok(Descriptor { digest: d.digest, size: d.size, media_type: d.media_type, ..desc.clone() })
}

/// `root` (an image or an index of images) under Docker's media types.
pub fn to_docker(store: &Store, root: &Descriptor) -> Result<Descriptor, BuildError> {
    match store.read_manifest(root)?.value {
        Manifest::Image(m) => image(store, root, m),
        Manifest::Index(mut ix) => {
            if ix.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
                return Err(super::OutputError::from(DockerTypesError::Annotated { what: "the index".into() }).into());
            }
            for child in &mut ix.manifests {
                if let Manifest::Image(m) = store.read_manifest(child)?.value {
                    *child = image(store, child, m)?;
                }
            }
            ix.media_type = Some(media::DOCKER_MANIFEST_LIST.to_string());
            let d = store.put_manifest(&Manifest::Index(ix))?;
            Ok(Descriptor { digest: d.digest, size: d.size, media_type: d.media_type, ..root.clone() })
        }
    }
}
