//! Acceptance tests of `kiln login|pull|push|copy|inspect` against a real `docker-registry`
//! (started per test by kiln-testkit on a free loopback port), checked with real `skopeo`; and of
//! `kiln run` pulling what the store lacks, as `docker run` and `podman run` do: `--pull missing`
//! (the default), `always` (resolve the tag again) and `never` (the store only).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kiln_testkit::{FaultKind, FaultProxy, FaultProxyOptions, Registry, TokenServerOptions};
use tempfile::TempDir;

/// One kiln "machine": its own root and its own Docker config dir.
struct Kiln {
    root: TempDir,
    docker_config: TempDir,
}

impl Kiln {
    fn new() -> Kiln {
        Kiln { root: tempfile::tempdir().unwrap(), docker_config: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args(args)
            .env("KILN_ROOT", self.root.path())
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env("CI", "true")
            // buildx's default provenance makes every pushed image an index (tests/attestations.rs).
            .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
            .env_remove("KILN_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kiln {args:?} should have failed:\n{}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn login(&self, host: &str, user: &str, password: &str) -> Output {
        let mut c = self.cmd(&["login", host, "-u", user, "--password-stdin"]);
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `kiln inspect REF` → (digest, manifest media type, config JSON).
    fn inspect(&self, reference: &str, remote: bool) -> serde_json::Value {
        let mut args = vec!["inspect", reference];
        if remote {
            args.push("--remote");
        }
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    fn store(&self) -> PathBuf {
        self.root.path().join("store")
    }

    fn tags(&self) -> Vec<String> {
        self.ok(&["images", "-q"]).lines().map(str::to_string).collect()
    }
}

fn tools() -> bool {
    kiln_testkit::require_tool("docker-registry") && kiln_testkit::require_tool("skopeo")
}

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo").args(args).output().unwrap();
    assert!(o.status.success(), "skopeo {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn digest_of_stdout(s: &str) -> String {
    s.split_whitespace().last().unwrap().to_string()
}

/// An OCI layout with one image of `n` random layers of `size` bytes each, written by testkit
/// (not by kiln), tagged `tag`.
fn random_layout(dir: &Path, tag: &str, n: usize, size: u64, seed: u64) -> kiln_testkit::oci::OciImage {
    let tars: Vec<PathBuf> = (0..n)
        .map(|i| {
            let p = dir.join(format!("layer{i}.tar"));
            kiln_testkit::random_rootfs_tar(&p, size, 2, seed * 100 + i as u64).unwrap();
            p
        })
        .collect();
    let refs: Vec<&Path> = tars.iter().map(|p| p.as_path()).collect();
    let layout = dir.join("layout");
    let img = kiln_testkit::oci::write_oci_layout(&layout, tag, &refs).unwrap();
    for t in &tars {
        std::fs::remove_file(t).unwrap();
    }
    img
}

fn blob_files(store: &Path) -> Vec<String> {
    match std::fs::read_dir(store.join("blobs/sha256")) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    }
}

#[test]
fn round_trip_import_push_skopeo_pull() {
    if !tools() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let a = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("busybox.tar");
    kiln_testkit::busybox_rootfs_tar(&rootfs).unwrap();
    let image = format!("{}/kiln/busybox:1", reg.host());
    a.ok(&["import", rootfs.to_str().unwrap(), "-t", &image]);
    let local = a.inspect(&image, false);
    let digest_file = tmp.path().join("digest");
    let out = a.ok(&["push", &image, "--digest-file", digest_file.to_str().unwrap()]);
    let pushed = digest_of_stdout(&out);
    assert_eq!(pushed, local["digest"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap().trim(), pushed);

    // skopeo sees a valid image with the same digest and layers.
    let si: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{image}")])).unwrap();
    assert_eq!(si["Digest"].as_str().unwrap(), pushed);
    let local_layers: Vec<&str> = local["manifest"]["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    let skopeo_layers: Vec<&str> = si["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(local_layers, skopeo_layers);
    // and can copy it out (verifying every blob on the way).
    let oci_out = tmp.path().join("skopeo-oci");
    skopeo(&["copy", "--src-tls-verify=false", &format!("docker://{image}"), &format!("oci:{}:x", oci_out.display())]);

    // A second push is a no-op that gives the same digest.
    assert_eq!(digest_of_stdout(&a.ok(&["push", &image])), pushed);

    // Pull on a clean root: the same manifest and config digests, and the config is intact.
    let b = Kiln::new();
    let pulled = digest_of_stdout(&b.ok(&["pull", &image]));
    assert_eq!(pulled, pushed);
    let remote = b.inspect(&image, false);
    assert_eq!(remote["manifest"], local["manifest"]);
    assert_eq!(remote["config"], local["config"]);
    // inspect --remote answers from the registry; --raw gives the exact bytes.
    let c = Kiln::new();
    assert_eq!(c.inspect(&image, true)["digest"].as_str().unwrap(), pushed);
    let raw = c.cmd(&["inspect", "--remote", "--raw", &image]).output().unwrap();
    assert!(raw.status.success());
    assert_eq!(kiln_oci::Digest::sha256_of(&raw.stdout).to_string(), pushed);
    // Not in c's store: a clear error that says what to do.
    let e = c.fails(&["inspect", &image]);
    assert!(e.contains("not in the local store") && e.contains("kiln pull"), "{e}");
}

#[test]
fn pulls_what_skopeo_pushed_in_docker_and_oci_formats() {
    if !tools() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let img = random_layout(tmp.path(), "t", 2, 300_000, 7);
    let layout = tmp.path().join("layout");
    for (format, media) in
        [("v2s2", "application/vnd.docker.distribution.manifest.v2+json"), ("oci", "application/vnd.oci.image.manifest.v1+json")]
    {
        let image = format!("{}/from-skopeo/{format}:1", reg.host());
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--format",
            format,
            &format!("oci:{}:t", layout.display()),
            &format!("docker://{image}"),
        ]);
        let k = Kiln::new();
        let d = digest_of_stdout(&k.ok(&["pull", &image]));
        let si: serde_json::Value =
            serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{image}")])).unwrap();
        assert_eq!(si["Digest"].as_str().unwrap(), d);
        let j = k.inspect(&image, false);
        assert_eq!(j["mediaType"], media);
        assert_eq!(j["config"]["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        let store_blobs = blob_files(&k.store());
        for l in j["manifest"]["layers"].as_array().unwrap() {
            let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            assert!(store_blobs.iter().any(|b| b == hex), "layer {hex} missing from the store");
        }
        // The store is an OCI layout skopeo can read back (skopeo's oci: transport lists only
        // OCI-typed entries, so only the OCI image is visible to it).
        if format == "oci" {
            skopeo(&["inspect", &format!("oci:{}:{image}", k.store().display())]);
        }
    }
    drop(img);
}

/// Writes an OCI layout holding an index of two single-layer images (amd64 and arm64).
fn multi_arch_layout(dir: &Path) {
    use kiln_oci::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let mut manifests = vec![];
    for arch in ["amd64", "arm64"] {
        let tar = dir.join(format!("{arch}.tar"));
        kiln_testkit::random_rootfs_tar(&tar, 20_000, 1, arch.len() as u64 + 40).unwrap();
        let (ld, ls) = put(&std::fs::read(&tar).unwrap());
        std::fs::remove_file(&tar).unwrap();
        let config = serde_json::json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld]}, "config": {}});
        let (cd, cs) = put(config.to_string().as_bytes());
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]});
        let (md, ms) = put(m.to_string().as_bytes());
        manifests.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "platform": {"architecture": arch, "os": "linux"}}));
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let (id, is) = put(index.to_string().as_bytes());
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": id, "size": is, "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
}

#[test]
fn multi_arch_index_pull_by_platform_and_copy_whole() {
    if !tools() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("multi");
    multi_arch_layout(&layout);
    let image = format!("{}/multi/app:1", reg.host());
    skopeo(&["copy", "--all", "--dest-tls-verify=false", &format!("oci:{}:multi", layout.display()), &format!("docker://{image}")]);
    // skopeo compresses the layers on the way, so the digests are the registry's, not the layout's.
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}")]);
    let index_digest = kiln_oci::Digest::sha256_of(raw.as_bytes()).to_string();
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let by_arch = |arch: &str| {
        raw["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == arch).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (amd64, arm64) = (by_arch("amd64"), by_arch("arm64"));

    let k = Kiln::new();
    // A one-platform pull prints that platform's image; the tag names the registry's index, in which
    // only that image was fetched.
    assert_eq!(digest_of_stdout(&k.ok(&["pull", "--platform", "linux/arm64", &image])), arm64);
    let stored = k.inspect(&image, false);
    assert_eq!(stored["digest"].as_str().unwrap(), index_digest);
    let present = |j: &serde_json::Value| -> Vec<(String, bool)> {
        j["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["platform"].as_str().unwrap().to_string(), p["present"].as_bool().unwrap()))
            .collect()
    };
    assert_eq!(present(&stored), vec![("linux/amd64".to_string(), false), ("linux/arm64".to_string(), true)]);
    let arm = serde_json::from_str::<serde_json::Value>(&k.ok(&["inspect", "--platform", "linux/arm64", &image])).unwrap();
    assert_eq!(arm["config"]["architecture"], "arm64");
    assert_eq!(arm["digest"].as_str().unwrap(), arm64);
    let e = k.fails(&["inspect", "--platform", "linux/amd64", &image]);
    assert!(e.contains("has no image for linux/amd64 in the local store (it has: linux/arm64)"), "{e}");
    // The second platform joins the same index (the tag stays on it).
    assert_eq!(digest_of_stdout(&k.ok(&["pull", "--platform", "linux/amd64", &image])), amd64);
    let stored = k.inspect(&image, false);
    assert_eq!(stored["digest"].as_str().unwrap(), index_digest);
    assert_eq!(present(&stored), vec![("linux/amd64".to_string(), true), ("linux/arm64".to_string(), true)]);
    // Two platforms at once print the index.
    let both = Kiln::new();
    assert_eq!(digest_of_stdout(&both.ok(&["pull", "--platform", "linux/arm64,linux/amd64", &image])), index_digest);
    let remote =
        serde_json::from_str::<serde_json::Value>(&both.ok(&["inspect", "--remote", "--platform", "linux/amd64", &image])).unwrap();
    assert_eq!(remote["digest"].as_str().unwrap(), amd64);
    let e = k.fails(&["pull", "--platform", "linux/s390x", &image]);
    assert!(e.contains("linux/s390x") && e.contains("linux/arm64"), "{e}");

    // copy keeps the whole index, registry to registry, and into an OCI layout.
    let dst = format!("docker://{}/multi/copy:2", reg.host());
    assert_eq!(digest_of_stdout(&k.ok(&["copy", &format!("docker://{image}"), &dst])), index_digest);
    let raw: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &dst])).unwrap();
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
    let out = tmp.path().join("out");
    k.ok(&["copy", &dst, &format!("oci:{}:v2", out.display())]);
    skopeo(&["inspect", "--raw", &format!("oci:{}:v2", out.display())]);
    // Both platforms' images came along: skopeo can copy each one out of kiln's layout.
    for arch in ["amd64", "arm64"] {
        skopeo(&[
            "--override-arch",
            arch,
            "copy",
            &format!("oci:{}:v2", out.display()),
            &format!("oci:{}:{arch}", tmp.path().join("check").display()),
        ]);
    }
}

#[test]
fn basic_auth_login_push_pull_and_wrong_password() {
    if !tools() || !kiln_testkit::require_tool("htpasswd") {
        return;
    }
    let reg = Registry::start_basic("alice", "wonderland").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    random_layout(tmp.path(), "t", 1, 100_000, 3);
    let k = Kiln::new();
    let image = format!("{}/secure/app:1", reg.host());
    k.ok(&["copy", &format!("oci:{}:t", tmp.path().join("layout").display()), &format!("store:{image}")]);

    // Without credentials: the error names the registry and says how to fix it.
    let e = k.fails(&["push", &image]);
    assert!(e.contains(&reg.host()) && e.contains("401") && e.contains("kiln login"), "{e}");

    // A wrong password is refused by login, naming the registry, and nothing is saved.
    let o = k.login(&reg.host(), "alice", "wrong");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&reg.host()) && e.contains("401"), "{e}");
    assert!(!k.docker_config.path().join("config.json").exists());

    let o = k.login(&reg.host(), "alice", "wonderland");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = k.docker_config.path().join("config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777, 0o600);
    let pushed = digest_of_stdout(&k.ok(&["push", &image]));

    let other = Kiln::new();
    std::fs::copy(&cfg, other.docker_config.path().join("config.json")).unwrap();
    assert_eq!(digest_of_stdout(&other.ok(&["pull", &image])), pushed);
}

#[test]
fn token_auth_300mb_transfer_outlasts_two_second_tokens() {
    if !tools() {
        return;
    }
    let reg = Registry::start_token(TokenServerOptions { lifetime: Duration::from_secs(2), ..TokenServerOptions::default() }).unwrap();
    // 40 MB/s each way: 300 MB take about 7.5 s per direction, several token lifetimes.
    let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions { bandwidth: Some(40_000_000), ..Default::default() }).unwrap();
    let (user, password) = reg.credentials().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    random_layout(tmp.path(), "big", 1, 300_000_000, 11);
    let k = Kiln::new();
    let image = format!("{}/big/image:1", proxy.host());
    k.ok(&["copy", &format!("oci:{}:big", tmp.path().join("layout").display()), &format!("store:{image}")]);
    std::fs::remove_dir_all(tmp.path().join("layout")).unwrap();
    let o = k.login(&proxy.host(), user, password);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = reg.token_server().unwrap().tokens_issued();
    let pushed = digest_of_stdout(&k.ok(&["push", &image]));
    let b = Kiln::new();
    std::fs::copy(k.docker_config.path().join("config.json"), b.docker_config.path().join("config.json")).unwrap();
    assert_eq!(digest_of_stdout(&b.ok(&["pull", &image])), pushed);
    let issued = reg.token_server().unwrap().tokens_issued() - before;
    assert!(issued > 2, "only {issued} tokens issued: the transfer did not outlast a token");
    let j = b.inspect(&image, false);
    let layer = j["manifest"]["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    assert_eq!(
        std::fs::metadata(b.store().join("blobs/sha256").join(layer)).unwrap().len(),
        j["manifest"]["layers"][0]["size"].as_u64().unwrap()
    );
}

#[test]
fn a_token_expiring_mid_transfer_is_replaced_after_the_401() {
    if !tools() {
        return;
    }
    // Tokens die after 2 s but claim to live 300 s: refreshing ahead of expiry cannot save the
    // client; only re-authenticating on the registry's 401 and retrying can.
    let reg = Registry::start_token(TokenServerOptions {
        lifetime: Duration::from_secs(2),
        claimed_lifetime: Some(Duration::from_secs(300)),
        ..TokenServerOptions::default()
    })
    .unwrap();
    // 10 MB/s: each 30 MB layer takes ~3 s, so later requests carry a dead token.
    let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions { bandwidth: Some(10_000_000), ..Default::default() }).unwrap();
    let (user, password) = reg.credentials().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    random_layout(tmp.path(), "mid", 2, 30_000_000, 17);
    let k = Kiln::new();
    let image = format!("{}/mid/image:1", proxy.host());
    k.ok(&["copy", &format!("oci:{}:mid", tmp.path().join("layout").display()), &format!("store:{image}")]);
    let o = k.login(&proxy.host(), user, password);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = reg.token_server().unwrap().tokens_issued();
    let pushed = digest_of_stdout(&k.ok(&["push", &image]));
    let b = Kiln::new();
    std::fs::copy(k.docker_config.path().join("config.json"), b.docker_config.path().join("config.json")).unwrap();
    assert_eq!(digest_of_stdout(&b.ok(&["pull", &image])), pushed);
    let issued = reg.token_server().unwrap().tokens_issued() - before;
    assert!(issued >= 3, "only {issued} tokens issued: no 401 was met and recovered from");
    assert!(
        reg.log().contains("401") || reg.log().contains("unauthorized") || reg.log().contains("invalid token"),
        "the registry never refused a token"
    );
}

#[test]
fn faulty_network_push_and_pull_succeed_and_verify() {
    if !tools() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let proxy = FaultProxy::start(
        &reg.host(),
        FaultProxyOptions { fault_rate: 0.1, seed: 42, kinds: FaultKind::ALL.to_vec(), ..Default::default() },
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let img = random_layout(tmp.path(), "t", 5, 2_000_000, 5);
    let k = Kiln::new();
    let image = format!("{}/flaky/app:1", proxy.host());
    // Straight from the layout, which kiln sends verbatim (`kiln push` from the store would gzip these
    // plain layers first and so change the digest this test checks).
    let pushed =
        digest_of_stdout(&k.ok(&["copy", &format!("oci:{}:t", tmp.path().join("layout").display()), &format!("docker://{image}")]));
    assert_eq!(pushed, img.manifest_digest);
    for round in 0..2 {
        let b = Kiln::new();
        assert_eq!(digest_of_stdout(&b.ok(&["pull", &image])), pushed, "pull {round}");
        let blobs = blob_files(&b.store());
        for (d, _) in &img.layers {
            assert!(blobs.iter().any(|x| x == d.trim_start_matches("sha256:")));
        }
    }
    // What reached the registry verifies, as seen by an independent client without the proxy.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/flaky/app:1", reg.host()),
        &format!("oci:{}:check", tmp.path().join("check").display()),
    ]);
    assert!(proxy.faults() > 0, "the proxy injected no faults; the test proved nothing");
}

#[test]
fn digest_mismatch_on_download_fails_and_stores_nothing() {
    if !tools() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let img = random_layout(tmp.path(), "t", 1, 50_000, 9);
    let image = format!("{}/corrupt/app:1", reg.host());
    // kiln copies blobs as they are (skopeo would compress the layer and change its digest).
    Kiln::new().ok(&["copy", &format!("oci:{}:t", tmp.path().join("layout").display()), &image]);
    // Flip bytes of the layer inside the registry's storage: same size, different content.
    let (layer, _) = &img.layers[0];
    let hex = layer.trim_start_matches("sha256:");
    let data = reg.storage_dir().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let k = Kiln::new();
    let e = k.fails(&["pull", &image]);
    assert!(e.contains("digest mismatch") || e.contains("does not match"), "{e}");
    assert!(e.contains(hex), "{e}");
    assert!(!blob_files(&k.store()).iter().any(|b| b == hex), "corrupt blob was stored");
    let images = k.run(&["inspect", &image]);
    assert!(!images.status.success(), "the image was tagged although a layer failed");
}

/// `kiln build` stores its layers as plain tar; whatever leaves the store is gzipped. Pushing a store
/// image with plain layers sends gzip blobs whose content is the plain layers (same diff ids, same
/// config), the same bytes on every push (compressed once, remembered), and an OCI layout or copy
/// straight from a layout stays verbatim.
#[test]
fn push_from_the_store_gzips_plain_layers_once_and_keeps_their_content() {
    if !tools() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let img = random_layout(tmp.path(), "t", 2, 1_000_000, 9);
    let k = Kiln::new();
    let image = format!("{}/gz/app:1", reg.host());
    k.ok(&["copy", &format!("oci:{}:t", tmp.path().join("layout").display()), &format!("store:{image}")]);
    let pushed = digest_of_stdout(&k.ok(&["push", &image]));
    assert_ne!(pushed, img.manifest_digest, "plain layers must not leave the store as they are");
    let again = format!("{}/gz/app:2", reg.host());
    k.ok(&["copy", &format!("store:{image}"), &format!("store:{again}")]);
    assert_eq!(digest_of_stdout(&k.ok(&["push", &again])), pushed, "a second push names the same gzip blobs");
    let memo = std::fs::read_dir(k.store().join("gzip-v3/sha256")).map(|rd| rd.count()).unwrap_or(0);
    assert_eq!(memo, 2, "one remembered gzip form per plain layer");

    // An independent client sees gzip layers whose uncompressed bytes are the original plain layers.
    let raw: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}")])).unwrap();
    let out = tmp.path().join("check");
    skopeo(&["copy", "--src-tls-verify=false", &format!("docker://{image}"), &format!("oci:{}:c", out.display())]);
    let layers = raw["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (l, (plain, _)) in layers.iter().zip(&img.layers) {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip", "{raw:#}");
        let blob = out.join("blobs/sha256").join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let o = Command::new("sh").arg("-c").arg(format!("gzip -dc '{}' | sha256sum", blob.display())).output().unwrap();
        let sum = String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or_default().to_string();
        assert_eq!(format!("sha256:{sum}"), *plain, "the gzip layer holds the plain layer's bytes");
    }
    assert_eq!(raw["config"]["digest"].as_str(), Some(img.config_digest.as_str()), "the config (diff ids) is unchanged");
}

// ---------------------------------------------------------------------------------------------
// kiln run pulls
// ---------------------------------------------------------------------------------------------

/// A busybox root file system tarball; with `marker`, plus `/marker` holding it.
fn rootfs(dir: &Path, marker: Option<&str>) -> PathBuf {
    let tar = dir.join(format!("rootfs-{}.tar", marker.unwrap_or("plain")));
    kiln_testkit::busybox_rootfs_tar(&tar).unwrap();
    if let Some(m) = marker {
        let extra = dir.join("extra");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("marker"), format!("{m}\n")).unwrap();
        let st = Command::new("tar").arg("-rf").arg(&tar).arg("-C").arg(&extra).arg("marker").status().unwrap();
        assert!(st.success(), "tar -r");
    }
    tar
}

/// Imports the rootfs as `image` on a pusher machine and pushes it.
fn publish(pusher: &Kiln, dir: &Path, image: &str, marker: Option<&str>) {
    let tar = rootfs(dir, marker);
    pusher.ok(&["import", tar.to_str().unwrap(), "-t", image]);
    pusher.ok(&["push", image]);
}

#[test]
fn run_pulls_an_image_that_is_only_in_a_registry() {
    if !kiln_testkit::require_root() || !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/run/bb:1", reg.host());
    publish(&Kiln::new(), work.path(), &image, None);

    let k = Kiln::new();
    assert_eq!(k.ok(&["run", &image, "--", "echo", "hello from the registry"]), "hello from the registry\n");
    assert_eq!(k.tags(), vec![image.clone()], "the pull is tagged in the store");
    // Now it is here: --pull never runs it.
    assert_eq!(k.ok(&["run", "--pull", "never", &image, "--", "echo", "again"]), "again\n");
    // The registry flags `kiln pull` takes, --platform, and an explicit --pull missing.
    let other = Kiln::new();
    let host = kiln_oci::Platform::host().to_string();
    let out = other.ok(&["run", "--pull", "missing", "--insecure-registry", &reg.host(), "--platform", &host, &image, "--", "echo", "ok"]);
    assert_eq!(out, "ok\n");
}

#[test]
fn run_pull_never_and_a_failed_pull_are_clear_errors_about_the_image() {
    if !kiln_testkit::require_root() || !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/run/bb:1", reg.host());
    publish(&Kiln::new(), work.path(), &image, None);

    let k = Kiln::new();
    let e = k.fails(&["run", "--pull", "never", &image, "--", "true"]);
    assert!(e.contains(&format!("image {image} is not in the local store")) && e.contains("kiln pull"), "{e}");
    assert!(!e.contains("base image"), "kiln run builds nothing: {e}");
    assert!(k.tags().is_empty(), "nothing was pulled");

    // A tag the registry does not have: the pull's failure, named for the image.
    let missing = format!("{}/run/bb:nope", reg.host());
    let e = k.fails(&["run", &missing, "--", "true"]);
    assert!(e.contains(&format!("image {missing}")) && e.contains("pulling it failed") && e.contains("404"), "{e}");
    assert!(!e.contains("base image"), "{e}");
}

#[test]
fn run_pull_always_resolves_the_tag_again() {
    if !kiln_testkit::require_root() || !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/run/bb:1", reg.host());
    let pusher = Kiln::new();
    publish(&pusher, work.path(), &image, Some("v1"));

    let k = Kiln::new();
    assert_eq!(k.ok(&["run", &image, "--", "cat", "/marker"]), "v1\n");
    // The tag moves in the registry; the default keeps using what the store has.
    publish(&pusher, work.path(), &image, Some("v2"));
    assert_eq!(k.ok(&["run", &image, "--", "cat", "/marker"]), "v1\n");
    assert_eq!(k.ok(&["run", "--pull", "always", &image, "--", "cat", "/marker"]), "v2\n");
    // and the store's tag followed the registry's.
    assert_eq!(k.ok(&["run", "--pull", "never", &image, "--", "cat", "/marker"]), "v2\n");
}
