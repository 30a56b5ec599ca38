//! SBOM statements: the SPDX 2.3 document `kiln-sbom` makes from an image's layers, as the
//! predicate of an in-toto statement (`https://spdx.dev/Document`) about the image.
//!
//! The layers are read from the store and decompressed as they stream (a base image's layers
//! stay compressed there), lowest first, so nothing is unpacked. Other stages the target needs get
//! their own SBOM when `scan-stage=true` or a `BUILDKIT_SBOM_SCAN_STAGE` ARG asks (BuildKit's
//! rules: `kiln-build`'s `attest::scans_stage`); each document is named `sbom-<stage>`, the stage
//! named as BuildKit names it (its name, or `stage-N`), which is the file name BuildKit's scanner
//! protocol gives an additional SBOM (`sbom-<stage>.spdx.json`) without the extension. They go into
//! the same attestation manifest after the image's own, one more layer of the same predicate type
//! each, about the same subject, as BuildKit lays them out.

use kiln_oci::{Digest, Store};
use kiln_sbom::{Catalog, DocumentInfo};

use crate::layout::LayoutError;
use crate::statement::{Statement, Subject};

/// Scans the image whose layers (blob digests, lowest first) are `layers`; `image` names it in errors.
pub fn scan(store: &Store, image: &Digest, layers: &[Digest]) -> Result<Catalog, LayoutError> {
    let mut readers: Vec<Box<dyn std::io::Read>> = Vec::new();
    for l in layers {
        let f = store.open_blob(l)?;
        let r = kiln_oci::layer::decompress(std::io::BufReader::with_capacity(1 << 16, f))
            .map_err(|e| LayoutError::Blob { digest: l.clone(), what: format!("cannot read the layer: {e}") })?;
        readers.push(r);
    }
    kiln_sbom::scan_layers(readers).map_err(|source| LayoutError::Sbom { image: image.clone(), source })
}

/// The SBOM statement about `subject`.
pub fn statement(catalog: &Catalog, doc: &DocumentInfo, subject: Subject) -> Statement {
    Statement { predicate_type: crate::SPDX.into(), subjects: vec![subject], predicate: kiln_sbom::spdx_json(catalog, doc) }
}
