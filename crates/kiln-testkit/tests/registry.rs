//! A real docker-registry starts, answers, and goes away.

use kiln_testkit::{http, require_tool, Registry};

#[test]
fn plain_registry_answers_v2() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().expect("start registry");
    let r = http::request("GET", &format!("{}/v2/", reg.url()), &[], b"").expect("GET /v2/");
    assert_eq!(r.status, 200, "log:\n{}", reg.log());
    assert_eq!(r.header("Docker-Distribution-API-Version"), Some("registry/2.0"));
    let pid = reg.pid();
    let dir = reg.storage_dir();
    assert!(dir.is_dir());
    drop(reg);
    // Drop waits for the child, so its /proc entry is gone (reaped), not a zombie.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "registry process {pid} still alive after drop");
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[test]
fn basic_auth_rejects_wrong_password_and_accepts_right_one() {
    if !require_tool("docker-registry") || !require_tool("htpasswd") {
        return;
    }
    let reg = Registry::start_basic("alice", "s3cret").expect("start registry");
    assert_eq!(reg.credentials(), Some(("alice", "s3cret")));
    let url = format!("{}/v2/", reg.url());
    let anon = http::request("GET", &url, &[], b"").expect("GET anonymous");
    assert_eq!(anon.status, 401);
    let challenge = anon.header("WWW-Authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic"), "challenge {challenge:?}");
    let wrong = http::basic_auth("alice", "wrong");
    let r = http::request("GET", &url, &[("Authorization", &wrong)], b"").expect("GET wrong");
    assert_eq!(r.status, 401, "wrong password must be refused");
    let right = http::basic_auth("alice", "s3cret");
    let r = http::request("GET", &url, &[("Authorization", &right)], b"").expect("GET right");
    assert_eq!(r.status, 200, "log:\n{}", reg.log());
}
