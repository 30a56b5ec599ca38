//! Debian packages: dpkg's status database.
//!
//! Reads `/var/lib/dpkg/status` (dpkg's own database: RFC 822-style paragraphs, one per package, see
//! dpkg's `deb-control(5)`/`dpkg-query(1)`) and every file in `/var/lib/dpkg/status.d/` (distroless
//! images write one paragraph file per package there, `*.md5sums` aside, and no Status field). Only
//! packages whose `Status` says installed (`install ok installed`; a missing Status in `status.d/`
//! counts as installed) are cataloged: removed packages that left config files behind
//! (`deinstall ok config-files`) are not in the image.
//!
//! Licences come from `/usr/share/doc/PACKAGE/copyright` when that file is machine-readable (DEP-5:
//! its first paragraph has `Format: …copyright-format/1.0/`): the short names of its `License:`
//! fields, as Debian writes them (`GPL-2+`, `Expat`); [`crate::license`] maps them to SPDX when the
//! document is written. Free-form copyright files give no licence (syft guesses from their text; we
//! do not guess). A doc directory that is a symlink to another package's is not followed.
//!
//! The purl is syft's: `pkg:deb/ID/NAME@VERSION?arch=ARCH&distro=ID-VERSION_ID&upstream=SOURCE`,
//! with `ID` and `VERSION_ID` from `/etc/os-release` (or `/usr/lib/os-release`; `debian` when
//! neither says), the version with its epoch (`1:2.38.1-5+deb12u3`, as `dpkg-query -W` prints it),
//! and `upstream` only when the paragraph has a `Source` field (`SOURCE@SOURCEVERSION` when the source
//! has its own version).

use crate::tree::Tree;
use crate::{field, purl_encode, rfc822_paragraphs, Catalog, Ecosystem, Package, Skipped};

/// The distribution named by os-release: `(ID, VERSION_ID)`.
pub fn os_release(tree: &Tree) -> (Option<String>, Option<String>) {
    let Some(text) = tree.file("/etc/os-release").or_else(|| tree.file("/usr/lib/os-release")) else {
        return (None, None);
    };
    let text = String::from_utf8_lossy(text);
    let mut id = None;
    let mut version = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
        match k.trim() {
            "ID" if !v.is_empty() => id = Some(v),
            "VERSION_ID" if !v.is_empty() => version = Some(v),
            _ => {}
        }
    }
    (id, version)
}

pub fn catalog(tree: &Tree, out: &mut Catalog) {
    let (id, version_id) = os_release(tree);
    let namespace = id.clone().unwrap_or_else(|| "debian".to_string());
    let distro = match (&id, &version_id) {
        (Some(id), Some(v)) => Some(format!("{id}-{v}")),
        (Some(id), None) => Some(id.clone()),
        _ => None,
    };
    for (path, _) in tree.iter() {
        let in_status_d = path.starts_with("/var/lib/dpkg/status.d/");
        if path != "/var/lib/dpkg/status" && !in_status_d {
            continue;
        }
        let Some(bytes) = tree.file(path) else { continue };
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                out.skipped.push(Skipped { path: path.to_string(), reason: format!("not UTF-8 ({e}); dpkg writes UTF-8") });
                continue;
            }
        };
        for (line, fields) in rfc822_paragraphs(text) {
            let skip = |reason: String| Skipped { path: path.to_string(), reason: format!("paragraph at line {line}: {reason}") };
            let Some(name) = field(&fields, "Package").filter(|s| !s.is_empty()) else {
                out.skipped.push(skip("no Package field".into()));
                continue;
            };
            match field(&fields, "Status") {
                Some(status) => {
                    if status.split_whitespace().nth(2) != Some("installed") {
                        continue;
                    }
                }
                None if in_status_d => {}
                None => {
                    out.skipped.push(skip(format!("package {name} has no Status field")));
                    continue;
                }
            }
            let Some(version) = field(&fields, "Version").filter(|s| !s.is_empty()) else {
                out.skipped.push(skip(format!("package {name} has no Version field")));
                continue;
            };
            let arch = field(&fields, "Architecture").unwrap_or("");
            let mut qualifiers = Vec::new();
            if !arch.is_empty() {
                qualifiers.push(format!("arch={}", purl_encode(arch)));
            }
            if let Some(d) = &distro {
                qualifiers.push(format!("distro={}", purl_encode(d)));
            }
            if let Some(source) = field(&fields, "Source").filter(|s| !s.is_empty()) {
                // `Source: util-linux (2.38.1-5+deb12u3)` when the binary's version differs.
                let upstream = match source.split_once(" (") {
                    Some((s, v)) => format!("{}@{}", s.trim(), v.trim_end_matches(')').trim()),
                    None => source.trim().to_string(),
                };
                qualifiers.push(format!("upstream={}", crate::purl_version_encode(&upstream)));
            }
            let mut purl = format!("pkg:deb/{}/{}@{}", purl_encode(&namespace), purl_encode(name), crate::purl_version_encode(version));
            if !qualifiers.is_empty() {
                purl.push('?');
                purl.push_str(&qualifiers.join("&"));
            }
            // Multi-arch packages (`libc6:amd64`) share one doc directory named after the package.
            let copyright = format!("/usr/share/doc/{name}/copyright");
            let licenses = tree.file(&copyright).map(|b| dep5_licenses(&String::from_utf8_lossy(b))).unwrap_or_default();
            out.packages.push(Package {
                ecosystem: Ecosystem::Deb,
                name: name.to_string(),
                version: version.to_string(),
                purl,
                licenses,
                found_in: path.to_string(),
            });
        }
    }
}

/// The licence short names of a machine-readable (DEP-5) copyright file, sorted and deduplicated;
/// empty for a free-form file.
pub fn dep5_licenses(text: &str) -> Vec<String> {
    let paragraphs = rfc822_paragraphs(text);
    let Some((_, header)) = paragraphs.first() else {
        return Vec::new();
    };
    let machine_readable = field(header, "Format").is_some_and(|f| f.contains("copyright-format/1.0") || f.contains("dep5"));
    if !machine_readable {
        return Vec::new();
    }
    let mut out: Vec<String> = paragraphs
        .iter()
        .flat_map(|(_, fields)| fields.iter())
        .filter(|(k, _)| k.eq_ignore_ascii_case("License"))
        // The first line is the short name; the lines after it are the licence text.
        .filter_map(|(_, v)| v.lines().next().map(str::trim))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Item;

    fn tree(files: &[(&str, &str)]) -> Tree {
        let mut t = Tree::default();
        for (p, c) in files {
            t.insert(p, Item::File(c.as_bytes().to_vec()));
        }
        t
    }

    const STATUS: &str = "\
Package: bsdutils
Status: install ok installed
Priority: required
Architecture: amd64
Source: util-linux (2.38.1-5+deb12u3)
Version: 1:2.38.1-5+deb12u3
Description: basic utilities from 4.4BSD-Lite
 This package contains the bare minimum.

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u15

Package: noversion
Status: install ok installed

Status: install ok installed
Version: 3
";

    #[test]
    fn status_installed_only_with_syft_purls() {
        let t = tree(&[
            ("/var/lib/dpkg/status", STATUS),
            ("/etc/os-release", "PRETTY_NAME=\"Debian\"\nID=debian\nVERSION_ID=\"12\"\n"),
            (
                "/usr/share/doc/base-files/copyright",
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: x\nLicense: GPL-2+\n This is\n .\n text\n\nFiles: a\nLicense: Expat\n",
            ),
            ("/usr/share/doc/bsdutils/copyright", "This is util-linux, under the GPL.\n"),
        ]);
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        let names: Vec<_> = c.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bsdutils", "base-files"]);
        assert_eq!(
            c.packages[0].purl,
            "pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12&upstream=util-linux%402.38.1-5%2Bdeb12u3"
        );
        assert_eq!(c.packages[0].version, "1:2.38.1-5+deb12u3");
        assert!(c.packages[0].licenses.is_empty());
        assert_eq!(c.packages[1].licenses, ["Expat", "GPL-2+"]);
        assert_eq!(c.packages[1].purl, "pkg:deb/debian/base-files@12.4%2Bdeb12u15?arch=amd64&distro=debian-12");
        let reasons: Vec<_> = c.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons, ["paragraph at line 20: package noversion has no Version field", "paragraph at line 23: no Package field"]);
    }

    #[test]
    fn distroless_status_d_without_status_field() {
        let t = tree(&[
            ("/var/lib/dpkg/status.d/libc6", "Package: libc6\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\n"),
            ("/var/lib/dpkg/status.d/tzdata", "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n"),
        ]);
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        assert_eq!(c.packages.len(), 2);
        assert_eq!(c.packages[0].found_in, "/var/lib/dpkg/status.d/libc6");
        // No os-release: the namespace falls back to debian, no distro qualifier.
        assert_eq!(c.packages[0].purl, "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64");
    }

    #[test]
    fn binary_garbage_is_skipped_with_a_reason() {
        let mut t = Tree::default();
        t.insert("/var/lib/dpkg/status", Item::File(vec![0xff, 0xfe, 0x00, 0x41]));
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        assert!(c.packages.is_empty());
        assert!(c.skipped[0].reason.starts_with("not UTF-8"), "{:?}", c.skipped);
    }
}
