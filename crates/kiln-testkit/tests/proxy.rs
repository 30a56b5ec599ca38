//! The fault proxy in front of a real registry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use kiln_testkit::{busybox_rootfs_tar, http, oci, random_rootfs_tar, require_tool, FaultKind, FaultProxy, FaultProxyOptions, Registry};

fn skopeo(args: &[&str], auth_file: &Path) -> std::process::Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        // A private auth file: never read or write the real user's credentials.
        .env("REGISTRY_AUTH_FILE", auth_file)
        .output()
        .expect("run skopeo")
}

#[test]
fn skopeo_pushes_an_oci_dir_through_the_proxy_without_faults() {
    if !require_tool("docker-registry") || !require_tool("skopeo") || !require_tool("htpasswd") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base.tar");
    let extra = tmp.path().join("extra.tar");
    busybox_rootfs_tar(&base).expect("busybox rootfs");
    random_rootfs_tar(&extra, 3 * 1024 * 1024, 3, 11).expect("random rootfs");
    let layout = tmp.path().join("layout");
    let image = oci::write_oci_layout(&layout, "v1", &[&base, &extra]).expect("write OCI layout");
    assert_eq!(image.layers.len(), 2);

    let reg = Registry::start_basic("pusher", "pw").expect("registry");
    let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions::default()).expect("proxy");
    let auth = tmp.path().join("auth.json");
    let src = format!("oci:{}:v1", layout.display());
    let dst = format!("docker://{}/tk/busybox:v1", proxy.host());
    let out = skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", "pusher:pw", &src, &dst], &auth);
    assert!(out.status.success(), "skopeo copy failed: {}\nregistry log:\n{}", String::from_utf8_lossy(&out.stderr), reg.log());
    assert_eq!(proxy.faults(), 0);
    assert_eq!(proxy.upstream_errors(), 0);
    // POST + PATCH + PUT per blob at least, plus manifest and probes.
    assert!(proxy.requests() >= 8, "only {} requests went through the proxy", proxy.requests());

    // Read it back straight from the registry, not through the proxy.
    let direct = format!("docker://{}/tk/busybox:v1", reg.host());
    let out = skopeo(&["inspect", "--raw", "--tls-verify=false", "--creds", "pusher:pw", &direct], &auth);
    assert!(out.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest JSON");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(2), "{manifest}");
}

#[test]
fn proxy_injects_faults_at_about_the_configured_rate() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let proxy =
        FaultProxy::start(&reg.host(), FaultProxyOptions { fault_rate: 0.10, seed: 2024, ..FaultProxyOptions::default() }).expect("proxy");
    let url = format!("{}/v2/", proxy.url());
    let (mut ok, mut s500, mut s429, mut broken) = (0u64, 0u64, 0u64, 0u64);
    const N: u64 = 400;
    for _ in 0..N {
        match http::request("GET", &url, &[], b"") {
            Ok(r) if r.status == 200 => ok += 1,
            Ok(r) if r.status == 500 => s500 += 1,
            Ok(r) if r.status == 429 => {
                assert_eq!(r.header("Retry-After"), Some("1"));
                s429 += 1;
            }
            Ok(r) => panic!("unexpected status {} {}", r.status, r.text()),
            Err(_) => broken += 1,
        }
    }
    assert_eq!(proxy.requests(), N);
    assert_eq!(ok + s500 + s429 + broken, N);
    // Every failure the client saw is a counted fault, and vice versa.
    assert_eq!(proxy.faults(), s500 + s429 + broken);
    assert_eq!(proxy.faults_of(FaultKind::ServerError), s500);
    assert_eq!(proxy.faults_of(FaultKind::TooManyRequests), s429);
    assert_eq!(proxy.faults_of(FaultKind::ResetMidBody), broken);
    // Binomial(400, 0.1): mean 40, sd 6; the bounds are 3+ sd away.
    assert!((20..=65).contains(&proxy.faults()), "{} faults in {N} requests", proxy.faults());
    assert!(s500 > 0 && s429 > 0 && broken > 0, "500:{s500} 429:{s429} reset:{broken}");

    // Faults off: everything passes.
    proxy.set_fault_rate(0.0);
    let before = proxy.faults();
    for _ in 0..20 {
        assert_eq!(http::request("GET", &url, &[], b"").expect("GET").status, 200);
    }
    assert_eq!(proxy.faults(), before);
}

#[test]
fn location_headers_keep_the_client_on_the_proxy() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions::default()).expect("proxy");
    let r = http::request("POST", &format!("{}/v2/loc/test/blobs/uploads/", proxy.url()), &[], b"").expect("start upload");
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.header("Location").expect("Location header");
    assert!(!loc.contains(&reg.host()), "Location {loc} points past the proxy");
    assert!(loc.starts_with('/') || loc.contains(&proxy.host()), "Location {loc}");

    // Finish a monolithic upload through the proxy at that location.
    let data = b"hello through the proxy";
    let real = sha256(data);
    let put_url = if loc.starts_with('/') { format!("{}{loc}", proxy.url()) } else { loc.to_string() };
    let sep = if put_url.contains('?') { '&' } else { '?' };
    let r = http::request("PUT", &format!("{put_url}{sep}digest={real}"), &[("Content-Type", "application/octet-stream")], data)
        .expect("PUT blob");
    assert_eq!(r.status, 201, "{}\n{}", r.text(), reg.log());
    let r = http::request("GET", &format!("{}/v2/loc/test/blobs/{real}", reg.url()), &[], b"").expect("GET blob");
    assert_eq!(r.body, data);
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(data);
    format!("sha256:{}", h.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Reads one response (status, headers, Content-Length body) off a kept-alive connection.
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut status_line = String::new();
    r.read_line(&mut status_line).expect("status line");
    let status: u16 =
        status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: u64 = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = Vec::new();
    r.by_ref().take(len).read_to_end(&mut body).expect("body");
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn chunked_upload_over_one_kept_alive_connection() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions::default()).expect("proxy");
    let host = proxy.host();
    let conn = TcpStream::connect(&host).expect("connect proxy");
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);

    write!(w, "POST /v2/chunk/test/blobs/uploads/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").expect("send POST");
    let (status, headers, _) = read_response(&mut r);
    assert_eq!(status, 202);
    assert_eq!(header(&headers, "connection"), Some("keep-alive"));
    let loc = header(&headers, "location").expect("location").to_string();
    let path = loc.split_once(&host).map_or(loc.as_str(), |(_, p)| p).to_string();

    // Two chunks of a 200 KiB body, chunk-encoded as a streaming client would.
    let body: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    write!(w, "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("send PATCH head");
    for part in body.chunks(150 * 1024) {
        write!(w, "{:x}\r\n", part.len()).expect("chunk size");
        w.write_all(part).expect("chunk data");
        w.write_all(b"\r\n").expect("chunk end");
    }
    w.write_all(b"0\r\n\r\n").expect("last chunk");
    let (status, headers, text) = read_response(&mut r);
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&text));
    assert_eq!(header(&headers, "range"), Some(format!("0-{}", body.len() - 1).as_str()));
    let loc = header(&headers, "location").expect("location").to_string();
    let path = loc.split_once(&host).map_or(loc.as_str(), |(_, p)| p).to_string();

    let digest = sha256(&body);
    let sep = if path.contains('?') { '&' } else { '?' };
    write!(w, "PUT {path}{sep}digest={digest} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").expect("send PUT");
    let (status, _, text) = read_response(&mut r);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&text));
    assert_eq!(proxy.requests(), 3, "all three requests on one connection");

    let got = http::request("GET", &format!("{}/v2/chunk/test/blobs/{digest}", reg.url()), &[], b"").expect("GET");
    assert_eq!(got.body, body);
}

#[test]
fn keep_alive_off_closes_after_each_response() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions { keep_alive: false, ..FaultProxyOptions::default() }).expect("proxy");
    let conn = TcpStream::connect(proxy.host()).expect("connect");
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    write!(w, "GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.host()).expect("send");
    let (status, headers, _) = read_response(&mut r);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "connection"), Some("close"));
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("read to EOF");
    assert!(rest.is_empty(), "proxy kept talking after Connection: close");
}

#[test]
fn bandwidth_limited_proxy_still_delivers_every_byte() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let data: Vec<u8> = (0..512 * 1024u32).map(|i| (i.wrapping_mul(7) % 256) as u8).collect();
    let digest = sha256(&data);
    let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions { bandwidth: Some(4 * 1024 * 1024), ..FaultProxyOptions::default() })
        .expect("proxy");
    // Up through the throttle (POST, then PUT with the whole body) ...
    let r = http::request("POST", &format!("{}/v2/bw/test/blobs/uploads/", proxy.url()), &[], b"").expect("POST");
    assert_eq!(r.status, 202, "{}", r.text());
    let loc = r.header("Location").expect("Location").to_string();
    let put = if loc.starts_with('/') { format!("{}{loc}", proxy.url()) } else { loc };
    let sep = if put.contains('?') { '&' } else { '?' };
    let r = http::request("PUT", &format!("{put}{sep}digest={digest}"), &[], &data).expect("PUT");
    assert_eq!(r.status, 201, "{}", r.text());
    // ... and down again.
    let got = http::request("GET", &format!("{}/v2/bw/test/blobs/{digest}", proxy.url()), &[], b"").expect("GET");
    assert_eq!(got.status, 200);
    assert_eq!(sha256(&got.body), digest);
}

#[test]
fn reset_faults_cut_downloads_and_never_reach_upstream_for_uploads() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let digest = sha256(&data);
    let r = http::request("POST", &format!("{}/v2/cut/test/blobs/uploads/", reg.url()), &[], b"").expect("POST");
    let loc = r.header("Location").expect("Location").to_string();
    let put = if loc.starts_with('/') { format!("{}{loc}", reg.url()) } else { loc };
    let sep = if put.contains('?') { '&' } else { '?' };
    let r = http::request("PUT", &format!("{put}{sep}digest={digest}"), &[], &data).expect("PUT");
    assert_eq!(r.status, 201, "{}", r.text());

    let proxy = FaultProxy::start(
        &reg.host(),
        FaultProxyOptions { fault_rate: 1.0, kinds: vec![FaultKind::ResetMidBody], ..FaultProxyOptions::default() },
    )
    .expect("proxy");
    // A download is cut after the headers and part of the body.
    let blob = format!("{}/v2/cut/test/blobs/{digest}", proxy.url());
    let err = http::request("GET", &blob, &[], b"").expect_err("cut download must fail");
    assert!(!err.to_string().is_empty());
    // An upload is cut before it reaches the registry: the upload session stays empty.
    let r = http::request("POST", &format!("{}/v2/cut/other/blobs/uploads/", reg.url()), &[], b"").expect("POST");
    let loc = r.header("Location").expect("Location").to_string();
    let path = loc.split_once(&reg.host()).map_or(loc.as_str(), |(_, p)| p).to_string();
    let via_proxy = format!("{}{path}", proxy.url());
    assert!(http::request("PATCH", &via_proxy, &[], &data).is_err(), "cut upload must fail");
    let status = http::request("GET", &format!("{}{path}", reg.url()), &[], b"").expect("upload status");
    assert_eq!(status.status, 204);
    assert_eq!(status.header("Range"), Some("0-0"), "no byte of a cut upload may reach the registry");
    assert_eq!(proxy.faults_of(FaultKind::ResetMidBody), 2);
    assert_eq!(proxy.faults(), 2);
}
