//! Token auth end to end against the real docker-registry.

use std::time::Duration;

use kiln_testkit::{http, require_tool, Registry, TokenServerOptions};

fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_default()
}

fn token_from(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("token response is JSON")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn token_auth_challenge_fetch_use_and_expiry() {
    if !require_tool("docker-registry") {
        return;
    }
    // Short, but with slack so a loaded CI machine still uses the token in time.
    let lifetime = Duration::from_secs(3);
    let reg = Registry::start_token(TokenServerOptions {
        lifetime,
        read_only: Some(("reader".into(), "readpw".into())),
        ..TokenServerOptions::default()
    })
    .expect("start token registry");
    let ts = reg.token_server().expect("token server");
    let (user, pass) = reg.credentials().expect("credentials");

    // 1. The registry challenges with Bearer realm/service/scope.
    let list = format!("{}/v2/demo/app/tags/list", reg.url());
    let r = http::request("GET", &list, &[], b"").expect("anonymous GET");
    assert_eq!(r.status, 401);
    let (scheme, params) = http::parse_challenge(r.header("WWW-Authenticate").expect("challenge header")).expect("parse challenge");
    assert_eq!(scheme, "Bearer");
    assert_eq!(param(&params, "realm"), ts.realm());
    assert_eq!(param(&params, "service"), ts.service());
    assert_eq!(param(&params, "scope"), "repository:demo/app:pull");

    // 2. A wrong password is refused by the token server.
    let token_url = |scope: &str| format!("{}?service={}&scope={}", param(&params, "realm"), enc(param(&params, "service")), enc(scope));
    let bad = http::basic_auth(user, "nope");
    let r = http::request("GET", &token_url("repository:demo/app:pull"), &[("Authorization", &bad)], b"").expect("token GET");
    assert_eq!(r.status, 401);
    assert_eq!(ts.tokens_issued(), 0);

    // 3. The right password gets a token the registry accepts.
    let good = http::basic_auth(user, pass);
    let r = http::request("GET", &token_url("repository:demo/app:pull,push"), &[("Authorization", &good)], b"").expect("token GET");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = token_from(&r.body);
    assert_eq!(body["expires_in"], 3);
    assert_eq!(body["token"], body["access_token"]);
    let token = body["token"].as_str().expect("token string").to_string();
    assert_eq!(ts.tokens_issued(), 1);
    let bearer = format!("Bearer {token}");
    let r = http::request("GET", &list, &[("Authorization", &bearer)], b"").expect("GET with token");
    // 404 NAME_UNKNOWN: authorised, the repository just does not exist yet.
    assert_eq!(r.status, 404, "token refused; registry log:\n{}", reg.log());
    let r = http::request("POST", &format!("{}/v2/demo/app/blobs/uploads/", reg.url()), &[("Authorization", &bearer)], b"")
        .expect("start upload");
    assert_eq!(r.status, 202, "push scope refused; log:\n{}", reg.log());

    // 4. After its lifetime the same token is rejected by the registry.
    std::thread::sleep(lifetime + Duration::from_millis(1500));
    let r = http::request("GET", &list, &[("Authorization", &bearer)], b"").expect("GET with old token");
    assert_eq!(r.status, 401, "expired token still accepted");
}

#[test]
fn read_only_user_cannot_push_and_refresh_tokens_work() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg =
        Registry::start_token(TokenServerOptions { read_only: Some(("reader".into(), "readpw".into())), ..TokenServerOptions::default() })
            .expect("start token registry");
    let ts = reg.token_server().expect("token server");
    let scope = "repository:ro/app:pull,push";

    // OAuth2 password grant for the read-only user, asking for a refresh token.
    let form = format!(
        "grant_type=password&username=reader&password=readpw&service={}&scope={}&client_id=kiln-test&access_type=offline",
        enc(ts.service()),
        enc(scope)
    );
    let r =
        http::request("POST", &ts.realm(), &[("Content-Type", "application/x-www-form-urlencoded")], form.as_bytes()).expect("POST token");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = token_from(&r.body);
    let refresh = body["refresh_token"].as_str().expect("refresh token").to_string();
    let bearer = format!("Bearer {}", body["access_token"].as_str().expect("access token"));
    let upload = format!("{}/v2/ro/app/blobs/uploads/", reg.url());
    let r = http::request("POST", &upload, &[("Authorization", &bearer)], b"").expect("POST upload");
    assert_eq!(r.status, 401, "read-only token must not push");
    let r = http::request("GET", &format!("{}/v2/ro/app/tags/list", reg.url()), &[("Authorization", &bearer)], b"").expect("GET tags");
    assert_eq!(r.status, 404, "read-only token must pull; log:\n{}", reg.log());

    // Refresh grant: a new access token, counted.
    let before = ts.tokens_issued();
    let form =
        format!("grant_type=refresh_token&refresh_token={refresh}&service={}&scope={}&client_id=kiln-test", enc(ts.service()), enc(scope));
    let r = http::request("POST", &ts.realm(), &[], form.as_bytes()).expect("refresh");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(token_from(&r.body)["access_token"].is_string());
    assert_eq!(ts.tokens_issued(), before + 1);

    // An unknown refresh token is refused.
    let form = format!("grant_type=refresh_token&refresh_token=bogus&service={}", enc(ts.service()));
    let r = http::request("POST", &ts.realm(), &[], form.as_bytes()).expect("bad refresh");
    assert_eq!(r.status, 401);
    assert!(ts.requests_rejected() >= 1);
}

#[test]
fn anonymous_pull_and_directly_minted_tokens() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg =
        Registry::start_token(TokenServerOptions { anonymous_pull: true, ..TokenServerOptions::default() }).expect("start token registry");
    let ts = reg.token_server().expect("token server");
    let url = format!("{}?service={}&scope={}", ts.realm(), enc(ts.service()), enc("repository:anon/app:pull,push"));
    let r = http::request("GET", &url, &[], b"").expect("anonymous token");
    assert_eq!(r.status, 200, "{}", r.text());
    let bearer = format!("Bearer {}", token_from(&r.body)["token"].as_str().expect("token"));
    let tags = format!("{}/v2/anon/app/tags/list", reg.url());
    let upload = format!("{}/v2/anon/app/blobs/uploads/", reg.url());
    assert_eq!(http::request("GET", &tags, &[("Authorization", &bearer)], b"").expect("GET").status, 404);
    assert_eq!(http::request("POST", &upload, &[("Authorization", &bearer)], b"").expect("POST").status, 401, "anonymous users only pull");

    let minted = format!("Bearer {}", ts.issue(&["repository:anon/app:pull,push"]).expect("mint"));
    let r = http::request("POST", &upload, &[("Authorization", &minted)], b"").expect("POST");
    assert_eq!(r.status, 202, "minted push token refused; log:\n{}", reg.log());
    assert_eq!(ts.tokens_issued(), 2);
}
