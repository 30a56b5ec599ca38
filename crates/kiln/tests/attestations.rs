//! Issue 15: provenance and SBOM attestations, checked with tools that are not kiln. A real
//! `docker-registry` on loopback (kiln-testkit) receives the pushes; `skopeo inspect --raw` reads
//! the indexes and attestation manifests, `curl` fetches the in-toto blobs over the distribution
//! API, and the statements are parsed here. Two platforms are busybox amd64 and arm64 (arm64 RUN
//! steps under qemu-user-static), as in tests/multiplatform.rs.
//!
//! The SBOM tests need kiln-sbom's catalogers; until they land, a build with `--sbom` fails with
//! "the SBOM scanner is not built yet", and so do those tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testkit::Registry;
use serde_json::Value;
use tempfile::TempDir;

const ARM_BUSYBOX: &str = kiln_testkit::ARM64_BUSYBOX;
const IN_TOTO: &str = "application/vnd.in-toto+json";
const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "https://spdx.dev/Document";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Root, skopeo and curl; with `arm`, also the arm64 busybox and the qemu binfmt handler.
fn ready(arm: bool) -> bool {
    if !kiln_testkit::require_root() || !kiln_testkit::require_tool("skopeo") || !kiln_testkit::require_tool("curl") {
        return false;
    }
    if !arm {
        return true;
    }
    kiln_testkit::require_arm64()
}

struct Kiln {
    root: TempDir,
    work: TempDir,
}

impl Kiln {
    /// A store with `kiln.test/busybox:amd64` (and `:arm64` with `arm`).
    fn new(arm: bool) -> Kiln {
        let k = Kiln { root: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() };
        let arches: &[(&str, &str)] = if arm { &[("amd64", "/bin/busybox"), ("arm64", ARM_BUSYBOX)] } else { &[("amd64", "/bin/busybox")] };
        for (arch, bb) in arches {
            let tar = k.work.path().join(format!("busybox-{arch}.tar"));
            let st = Command::new(repo_root().join("scripts/busybox-rootfs")).arg(&tar).env("BUSYBOX", bb).status().unwrap();
            assert!(st.success(), "scripts/busybox-rootfs for {arch}");
            k.ok(&["import", "--platform", &format!("linux/{arch}"), tar.to_str().unwrap(), "-t", &format!("kiln.test/busybox:{arch}")]);
        }
        k
    }

    /// A context holding `files` (path, content).
    fn context(&self, name: &str, files: &[(&str, &str)]) -> String {
        let ctx = self.work.path().join(name);
        for (p, c) in files {
            let path = ctx.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        ctx.to_str().unwrap().to_string()
    }

    fn path(&self, rel: &str) -> String {
        self.work.path().join(rel).to_str().unwrap().to_string()
    }

    /// kiln with buildx's default attestations in force (nothing in the environment turns them
    /// off) and `extra_env` set.
    fn run_env(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(args).env("KILN_ROOT", self.root.path()).env("SOURCE_DATE_EPOCH", "0").env("CI", "true");
        c.env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS");
        for v in ["GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_SHA", "GITHUB_REF", "GITHUB_SERVER_URL", "GITHUB_RUN_ATTEMPT"] {
            c.env_remove(v);
        }
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// The manifest digest `kiln inspect` gives for a local image.
    fn local_digest(&self, reference: &str) -> String {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", reference]).0).unwrap();
        v["digest"].as_str().unwrap().to_string()
    }
}

fn skopeo_raw(reference: &str) -> Value {
    let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", reference]).output().unwrap();
    assert!(o.status.success(), "skopeo inspect --raw {reference}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A blob over the distribution API (plain HTTP: the registry is on loopback), checked against its digest.
fn fetch_blob(host: &str, repo: &str, digest: &str) -> Vec<u8> {
    let url = format!("http://{host}/v2/{repo}/blobs/{digest}");
    let o = Command::new("curl").args(["-sfL", &url]).output().unwrap();
    assert!(o.status.success(), "curl {url}: {}", String::from_utf8_lossy(&o.stderr));
    let sum = Command::new("sha256sum").arg("-").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut sum = sum;
    std::io::Write::write_all(sum.stdin.as_mut().unwrap(), &o.stdout).unwrap();
    drop(sum.stdin.take());
    let out = sum.wait_with_output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string();
    assert_eq!(format!("sha256:{hex}"), digest, "blob {digest} served with other content");
    o.stdout
}

fn is_attestation(d: &Value) -> bool {
    d["platform"]["os"] == "unknown" && d["platform"]["architecture"] == "unknown"
}

/// (image entries, attestation entries) of an index.
fn split(index: &Value) -> (Vec<Value>, Vec<Value>) {
    let all = index["manifests"].as_array().expect("an index").clone();
    all.into_iter().partition(|d| !is_attestation(d))
}

/// The statements of every attestation manifest of the index at `host/repo`, each checked to be
/// laid out as BuildKit lays it out: (image digest it names, statements).
fn statements(host: &str, repo: &str, index: &Value) -> Vec<(String, Vec<Value>)> {
    let (images, atts) = split(index);
    let mut out = Vec::new();
    for a in atts {
        assert_eq!(a["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(a["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
        let of = a["annotations"]["vnd.docker.reference.digest"].as_str().expect("vnd.docker.reference.digest").to_string();
        assert!(images.iter().any(|i| i["digest"] == of.as_str()), "{of} is no image of the index");
        let m = skopeo_raw(&format!("docker://{host}/{repo}@{}", a["digest"].as_str().unwrap()));
        assert_eq!(m["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
        let cfg: Value = serde_json::from_slice(&fetch_blob(host, repo, m["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!((cfg["os"].as_str(), cfg["architecture"].as_str()), (Some("unknown"), Some("unknown")));
        let mut st = Vec::new();
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(l["mediaType"], IN_TOTO);
            let s: Value = serde_json::from_slice(&fetch_blob(host, repo, l["digest"].as_str().unwrap())).unwrap();
            assert_eq!(l["annotations"]["in-toto.io/predicate-type"], s["predicateType"]);
            assert_eq!(s["_type"], "https://in-toto.io/Statement/v0.1");
            assert_eq!(format!("sha256:{}", s["subject"][0]["digest"]["sha256"].as_str().unwrap()), of, "the subject is the image");
            st.push(s);
        }
        out.push((of, st));
    }
    out
}

fn platform_of(images: &[Value], digest: &str) -> String {
    let d = images.iter().find(|i| i["digest"] == digest).unwrap();
    format!("{}/{}", d["platform"]["os"].as_str().unwrap(), d["platform"]["architecture"].as_str().unwrap())
}

#[test]
fn a_two_platform_push_with_max_provenance_has_one_attestation_manifest_per_platform() {
    if !ready(true) {
        return;
    }
    let k = Kiln::new(true);
    let reg = Registry::start_plain().unwrap();
    let tag = format!("{}/att/multi:1", reg.host());
    let ctx = k.context(
        "ctx",
        &[
            ("Dockerfile", "FROM kiln.test/busybox:${TARGETARCH}\nARG GREETING\nCOPY hello /hello\nRUN uname -m > /arch\n"),
            ("hello", "hi\n"),
        ],
    );
    k.ok(&[
        "build",
        &ctx,
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &tag,
        "--push",
        "--provenance=mode=max",
        "--build-arg",
        "GREETING=hello",
    ]);
    let index = skopeo_raw(&format!("docker://{tag}"));
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let (images, atts) = split(&index);
    assert_eq!(images.len(), 2);
    assert_eq!(atts.len(), 2, "one attestation manifest per platform: {index}");
    let found = statements(&reg.host(), "att/multi", &index);
    let mut described: Vec<String> = found.iter().map(|(of, _)| of.clone()).collect();
    described.sort();
    let mut image_digests: Vec<String> = images.iter().map(|i| i["digest"].as_str().unwrap().to_string()).collect();
    image_digests.sort();
    assert_eq!(described, image_digests, "each platform's image has its own");
    for (of, st) in &found {
        let platform = platform_of(&images, of);
        let arch = platform.rsplit('/').next().unwrap();
        assert_eq!(st.len(), 1);
        let p = &st[0];
        assert_eq!(p["predicateType"], SLSA_V02);
        assert_eq!(p["subject"][0]["name"], format!("pkg:docker/{}/att/multi@1?platform=linux%2F{arch}", reg.host()));
        let pred = &p["predicate"];
        assert_eq!(pred["buildType"], "https://mobyproject.org/buildkit@v1");
        assert_eq!(pred["invocation"]["parameters"]["frontend"], "dockerfile.v0");
        assert_eq!(pred["invocation"]["parameters"]["args"]["build-arg:GREETING"], "hello");
        assert_eq!(pred["invocation"]["configSource"]["entryPoint"], "Dockerfile");
        // The base image, by the digest the store holds for it, named as BuildKit names it.
        let base_digest = k.local_digest(&format!("kiln.test/busybox:{arch}"));
        let mats = pred["materials"].as_array().unwrap();
        let base = mats
            .iter()
            .find(|m| m["uri"] == format!("pkg:docker/kiln.test/busybox@{arch}?platform=linux%2F{arch}"))
            .unwrap_or_else(|| panic!("no base material in {mats:?}"));
        assert_eq!(format!("sha256:{}", base["digest"]["sha256"].as_str().unwrap()), base_digest);
        let dockerfile = mats.iter().find(|m| m["uri"] == "local:dockerfile").expect("the Dockerfile material");
        let want = Command::new("sha256sum").arg(format!("{ctx}/Dockerfile")).output().unwrap();
        assert_eq!(
            dockerfile["digest"]["sha256"].as_str().unwrap(),
            String::from_utf8_lossy(&want.stdout).split_whitespace().next().unwrap()
        );
        assert!(mats.iter().any(|m| m["uri"] == "local:context"), "the context material: {mats:?}");
    }
    // kiln's own reader shows the same.
    let (out, _) = k.ok(&["inspect", "--remote", "--attestations", &tag]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let list = v["attestations"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let mut platforms: Vec<&str> = list.iter().map(|a| a["platform"].as_str().unwrap()).collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert!(list.iter().all(|a| a["provenance"]["SLSA"]["buildType"] == "https://mobyproject.org/buildkit@v1"));
}

/// The provenance of a one-platform push, read back from the registry.
fn pushed_provenance(k: &Kiln, reg: &Registry, repo: &str, ctx: &str, args: &[&str]) -> Value {
    let tag = format!("{}/{repo}:1", reg.host());
    let mut all = vec!["build", ctx, "-t", &tag, "--push"];
    all.extend_from_slice(args);
    k.ok(&all);
    let index = skopeo_raw(&format!("docker://{tag}"));
    let found = statements(&reg.host(), repo, &index);
    assert_eq!(found.len(), 1, "one platform, one attestation manifest: {index}");
    found[0].1.iter().find(|s| s["predicateType"] == SLSA_V02 || s["predicateType"] == SLSA_V1).expect("a provenance").clone()
}

#[test]
fn secrets_never_appear_and_build_args_only_in_max_mode() {
    if !ready(false) {
        return;
    }
    let k = Kiln::new(false);
    let reg = Registry::start_plain().unwrap();
    let secret_value = "s3cr3t-value-for-attestations";
    let secret_file = k.path("tok.txt");
    std::fs::write(&secret_file, secret_value).unwrap();
    let ctx = k.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM kiln.test/busybox:amd64\nARG TOKEN\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo \"$TOKEN\" > /dev/null\n",
        )],
    );
    let secret = format!("id=tok,src={secret_file}");
    let common = ["--secret", &secret, "--build-arg", "TOKEN=sekrit"];
    let min = pushed_provenance(&k, &reg, "att/min", &ctx, &[&common[..], &["--provenance=mode=min"]].concat());
    let text = min.to_string();
    for absent in [secret_value, "sekrit", "TOKEN", "\"tok\"", secret_file.as_str()] {
        assert!(!text.contains(absent), "mode=min provenance holds {absent:?}: {text}");
    }
    assert_eq!(min["predicate"]["metadata"]["completeness"]["parameters"], false);
    let max = pushed_provenance(&k, &reg, "att/max", &ctx, &[&common[..], &["--provenance=mode=max,version=v1"]].concat());
    assert_eq!(max["predicateType"], SLSA_V1);
    assert_eq!(max["predicate"]["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:TOKEN"], "sekrit");
    let text = max.to_string();
    for absent in [secret_value, "\"tok\"", secret_file.as_str()] {
        assert!(!text.contains(absent), "mode=max provenance holds {absent:?}: {text}");
    }
}

#[test]
fn a_push_without_flags_gets_buildx_default_min_provenance_unless_turned_off() {
    if !ready(false) {
        return;
    }
    let k = Kiln::new(false);
    let reg = Registry::start_plain().unwrap();
    let ctx = k.context("ctx", &[("Dockerfile", "FROM kiln.test/busybox:amd64\nARG X\nCOPY f /f\n"), ("f", "1\n")]);
    let p = pushed_provenance(&k, &reg, "att/default", &ctx, &["--build-arg", "X=visible-only-in-max"]);
    assert_eq!(p["predicateType"], SLSA_V02);
    assert!(!p.to_string().contains("visible-only-in-max"), "the default is mode=min");
    // buildx's switch turns the default off: the push is a plain image manifest again.
    let tag = format!("{}/att/off:1", reg.host());
    let o = k.run_env(&["build", &ctx, "-t", &tag, "--push"], &[("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(skopeo_raw(&format!("docker://{tag}"))["mediaType"], "application/vnd.oci.image.manifest.v1+json");
}

#[test]
fn push_by_digest_then_manifest_merge_keeps_each_platforms_attestation() {
    if !ready(true) {
        return;
    }
    let k = Kiln::new(true);
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let ctx = k.context("ctx", &[("Dockerfile", "FROM kiln.test/busybox:${TARGETARCH}\nRUN uname -m > /arch\n")]);
    let mut sources = Vec::new();
    for arch in ["amd64", "arm64"] {
        let md = k.path(&format!("md-{arch}.json"));
        let out = format!("type=image,name={h}/att/merge,push-by-digest=true,push=true");
        k.ok(&["build", &ctx, "--platform", &format!("linux/{arch}"), "--output", &out, "--provenance=true", "--metadata-file", &md]);
        let meta: Value = serde_json::from_slice(&std::fs::read(&md).unwrap()).unwrap();
        let d = meta["containerimage.digest"].as_str().unwrap().to_string();
        // By digest, the single platform with its attestation is an index, as with buildx.
        let pushed = skopeo_raw(&format!("docker://{h}/att/merge@{d}"));
        assert_eq!(split(&pushed).1.len(), 1, "{pushed}");
        sources.push(format!("{h}/att/merge@{d}"));
    }
    let tag = format!("{h}/att/merge:all");
    k.ok(&["manifest", "merge", "-t", &tag, &sources[0], &sources[1]]);
    let merged = skopeo_raw(&format!("docker://{tag}"));
    let (images, atts) = split(&merged);
    assert_eq!((images.len(), atts.len()), (2, 2), "{merged}");
    let found = statements(&h, "att/merge", &merged);
    let mut platforms: Vec<String> = found.iter().map(|(of, _)| platform_of(&images, of)).collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
}

#[test]
fn an_oci_layout_holds_the_attestations() {
    if !ready(false) {
        return;
    }
    let k = Kiln::new(false);
    let ctx = k.context("ctx", &[("Dockerfile", "FROM kiln.test/busybox:amd64\nCOPY f /f\n"), ("f", "1\n")]);
    let dir = k.path("layout");
    k.ok(&["build", &ctx, "--output", &format!("type=oci,tar=false,dest={dir}"), "--provenance=true"]);
    let index = skopeo_raw(&format!("oci:{dir}"));
    let (images, atts) = split(&index);
    assert_eq!((images.len(), atts.len()), (1, 1), "{index}");
    let blob = |d: &str| std::fs::read(format!("{dir}/blobs/sha256/{}", d.trim_start_matches("sha256:"))).unwrap();
    let m: Value = serde_json::from_slice(&blob(atts[0]["digest"].as_str().unwrap())).unwrap();
    let s: Value = serde_json::from_slice(&blob(m["layers"][0]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(s["predicateType"], SLSA_V02);
    assert_eq!(format!("sha256:{}", s["subject"][0]["digest"]["sha256"].as_str().unwrap()), images[0]["digest"].as_str().unwrap());
}

#[test]
fn docker_archives_and_file_outputs_skip_attestations_with_one_line() {
    if !ready(false) {
        return;
    }
    let k = Kiln::new(false);
    let ctx = k.context("ctx", &[("Dockerfile", "FROM kiln.test/busybox:amd64\nCOPY f /f\n"), ("f", "1\n")]);
    let tar = k.path("img.tar");
    let (_, err) = k.ok(&["build", &ctx, "-t", "kiln.test/skip:1", "--output", &format!("type=docker,dest={tar}"), "--provenance=true"]);
    assert_eq!(err.matches("attestations skipped for type=docker").count(), 1, "{err}");
    let list = Command::new("tar").args(["-tf", &tar]).output().unwrap();
    let names = String::from_utf8_lossy(&list.stdout).into_owned();
    let x = k.path("x");
    std::fs::create_dir_all(&x).unwrap();
    assert!(Command::new("tar").args(["-xf", &tar, "-C", &x]).status().unwrap().success());
    for n in names.lines().filter(|n| !n.ends_with('/')) {
        let bytes = std::fs::read(format!("{x}/{n}")).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("in-toto.io/Statement"), "{n} holds a statement");
    }
    let (_, err) = k.ok(&["build", &ctx, "--output", &format!("type=local,dest={}", k.path("files")), "--sbom=false", "--provenance=true"]);
    assert_eq!(err.matches("attestations skipped for type=local").count(), 1, "{err}");
    // buildx's default is no reason to speak: nothing was asked for.
    let (_, err) = k.ok(&["build", &ctx, "-t", "kiln.test/skip:2", "--output", &format!("type=docker,dest={tar}")]);
    assert!(!err.contains("attestations skipped"), "{err}");
}

#[test]
fn attestation_attributes_kiln_does_not_act_on_are_refused_by_name() {
    let k = Kiln { root: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() };
    let ctx = k.context("ctx", &[("Dockerfile", "FROM scratch\n")]);
    for (args, want) in [
        (&["--attest", "type=provenance,generator=x"][..], "kiln does not support generator= for type=provenance"),
        (&["--attest", "type=sbom,generator=docker/scout-sbom-indexer:latest"], "natively"),
        (&["--sbom", "generator=docker/scout-sbom-indexer:latest"], "natively"),
        (&["--attest", "type=vex"], "unknown attestation type"),
        (&["--provenance", "mode=huge"], "mode=\"huge\""),
        (&["--provenance=true", "--attest", "type=provenance,mode=max"], "a second provenance"),
    ] {
        let mut all = vec!["build", ctx.as_str()];
        all.extend_from_slice(args);
        let o = k.run(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A dpkg database with one package, written by hand.
const DPKG_STATUS: &str = "Package: kiln-test-hello\n\
Status: install ok installed\n\
Priority: optional\n\
Section: misc\n\
Installed-Size: 10\n\
Maintainer: kiln <kiln@example.invalid>\n\
Architecture: amd64\n\
Version: 2.10-3\n\
Description: a package that exists only in this test\n\
\n";

/// The SPDX packages of an SBOM statement: (name, version).
fn spdx_packages(s: &Value) -> Vec<(String, String)> {
    s["predicate"]["packages"]
        .as_array()
        .map(|ps| {
            ps.iter().map(|p| (p["name"].as_str().unwrap_or("").to_string(), p["versionInfo"].as_str().unwrap_or("").to_string())).collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_sbom_lists_the_dpkg_package_the_image_holds() {
    if !ready(false) {
        return;
    }
    let k = Kiln::new(false);
    let reg = Registry::start_plain().unwrap();
    let ctx =
        k.context("ctx", &[("Dockerfile", "FROM kiln.test/busybox:amd64\nCOPY status /var/lib/dpkg/status\n"), ("status", DPKG_STATUS)]);
    let tag = format!("{}/att/sbom:1", reg.host());
    k.ok(&["build", &ctx, "-t", &tag, "--push", "--sbom=true", "--provenance=false"]);
    let index = skopeo_raw(&format!("docker://{tag}"));
    let found = statements(&reg.host(), "att/sbom", &index);
    assert_eq!(found.len(), 1);
    let sboms: Vec<&Value> = found[0].1.iter().filter(|s| s["predicateType"] == SPDX).collect();
    assert_eq!(sboms.len(), 1, "{:?}", found[0].1);
    assert_eq!(sboms[0]["predicate"]["spdxVersion"], "SPDX-2.3");
    let pkgs = spdx_packages(sboms[0]);
    assert!(pkgs.contains(&("kiln-test-hello".to_string(), "2.10-3".to_string())), "{pkgs:?}");
}

#[test]
fn scan_stage_adds_each_stages_sbom_to_the_attestation_manifest() {
    if !ready(false) {
        return;
    }
    let k = Kiln::new(false);
    let reg = Registry::start_plain().unwrap();
    let ctx = k.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM kiln.test/busybox:amd64 AS build\nCOPY status /var/lib/dpkg/status\n\
                 FROM kiln.test/busybox:amd64\nCOPY --from=build /etc/passwd /passwd.copy\n",
            ),
            ("status", DPKG_STATUS),
        ],
    );
    let tag = format!("{}/att/stages:1", reg.host());
    k.ok(&["build", &ctx, "-t", &tag, "--push", "--attest", "type=sbom,scan-stage=true", "--provenance=false"]);
    let index = skopeo_raw(&format!("docker://{tag}"));
    let found = statements(&reg.host(), "att/stages", &index);
    let sboms: Vec<&Value> = found[0].1.iter().filter(|s| s["predicateType"] == SPDX).collect();
    assert_eq!(sboms.len(), 2, "the image's and the build stage's");
    let hello = ("kiln-test-hello".to_string(), "2.10-3".to_string());
    assert!(!spdx_packages(sboms[0]).contains(&hello), "the final image has no dpkg database");
    assert_eq!(sboms[1]["predicate"]["name"], "sbom-build");
    assert!(spdx_packages(sboms[1]).contains(&hello), "{:?}", spdx_packages(sboms[1]));
}

#[test]
fn buildkit_sbom_scan_stage_args_choose_the_stages_with_buildkits_names() {
    if !ready(false) {
        return;
    }
    let k = Kiln::new(false);
    let reg = Registry::start_plain().unwrap();
    // Stage 0 is unnamed (BuildKit calls it `stage-0`); `deps` turns its own scan off; `unused`
    // is not needed by the target, so it is never built nor scanned; the global ARG names the
    // stages to scan. As in BuildKit, the ARG is not in RUN's environment.
    let ctx = k.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "ARG BUILDKIT_SBOM_SCAN_STAGE=stage-0,deps,unused\n\
                 FROM kiln.test/busybox:amd64\nARG BUILDKIT_SBOM_SCAN_STAGE\nCOPY status /var/lib/dpkg/status\n\
                 RUN test -z \"${BUILDKIT_SBOM_SCAN_STAGE+set}\" || { echo the SBOM switch leaked into RUN; exit 1; }\n\
                 FROM kiln.test/busybox:amd64 AS deps\nARG BUILDKIT_SBOM_SCAN_STAGE=false\nCOPY status /var/lib/dpkg/status\n\
                 FROM kiln.test/busybox:amd64 AS unused\nCOPY status /var/lib/dpkg/status\n\
                 FROM kiln.test/busybox:amd64\nCOPY --from=0 /etc/passwd /a\nCOPY --from=deps /etc/passwd /b\n",
            ),
            ("status", DPKG_STATUS),
        ],
    );
    let sbom_names = |repo: &str, extra: &[&str]| -> Vec<String> {
        let tag = format!("{}/{repo}:1", reg.host());
        let mut args = vec!["build", ctx.as_str(), "-t", &tag, "--push", "--sbom=true", "--provenance=false"];
        args.extend_from_slice(extra);
        k.ok(&args);
        let index = skopeo_raw(&format!("docker://{tag}"));
        let found = statements(&reg.host(), repo, &index);
        found[0].1.iter().filter(|s| s["predicateType"] == SPDX).map(|s| s["predicate"]["name"].as_str().unwrap().to_string()).collect()
    };
    // Without scan-stage=true, the ARGs alone decide (as in BuildKit); the image's own SBOM first.
    let names = sbom_names("att/args", &[]);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1], "sbom-stage-0");
    // A --build-arg overrides every declared ARG, the stage's own too: each stage the target needs.
    let mut names = sbom_names("att/args2", &["--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=true"]);
    names[1..].sort();
    assert_eq!(names[1..], ["sbom-deps", "sbom-stage-0"], "{names:?}");
    let names = sbom_names("att/args3", &["--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=false"]);
    assert_eq!(names.len(), 1, "{names:?}");
}
