//! kiln-attest: what a build attests about the images it made, in the formats and the layout that
//! BuildKit uses, so that registries, scanners and policy tools that read BuildKit's attestations
//! (GitHub's attestations, Docker Scout, Harbor, cosign/kyverno policies) read kiln's the same way.
//!
//! The model:
//! - An **attestation** is an [in-toto Statement v0.1](https://in-toto.io/Statement/v0.1)
//!   ([`statement`]): a *subject* (the platform image manifest, by name and sha256 digest), a
//!   *predicate type* and the *predicate*, the claim itself.
//! - **Provenance** ([`provenance`]) is a SLSA predicate (`https://slsa.dev/provenance/v0.2` by
//!   default, `…/v1` with `version=v1`) made from what kiln knows exactly about the build: the
//!   base images it resolved (by digest), the files of the context it read (one digest over them),
//!   the `ADD <url>` downloads (by their content's sha256), the Dockerfile (by digest), the build
//!   arguments (only with `mode=max`), the platform, kiln's version, and the CI run (GitHub's
//!   `GITHUB_*` variables) as builder and config source. Secrets and SSH forwards never appear:
//!   kiln never hands them to this crate.
//! - An **SBOM** ([`sbom`]) is an SPDX 2.3 document (`https://spdx.dev/Document`) that
//!   `kiln-sbom` makes natively from the image's layers; no scanner image runs.
//! - **Layout** ([`layout`]): for each platform image, one *attestation manifest*: an OCI image
//!   manifest whose config is a near-empty image config (`unknown/unknown`) and whose layers are
//!   the statements (`application/vnd.in-toto+json`, annotated `in-toto.io/predicate-type`). It is
//!   listed in the image index with platform `unknown/unknown` and the annotations
//!   `vnd.docker.reference.digest: <image manifest digest>` and `vnd.docker.reference.type:
//!   attestation-manifest`. A one-platform image with attestations therefore becomes an index,
//!   as with buildx. Readers that do not know attestations skip `unknown/unknown` entries.
//! - **What to attest** ([`spec`]): buildx's `--provenance`, `--sbom` and `--attest` flags,
//!   parsed with buildx's meaning and defaults; an attribute kiln does not act on is refused by name.
//!
//! This crate makes and lays out attestations; `kiln-build` decides which outputs carry them.

pub mod layout;
pub mod provenance;
pub mod sbom;
pub mod spec;
pub mod statement;

pub use layout::{attach, is_attestation, read_attestations, write_manifest, AttestationOf, LayoutError};
pub use provenance::{BaseImage, BuildInputs, CiRun};
pub use spec::{Attestations, Mode, ProvenanceSpec, SbomSpec, SlsaVersion, SpecError};
pub use statement::{Statement, Subject};

/// The media type of an in-toto statement blob.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The layer annotation that names a statement's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// The index annotation that ties an attestation manifest to the image it describes.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The index annotation that says an entry is an attestation manifest.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The value of [`REFERENCE_TYPE`] for attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// SLSA provenance v0.2's predicate type.
pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
/// SLSA provenance v1's predicate type.
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// SPDX's predicate type.
pub const SPDX: &str = "https://spdx.dev/Document";
