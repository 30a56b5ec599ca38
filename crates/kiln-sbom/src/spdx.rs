//! The catalog as an SPDX 2.3 JSON document (spdx.github.io/spdx-spec/v2.3).
//!
//! Layout, as BuildKit's and syft's documents: one package for the image itself
//! (`SPDXRef-Image`, purpose `CONTAINER`), which the document `DESCRIBES` and which `CONTAINS` every
//! cataloged package. Each package has a stable `SPDXID` (`SPDXRef-Package-ECOSYSTEM-NAME-HASH`, the
//! hash over ecosystem, name, version, purl and file, so the same catalog always gets the same ids),
//! its purl as a `PACKAGE-MANAGER` external reference, `sourceInfo` naming the file it was read from,
//! `licenseDeclared` as a valid SPDX expression ([`crate::license`]; `NOASSERTION` when the database
//! states none) and `filesAnalyzed: false`. Deterministic: packages in catalog order, object keys
//! sorted, so the same catalog and [`crate::DocumentInfo`] give the same bytes.

use serde_json::{json, Value};

use crate::{Catalog, DocumentInfo, Ecosystem, Package};

/// FNV-1a, 64 bits: a stable hash with no dependency, for ids only (not for security).
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn idstring(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

/// The SPDXID of a package.
pub fn package_id(p: &Package) -> String {
    let key = format!("{}\0{}\0{}\0{}\0{}", p.ecosystem.as_str(), p.name, p.version, p.purl, p.found_in);
    format!("SPDXRef-Package-{}-{}-{:016x}", p.ecosystem.as_str(), idstring(&p.name), fnv(key.as_bytes()))
}

fn database(e: Ecosystem) -> &'static str {
    match e {
        Ecosystem::Deb => "the dpkg database",
        Ecosystem::Apk => "the apk database",
        Ecosystem::Rpm => "the rpm database",
        Ecosystem::Python => "Python package metadata",
        Ecosystem::Npm => "an npm package.json",
        Ecosystem::Go => "Go build information in a binary",
        Ecosystem::Rust => "cargo-auditable data in a binary",
    }
}

pub fn document(catalog: &Catalog, doc: &DocumentInfo) -> Value {
    let mut refs: Vec<(String, String)> = Vec::new();
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": doc.name,
        "downloadLocation": "NOASSERTION",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    let mut seen = std::collections::BTreeSet::new();
    for p in &catalog.packages {
        let id = package_id(p);
        // Identical packages are deduplicated by the catalog; the set guards the id's uniqueness.
        if !seen.insert(id.clone()) {
            continue;
        }
        let declared = crate::license::declared(&p.licenses, &mut refs);
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("acquired package info from {}: {}", database(p.ecosystem), p.found_in),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        });
        if p.version.is_empty() {
            pkg.as_object_mut().expect("object").remove("versionInfo");
        }
        packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    refs.sort();
    let extracted: Vec<Value> = refs
        .iter()
        .map(|(id, original)| {
            json!({
                "licenseId": id,
                "name": original,
                "extractedText": format!("The package database names this licence \"{original}\"; its text is not included."),
            })
        })
        .collect();
    let mut document = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": doc.name,
        "documentNamespace": doc.namespace,
        "creationInfo": {
            "created": doc.created,
            "creators": [format!("Tool: {}", doc.tool)],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        document["hasExtractedLicensingInfos"] = Value::Array(extracted);
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_stable_and_distinct() {
        let p = |name: &str, file: &str| Package {
            ecosystem: Ecosystem::Npm,
            name: name.into(),
            version: "1.0".into(),
            purl: format!("pkg:npm/{name}@1.0"),
            licenses: vec![],
            found_in: file.into(),
        };
        let a = package_id(&p("@types/node", "/a/package.json"));
        let b = package_id(&p("@types/node", "/b/package.json"));
        assert_ne!(a, b);
        assert_eq!(a, package_id(&p("@types/node", "/a/package.json")));
        assert!(a.starts_with("SPDXRef-Package-npm--types-node-"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'), "{a}");
    }
}
