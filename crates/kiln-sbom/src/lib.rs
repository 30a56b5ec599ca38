//! The packages in an image's root file system, read natively from the package databases the image
//! carries, and the SPDX 2.3 JSON document that lists them.
//!
//! Scaffold: the interface that `kiln-attest` and `kiln-build` use. The catalogers are being written;
//! until they land every scan answers [`SbomError::NotBuilt`].

use std::io::Read;
use std::path::Path;

/// Where a package came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Deb,
    Apk,
    Rpm,
    Python,
    Npm,
    Go,
    Rust,
}

/// One package found in the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The package URL (`pkg:deb/debian/bash@5.2.15-2+b2?arch=amd64`, ...).
    pub purl: String,
    /// SPDX licence expressions or names, as the database states them (empty when it states none).
    pub licenses: Vec<String>,
    /// The file the package was read from, absolute in the image (`/var/lib/dpkg/status`, ...).
    pub found_in: String,
}

/// Every package found, sorted by ecosystem, name, version and file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Catalog {
    pub packages: Vec<Package>,
}

/// What names an SPDX document.
#[derive(Debug, Clone)]
pub struct DocumentInfo {
    /// The document's name (the image reference or digest).
    pub name: String,
    /// The document namespace URI (unique per document).
    pub namespace: String,
    /// Creation time, RFC 3339 UTC (`2026-12-03T10:00:00Z`); from SOURCE_DATE_EPOCH when set.
    pub created: String,
    /// The creator tool (`kiln-0.1.0`).
    pub tool: String,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("the SBOM scanner is not built yet")]
    NotBuilt,
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Scans an unpacked root file system.
pub fn scan_dir(_root: &Path) -> Result<Catalog, SbomError> {
    Err(SbomError::NotBuilt)
}

/// Scans an image from its layers: uncompressed tar streams, lowest first, with OCI whiteouts
/// (`.wh.NAME`, `.wh..wh..opq`) applied, so nothing needs unpacking.
pub fn scan_layers<R: Read>(_layers: impl IntoIterator<Item = R>) -> Result<Catalog, SbomError> {
    Err(SbomError::NotBuilt)
}

/// The SPDX 2.3 JSON document for `catalog`.
pub fn spdx_json(_catalog: &Catalog, _doc: &DocumentInfo) -> serde_json::Value {
    serde_json::Value::Null
}
