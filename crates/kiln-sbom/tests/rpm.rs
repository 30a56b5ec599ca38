//! A real rpm database: rpmbuild (Debian's `rpm` package, rpm 4.18) builds a main package and 40
//! subpackages from a spec written here, and `rpm -i --justdb` records them in a fresh
//! `rpmdb.sqlite` under a root. Enough packages that the `Packages` table is a b-tree of several
//! pages, and headers large enough (a long description) to spill into SQLite overflow pages. The
//! catalog must list exactly what `rpm -qa` lists, with the same epoch, version, release, arch,
//! licence and source rpm, from the root and from a tar of it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

const SUBPACKAGES: usize = 40;

fn have(tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    // CI installs rpm (scripts/deps): there a missing tool is a failure, not a skip.
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{tool} is missing: scripts/deps installs Debian's rpm package");
    println!("SKIPPED: {tool} is not installed (Debian package rpm)");
    false
}

fn spec() -> String {
    // ~12 KB of description: each header is larger than a 4 KB SQLite page.
    let description: String = (0..300).map(|i| format!("line {i} of a description long enough to overflow a page\n")).collect();
    let mut s = format!(
        "Name: kiln-hello\nVersion: 1.2.3\nRelease: 4.kt1\nEpoch: 2\nSummary: main\nLicense: MIT AND Apache-2.0\n\
         Vendor: Kiln Test Project\nBuildArch: noarch\n%description\n{description}\n"
    );
    for i in 0..SUBPACKAGES {
        let _ = write!(
            s,
            "%package -n kiln-sub-{i}\nVersion: 0.{i}\nSummary: sub {i}\nLicense: GPL-2.0-or-later\n%description -n kiln-sub-{i}\n{description}\n%files -n kiln-sub-{i}\n"
        );
    }
    s.push_str("%install\nmkdir -p %{buildroot}/usr/share/kiln-hello\necho hi > %{buildroot}/usr/share/kiln-hello/hi\n");
    s.push_str("%files\n/usr/share/kiln-hello/hi\n");
    s
}

fn run(c: &mut Command, what: &str) -> String {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(o.status.success(), "{what} failed:\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Builds the packages and installs them into `root`'s database; returns `rpm -qa`'s view:
/// (name, version as the catalog writes it, arch, licence, source rpm).
fn make_db(work: &Path, root: &Path) -> BTreeSet<(String, String, String, String, String)> {
    std::fs::write(work.join("hello.spec"), spec()).unwrap();
    let top = work.join("top");
    run(
        Command::new("rpmbuild").arg("--define").arg(format!("_topdir {}", top.display())).arg("-bb").arg(work.join("hello.spec")),
        "rpmbuild",
    );
    let rpms: Vec<_> = std::fs::read_dir(top.join("RPMS/noarch")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(rpms.len(), SUBPACKAGES + 1);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "NAME=\"Rocky Linux\"\nID=\"rocky\"\nVERSION_ID=\"9.4\"\n").unwrap();
    let rpm = || {
        let mut c = Command::new("rpm");
        c.arg("--root").arg(root).args(["--dbpath", "/var/lib/rpm"]);
        c
    };
    run(rpm().arg("--initdb"), "rpm --initdb");
    run(rpm().args(["-i", "--justdb", "--nodeps", "--ignorearch", "--ignoreos"]).args(&rpms), "rpm -i --justdb");
    let qa = run(rpm().args(["-qa", "--qf", "%{NAME}\t%{EPOCH}\t%{VERSION}-%{RELEASE}\t%{ARCH}\t%{LICENSE}\t%{SOURCERPM}\n"]), "rpm -qa");
    qa.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let version = if f[1] == "(none)" { f[2].to_string() } else { format!("{}:{}", f[1], f[2]) };
            (f[0].into(), version, f[3].into(), f[4].into(), f[5].into())
        })
        .collect()
}

#[test]
fn a_real_rpmdb_sqlite_lists_what_rpm_qa_lists() {
    if !have("rpm") || !have("rpmbuild") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let want = make_db(work.path(), &root);
    assert_eq!(want.len(), SUBPACKAGES + 1, "{want:?}");
    let db = root.join("var/lib/rpm/rpmdb.sqlite");
    assert!(std::fs::metadata(&db).unwrap().len() > 40 * 4096, "the database spans many pages");

    let catalog = kiln_sbom::scan_dir(&root).unwrap();
    assert!(catalog.skipped.is_empty(), "{:#?}", catalog.skipped);
    let rpms: Vec<_> = catalog.packages.iter().filter(|p| p.ecosystem == kiln_sbom::Ecosystem::Rpm).collect();
    let got: BTreeSet<(String, String, String, String, String)> = rpms
        .iter()
        .map(|p| {
            let q = |k: &str| p.purl.split(['?', '&']).find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap_or("").replace("%2B", "+");
            (p.name.clone(), p.version.clone(), q("arch"), p.licenses.join(" "), q("upstream"))
        })
        .collect();
    assert_eq!(got, want);
    let main = rpms.iter().find(|p| p.name == "kiln-hello").unwrap();
    assert_eq!(
        main.purl,
        "pkg:rpm/rocky/kiln-hello@1.2.3-4.kt1?arch=noarch&distro=rocky-9.4&epoch=2&upstream=kiln-hello-1.2.3-4.kt1.src.rpm"
    );
    assert_eq!(main.found_in, "/var/lib/rpm/rpmdb.sqlite");

    // The same root as a layer tar gives the same catalog.
    let tar = work.path().join("root.tar");
    run(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."), "tar");
    let from_layers = kiln_sbom::scan_layers([std::io::BufReader::new(std::fs::File::open(&tar).unwrap())]).unwrap();
    assert_eq!(from_layers, catalog);

    // A database that rpm itself cannot read is reported, not silently empty: cut it short.
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
    let cut = kiln_sbom::scan_dir(&root).unwrap();
    assert!(
        cut.skipped.iter().any(|s| s.path == "/var/lib/rpm/rpmdb.sqlite" && s.reason.starts_with("cannot read the rpm database")),
        "{:#?}",
        cut.skipped
    );
}
