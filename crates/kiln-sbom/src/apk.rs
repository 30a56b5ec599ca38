//! Alpine packages: apk's installed database.
//!
//! Reads `/lib/apk/db/installed` (apk-tools 2; apk-tools 3 keeps a copy at
//! `/usr/lib/apk/db/installed`): one paragraph per package, blank-line separated, each line a
//! one-letter key, a colon and the value (apk-tools' `apk_db_index_read`; `P:` name, `V:` version,
//! `A:` architecture, `L:` licence, `o:` origin, and many keys per installed file that do not
//! matter here). `L:` is usually an SPDX expression already (`MIT AND BSD-2-Clause`).
//!
//! The purl is syft's: `pkg:apk/ID/NAME@VERSION?arch=ARCH&distro=ID-VERSION_ID&upstream=ORIGIN`
//! (`upstream` only when the origin differs from the name; `ID` from os-release, `alpine` when it
//! says nothing).

use crate::dpkg::os_release;
use crate::tree::Tree;
use crate::{purl_encode, purl_version_encode, Catalog, Ecosystem, Package, Skipped};

pub fn catalog(tree: &Tree, out: &mut Catalog) {
    let (id, version_id) = os_release(tree);
    let namespace = id.clone().unwrap_or_else(|| "alpine".to_string());
    let distro = match (&id, &version_id) {
        (Some(id), Some(v)) => Some(format!("{id}-{v}")),
        (Some(id), None) => Some(id.clone()),
        _ => None,
    };
    for path in ["/lib/apk/db/installed", "/usr/lib/apk/db/installed"] {
        let Some(bytes) = tree.file(path) else { continue };
        // `/lib` is a symlink to `/usr/lib` on some systems, and apk-tools 3 writes both: the same
        // database read twice would double every package.
        if path == "/usr/lib/apk/db/installed" && tree.file("/lib/apk/db/installed").is_some() {
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        let mut record: Vec<(char, &str)> = Vec::new();
        let mut start = 1;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().chain(std::iter::once(&"")).enumerate() {
            if line.trim().is_empty() {
                if !record.is_empty() {
                    emit(path, start, &record, &namespace, distro.as_deref(), out);
                    record.clear();
                }
                start = i + 2;
                continue;
            }
            let mut chars = line.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some(':')) => record.push((k, &line[k.len_utf8() + 1..])),
                _ => {
                    out.skipped.push(Skipped { path: path.to_string(), reason: format!("line {}: not a `K:value` line: {line:?}", i + 1) })
                }
            }
        }
    }
}

fn emit(path: &str, line: usize, record: &[(char, &str)], namespace: &str, distro: Option<&str>, out: &mut Catalog) {
    let get = |k: char| record.iter().find(|(key, _)| *key == k).map(|(_, v)| v.trim());
    let skip = |what: &str| Skipped { path: path.to_string(), reason: format!("record at line {line}: {what}") };
    let Some(name) = get('P').filter(|s| !s.is_empty()) else {
        out.skipped.push(skip("no P: (name) line"));
        return;
    };
    let Some(version) = get('V').filter(|s| !s.is_empty()) else {
        out.skipped.push(skip(&format!("package {name} has no V: (version) line")));
        return;
    };
    let mut qualifiers = Vec::new();
    if let Some(arch) = get('A').filter(|s| !s.is_empty()) {
        qualifiers.push(format!("arch={}", purl_encode(arch)));
    }
    if let Some(d) = distro {
        qualifiers.push(format!("distro={}", purl_encode(d)));
    }
    if let Some(origin) = get('o').filter(|o| !o.is_empty() && *o != name) {
        qualifiers.push(format!("upstream={}", purl_version_encode(origin)));
    }
    let mut purl = format!("pkg:apk/{}/{}@{}", purl_encode(namespace), purl_encode(name), purl_version_encode(version));
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    out.packages.push(Package {
        ecosystem: Ecosystem::Apk,
        name: name.to_string(),
        version: version.to_string(),
        purl,
        licenses: get('L').filter(|l| !l.is_empty()).map(|l| vec![l.to_string()]).unwrap_or_default(),
        found_in: path.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Item;

    #[test]
    fn installed_database() {
        let db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:383152\nL:MIT\no:musl\nF:lib\nR:libc.musl-x86_64.so.1\n\nP:libcrypto3\nV:3.1.4-r1\nA:x86_64\nL:Apache-2.0\no:openssl\n\nP:broken\nA:x86_64\n\nthis is not apk\n";
        let mut t = Tree::default();
        t.insert("/lib/apk/db/installed", Item::File(db.as_bytes().to_vec()));
        t.insert("/etc/os-release", Item::File(b"ID=alpine\nVERSION_ID=3.18.4\n".to_vec()));
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        assert_eq!(c.packages.len(), 2);
        assert_eq!(c.packages[0].purl, "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.18.4");
        assert_eq!(c.packages[0].licenses, ["MIT"]);
        assert_eq!(c.packages[1].purl, "pkg:apk/alpine/libcrypto3@3.1.4-r1?arch=x86_64&distro=alpine-3.18.4&upstream=openssl");
        let reasons: Vec<_> = c.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["record at line 17: package broken has no V: (version) line", "line 20: not a `K:value` line: \"this is not apk\"",]
        );
    }
}
