//! A real Debian bookworm root (mmdebstrap from the host's Debian mirror, then apt-get, pip and npm installs in
//! a chroot; built once by `tests/debian-root.sh` and cached under `/var/lib/kiln-test/`): the
//! catalog lists every package `dpkg-query -W` lists with the same version, the pip and npm
//! packages, the same catalog from a tar of the root as from the root, and a valid SPDX document.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The cached root, or `None` (with the printed reason) when the Debian mirror does not answer.
fn debian_root() -> Option<PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/debian-root.sh");
    let out = Command::new(script).output().expect("run tests/debian-root.sh");
    let log = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())),
        Some(3) => {
            println!("SKIPPED: {}", log.lines().last().unwrap_or("the Debian mirror does not answer"));
            None
        }
        _ => panic!("tests/debian-root.sh failed:\n{log}"),
    }
}

#[test]
fn debian_root_lists_what_dpkg_pip_and_npm_installed() {
    let Some(root) = debian_root() else { return };
    let catalog = kiln_sbom::scan_dir(&root).unwrap();
    assert!(catalog.skipped.is_empty(), "{:#?}", catalog.skipped);

    let query =
        Command::new("chroot").arg(&root).args(["dpkg-query", "-W", "-f", "${Package} ${Version}\n"]).output().expect("chroot dpkg-query");
    assert!(query.status.success(), "{}", String::from_utf8_lossy(&query.stderr));
    let dpkg: BTreeSet<(String, String)> = String::from_utf8(query.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (n, v) = l.split_once(' ').unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    let ours: BTreeSet<(String, String)> =
        catalog.packages.iter().filter(|p| p.ecosystem == kiln_sbom::Ecosystem::Deb).map(|p| (p.name.clone(), p.version.clone())).collect();
    assert!(dpkg.len() > 300, "only {} packages from dpkg-query", dpkg.len());
    let missing: Vec<_> = dpkg.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&dpkg).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    let bash = catalog.packages.iter().find(|p| p.name == "bash").unwrap();
    assert!(bash.purl.starts_with("pkg:deb/debian/bash@") && bash.purl.contains("arch=amd64&distro=debian-12"), "{}", bash.purl);
    // bash's copyright file is DEP-5: its `License:` short names, as grep sees them.
    let grep = Command::new("sh")
        .arg("-c")
        .arg(format!("grep -h '^License:' {}/usr/share/doc/bash/copyright | sed 's/^License: *//' | sort -u", root.display()))
        .output()
        .unwrap();
    let mut expected: Vec<String> = String::from_utf8(grep.stdout).unwrap().lines().map(|l| l.trim().to_string()).collect();
    expected.sort();
    assert!(expected.contains(&"GPL-3+".to_string()), "{expected:?}");
    assert_eq!(bash.licenses, expected, "bash's DEP-5 licences");

    let has =
        |eco, name: &str, version: &str| catalog.packages.iter().any(|p| p.ecosystem == eco && p.name == name && p.version == version);
    // pip's package (not one Debian ships, so pip really installs it, under /usr/local).
    let iniconfig = catalog.packages.iter().find(|p| p.name == "iniconfig" && p.version == "2.0.0");
    let iniconfig = iniconfig.expect("pip's iniconfig 2.0.0 is missing");
    assert!(iniconfig.found_in.starts_with("/usr/local/lib/python3"), "{}", iniconfig.found_in);
    assert_eq!(iniconfig.purl, "pkg:pypi/iniconfig@2.0.0");
    assert!(has(kiln_sbom::Ecosystem::Npm, "is-number", "7.0.0"), "npm's is-number is missing");
    // Debian's own Python packages (pip itself) are found from their dist-info too.
    assert!(catalog.packages.iter().any(|p| p.ecosystem == kiln_sbom::Ecosystem::Python && p.name == "pip"));
    // fzf is a Go binary: its build information names the Go standard library.
    assert!(
        catalog.packages.iter().any(|p| p.ecosystem == kiln_sbom::Ecosystem::Go && p.name == "stdlib" && p.found_in == "/usr/bin/fzf"),
        "fzf's Go build info: {:?}",
        catalog.packages.iter().filter(|p| p.ecosystem == kiln_sbom::Ecosystem::Go).collect::<Vec<_>>()
    );

    // Debian builds Go in GOPATH mode: the main module is the build info's `path`, as syft lists it.
    assert!(catalog.packages.iter().any(|p| p.purl == "pkg:golang/github.com/junegunn/fzf@(devel)"), "fzf's main module is missing");

    // The same root as one layer tar gives the same catalog.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("root.tar");
    let status = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(status.success());
    let from_layers = kiln_sbom::scan_layers([std::io::BufReader::new(std::fs::File::open(&tar).unwrap())]).unwrap();
    assert_eq!(from_layers, catalog);

    let doc = kiln_sbom::spdx_json(&catalog, &common::doc_info());
    assert_eq!(doc["packages"].as_array().unwrap().len(), catalog.packages.len() + 1);
    if let Err(reason) = common::validate_spdx(&doc, dir.path()) {
        println!("SKIPPED the SPDX schema validation: {reason}");
    }
}
