//! kiln-oci: the OCI data model, the local store and the layer codec.
//!
//! * [`Digest`] — `algorithm:hex`, verified while bytes stream ([`VerifyingReader`], [`DigestWriter`]).
//! * [`Reference`] — image names with Docker's normalisation (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! * [`Manifest`], [`ImageManifest`], [`ImageIndex`], [`Descriptor`], [`ImageConfig`], [`Platform`] —
//!   OCI and Docker schema2 documents. Anything read from elsewhere is kept as raw bytes beside the
//!   parsed value ([`Raw`]), because digests are over bytes, not over values.
//! * [`Store`] — an OCI image layout under `<root>/store`, with atomic writes, tags in `index.json`,
//!   and garbage collection. A tag may name an index of which only some platforms' images were
//!   fetched; [`Store::select_platform`] picks one platform's image and says what is missing.
//! * [`atomic`] — the one atomic file replacement, with an explicit durability choice.
//! * [`layer`] — applying layer tarballs to a directory safely and writing layers deterministically.
//!
//! Nothing here prints; failures are typed errors that name the digest, reference or path involved.

pub mod atomic;
pub mod config;
pub mod digest;
pub mod fsroot;
pub mod layer;
pub mod manifest;
pub mod media;
pub mod parallel;
pub mod platform;
pub mod reference;
pub mod select;
pub mod store;

pub use config::{ContainerConfig, History, ImageConfig, RootFs};
pub use digest::{Algorithm, Digest, DigestError, DigestWriter, Hasher, VerifyingReader};
pub use manifest::{Descriptor, ImageIndex, ImageManifest, Manifest, ManifestError, Raw};
pub use parallel::run_parallel;
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError};
pub use select::PlatformImage;
pub use store::{BlobInfo, BlobWriter, GcReport, Lease, PlatformMiss, Store, StoreEntry, StoreError};

/// How a layer is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}
