//! The client against a real `docker-registry` (kiln-testkit), through the fault-injecting proxy
//! where the point is surviving failures.

use std::io::Read;
use std::time::Duration;

use kiln_oci::Digest;
use kiln_registry::auth::Scopes;
use kiln_registry::{Client, ClientOptions, PushOutcome, RegistryError, Repo};
use kiln_testkit::{FaultKind, FaultProxy, FaultProxyOptions, Registry, TokenServerOptions};

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn client(config_dir: &std::path::Path, tweak: impl FnOnce(&mut ClientOptions)) -> Client {
    let mut o = ClientOptions {
        docker_config: config_dir.join("config.json"),
        backoff_base: Duration::from_millis(20),
        ..ClientOptions::default()
    };
    tweak(&mut o);
    Client::new(o)
}

fn push_bytes(c: &Client, repo: &Repo, data: &[u8], mount_from: Option<&str>) -> Result<PushOutcome, RegistryError> {
    let d = Digest::sha256_of(data);
    let open = |off: u64| -> std::io::Result<Box<dyn Read + Send>> { Ok(Box::new(std::io::Cursor::new(data[off as usize..].to_vec()))) };
    c.push_blob(repo, &d, data.len() as u64, mount_from, &open)
}

#[test]
fn chunked_upload_and_resumed_download_through_faults() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let proxy = FaultProxy::start(
        &reg.host(),
        FaultProxyOptions { fault_rate: 0.2, seed: 7, kinds: FaultKind::ALL.to_vec(), keep_alive: false, ..Default::default() },
    )
    .unwrap();
    let cfg = tempfile::tempdir().unwrap();
    // Small limits so that a 6 MB blob goes up in twelve PATCH chunks.
    let c = client(cfg.path(), |o| {
        o.monolithic_limit = 1 << 20;
        o.chunk_size = 512 << 10;
        o.max_attempts = 12;
    });
    let repo = Repo::new(proxy.host(), "chunky/blob");
    let data = pseudo_random(6 << 20, 1);
    let d = Digest::sha256_of(&data);
    assert_eq!(push_bytes(&c, &repo, &data, None).unwrap(), PushOutcome::Uploaded);
    // Pushing again is a HEAD hit.
    assert_eq!(push_bytes(&c, &repo, &data, None).unwrap(), PushOutcome::Exists);
    // Download through the faults (resets cut GETs half-way: resumed with Range) and verify.
    for _ in 0..3 {
        let mut out = Vec::new();
        c.fetch_blob(&repo, &d, Some(data.len() as u64), &mut out).unwrap();
        assert!(out == data, "downloaded content differs");
    }
    // The registry itself (no proxy) has exactly the content.
    let direct = client(cfg.path(), |_| {});
    let mut out = Vec::new();
    direct.fetch_blob(&Repo::new(reg.host(), "chunky/blob"), &d, None, &mut out).unwrap();
    assert!(out == data);
    assert!(proxy.faults_of(FaultKind::ResetMidBody) > 0 && proxy.faults() > 2, "too few faults to prove anything: {}", proxy.faults());
}

#[test]
fn cross_repo_mount_and_fallback_upload() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let c = client(cfg.path(), |_| {});
    let data = pseudo_random(100_000, 2);
    let a = Repo::new(reg.host(), "team/a");
    let b = Repo::new(reg.host(), "team/b");
    let x = Repo::new(reg.host(), "team/x");
    assert_eq!(push_bytes(&c, &a, &data, None).unwrap(), PushOutcome::Uploaded);
    assert_eq!(push_bytes(&c, &b, &data, Some("team/a")).unwrap(), PushOutcome::Mounted);
    // Mounting from a repository that lacks the blob: the registry answers 202, we upload.
    assert_eq!(push_bytes(&c, &x, &data, Some("team/nothing")).unwrap(), PushOutcome::Uploaded);
    assert!(c.blob_exists(&x, &Digest::sha256_of(&data), &Scopes::pull("team/x")).unwrap().is_some());
}

#[test]
fn manifests_by_tag_and_digest_are_verified() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let c = client(cfg.path(), |_| {});
    let repo = Repo::new(reg.host(), "m/one");
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    push_bytes(&c, &repo, config, None).unwrap();
    let cd = Digest::sha256_of(config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let md = c.put_manifest(&repo, "v1", kiln_oci::media::OCI_MANIFEST, manifest.as_bytes()).unwrap();
    let by_digest = c.put_manifest(&repo, &md.to_string(), kiln_oci::media::OCI_MANIFEST, manifest.as_bytes()).unwrap();
    assert_eq!(md, by_digest);
    let got = c.get_manifest(&repo, "v1").unwrap();
    assert_eq!(got.digest, md);
    assert_eq!(got.media_type, kiln_oci::media::OCI_MANIFEST);
    assert_eq!(got.bytes, manifest.as_bytes());
    assert_eq!(c.get_manifest(&repo, &md.to_string()).unwrap().bytes, manifest.as_bytes());
    assert!(c.manifest_exists(&repo, "v1").unwrap());
    let e = c.get_manifest(&repo, "nope").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::NotFound { .. }) && msg.contains("m/one:nope") && msg.contains("404"), "{msg}");
}

#[test]
fn bearer_tokens_are_refreshed_before_they_expire() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_token(TokenServerOptions { lifetime: Duration::from_secs(2), ..Default::default() }).unwrap();
    let (user, password) = reg.credentials().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    kiln_registry::credentials::store(&cfg.path().join("config.json"), &reg.host(), user, password).unwrap();
    let c = client(cfg.path(), |_| {});
    let repo = Repo::new(reg.host(), "tok/app");
    let data = pseudo_random(10_000, 3);
    push_bytes(&c, &repo, &data, None).unwrap();
    let after_push = c.tokens_fetched();
    assert!(after_push >= 1);
    // Within the token's life the cached one is reused.
    let d = Digest::sha256_of(&data);
    assert!(c.blob_exists(&repo, &d, &Scopes::push("tok/app")).unwrap().is_some());
    // After it expired, a new one is fetched before the request rather than after a 401.
    std::thread::sleep(Duration::from_millis(2500));
    let rejected_before = reg.token_server().unwrap().requests_rejected();
    assert!(c.blob_exists(&repo, &d, &Scopes::push("tok/app")).unwrap().is_some());
    assert!(c.tokens_fetched() > after_push, "expired token was reused");
    assert_eq!(reg.token_server().unwrap().requests_rejected(), rejected_before);
}

#[test]
fn wrong_credentials_name_the_registry_and_the_fix() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_token(TokenServerOptions::default()).unwrap();
    let cfg = tempfile::tempdir().unwrap();
    kiln_registry::credentials::store(&cfg.path().join("config.json"), &reg.host(), "kiln", "not-the-password").unwrap();
    let c = client(cfg.path(), |_| {});
    let e = push_bytes(&c, &Repo::new(reg.host(), "tok/app"), b"x", None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains(&reg.host()) && msg.contains("kiln login") && msg.contains("401"), "{msg}");
    assert!(!msg.contains("not-the-password"));
}

#[test]
fn retry_after_is_honoured_and_attempts_are_bounded() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let proxy =
        FaultProxy::start(&reg.host(), FaultProxyOptions { fault_rate: 1.0, kinds: vec![FaultKind::ServerError], ..Default::default() })
            .unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let c = client(cfg.path(), |o| o.max_attempts = 3);
    // Every request fails: the client gives up after its attempts with the status in the message.
    let e = c.get_manifest(&Repo::new(proxy.host(), "r/x"), "1").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("500") && msg.contains(&proxy.host()), "{msg}");
    let tried = proxy.requests();
    assert!(tried <= 3 + 3, "more requests than attempts: {tried}");
    // 429 with Retry-After: 1 on half the requests: still succeeds.
    proxy.set_fault_rate(0.0);
    let ok = FaultProxy::start(
        &reg.host(),
        FaultProxyOptions { fault_rate: 0.5, seed: 3, kinds: vec![FaultKind::TooManyRequests], ..Default::default() },
    )
    .unwrap();
    let repo = Repo::new(ok.host(), "r/y");
    let c2 = client(cfg.path(), |o| o.max_attempts = 8);
    push_bytes(&c2, &repo, &pseudo_random(2000, 10), None).unwrap();
    assert!(ok.faults_of(FaultKind::TooManyRequests) > 0);
}

/// `upload_missing_blob` is `push_blob` without the HEAD in front: one request fewer for a blob
/// the caller knows is missing, and the blob arrives whole.
#[test]
fn an_upload_known_to_be_missing_asks_one_question_fewer() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions { fault_rate: 0.0, ..Default::default() }).unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let c = client(cfg.path(), |_| {});
    let repo = Repo::new(proxy.host(), "team/ahead");
    let (one, two) = (pseudo_random(50_000, 5), pseudo_random(50_000, 6));
    // Warm the client (the registry ping) so that both uploads count only their own requests.
    assert_eq!(push_bytes(&c, &repo, &pseudo_random(10, 1), None).unwrap(), PushOutcome::Uploaded);
    let before = proxy.requests();
    assert_eq!(push_bytes(&c, &repo, &one, None).unwrap(), PushOutcome::Uploaded);
    let with_head = proxy.requests() - before;
    let before = proxy.requests();
    let d = Digest::sha256_of(&two);
    let open = |off: u64| -> std::io::Result<Box<dyn Read + Send>> { Ok(Box::new(std::io::Cursor::new(two[off as usize..].to_vec()))) };
    assert_eq!(c.upload_missing_blob(&repo, &d, two.len() as u64, None, &open).unwrap(), PushOutcome::Uploaded);
    let without = proxy.requests() - before;
    assert_eq!(without + 1, with_head, "push_blob: {with_head} requests, upload_missing_blob: {without}");
    let mut got = Vec::new();
    c.fetch_blob(&Repo::new(reg.host(), "team/ahead"), &d, Some(two.len() as u64), &mut got).unwrap();
    assert_eq!(got, two);
}
