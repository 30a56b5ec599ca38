//! Rust crates compiled into executables built with `cargo auditable`.
//!
//! cargo-auditable (rust-secure-code/cargo-auditable) embeds the dependency tree in an ELF section
//! named `.dep-v0`: zlib-compressed JSON, `{"packages": [{"name", "version", "source", "kind",
//! "dependencies", "root"}]}`. Every package listed is cataloged (build-time ones included, as syft
//! does), with purl `pkg:cargo/NAME@VERSION`. Binaries built without cargo-auditable carry no such
//! list and give nothing.

use std::io::Read;

use crate::tree::{Item, Tree};
use crate::{purl_encode, purl_version_encode, Catalog, Ecosystem, Package, Skipped};

/// Decompressed JSON larger than this is not a dependency list.
const JSON_LIMIT: u64 = 16 << 20;

/// The `(name, version)` pairs of a `.dep-v0` section.
pub fn parse_dep_v0(data: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(JSON_LIMIT)
        .read_to_end(&mut json)
        .map_err(|e| format!("cargo-auditable section is not zlib data: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| format!("cargo-auditable section is not JSON: {e}"))?;
    let list = v.get("packages").and_then(|p| p.as_array()).ok_or("cargo-auditable JSON has no \"packages\" array")?;
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        match (p.get("name").and_then(|n| n.as_str()), p.get("version").and_then(|n| n.as_str())) {
            (Some(n), Some(v)) => out.push((n.to_string(), v.to_string())),
            _ => return Err(format!("cargo-auditable package {i} has no name or version")),
        }
    }
    Ok(out)
}

pub fn catalog(tree: &Tree, out: &mut Catalog) {
    for (path, item) in tree.iter() {
        let Item::Binary(info) = item else { continue };
        let Some(data) = &info.cargo_auditable else { continue };
        match parse_dep_v0(data) {
            Ok(list) => {
                for (name, version) in list {
                    out.packages.push(Package {
                        ecosystem: Ecosystem::Rust,
                        purl: format!("pkg:cargo/{}@{}", purl_encode(&name), purl_version_encode(&version)),
                        name,
                        version,
                        licenses: Vec::new(),
                        found_in: path.to_string(),
                    });
                }
            }
            Err(reason) => out.skipped.push(Skipped { path: path.to_string(), reason }),
        }
    }
}

#[cfg(test)]
pub(crate) fn make_dep_v0(json: &str) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(json.as_bytes()).unwrap();
    z.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::BinaryInfo;

    #[test]
    fn auditable_binary_and_garbage() {
        let json = r#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1]},{"name":"serde","version":"1.0.200","source":"crates.io"}]}"#;
        let mut t = Tree::default();
        t.insert("/usr/bin/app", Item::Binary(BinaryInfo { go_buildinfo: None, cargo_auditable: Some(make_dep_v0(json)) }));
        t.insert("/usr/bin/bad", Item::Binary(BinaryInfo { go_buildinfo: None, cargo_auditable: Some(b"not zlib".to_vec()) }));
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        let purls: Vec<_> = c.packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(purls, ["pkg:cargo/app@0.1.0", "pkg:cargo/serde@1.0.200"]);
        assert_eq!(c.skipped.len(), 1);
        assert!(c.skipped[0].reason.contains("not zlib data"), "{:?}", c.skipped);
    }
}
