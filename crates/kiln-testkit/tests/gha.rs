//! The GitHub Actions cache v2 emulator, driven over HTTP as a client would.

use std::time::Duration;

use base64::Engine as _;
use kiln_testkit::http::{self, Response};
use kiln_testkit::{GhaOptions, GhaService};
use serde_json::{json, Value};

const HOUR: Duration = Duration::from_secs(3600);
const MAIN: &str = "refs/heads/main";
const PR: &str = "refs/pull/7/merge";
const V: &str = "v1-kiln";

fn start(options: GhaOptions) -> GhaService {
    GhaService::start(options).expect("start the gha emulator")
}

fn main_token(svc: &GhaService) -> String {
    svc.mint_token(&[MAIN], Some(MAIN), HOUR)
}

fn call(svc: &GhaService, token: &str, method: &str, body: &Value) -> Response {
    let url = format!("{}twirp/github.actions.results.api.v1.CacheService/{method}", svc.url());
    let auth = format!("Bearer {token}");
    http::request("POST", &url, &[("Authorization", &auth), ("Content-Type", "application/json")], body.to_string().as_bytes())
        .expect("twirp call")
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", r.status, r.text()))
}

/// CreateCacheEntry that must succeed; returns the upload URL.
fn create(svc: &GhaService, token: &str, key: &str) -> String {
    let r = call(svc, token, "CreateCacheEntry", &json!({"key": key, "version": V}));
    assert_eq!(r.status, 200, "create {key}: {}", r.text());
    let v = json_of(&r);
    assert_eq!(v["ok"], true);
    v["signed_upload_url"].as_str().expect("signed_upload_url").to_string()
}

fn finalize(svc: &GhaService, token: &str, key: &str, size: usize) -> Response {
    call(svc, token, "FinalizeCacheEntryUpload", &json!({"key": key, "version": V, "size_bytes": size.to_string()}))
}

/// GetCacheEntryDownloadURL; `(matched_key, url)` on a hit.
fn lookup(svc: &GhaService, token: &str, key: &str, restore: &[&str]) -> Option<(String, String)> {
    let r = call(svc, token, "GetCacheEntryDownloadURL", &json!({"key": key, "restore_keys": restore, "version": V}));
    assert_eq!(r.status, 200, "get {key}: {}", r.text());
    let v = json_of(&r);
    if v["ok"] != true {
        return None;
    }
    Some((v["matched_key"].as_str().expect("matched_key").into(), v["signed_download_url"].as_str().expect("url").into()))
}

fn put_whole(url: &str, data: &[u8]) -> Response {
    http::request("PUT", url, &[("x-ms-blob-type", "BlockBlob")], data).expect("put blob")
}

fn put_blocks(url: &str, data: &[u8], block: usize) {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for (i, chunk) in data.chunks(block).enumerate() {
        let id = base64::engine::general_purpose::STANDARD.encode(format!("block-{i:06}"));
        let enc: String =
            id.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
        let r = http::request("PUT", &format!("{url}&comp=block&blockid={enc}"), &[], chunk).expect("put block");
        assert_eq!(r.status, 201, "put block {i}: {}", r.text());
        xml.push_str(&format!("<Latest>{id}</Latest>"));
    }
    xml.push_str("</BlockList>");
    let r = http::request("PUT", &format!("{url}&comp=blocklist"), &[], xml.as_bytes()).expect("put block list");
    assert_eq!(r.status, 201, "put block list: {}", r.text());
}

fn download(url: &str, range: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = range.map(|r| vec![("x-ms-range", r)]).unwrap_or_default();
    http::request("GET", url, &headers, b"").expect("get blob")
}

/// Creates, uploads whole and finalizes `key` with `data`.
fn save(svc: &GhaService, token: &str, key: &str, data: &[u8]) {
    let url = create(svc, token, key);
    assert_eq!(put_whole(&url, data).status, 201);
    let r = finalize(svc, token, key, data.len());
    assert_eq!(r.status, 200, "finalize {key}: {}", r.text());
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn url_ends_in_slash_and_token_carries_scopes() {
    let svc = start(GhaOptions::default());
    assert!(svc.url().starts_with("http://127.0.0.1:") && svc.url().ends_with('/'), "{}", svc.url());
    let token = svc.mint_token(&[MAIN], Some(PR), HOUR);
    let payload = token.split('.').nth(1).expect("three parts");
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    let ac: Value = serde_json::from_str(claims["ac"].as_str().expect("ac is a JSON string")).expect("ac parses");
    assert_eq!(ac, json!([{"Scope": PR, "Permission": 3}, {"Scope": MAIN, "Permission": 1}]));
    assert!(claims["exp"].as_u64().expect("exp") > claims["nbf"].as_u64().expect("nbf"));
}

#[test]
fn whole_and_block_uploads_round_trip_with_ranges() {
    let svc = start(GhaOptions::default());
    let t = main_token(&svc);

    // Whole upload.
    let data = pattern(10_000);
    let url = create(&svc, &t, "layer-a");
    assert_eq!(svc.entries().len(), 1);
    assert!(!svc.entries()[0].finalized);
    assert_eq!(put_whole(&url, &data).status, 201);
    // A wrong size is refused and leaves the entry reserved.
    let r = finalize(&svc, &t, "layer-a", data.len() + 1);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(json_of(&r)["code"], "invalid_argument");
    assert_eq!(lookup(&svc, &t, "layer-a", &[]), None, "a reserved entry is not found");
    let r = finalize(&svc, &t, "layer-a", data.len());
    assert_eq!(r.status, 200, "{}", r.text());
    let id = json_of(&r)["entry_id"].as_str().expect("entry_id is a string").to_string();
    assert_eq!(id, svc.entries()[0].id.to_string());
    assert!(svc.entries()[0].finalized);
    assert_eq!(svc.entries()[0].size, data.len() as u64);

    let (matched, durl) = lookup(&svc, &t, "layer-a", &[]).expect("hit");
    assert_eq!(matched, "layer-a");
    let full = download(&durl, None);
    assert_eq!(full.status, 200);
    assert_eq!(full.header("x-ms-blob-type"), Some("BlockBlob"));
    assert_eq!(full.body, data);
    let part = download(&durl, Some("bytes=100-199"));
    assert_eq!(part.status, 206);
    assert_eq!(part.header("Content-Range"), Some("bytes 100-199/10000"));
    assert_eq!(part.body, &data[100..200]);
    let tail = http::request("GET", &durl, &[("Range", "bytes=9990-")], b"").expect("get");
    assert_eq!(tail.status, 206);
    assert_eq!(tail.header("Content-Range"), Some("bytes 9990-9999/10000"));
    assert_eq!(tail.body, &data[9990..]);
    let beyond = download(&durl, Some("bytes=10000-"));
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("x-ms-error-code"), Some("InvalidRange"));
    let head = http::request("HEAD", &durl, &[], b"").expect("head");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("10000"));

    // Block upload: uneven blocks, committed in order.
    let data = pattern(300_001);
    let url = create(&svc, &t, "layer-b");
    put_blocks(&url, &data, 65_536);
    assert_eq!(svc.blob_calls("PutBlock"), 5);
    assert_eq!(svc.blob_calls("PutBlockList"), 1);
    assert_eq!(finalize(&svc, &t, "layer-b", data.len()).status, 200);
    let (_, durl) = lookup(&svc, &t, "layer-b", &[]).expect("hit");
    assert_eq!(download(&durl, None).body, data);

    // A block list naming an unknown block is refused.
    let url = create(&svc, &t, "layer-c");
    let r = http::request("PUT", &format!("{url}&comp=blocklist"), &[], b"<BlockList><Latest>bm9wZQ==</Latest></BlockList>").expect("put");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-ms-error-code"), Some("InvalidBlockList"));
    // A whole upload without the blob type header is refused.
    let r = http::request("PUT", &url, &[], b"x").expect("put");
    assert_eq!(r.status, 400);
    // Finalize before any upload.
    let r = finalize(&svc, &t, "layer-c", 1);
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(json_of(&r)["code"], "failed_precondition");
    // Finalize of a key never reserved.
    let r = finalize(&svc, &t, "never", 1);
    assert_eq!(r.status, 404);
    assert_eq!(json_of(&r)["code"], "not_found");
    assert_eq!(svc.calls("CreateCacheEntry"), 3);
}

#[test]
fn second_create_conflicts_and_sealed_blob() {
    let svc = start(GhaOptions::default());
    let t = main_token(&svc);
    let url = create(&svc, &t, "k");
    let r = call(&svc, &t, "CreateCacheEntry", &json!({"key": "k", "version": V}));
    assert_eq!(r.status, 409, "reserved: {}", r.text());
    assert_eq!(json_of(&r)["code"], "already_exists");
    assert_eq!(put_whole(&url, b"hello").status, 201);
    assert_eq!(finalize(&svc, &t, "k", 5).status, 200);
    let r = call(&svc, &t, "CreateCacheEntry", &json!({"key": "k", "version": V}));
    assert_eq!(r.status, 409, "finalized: {}", r.text());
    // Another version of the same key is another entry.
    let r = call(&svc, &t, "CreateCacheEntry", &json!({"key": "k", "version": "v2"}));
    assert_eq!(r.status, 200, "{}", r.text());
    // The committed blob cannot be rewritten through its old upload URL.
    let r = put_whole(&url, b"HELLO");
    assert_eq!(r.status, 403);
    let (_, durl) = lookup(&svc, &t, "k", &[]).expect("hit");
    assert_eq!(download(&durl, None).body, b"hello");
    // A repeated finalize is idempotent; go-actions-cache sends size_bytes as a JSON number.
    assert_eq!(finalize(&svc, &t, "k", 5).status, 200);
    let r = call(&svc, &t, "FinalizeCacheEntryUpload", &json!({"key": "k", "version": V, "size_bytes": 5}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&svc, &t, "FinalizeCacheEntryUpload", &json!({"key": "k", "version": V, "size_bytes": 6}));
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn miss_auth_and_routes() {
    let svc = start(GhaOptions::default());
    let t = main_token(&svc);
    let r = call(&svc, &t, "GetCacheEntryDownloadURL", &json!({"key": "nope", "version": V}));
    assert_eq!(r.status, 200);
    assert_eq!(json_of(&r)["ok"], false);

    let url = format!("{}twirp/github.actions.results.api.v1.CacheService/GetCacheEntryDownloadURL", svc.url());
    let r = http::request("POST", &url, &[("Content-Type", "application/json")], br#"{"key":"a","version":"v"}"#).expect("post");
    assert_eq!(r.status, 401);
    assert_eq!(json_of(&r)["code"], "unauthenticated");
    // A token signed by another emulator is refused.
    let other = start(GhaOptions::default());
    let r = call(&svc, &main_token(&other), "GetCacheEntryDownloadURL", &json!({"key": "a", "version": V}));
    assert_eq!(r.status, 401);
    // An expired token is refused.
    let short = svc.mint_token(&[MAIN], Some(MAIN), Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(2100));
    let r = call(&svc, &short, "GetCacheEntryDownloadURL", &json!({"key": "a", "version": V}));
    assert_eq!(r.status, 401, "{}", r.text());
    // Unknown methods are twirp bad_route.
    let r = call(&svc, &t, "ListCacheEntries", &json!({}));
    assert_eq!(r.status, 404);
    assert_eq!(json_of(&r)["code"], "bad_route");
    let r = call(&svc, &t, "CreateCacheEntry", &json!({"key": "", "version": V}));
    assert_eq!(r.status, 400);
}

#[test]
fn prefix_restore_keys_newest_wins_exact_first() {
    let svc = start(GhaOptions::default());
    let t = main_token(&svc);
    save(&svc, &t, "deps-linux-aaa", b"old");
    save(&svc, &t, "deps-linux-bbb", b"new");
    save(&svc, &t, "other-1", b"o");
    // Exact key beats a newer prefix match.
    assert_eq!(lookup(&svc, &t, "deps-linux-aaa", &["deps-"]).expect("hit").0, "deps-linux-aaa");
    // Prefix of a restore key: the newest wins.
    assert_eq!(lookup(&svc, &t, "deps-linux-zzz", &["deps-linux-"]).expect("hit").0, "deps-linux-bbb");
    // The key itself is tried as a prefix before restore keys.
    assert_eq!(lookup(&svc, &t, "other", &["deps-"]).expect("hit").0, "other-1");
    // Restore keys are tried in order.
    assert_eq!(lookup(&svc, &t, "x", &["nomatch-", "deps-linux-a"]).expect("hit").0, "deps-linux-aaa");
    assert_eq!(lookup(&svc, &t, "x", &["nomatch-"]), None);
    // The version must match.
    let r = call(&svc, &t, "GetCacheEntryDownloadURL", &json!({"key": "deps-linux-aaa", "version": "v-other"}));
    assert_eq!(json_of(&r)["ok"], false);
}

#[test]
fn scopes_pr_reads_main_writes_own_fork_is_read_only() {
    let svc = start(GhaOptions::default());
    let main = main_token(&svc);
    save(&svc, &main, "index", b"main-index");
    save(&svc, &main, "blob-1", b"main-blob");

    let pr = svc.mint_token(&[MAIN], Some(PR), HOUR);
    let (_, url) = lookup(&svc, &pr, "blob-1", &[]).expect("a PR reads main's entries");
    assert_eq!(download(&url, None).body, b"main-blob");
    // The PR may write the same key in its own scope...
    save(&svc, &pr, "index", b"pr-index");
    assert!(svc.entries().iter().any(|e| e.key == "index" && e.scope == PR));
    // ...and reads its own first,
    let (_, url) = lookup(&svc, &pr, "index", &[]).expect("hit");
    assert_eq!(download(&url, None).body, b"pr-index");
    // while main never sees the PR's entries.
    let (_, url) = lookup(&svc, &main, "index", &[]).expect("hit");
    assert_eq!(download(&url, None).body, b"main-index");
    save(&svc, &pr, "pr-only", b"p");
    assert_eq!(lookup(&svc, &main, "pr-only", &[]), None);

    // A fork PR: read scopes only.
    let fork = svc.mint_token(&[MAIN], None, HOUR);
    let r = call(&svc, &fork, "CreateCacheEntry", &json!({"key": "fork", "version": V}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(json_of(&r)["code"], "permission_denied");
    assert!(lookup(&svc, &fork, "blob-1", &[]).is_some(), "a fork PR still reads");
    assert!(!svc.entries().iter().any(|e| e.key == "fork"));
}

#[test]
fn signed_urls_expire_and_are_checked() {
    let svc = start(GhaOptions { download_url_lifetime: Duration::from_secs(1), ..GhaOptions::default() });
    let t = main_token(&svc);
    save(&svc, &t, "k", b"payload");
    let (_, url) = lookup(&svc, &t, "k", &[]).expect("hit");
    assert_eq!(download(&url, None).status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let r = download(&url, None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("x-ms-error-code"), Some("AuthenticationFailed"));
    assert!(r.text().contains("<Code>AuthenticationFailed</Code>"), "{}", r.text());
    assert!(r.text().contains("has to be after current time"), "{}", r.text());
    assert_eq!(svc.auth_failures(), 1);
    // A fresh URL works.
    let (_, url) = lookup(&svc, &t, "k", &[]).expect("hit");
    assert_eq!(download(&url, None).body, b"payload");
    // A tampered signature, and a missing one, fail the same way.
    let tampered = url.replace("sp=r", "sp=rw");
    assert_eq!(download(&tampered, None).header("x-ms-error-code"), Some("AuthenticationFailed"));
    let unsigned = url.split('?').next().expect("path").to_string();
    assert_eq!(download(&unsigned, None).status, 403);
    assert_eq!(svc.auth_failures(), 3);
    // A download URL cannot write.
    let r = put_whole(&url, b"x");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-ms-error-code"), Some("AuthorizationPermissionMismatch"));

    // Upload URLs expire too.
    svc.update_options(|o| o.upload_url_lifetime = Duration::from_secs(1));
    let up = create(&svc, &t, "late");
    std::thread::sleep(Duration::from_millis(2100));
    let r = put_whole(&up, b"late");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-ms-error-code"), Some("AuthenticationFailed"));
}

#[test]
fn throttle_counts_every_blob_byte() {
    let rate = 256 * 1024;
    let svc = start(GhaOptions { throttle: Some(rate), ..GhaOptions::default() });
    let t = main_token(&svc);
    let data = pattern(1 << 20);
    save(&svc, &t, "big", &data);
    assert_eq!(svc.throttled_bytes(), 1 << 20, "the upload body went through the throttle");
    let (_, url) = lookup(&svc, &t, "big", &[]).expect("hit");
    assert_eq!(download(&url, None).body, data);
    assert_eq!(svc.throttled_bytes(), 2 << 20, "the download body went through the throttle");
    // 1 MiB at 256 KiB/s is four seconds' worth of slots each way: the transfer had to wait.
    assert!(svc.throttle_sleeps() >= 8, "sleeps: {}", svc.throttle_sleeps());

    // Without a throttle nothing is counted.
    let free = start(GhaOptions::default());
    let t = main_token(&free);
    save(&free, &t, "big", &data);
    assert_eq!(free.throttled_bytes(), 0);
    assert_eq!(free.throttle_sleeps(), 0);
}

#[test]
fn a_transfer_started_in_time_outlives_its_url() {
    // 384 KiB at 64 KiB/s takes about six seconds; the URL lives two (three at most).
    let svc = start(GhaOptions { upload_url_lifetime: Duration::from_secs(2), throttle: Some(64 * 1024), ..GhaOptions::default() });
    let t = main_token(&svc);
    let data = pattern(384 * 1024);
    let url = create(&svc, &t, "slow");
    let r = put_whole(&url, &data);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(svc.throttle_sleeps() > 0);
    // The URL is dead now: the next block is refused, the committed blob stays.
    let r = put_whole(&url, b"late");
    assert_eq!(r.status, 403);
    assert_eq!(svc.auth_failures(), 1);
    assert_eq!(finalize(&svc, &t, "slow", data.len()).status, 200);
}

#[test]
fn twirp_429_fraction_with_retry_after() {
    let svc = start(GhaOptions { twirp_429_rate: 0.5, seed: 42, ..GhaOptions::default() });
    let t = main_token(&svc);
    let mut rejected = 0;
    for _ in 0..40 {
        let r = call(&svc, &t, "GetCacheEntryDownloadURL", &json!({"key": "k", "version": V}));
        match r.status {
            429 => {
                rejected += 1;
                assert_eq!(r.header("Retry-After"), Some("1"));
                assert_eq!(json_of(&r)["code"], "resource_exhausted");
            }
            200 => assert_eq!(json_of(&r)["ok"], false),
            s => panic!("unexpected status {s}: {}", r.text()),
        }
    }
    assert_eq!(svc.rejected_429(), rejected);
    assert!((5..=35).contains(&rejected), "a 0.5 fraction of 40 calls, got {rejected}");
    assert_eq!(svc.calls("GetCacheEntryDownloadURL"), 40);

    svc.update_options(|o| {
        o.twirp_429_rate = 1.0;
        o.retry_after = Duration::from_secs(3);
    });
    let r = call(&svc, &t, "CreateCacheEntry", &json!({"key": "k", "version": V}));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Retry-After"), Some("3"));
    assert!(svc.entries().is_empty(), "a rejected create reserves nothing");
}

#[test]
fn blob_503_fraction_stores_nothing() {
    let svc = start(GhaOptions::default());
    let t = main_token(&svc);
    save(&svc, &t, "k", b"stable");
    let (_, url) = lookup(&svc, &t, "k", &[]).expect("hit");
    svc.update_options(|o| {
        o.blob_503_rate = 0.5;
        o.seed = 7;
    });
    let mut busy = 0;
    for _ in 0..40 {
        let r = download(&url, None);
        match r.status {
            503 => {
                busy += 1;
                assert_eq!(r.header("x-ms-error-code"), Some("ServerBusy"));
            }
            200 => assert_eq!(r.body, b"stable"),
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(svc.rejected_503(), busy);
    assert!((5..=35).contains(&busy), "got {busy}");

    // A PUT answered 503 stored nothing; the one that passes stores its body.
    let up = create(&svc, &t, "k2");
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(attempt < 100, "never got through");
        let r = put_whole(&up, format!("attempt-{attempt}").as_bytes());
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 503);
    }
    svc.update_options(|o| o.blob_503_rate = 0.0);
    let body = format!("attempt-{attempt}");
    assert_eq!(finalize(&svc, &t, "k2", body.len()).status, 200);
    let (_, url) = lookup(&svc, &t, "k2", &[]).expect("hit");
    assert_eq!(download(&url, None).body, body.as_bytes());
}

#[test]
fn html_error_pages() {
    let svc = start(GhaOptions { html_error_rate: 1.0, ..GhaOptions::default() });
    let t = main_token(&svc);
    let r = call(&svc, &t, "CreateCacheEntry", &json!({"key": "k", "version": V}));
    assert_eq!(r.status, 502);
    assert!(r.header("Content-Type").is_some_and(|c| c.starts_with("text/html")));
    assert!(r.text().starts_with("<html>"), "{}", r.text());
    assert!(svc.entries().is_empty());
    svc.update_options(|o| o.html_error_rate = 0.0);
    let up = create(&svc, &t, "k");
    svc.update_options(|o| o.html_error_rate = 1.0);
    let r = put_whole(&up, b"x");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("502 Bad Gateway"));
    assert_eq!(svc.html_errors(), 2);
    svc.update_options(|o| o.html_error_rate = 0.0);
    assert_eq!(put_whole(&up, b"x").status, 201);
}

#[test]
fn visibility_delay_hides_fresh_entries() {
    let svc = start(GhaOptions { visibility_delay: HOUR, ..GhaOptions::default() });
    let t = main_token(&svc);
    save(&svc, &t, "k", b"v");
    assert!(svc.entries()[0].finalized);
    assert_eq!(lookup(&svc, &t, "k", &[]), None, "not visible yet");
    // Still reserved for writers: a second create conflicts.
    assert_eq!(call(&svc, &t, "CreateCacheEntry", &json!({"key": "k", "version": V})).status, 409);
    svc.update_options(|o| o.visibility_delay = Duration::ZERO);
    assert!(lookup(&svc, &t, "k", &[]).is_some());
}

#[test]
fn eviction_by_key_and_lru_cap() {
    let svc = start(GhaOptions::default());
    let t = main_token(&svc);
    save(&svc, &t, "gone", b"bytes");
    let (_, url) = lookup(&svc, &t, "gone", &[]).expect("hit");
    assert_eq!(svc.evict("gone"), 1);
    assert_eq!(svc.evictions(), 1);
    assert_eq!(lookup(&svc, &t, "gone", &[]), None);
    let r = download(&url, None);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-ms-error-code"), Some("BlobNotFound"));
    // The key is free again.
    save(&svc, &t, "gone", b"again");

    // LRU: cap 250, entries of 100 bytes; reading `a` keeps it, `b` goes.
    let svc = start(GhaOptions { max_total_bytes: Some(250), ..GhaOptions::default() });
    let t = main_token(&svc);
    save(&svc, &t, "a", &[1; 100]);
    save(&svc, &t, "b", &[2; 100]);
    assert!(lookup(&svc, &t, "a", &[]).is_some());
    save(&svc, &t, "c", &[3; 100]);
    let keys: Vec<String> = svc.entries().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["a", "c"]);
    assert_eq!(svc.evictions(), 1);
    assert_eq!(lookup(&svc, &t, "b", &[]), None);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    use std::io::{BufRead, BufReader, Read, Write};
    let svc = start(GhaOptions::default());
    let t = main_token(&svc);
    save(&svc, &t, "k", b"0123456789");
    let (_, url) = lookup(&svc, &t, "k", &[]).expect("hit");
    let rest = url.strip_prefix("http://").expect("http");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nx-ms-range: bytes=0-4\r\n\r\nGET {path} HTTP/1.1\r\nHost: {host}\r\nx-ms-range: bytes=5-9\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    for want in [&b"01234"[..], b"56789"] {
        let mut len = 0;
        let mut line = String::new();
        r.read_line(&mut line).expect("status");
        assert!(line.starts_with("HTTP/1.1 206"), "{line}");
        loop {
            line.clear();
            r.read_line(&mut line).expect("header");
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).expect("body");
        assert_eq!(body, want);
    }
}

/// The legacy v1 protocol on the same port: query (204 on a miss), reserve (409 when taken),
/// chunked PATCH uploads in any order, commit (holes refused), and a signed archive URL.
#[test]
fn legacy_v1_reserve_upload_commit_query() {
    let svc = start(GhaOptions::default());
    let token = main_token(&svc);
    let auth = format!("Bearer {token}");
    let base = format!("{}_apis/artifactcache/", svc.cache_url());
    let json_headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let q = |keys: &str| http::request("GET", &format!("{base}cache?keys={keys}&version={V}"), &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(q("v1-key").status, 204, "a miss is 204");

    let reserve = |key: &str| {
        http::request(
            "POST",
            &format!("{base}caches"),
            &json_headers,
            json!({"key": key, "version": V, "cacheSize": 10}).to_string().as_bytes(),
        )
        .unwrap()
    };
    let r = reserve("v1-key");
    assert_eq!(r.status, 201, "{}", r.text());
    let id = json_of(&r)["cacheId"].as_u64().expect("cacheId");
    assert_eq!(reserve("v1-key").status, 409, "a reserved key cannot be reserved again");

    let patch = |range: &str, body: &[u8]| {
        http::request(
            "PATCH",
            &format!("{base}caches/{id}"),
            &[("Authorization", &auth), ("Content-Range", range), ("Content-Type", "application/octet-stream")],
            body,
        )
        .unwrap()
    };
    assert_eq!(patch("bytes 5-9/*", b"56789").status, 204, "chunks may come in any order");
    let commit = |size: u64| {
        http::request("POST", &format!("{base}caches/{id}"), &json_headers, json!({"size": size}).to_string().as_bytes()).unwrap()
    };
    let hole = commit(10);
    assert_eq!(hole.status, 400, "a hole at byte 0 is refused: {}", hole.text());
    assert!(hole.text().contains("hole"), "{}", hole.text());

    // The failed commit drained the chunks (as the real service would not let a reservation be
    // reused either): a new key goes through whole.
    let r = reserve("v1-key2");
    let id2 = json_of(&r)["cacheId"].as_u64().unwrap();
    for (range, body) in [("bytes 5-9/*", &b"56789"[..]), ("bytes 0-4/*", &b"01234"[..])] {
        let r =
            http::request("PATCH", &format!("{base}caches/{id2}"), &[("Authorization", &auth), ("Content-Range", range)], body).unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let c = http::request("POST", &format!("{base}caches/{id2}"), &json_headers, br#"{"size":10}"#).unwrap();
    assert_eq!(c.status, 204, "{}", c.text());
    let found = q("v1-key2,v1-");
    assert_eq!(found.status, 200, "{}", found.text());
    let v = json_of(&found);
    assert_eq!((v["cacheKey"].as_str(), v["scope"].as_str()), (Some("v1-key2"), Some(MAIN)));
    let got = download(v["archiveLocation"].as_str().unwrap(), None);
    assert_eq!(got.body, b"0123456789");
    assert_eq!(svc.calls("v1/UploadCache"), 3);
    // v1 and v2 see the same entries.
    assert_eq!(lookup(&svc, &token, "v1-key2", &[]).map(|(k, _)| k).as_deref(), Some("v1-key2"));
    let unauth = http::request("GET", &format!("{base}cache?keys=a&version={V}"), &[], b"").unwrap();
    assert_eq!(unauth.status, 401);
}
