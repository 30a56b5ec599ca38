//! scan_layers applies whiteouts, opaque dirs, replacements and hard links exactly as the unpacked
//! root would look, and the SPDX document of a mixed catalog passes the SPDX 2.3 validator.

mod common;

use std::io::Write;
use std::path::Path;

fn dpkg_entry(name: &str, version: &str) -> String {
    format!("Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n")
}

enum E<'a> {
    File(&'a str, Vec<u8>, u32),
    Dir(&'a str),
    Link(&'a str, &'a str),
    Symlink(&'a str, &'a str),
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        match e {
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(*mode);
                h.set_cksum();
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                h.set_cksum();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::Link(p, target) | E::Symlink(p, target) => {
                h.set_entry_type(if matches!(e, E::Link(..)) { tar::EntryType::Link } else { tar::EntryType::Symlink });
                h.set_size(0);
                h.set_mode(0o755);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn auditable_elf(crate_name: &str) -> Vec<u8> {
    let json = format!(r#"{{"packages":[{{"name":"{crate_name}","version":"1.2.3","source":"crates.io"}}]}}"#);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(json.as_bytes()).unwrap();
    elf_with(".dep-v0", &z.finish().unwrap())
}

/// A minimal little-endian ELF64 file with one named section (and the name table).
fn elf_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut names = vec![0u8];
    names.extend_from_slice(name.as_bytes());
    names.push(0);
    let shstrtab = names.len() as u32;
    names.extend_from_slice(b".shstrtab\0");
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    let data_off = out.len() as u64;
    out.extend_from_slice(data);
    let names_off = out.len() as u64;
    out.extend_from_slice(&names);
    while out.len() & 7 != 0 {
        out.push(0);
    }
    let shoff = out.len() as u64;
    out.extend_from_slice(&[0u8; 64]);
    for (n, kind, off, size) in [(1u32, 1u32, data_off, data.len() as u64), (shstrtab, 3, names_off, names.len() as u64)] {
        let mut e = [0u8; 64];
        e[..4].copy_from_slice(&n.to_le_bytes());
        e[4..8].copy_from_slice(&kind.to_le_bytes());
        e[0x18..0x20].copy_from_slice(&off.to_le_bytes());
        e[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&e);
    }
    out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    out[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    out[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    out
}

fn write(root: &Path, path: &str, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn layers_with_whiteouts_give_the_catalog_of_the_unpacked_root() {
    let pkg = |n: &str| format!(r#"{{"name":"{n}","version":"1.0.0","license":"MIT"}}"#).into_bytes();
    let lower = layer(&[
        E::File("var/lib/dpkg/status", dpkg_entry("base-files", "12.4").into_bytes(), 0o644),
        E::File("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n".to_vec(), 0o644),
        E::File("app/node_modules/gone/package.json", pkg("gone"), 0o644),
        E::File("app/node_modules/kept/package.json", pkg("kept"), 0o644),
        E::File("opt/lib/node_modules/hidden/package.json", pkg("hidden"), 0o644),
        E::File("usr/bin/tool", auditable_elf("lowertool"), 0o755),
        E::File("usr/bin/notexec", auditable_elf("notexec"), 0o644),
        E::File("srv/node_modules/replaced/package.json", pkg("replaced"), 0o644),
        E::File("proc/node_modules/x/package.json", pkg("proc"), 0o644),
    ]);
    let upper = layer(&[
        E::File(
            "var/lib/dpkg/status",
            format!("{}{}", dpkg_entry("base-files", "12.4"), dpkg_entry("curl", "7.88.1-10")).into_bytes(),
            0o644,
        ),
        E::File("app/node_modules/.wh.gone", vec![], 0o644),
        E::Dir("opt/lib/node_modules"),
        E::File("opt/lib/node_modules/.wh..wh..opq", vec![], 0o644),
        E::File("opt/lib/node_modules/fresh/package.json", pkg("fresh"), 0o644),
        E::File("usr/bin/tool", auditable_elf("uppertool"), 0o755),
        E::Link("usr/bin/tool-again", "usr/bin/tool"),
        E::Symlink("srv/node_modules", "/app/node_modules"),
    ]);
    let from_layers = kiln_sbom::scan_layers([lower.as_slice(), upper.as_slice()]).unwrap();

    // The same image, unpacked by hand.
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(r, "/var/lib/dpkg/status", format!("{}{}", dpkg_entry("base-files", "12.4"), dpkg_entry("curl", "7.88.1-10")).as_bytes(), 0o644);
    write(r, "/etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n", 0o644);
    write(r, "/app/node_modules/kept/package.json", &pkg("kept"), 0o644);
    write(r, "/opt/lib/node_modules/fresh/package.json", &pkg("fresh"), 0o644);
    write(r, "/usr/bin/tool", &auditable_elf("uppertool"), 0o755);
    std::fs::hard_link(r.join("usr/bin/tool"), r.join("usr/bin/tool-again")).unwrap();
    write(r, "/usr/bin/notexec", &auditable_elf("notexec"), 0o644);
    std::fs::create_dir_all(r.join("srv")).unwrap();
    std::os::unix::fs::symlink("/app/node_modules", r.join("srv/node_modules")).unwrap();
    write(r, "/proc/node_modules/x/package.json", &pkg("proc"), 0o644);
    let from_dir = kiln_sbom::scan_dir(r).unwrap();

    let names: Vec<(String, String)> = from_layers.packages.iter().map(|p| (p.name.clone(), p.found_in.clone())).collect();
    let expected: Vec<(String, String)> = [
        ("base-files", "/var/lib/dpkg/status"),
        ("curl", "/var/lib/dpkg/status"),
        ("fresh", "/opt/lib/node_modules/fresh/package.json"),
        ("kept", "/app/node_modules/kept/package.json"),
        ("uppertool", "/usr/bin/tool"),
        ("uppertool", "/usr/bin/tool-again"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(names, expected, "{from_layers:#?}");
    assert_eq!(from_layers, from_dir);
    assert!(from_layers.skipped.is_empty(), "{:?}", from_layers.skipped);
}

#[test]
fn broken_layer_is_an_error_naming_the_layer() {
    let good = layer(&[E::File("etc/os-release", b"ID=debian\n".to_vec(), 0o644)]);
    let mut broken = layer(&[E::File("var/lib/dpkg/status", dpkg_entry("a", "1").into_bytes(), 0o644)]);
    broken.truncate(600);
    let err = kiln_sbom::scan_layers([good.as_slice(), broken.as_slice()]).unwrap_err();
    assert!(err.to_string().starts_with("layer 1 "), "{err}");
}

#[test]
fn spdx_document_is_valid_and_deterministic() {
    let pkg = |e, n: &str, v: &str, purl: &str, lic: &[&str], f: &str| kiln_sbom::Package {
        ecosystem: e,
        name: n.into(),
        version: v.into(),
        purl: purl.into(),
        licenses: lic.iter().map(|s| s.to_string()).collect(),
        found_in: f.into(),
    };
    use kiln_sbom::Ecosystem::*;
    let catalog = kiln_sbom::Catalog {
        packages: vec![
            pkg(
                Deb,
                "bash",
                "5.2.15-2+b2",
                "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
                &["GPL-3+", "BSD-4-clause-UC", "permissive"],
                "/var/lib/dpkg/status",
            ),
            pkg(
                Deb,
                "perl",
                "5.36.0-7",
                "pkg:deb/debian/perl@5.36.0-7?arch=amd64",
                &["GPL-1+ or Artistic", "Artistic-2.0"],
                "/var/lib/dpkg/status",
            ),
            pkg(Python, "six", "1.16.0", "pkg:pypi/six@1.16.0", &["MIT"], "/usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"),
            pkg(
                Python,
                "weird",
                "1",
                "pkg:pypi/weird@1",
                &["Dual licensed under the XYZ terms (see COPYING)"],
                "/x/site-packages/weird-1.dist-info/METADATA",
            ),
            pkg(
                Npm,
                "@types/node",
                "20.1.0",
                "pkg:npm/%40types/node@20.1.0",
                &["(MIT OR Apache-2.0)"],
                "/app/node_modules/@types/node/package.json",
            ),
            pkg(Go, "stdlib", "go1.22.1", "pkg:golang/stdlib@1.22.1", &[], "/usr/bin/app"),
        ],
        skipped: vec![],
    };
    let doc = kiln_sbom::spdx_json(&catalog, &common::doc_info());
    let bytes = serde_json::to_vec(&doc).unwrap();
    assert_eq!(bytes, serde_json::to_vec(&kiln_sbom::spdx_json(&catalog.clone(), &common::doc_info())).unwrap());
    let declared: Vec<&str> = doc["packages"].as_array().unwrap().iter().map(|p| p["licenseDeclared"].as_str().unwrap()).collect();
    assert_eq!(declared[1], "GPL-3.0-or-later AND LicenseRef-BSD-4-clause-UC AND LicenseRef-permissive");
    let dir = tempfile::tempdir().unwrap();
    if let Err(reason) = common::validate_spdx(&doc, dir.path()) {
        println!("SKIPPED the SPDX schema validation: {reason}");
    }
}
