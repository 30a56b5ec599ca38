//! `kiln manifest merge` against real `docker-registry` processes (kiln-testkit, free loopback
//! ports), checked with `skopeo` and `sha256sum` rather than with kiln's own reading of the result.
//!
//! Per-platform sources are busybox root file systems imported with `--platform` and pushed; the
//! fan-out test builds them for real, per platform, and compares with one multi-platform build.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln_testkit::{FaultKind, FaultProxy, FaultProxyOptions, Registry};
use tempfile::TempDir;

/// One kiln "machine" (a CI runner): its own root and Docker config.
struct Kiln {
    root: TempDir,
    docker_config: TempDir,
}

impl Kiln {
    fn new() -> Kiln {
        Kiln { root: tempfile::tempdir().unwrap(), docker_config: tempfile::tempdir().unwrap() }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_ROOT", self.root.path())
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env("SOURCE_DATE_EPOCH", "0")
            // buildx's default provenance makes every pushed image an index (tests/attestations.rs).
            .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
            .env("CI", "true")
            .env_remove("KILN_LOG")
            .output()
            .unwrap()
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

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kiln {args:?} should have failed:\n{}", String::from_utf8_lossy(&o.stdout));
        assert_eq!(o.status.code(), Some(1), "a user error exits 1");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Imports busybox as `platform` and pushes it to `reference`; returns the pushed digest.
    fn push_platform_image(&self, work: &Path, platform: &str, reference: &str) -> String {
        let tar = work.join("busybox.tar");
        if !tar.exists() {
            kiln_testkit::busybox_rootfs_tar(&tar).unwrap();
        }
        self.ok(&["import", "--platform", platform, tar.to_str().unwrap(), "-t", reference]);
        let df = work.join(format!("digest-{}", platform.replace('/', "-")));
        self.ok(&["push", reference, "--digest-file", df.to_str().unwrap()]);
        std::fs::read_to_string(&df).unwrap().trim().to_string()
    }
}

fn skopeo_raw(reference: &str) -> Option<(serde_json::Value, String)> {
    let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", reference]).output().unwrap();
    if !o.status.success() {
        return None;
    }
    Some((serde_json::from_slice(&o.stdout).unwrap(), sha256sum(&o.stdout)))
}

/// The digest of `bytes` as coreutils computes it, so kiln's own hashing is not what is checked.
fn sha256sum(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap())
}

/// (platform, digest) of each index entry, in index order.
fn entries(index: &serde_json::Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            (format!("{}/{}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap()), m["digest"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The tools these tests check kiln with. Missing ones fail the test (never skip it), saying how
/// to get them.
fn ready() -> bool {
    for (tool, package) in [("skopeo", "skopeo"), ("sha256sum", "coreutils"), ("docker-registry", "docker-registry")] {
        assert!(which(tool), "`{tool}` is not installed: run scripts/deps as root (or apt-get install {package}); these tests never skip");
    }
    true
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn merges_two_platform_images_from_another_repository_idempotently() {
    if !ready() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{h}/stage:amd64"));
    let arm = k.push_platform_image(work.path(), "linux/arm64", &format!("{h}/stage:arm64"));
    assert_ne!(amd, arm);
    let tag = format!("{h}/app:1");
    let also = format!("{h}/app:latest");
    let df = work.path().join("index-digest");
    let (out, err) = k.ok(&[
        "manifest",
        "merge",
        "-t",
        &tag,
        "-t",
        &also,
        "--digest-file",
        df.to_str().unwrap(),
        &format!("{h}/stage@{arm}"),
        &format!("{h}/stage@{amd}"),
    ]);
    let digest = out.trim().to_string();
    // The children were mounted from the stage repository, not uploaded again.
    assert!(err.contains("mounted"), "cross-repository mount expected:\n{err}");
    assert!(!err.contains("uploaded"), "nothing should be uploaded within one registry:\n{err}");

    let (index, raw_digest) = skopeo_raw(&format!("docker://{tag}")).expect("skopeo inspects the merged index");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(entries(&index), vec![("linux/amd64".to_string(), amd.clone()), ("linux/arm64".to_string(), arm.clone())]);
    assert_eq!(raw_digest, digest, "stdout prints the digest of what the registry serves");
    assert_eq!(std::fs::read_to_string(&df).unwrap().trim(), digest);
    assert_eq!(skopeo_raw(&format!("docker://{also}")).unwrap().1, digest, "every -t gets the index");
    // Each child now lives in the target repository, so the index never dangles.
    for d in [&amd, &arm] {
        let child = format!("docker://{h}/app@{d}");
        let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", &child]).output().unwrap();
        assert!(o.status.success(), "skopeo inspect {child}: {}", String::from_utf8_lossy(&o.stderr));
    }

    // Idempotent: again, and with the sources the other way round, the same index.
    let (again, err2) = k.ok(&["manifest", "merge", "-t", &tag, &format!("{h}/stage@{amd}"), &format!("{h}/stage@{arm}")]);
    assert_eq!(again.trim(), digest);
    assert!(!err2.contains("mounted"), "a second run finds the children in place:\n{err2}");
    assert_eq!(skopeo_raw(&format!("docker://{tag}")).unwrap().1, digest);

    // A fresh machine pulls the arm64 child by platform from the merged tag.
    let puller = Kiln::new();
    let pf = work.path().join("pulled");
    puller.ok(&["pull", "--platform", "linux/arm64", &tag, "--digest-file", pf.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&pf).unwrap().trim(), arm);
    let pf2 = work.path().join("pulled2");
    puller.ok(&["pull", "--platform", "linux/amd64", &tag, "--digest-file", pf2.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&pf2).unwrap().trim(), amd);
}

#[test]
fn sources_in_the_target_repository_and_bare_digests_and_an_index_as_source() {
    if !ready() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{h}/app:amd64"));
    let arm = k.push_platform_image(work.path(), "linux/arm64/v8", &format!("{h}/app:arm64"));
    // Bare digests name the first tag's repository, which is where push-by-digest put them.
    let (out, _) = k.ok(&["manifest", "merge", "-t", &format!("{h}/app:1"), &arm, &amd]);
    let digest = out.trim().to_string();
    let (index, raw) = skopeo_raw(&format!("docker://{h}/app:1")).unwrap();
    assert_eq!(raw, digest);
    assert_eq!(entries(&index).len(), 2);
    // An index as a source contributes its images: merging the merged index into another repository
    // (plus one of its own children again) rebuilds the very same index there.
    let (out2, _) = k.ok(&["manifest", "merge", "-t", &format!("{h}/mirror:1"), &format!("{h}/app@{digest}"), &format!("{h}/app@{amd}")]);
    assert_eq!(out2.trim(), digest);
    assert_eq!(skopeo_raw(&format!("docker://{h}/mirror:1")).unwrap().1, digest);
    // --dry-run prints that index and pushes nothing.
    let (dry, _) =
        k.ok(&["manifest", "merge", "--dry-run", "-t", &format!("{h}/dry:1"), &format!("{h}/app@{amd}"), &format!("{h}/app@{arm}")]);
    assert_eq!(sha256sum(dry.trim_end().as_bytes()), digest);
    assert!(skopeo_raw(&format!("docker://{h}/dry:1")).is_none(), "--dry-run must not push");
}

#[test]
fn sources_on_another_registry_are_copied() {
    if !ready() {
        return;
    }
    let a = Registry::start_plain().unwrap();
    let b = Registry::start_plain().unwrap();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{}/src:amd64", a.host()));
    let arm = k.push_platform_image(work.path(), "linux/arm64", &format!("{}/src:arm64", a.host()));
    let tag = format!("{}/app:1", b.host());
    let (out, err) = k.ok(&["manifest", "merge", "-t", &tag, &format!("{}/src@{amd}", a.host()), &format!("{}/src@{arm}", a.host())]);
    assert!(err.contains("uploaded"), "blobs cross registries by copy:\n{err}");
    let (index, raw) = skopeo_raw(&format!("docker://{tag}")).unwrap();
    assert_eq!(raw, out.trim());
    for (_, d) in entries(&index) {
        let child = format!("docker://{}/app@{d}", b.host());
        let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", &child]).output().unwrap();
        assert!(o.status.success(), "skopeo inspect {child}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn transient_registry_failures_are_retried_and_the_result_is_the_same() {
    if !ready() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let h = reg.host();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{h}/stage:amd64"));
    let arm = k.push_platform_image(work.path(), "linux/arm64", &format!("{h}/stage:arm64"));
    let (clean, _) =
        k.ok(&["manifest", "merge", "--dry-run", "-t", &format!("{h}/app:1"), &format!("{h}/stage@{amd}"), &format!("{h}/stage@{arm}")]);
    let expected = sha256sum(clean.trim_end().as_bytes());
    // About 3 requests in 10 fail (500, reset mid-body or 429); the merge goes through the proxy.
    let proxy = FaultProxy::start(&h, FaultProxyOptions { fault_rate: 0.3, seed: 6, kinds: FaultKind::ALL.to_vec(), ..Default::default() })
        .unwrap();
    let p = proxy.host();
    let (out, _) = k.ok(&["manifest", "merge", "-t", &format!("{p}/app:1"), &format!("{p}/stage@{amd}"), &format!("{p}/stage@{arm}")]);
    assert!(proxy.faults() > 0, "the proxy injected no fault; the test proves nothing");
    assert_eq!(out.trim(), expected, "same index as without faults");
    assert_eq!(skopeo_raw(&format!("docker://{h}/app:1")).unwrap().1, expected);
}

#[test]
fn bad_sources_are_clear_errors() {
    if !ready() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{h}/app:amd64"));
    let tag = format!("{h}/app:1");

    // A digest the registry does not have: the reference and the HTTP status are named.
    let missing = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let err = k.fails(&["manifest", "merge", "-t", &tag, &format!("{h}/app@{amd}"), &format!("{h}/app@{missing}")]);
    assert!(err.contains(&format!("{h}/app@{missing}")), "names the reference: {err}");
    assert!(err.contains("404"), "names the HTTP status: {err}");
    assert!(skopeo_raw(&format!("docker://{tag}")).is_none(), "nothing is pushed when a source is missing");

    // A tag that does not exist: the tag and the HTTP status are named, and nothing is pushed.
    let err = k.fails(&["manifest", "merge", "-t", &tag, &format!("{h}/app@{amd}"), &format!("{h}/app:nosuchtag")]);
    assert!(err.contains(&format!("source {h}/app:nosuchtag")), "names the source: {err}");
    assert!(err.contains("404"), "names the HTTP status: {err}");
    assert!(skopeo_raw(&format!("docker://{tag}")).is_none(), "nothing is pushed when a tag is missing");

    // A bare digest when the command names two repositories: which one is meant is not known.
    let err = k.fails(&["manifest", "merge", "-t", &tag, "-t", &format!("{h}/other:1"), &amd]);
    assert!(err.contains("names several repositories") && err.contains(&amd), "{err}");

    // Two different images for one platform make an ambiguous index.
    let tar2 = work.path().join("other.tar");
    kiln_testkit::random_rootfs_tar(&tar2, 4096, 2, 7).unwrap();
    k.ok(&["import", "--platform", "linux/amd64", tar2.to_str().unwrap(), "-t", &format!("{h}/app:amd64-b")]);
    let df = work.path().join("b");
    k.ok(&["push", &format!("{h}/app:amd64-b"), "--digest-file", df.to_str().unwrap()]);
    let amd_b = std::fs::read_to_string(&df).unwrap().trim().to_string();
    assert_ne!(amd_b, amd);
    let err = k.fails(&["manifest", "merge", "-t", &tag, &amd, &amd_b]);
    assert!(err.contains("both for linux/amd64"), "{err}");

    // Nothing to name the index by is a usage error (exit 2, from the argument parser).
    let o = k.run(&["manifest", "merge", &amd]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tag"), "{}", String::from_utf8_lossy(&o.stderr));
}

// ---- fan-out against one multi-platform build (needs root, qemu-user-static and arm64 busybox) ----

const ARM_BUSYBOX: &str = "/var/lib/kiln-test/busybox-arm64/bin/busybox";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn can_build_arm64() -> bool {
    ready();
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(str::to_string)));
    assert_eq!(uid.as_deref(), Some("0"), "this test builds in kiln's sandbox, which needs root (CI runs as root)");
    assert!(which("qemu-aarch64-static"), "qemu-aarch64-static is missing: run scripts/deps as root (apt-get install qemu-user-static)");
    assert!(
        Path::new(ARM_BUSYBOX).exists() && Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        "arm64 busybox at {ARM_BUSYBOX} or the qemu-aarch64 binfmt handler is missing: run scripts/deps as root"
    );
    true
}

/// A runner with both busybox bases imported and the `uname -m` Dockerfile in `ctx`.
fn runner(work: &Path) -> (Kiln, PathBuf) {
    let k = Kiln::new();
    for (arch, bb) in [("amd64", "/bin/busybox"), ("arm64", ARM_BUSYBOX)] {
        let tar = work.join(format!("busybox-{arch}.tar"));
        if !tar.exists() {
            let st = Command::new(repo_root().join("scripts/busybox-rootfs")).arg(&tar).env("BUSYBOX", bb).status().unwrap();
            assert!(st.success(), "scripts/busybox-rootfs for {arch}");
        }
        k.ok(&["import", "--platform", &format!("linux/{arch}"), tar.to_str().unwrap(), "-t", &format!("kiln.test/busybox:{arch}")]);
    }
    let ctx = work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM kiln.test/busybox:${TARGETARCH}\nRUN uname -m > /arch\n").unwrap();
    (k, ctx)
}

#[test]
fn fan_out_then_merge_gives_the_single_multi_platform_build_index() {
    if !can_build_arm64() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let work = tempfile::tempdir().unwrap();
    let repo = format!("{h}/fan");

    // Two "native runners", each building its platform and pushing it by digest.
    let mut digests = Vec::new();
    for arch in ["arm64", "amd64"] {
        let (k, ctx) = runner(work.path());
        let md = work.path().join(format!("md-{arch}.json"));
        let (out, _) = k.ok(&[
            "build",
            ctx.to_str().unwrap(),
            "--platform",
            &format!("linux/{arch}"),
            "-t",
            &repo,
            "--output",
            "type=registry,push-by-digest=true",
            "--metadata-file",
            md.to_str().unwrap(),
        ]);
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&md).unwrap()).unwrap();
        let d = meta["containerimage.digest"].as_str().unwrap().to_string();
        assert_eq!(out.trim(), d);
        digests.push(format!("{repo}@{d}"));
    }
    let merged_tag = format!("{repo}:merged");
    let mut args = vec!["manifest", "merge", "-t", merged_tag.as_str()];
    args.extend(digests.iter().map(String::as_str));
    let k = Kiln::new();
    let (merged, _) = k.ok(&args);
    assert_eq!(merged.trim(), skopeo_raw(&format!("docker://{merged_tag}")).unwrap().1);

    // One runner building both platforms at once.
    let (single, ctx) = runner(work.path());
    let single_tag = format!("{repo}:single");
    single.ok(&["build", ctx.to_str().unwrap(), "--platform", "linux/amd64,linux/arm64", "-t", &single_tag, "--push"]);
    let (single_index, single_digest) = skopeo_raw(&format!("docker://{single_tag}")).unwrap();
    let (merged_index, _) = skopeo_raw(&format!("docker://{merged_tag}")).unwrap();
    assert_eq!(entries(&merged_index), entries(&single_index), "same children, same platforms");
    assert_eq!(merged.trim(), single_digest, "and the very same index");
    // The merged arm64 child, pulled by platform on a fresh machine, really is arm64.
    let fresh = Kiln::new();
    fresh.ok(&["pull", "--platform", "linux/arm64", &merged_tag]);
    assert_eq!(fresh.ok(&["run", "--platform", "linux/arm64", &merged_tag, "--", "cat", "/arch"]).0.trim(), "aarch64");
}

// ---- the imagetools create surface: tags as sources, --append, --annotation, -f, inspect ----

/// (platform, annotations) of each entry, in index order.
fn entry_annotations(index: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap()),
                m["annotations"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_tag_source_is_resolved_once_and_every_tag_gets_the_same_index() {
    ready();
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{h}/stage:amd64"));
    let arm = k.push_platform_image(work.path(), "linux/arm64", &format!("{h}/stage:arm64"));
    let (a, b) = (format!("{h}/app:A"), format!("{h}/app:B"));
    // One source by tag, one by digest, as `-t A -t B SRC-TAG SRC@DIGEST`.
    let (out, err) = k.ok(&["manifest", "merge", "-t", &a, "-t", &b, &format!("{h}/stage:amd64"), &format!("{h}/stage@{arm}")]);
    assert!(err.contains(&format!("resolved {h}/stage:amd64 to {amd}")), "the tag's digest is printed:\n{err}");
    assert!(!err.contains(&format!("resolved {h}/stage@")), "a digest source needs no resolving:\n{err}");
    let digest = out.trim().to_string();
    let (ia, da) = skopeo_raw(&format!("docker://{a}")).expect("tag A");
    let (ib, db) = skopeo_raw(&format!("docker://{b}")).expect("tag B");
    assert_eq!((da.as_str(), db.as_str()), (digest.as_str(), digest.as_str()), "both tags name the one index");
    assert_eq!(ia, ib);
    assert_eq!(entries(&ia), vec![("linux/amd64".to_string(), amd.clone()), ("linux/arm64".to_string(), arm.clone())]);

    // inspect --raw is the registry's bytes exactly; the summary names the index and each platform.
    let o = k.run(&["manifest", "inspect", "--raw", &a]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256sum(&o.stdout), digest, "--raw prints the bytes the digest is computed over");
    let (summary, _) = k.ok(&["manifest", "inspect", &a]);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines[0], format!("Name:      {a}"), "{summary}");
    assert_eq!(lines[1], "MediaType: application/vnd.oci.image.index.v1+json", "{summary}");
    assert_eq!(lines[2], format!("Digest:    {digest}"), "{summary}");
    assert!(
        summary.contains(&format!(
            "\nManifests:\n  Name:      {a}@{amd}\n  MediaType: application/vnd.oci.image.manifest.v1+json\n  Platform:  linux/amd64\n"
        )),
        "{summary}"
    );
    assert!(summary.contains(&format!("  Name:      {a}@{arm}\n")) && summary.contains("  Platform:  linux/arm64\n"), "{summary}");
    // A single image: no Manifests section.
    let (one, _) = k.ok(&["manifest", "inspect", &format!("{h}/stage@{arm}")]);
    assert_eq!(one, format!("Name:      {h}/stage@{arm}\nMediaType: application/vnd.oci.image.manifest.v1+json\nDigest:    {arm}\n"));
    // A lone index source with nothing to change is pushed as it is (same bytes, same digest).
    let (copy, _) = k.ok(&["manifest", "merge", "-t", &format!("{h}/mirror:1"), &a]);
    assert_eq!(copy.trim(), digest);
    assert_eq!(skopeo_raw(&format!("docker://{h}/mirror:1")).unwrap().1, digest);
    // --platform keeps only the images asked for.
    let (dry, _) = k.ok(&["manifest", "merge", "--dry-run", "--platform", "linux/arm64", &a]);
    let filtered: serde_json::Value = serde_json::from_str(dry.trim()).unwrap();
    assert_eq!(entries(&filtered), vec![("linux/arm64".to_string(), arm.clone())]);
    let err = k.fails(&["manifest", "merge", "--dry-run", "--platform", "linux/s390x", &a]);
    assert!(err.contains("--platform linux/s390x") && err.contains("linux/amd64, linux/arm64"), "{err}");
}

#[test]
fn append_adds_to_the_index_at_the_first_tag_and_keeps_its_entries() {
    ready();
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{h}/app:amd64"));
    let arm = k.push_platform_image(work.path(), "linux/arm64", &format!("{h}/app:arm64"));
    let s390 = k.push_platform_image(work.path(), "linux/s390x", &format!("{h}/app:s390x"));
    let tag = format!("{h}/app:1");
    k.ok(&["manifest", "merge", "-t", &tag, "--annotation", "manifest-descriptor:org.example.first=yes", &amd, &arm]);
    let (before, _) = skopeo_raw(&format!("docker://{tag}")).unwrap();
    assert_eq!(entries(&before).len(), 2);

    let (out, err) = k.ok(&["manifest", "merge", "--append", "-t", &tag, "-t", &format!("{h}/app:2"), &s390]);
    assert!(err.contains(&format!("resolved {tag} to ")), "the existing index is read once, by tag:\n{err}");
    let (after, digest) = skopeo_raw(&format!("docker://{tag}")).unwrap();
    assert_eq!(out.trim(), digest);
    assert_eq!(
        entries(&after),
        vec![("linux/amd64".to_string(), amd.clone()), ("linux/arm64".to_string(), arm.clone()), ("linux/s390x".to_string(), s390.clone())],
        "the old entries stay and the new one is added"
    );
    // The old entries keep their descriptors as they were, annotations included.
    let anns = entry_annotations(&after);
    assert_eq!(anns[0].1["org.example.first"], "yes");
    assert_eq!(anns[1].1["org.example.first"], "yes");
    assert!(anns[2].1.is_null(), "the new entry has no annotations: {:?}", anns[2]);
    assert_eq!(skopeo_raw(&format!("docker://{h}/app:2")).unwrap().1, digest, "every -t gets the appended index");

    // --append to a tag that does not exist says so, naming it.
    let err = k.fails(&["manifest", "merge", "--append", "-t", &format!("{h}/app:none"), &s390]);
    assert!(err.contains(&format!("--append: the first -t {h}/app:none does not exist yet")), "{err}");
}

#[test]
fn annotations_land_where_buildx_puts_them_and_unsupported_types_are_refused() {
    ready();
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{h}/app:amd64"));
    let arm = k.push_platform_image(work.path(), "linux/arm64", &format!("{h}/app:arm64"));
    let tag = format!("{h}/app:1");
    let (out, _) = k.ok(&[
        "manifest",
        "merge",
        "-t",
        &tag,
        "--annotation",
        "index:org.opencontainers.image.description=two platforms, one index",
        "--annotation",
        "manifest-descriptor:org.example.all=1",
        "--annotation",
        "manifest-descriptor[linux/arm64]:org.example.arm=yes",
        "--annotation",
        "index,manifest-descriptor:org.example.both=b",
        &amd,
        &arm,
    ]);
    let (index, digest) = skopeo_raw(&format!("docker://{tag}")).unwrap();
    assert_eq!(out.trim(), digest);
    assert_eq!(index["annotations"]["org.opencontainers.image.description"], "two platforms, one index");
    assert_eq!(index["annotations"]["org.example.both"], "b");
    assert!(index["annotations"].get("org.example.all").is_none(), "manifest-descriptor: is not an index annotation: {index}");
    let anns = entry_annotations(&index);
    assert_eq!(anns[0].0, "linux/amd64");
    assert_eq!(anns[0].1, serde_json::json!({"org.example.all": "1", "org.example.both": "b"}));
    assert_eq!(anns[1].1, serde_json::json!({"org.example.all": "1", "org.example.arm": "yes", "org.example.both": "b"}));
    // inspect shows each entry's annotations.
    let (summary, _) = k.ok(&["manifest", "inspect", &tag]);
    assert!(summary.contains("  Annotations:\n    org.example.all:  1\n    org.example.arm:  yes\n    org.example.both: b\n"), "{summary}");

    // What imagetools create refuses, kiln refuses, naming it; nothing is pushed.
    let other = format!("{h}/app:2");
    for (ann, says) in [
        ("layer:k=v", "unknown annotation type \"layer\""),
        ("manifest:k=v", "\"manifest\" annotations are not supported"),
        ("index-descriptor:k=v", "\"index-descriptor\" annotations are invalid while creating an image"),
        ("k=v", "an annotation without a type is not supported"),
        ("index:k", "no `=`"),
    ] {
        let err = k.fails(&["manifest", "merge", "-t", &other, "--annotation", ann, &amd, &arm]);
        assert!(err.contains(&format!("--annotation {ann}: ")) && err.contains(says), "{ann}: {err}");
    }
    assert!(skopeo_raw(&format!("docker://{other}")).is_none(), "a refused annotation pushes nothing");
}

#[test]
fn dry_run_pushes_nothing_and_sources_can_come_from_descriptor_files() {
    ready();
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let k = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let amd = k.push_platform_image(work.path(), "linux/amd64", &format!("{h}/app:amd64"));
    let arm = k.push_platform_image(work.path(), "linux/arm64", &format!("{h}/app:arm64"));
    let tag = format!("{h}/app:1");
    let (dry, err) = k.ok(&["manifest", "merge", "--dry-run", "-t", &tag, &format!("{h}/app:amd64"), &arm]);
    assert!(err.contains(&format!("resolved {h}/app:amd64 to {amd}")), "{err}");
    let printed: serde_json::Value = serde_json::from_str(dry.trim()).expect("--dry-run prints the index JSON");
    assert_eq!(entries(&printed), vec![("linux/amd64".to_string(), amd.clone()), ("linux/arm64".to_string(), arm.clone())]);
    assert!(skopeo_raw(&format!("docker://{tag}")).is_none(), "--dry-run must not push");
    // The index pushed later is the one the dry run printed.
    let (out, _) = k.ok(&["manifest", "merge", "-t", &tag, &amd, &arm]);
    assert_eq!(sha256sum(dry.trim_end().as_bytes()), out.trim());

    // -f: a descriptor per file, as buildx reads them (a digest is enough; a platform given wins).
    let f1 = work.path().join("amd.json");
    std::fs::write(&f1, format!("{{\"digest\": \"{amd}\"}}\n")).unwrap();
    let f2 = work.path().join("arm.json");
    std::fs::write(&f2, format!("{{\"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"digest\": \"{arm}\", \"platform\": {{\"os\": \"linux\", \"architecture\": \"arm64\", \"variant\": \"v8\"}}, \"annotations\": {{\"org.example.from\": \"file\"}}}}")).unwrap();
    let (dry2, _) =
        k.ok(&["manifest", "merge", "--dry-run", "-t", &format!("{h}/app:f"), "-f", f1.to_str().unwrap(), "-f", f2.to_str().unwrap()]);
    let idx: serde_json::Value = serde_json::from_str(dry2.trim()).unwrap();
    assert_eq!(idx["manifests"][0]["digest"], amd.as_str());
    assert_eq!(idx["manifests"][1]["digest"], arm.as_str());
    assert_eq!(idx["manifests"][1]["platform"]["variant"], "v8", "the descriptor's platform is kept");
    assert_eq!(idx["manifests"][1]["annotations"]["org.example.from"], "file");
    // A file that is not there, and one that holds no descriptor, are named.
    let err = k.fails(&["manifest", "merge", "--dry-run", "-t", &tag, "-f", "/nonexistent/desc.json"]);
    assert!(err.contains("-f /nonexistent/desc.json"), "{err}");
    let bad = work.path().join("bad.json");
    std::fs::write(&bad, "{\"size\": 3}").unwrap();
    let err = k.fails(&["manifest", "merge", "--dry-run", "-t", &tag, "-f", bad.to_str().unwrap()]);
    assert!(err.contains("not a digest, an image reference or a descriptor") && err.contains("digest"), "{err}");
}

#[test]
fn buildx_flags_kiln_does_not_have_are_refused_by_name() {
    ready();
    let k = Kiln::new();
    let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    for (args, says) in [
        (vec!["manifest", "merge", "--prefer-index=false", "-t", "127.0.0.1:1/a:1", d], "--prefer-index=false is not supported"),
        (vec!["manifest", "merge", "--progress=rawjson", "-t", "127.0.0.1:1/a:1", d], "--progress=rawjson is not supported"),
        (vec!["manifest", "merge", "--builder", "b", "-t", "127.0.0.1:1/a:1", d], "--builder is a docker buildx flag"),
        (
            vec!["manifest", "inspect", "--format", "{{json .Manifest}}", "127.0.0.1:1/a:1"],
            "--format is a docker buildx imagetools inspect flag",
        ),
    ] {
        let err = k.fails(&args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
