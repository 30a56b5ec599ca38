//! The packages in an image's root file system, read natively from the package databases the image
//! carries, and the SPDX 2.3 JSON document that lists them.
//!
//! The model has three stages:
//!
//! 1. **Gather** ([`tree`]): from an unpacked root ([`scan_dir`]) or from the image's layer tars, lowest
//!    first, with whiteouts applied ([`scan_layers`]), keep only the files that can name a package: the
//!    package databases by path (dpkg, apk, rpm, Python metadata, `package.json` under `node_modules`,
//!    the Debian copyright files, os-release) and, for executables, only the bytes of the ELF sections
//!    that carry build information (Go's `.go.buildinfo`, cargo-auditable's `.dep-v0`). Both sources
//!    give the same [`tree::Tree`], so they give the same catalog; nothing is ever unpacked to scan.
//! 2. **Catalog** (one module per ecosystem: [`dpkg`], [`apk`], [`rpm`], [`python`], [`npm`],
//!    [`golang`], [`rust`]): each reads its files from the tree and names packages with a package URL
//!    (purl), version, licences as the database states them, and the file each was found in. A
//!    malformed entry is skipped with a reason ([`Catalog::skipped`]), never a panic and never a failed
//!    build: an SBOM that misses one broken record is more useful than none.
//! 3. **Document** ([`spdx`]): the catalog as SPDX 2.3 JSON, deterministic (same catalog, same bytes).

pub mod apk;
pub mod dpkg;
mod elf;
pub mod golang;
pub mod license;
pub mod npm;
pub mod python;
pub mod rpm;
pub mod rust;
pub mod spdx;
mod sqlite;
pub mod tree;

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

impl Ecosystem {
    /// The lowercase name (`deb`, `python`, ...), as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Rpm => "rpm",
            Ecosystem::Python => "python",
            Ecosystem::Npm => "npm",
            Ecosystem::Go => "go",
            Ecosystem::Rust => "rust",
        }
    }
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

/// A database entry or file that was not cataloged, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Skipped {
    /// The file, absolute in the image.
    pub path: String,
    /// What was wrong (`entry 3: no Version field`, ...).
    pub reason: String,
}

/// Every package found, sorted by ecosystem, name, version and file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Catalog {
    pub packages: Vec<Package>,
    /// Entries that could not be read, sorted; empty for a healthy image.
    pub skipped: Vec<Skipped>,
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

/// Why a scan failed. Only the source itself failing stops a scan (an unreadable root, a broken
/// layer tar); a malformed database entry is a [`Skipped`] entry instead.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("layer {index} (counting from 0, lowest first): {source}")]
    Layer { index: usize, source: std::io::Error },
}

/// Scans an unpacked root file system. Symlinks are never followed (so nothing outside the root is
/// read), and `/proc`, `/sys` and `/dev` are not entered.
pub fn scan_dir(root: &Path) -> Result<Catalog, SbomError> {
    Ok(catalog(&tree::Tree::from_dir(root)?))
}

/// Scans an image from its layers: uncompressed tar streams, lowest first, with OCI whiteouts
/// (`.wh.NAME`, `.wh..wh..opq`) applied, so nothing needs unpacking.
pub fn scan_layers<R: Read>(layers: impl IntoIterator<Item = R>) -> Result<Catalog, SbomError> {
    Ok(catalog(&tree::Tree::from_layers(layers)?))
}

/// Runs every cataloger over the gathered files.
pub fn catalog(tree: &tree::Tree) -> Catalog {
    let mut out = Catalog::default();
    dpkg::catalog(tree, &mut out);
    apk::catalog(tree, &mut out);
    rpm::catalog(tree, &mut out);
    python::catalog(tree, &mut out);
    npm::catalog(tree, &mut out);
    golang::catalog(tree, &mut out);
    rust::catalog(tree, &mut out);
    out.skipped.extend(tree.skipped().iter().cloned());
    out.packages.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.found_in, &a.purl).cmp(&(b.ecosystem, &b.name, &b.version, &b.found_in, &b.purl))
    });
    out.packages.dedup();
    out.skipped.sort();
    out.skipped.dedup();
    out
}

/// The SPDX 2.3 JSON document for `catalog`.
pub fn spdx_json(catalog: &Catalog, doc: &DocumentInfo) -> serde_json::Value {
    spdx::document(catalog, doc)
}

/// Percent-encodes a purl component: everything but unreserved characters (RFC 3986), as the purl
/// specification asks for names and versions (`+` becomes `%2B`, `:` becomes `%3A`).
pub(crate) fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a purl version as syft does: like [`purl_encode`] but `:` (a Debian or rpm
/// epoch) stays, which the purl specification allows.
pub(crate) fn purl_version_encode(s: &str) -> String {
    s.split(':').map(purl_encode).collect::<Vec<_>>().join(":")
}

/// Parses RFC 822-style paragraphs (dpkg status, Python METADATA headers): `Key: value` lines,
/// continuation lines starting with a space or tab, paragraphs separated by blank lines. Returns each
/// paragraph's fields in order, with the 1-based line its paragraph starts on.
pub(crate) fn rfc822_paragraphs(text: &str) -> Vec<(usize, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !fields.is_empty() {
                out.push((start, std::mem::take(&mut fields)));
            }
            start = i + 2;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        match line.split_once(':') {
            Some((k, v)) => fields.push((k.trim().to_string(), v.trim().to_string())),
            // A line without a colon is not a field; keep it with the previous value so nothing is
            // invented, as dpkg itself would refuse it.
            None => {
                if let Some((_, v)) = fields.last_mut() {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
        }
    }
    if !fields.is_empty() {
        out.push((start, fields));
    }
    out
}

/// The first value of field `key` (case-insensitive) in a paragraph.
pub(crate) fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
}
