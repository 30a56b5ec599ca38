//! Media types kiln reads and writes. OCI types are what kiln writes; Docker schema2 types are read (and
//! copied verbatim) because most public images still use them.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable (foreign) layer, uncompressed (deprecated in the spec, still seen).
pub const OCI_LAYER_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip.
pub const OCI_LAYER_NONDIST_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd.
pub const OCI_LAYER_NONDIST_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// OCI empty descriptor (artifacts).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The `oci-layout` file's content type.
pub const OCI_LAYOUT_HEADER: &str = "application/vnd.oci.layout.header.v1+json";

/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker container config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, zstd (used by some tools; not in the original schema2 spec).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker layer, uncompressed.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker foreign layer (Windows base layers); never pushed, fetched from `urls`.
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker schema1 (signed) manifest: recognised only to refuse it clearly.
pub const DOCKER_MANIFEST_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker schema1 manifest.
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// Manifest media types kiln understands, for the registry `Accept` header (most preferred first).
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Is this an image manifest type (OCI or Docker)?
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Is this an index type (OCI index or Docker manifest list)?
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Is this an image config type?
pub fn is_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// Is this a foreign / non-distributable layer that registries may not hold?
pub fn is_foreign_layer(media_type: &str) -> bool {
    media_type == DOCKER_FOREIGN_LAYER || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
}

/// How a layer blob is compressed, judged by its media type.
pub fn layer_compression(media_type: &str) -> Option<crate::Compression> {
    use crate::Compression;
    match media_type {
        OCI_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER => Some(Compression::Gzip),
        OCI_LAYER_ZSTD | OCI_LAYER_NONDIST_ZSTD | DOCKER_LAYER_ZSTD => Some(Compression::Zstd),
        OCI_LAYER_TAR | OCI_LAYER_NONDIST_TAR | DOCKER_LAYER_TAR => Some(Compression::None),
        _ => None,
    }
}
