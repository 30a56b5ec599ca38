//! Python packages: installed distributions' core metadata.
//!
//! Reads `*.dist-info/METADATA` (wheels, pip), `*.egg-info/PKG-INFO` and `*.egg-info` files (setuptools
//! eggs; Debian's python3-* packages ship these) found under any `site-packages` or `dist-packages`
//! directory. The format is the Core Metadata specification (packaging.python.org): RFC 822 headers
//! up to the first blank line. `Name` and `Version` name the package; the licence is
//! `License-Expression` (metadata 2.4, SPDX) when present, else a one-line `License` field, else
//! the `License ::` trove classifiers (`MIT License`); a multi-line `License` is licence text, not a
//! name, and is left out.
//!
//! The purl is `pkg:pypi/NAME@VERSION` with the name normalized as PEP 503 says (lowercase, runs of
//! `-`, `_`, `.` as one `-`).

use crate::tree::Tree;
use crate::{field, purl_encode, purl_version_encode, rfc822_paragraphs, Catalog, Ecosystem, Package, Skipped};

/// Whether `path` is a metadata file this cataloger reads.
pub fn is_metadata_path(path: &str) -> bool {
    if !path.contains("/site-packages/") && !path.contains("/dist-packages/") {
        return false;
    }
    let Some((dir, file)) = path.rsplit_once('/') else { return false };
    let parent = dir.rsplit('/').next().unwrap_or("");
    (file == "METADATA" && parent.ends_with(".dist-info"))
        || (file == "PKG-INFO" && parent.ends_with(".egg-info"))
        || (file.ends_with(".egg-info") && (parent == "site-packages" || parent == "dist-packages"))
}

/// PEP 503 normalization.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

pub fn catalog(tree: &Tree, out: &mut Catalog) {
    for (path, _) in tree.iter() {
        if !is_metadata_path(path) {
            continue;
        }
        let Some(bytes) = tree.file(path) else { continue };
        let text = String::from_utf8_lossy(bytes);
        // Only the header block: the body is the long description.
        let head = text.split("\n\n").next().unwrap_or("");
        let Some((_, fields)) = rfc822_paragraphs(head).into_iter().next() else {
            out.skipped.push(Skipped { path: path.to_string(), reason: "empty metadata file".into() });
            continue;
        };
        let (Some(name), Some(version)) =
            (field(&fields, "Name").filter(|s| !s.is_empty()), field(&fields, "Version").filter(|s| !s.is_empty()))
        else {
            out.skipped
                .push(Skipped { path: path.to_string(), reason: "no Name or no Version header (Core Metadata requires both)".into() });
            continue;
        };
        let mut licenses = Vec::new();
        if let Some(expr) = field(&fields, "License-Expression").filter(|s| !s.is_empty()) {
            licenses.push(expr.to_string());
        } else if let Some(l) =
            field(&fields, "License").filter(|l| !l.is_empty() && !l.contains('\n') && l.len() <= 100 && *l != "UNKNOWN")
        {
            licenses.push(l.to_string());
        } else {
            for (k, v) in &fields {
                if k.eq_ignore_ascii_case("Classifier") && v.starts_with("License ::") {
                    if let Some(last) = v.rsplit("::").next().map(str::trim) {
                        if last != "OSI Approved" {
                            licenses.push(last.to_string());
                        }
                    }
                }
            }
        }
        licenses.sort();
        licenses.dedup();
        out.packages.push(Package {
            ecosystem: Ecosystem::Python,
            name: name.to_string(),
            version: version.to_string(),
            purl: format!("pkg:pypi/{}@{}", purl_encode(&normalize(name)), purl_version_encode(version)),
            licenses,
            found_in: path.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Item;

    #[test]
    fn dist_info_egg_info_and_broken() {
        let mut t = Tree::default();
        let sp = "/usr/local/lib/python3.11/dist-packages";
        t.insert(&format!("{sp}/six-1.16.0.dist-info/METADATA"), Item::File(b"Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\nClassifier: License :: OSI Approved :: MIT License\n\nSix is a Python 2 and 3 compatibility library.\nLicense: not-a-header\n".to_vec()));
        t.insert(&format!("{sp}/Zope.Interface-5.0.egg-info/PKG-INFO"), Item::File(b"Metadata-Version: 1.1\nName: Zope.Interface\nVersion: 5.0\nLicense: ZPL 2.1\n Long licence text\nClassifier: License :: OSI Approved :: Zope Public License\n".to_vec()));
        t.insert(
            &format!("{sp}/new-1.0.dist-info/METADATA"),
            Item::File(b"Metadata-Version: 2.4\nName: new\nVersion: 1.0\nLicense-Expression: MIT OR Apache-2.0\n".to_vec()),
        );
        t.insert(&format!("{sp}/broken-1.0.dist-info/METADATA"), Item::File(b"Metadata-Version: 2.1\nName: broken\n".to_vec()));
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        let mut got: Vec<_> = c.packages.iter().map(|p| (p.purl.as_str(), p.licenses.clone())).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("pkg:pypi/new@1.0", vec!["MIT OR Apache-2.0".to_string()]),
                ("pkg:pypi/six@1.16.0", vec!["MIT".to_string()]),
                ("pkg:pypi/zope-interface@5.0", vec!["Zope Public License".to_string()]),
            ]
        );
        assert_eq!(c.skipped.len(), 1);
        assert!(c.skipped[0].path.contains("broken"));
        assert!(!is_metadata_path("/opt/six-1.16.0.dist-info/METADATA"));
    }
}
