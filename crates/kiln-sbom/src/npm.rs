//! npm packages: `package.json` manifests of installed packages.
//!
//! Reads `node_modules/NAME/package.json` and `node_modules/@SCOPE/NAME/package.json` anywhere
//! (global installs under `/usr/local/lib/node_modules`, an application's `node_modules`, nested
//! ones), the manifest format of npm's `package.json` documentation: `name`, `version`, and `license`
//! (a string, or the legacy `{"type": …}` object or `licenses` array). A `package.json` elsewhere
//! (a test fixture inside a package, Debian's `/usr/share/nodejs` tree, whose packages dpkg lists) is
//! not an installed npm package and is not read.
//!
//! The purl is `pkg:npm/NAME@VERSION`, a scope as the namespace with its `@` encoded
//! (`pkg:npm/%40types/node@20.1.0`).

use crate::tree::Tree;
use crate::{purl_encode, purl_version_encode, Catalog, Ecosystem, Package, Skipped};

/// Whether `path` is an installed package's manifest.
pub fn is_manifest_path(path: &str) -> bool {
    let Some(dir) = path.strip_suffix("/package.json") else { return false };
    let mut parts = dir.rsplit('/');
    let (Some(name), Some(parent)) = (parts.next(), parts.next()) else { return false };
    if name.is_empty() || name.starts_with('.') {
        return false;
    }
    if parent == "node_modules" {
        return !name.starts_with('@');
    }
    parent.starts_with('@') && parent.len() > 1 && parts.next() == Some("node_modules")
}

pub fn catalog(tree: &Tree, out: &mut Catalog) {
    for (path, _) in tree.iter() {
        if !is_manifest_path(path) {
            continue;
        }
        let Some(bytes) = tree.file(path) else { continue };
        let skip = |reason: String| Skipped { path: path.to_string(), reason };
        let json: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                out.skipped.push(skip(format!("not JSON: {e}")));
                continue;
            }
        };
        let (Some(name), Some(version)) = (
            json.get("name").and_then(|v| v.as_str()).filter(|s| !s.is_empty()),
            json.get("version").and_then(|v| v.as_str()).filter(|s| !s.is_empty()),
        ) else {
            out.skipped.push(skip("no \"name\" or no \"version\" string".into()));
            continue;
        };
        let mut licenses = Vec::new();
        match json.get("license") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => licenses.push(s.clone()),
            Some(serde_json::Value::Object(o)) => {
                if let Some(t) = o.get("type").and_then(|t| t.as_str()) {
                    licenses.push(t.to_string());
                }
            }
            _ => {}
        }
        if let Some(list) = json.get("licenses").and_then(|l| l.as_array()) {
            for l in list {
                if let Some(t) = l.get("type").and_then(|t| t.as_str()).or(l.as_str()) {
                    licenses.push(t.to_string());
                }
            }
        }
        licenses.sort();
        licenses.dedup();
        let encoded = match name.split_once('/') {
            Some((scope, n)) => format!("{}/{}", purl_encode(scope), purl_encode(n)),
            None => purl_encode(name),
        };
        out.packages.push(Package {
            ecosystem: Ecosystem::Npm,
            name: name.to_string(),
            version: version.to_string(),
            purl: format!("pkg:npm/{encoded}@{}", purl_version_encode(version)),
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
    fn manifests_scoped_and_broken() {
        let mut t = Tree::default();
        t.insert(
            "/usr/local/lib/node_modules/is-number/package.json",
            Item::File(br#"{"name":"is-number","version":"7.0.0","license":"MIT"}"#.to_vec()),
        );
        t.insert(
            "/app/node_modules/@types/node/package.json",
            Item::File(br#"{"name":"@types/node","version":"20.1.0","licenses":[{"type":"MIT"}]}"#.to_vec()),
        );
        t.insert("/app/node_modules/bad/package.json", Item::File(b"{not json".to_vec()));
        t.insert("/app/node_modules/noversion/package.json", Item::File(br#"{"name":"noversion"}"#.to_vec()));
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        let purls: Vec<_> = c.packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(purls, ["pkg:npm/%40types/node@20.1.0", "pkg:npm/is-number@7.0.0"]);
        assert_eq!(c.packages[0].licenses, ["MIT"]);
        assert_eq!(c.skipped.len(), 2);
        assert!(c.skipped[0].reason.starts_with("not JSON"), "{:?}", c.skipped);
        assert!(!is_manifest_path("/app/node_modules/x/test/package.json"));
        assert!(!is_manifest_path("/app/node_modules/@scope/package.json"));
        assert!(!is_manifest_path("/usr/share/nodejs/npm/package.json"));
        assert!(is_manifest_path("/a/node_modules/x/node_modules/y/package.json"));
    }
}
