//! Issue 13's acceptance: `--cache-from/--cache-to type=gha` end to end with the real `kiln`
//! binary against `kiln_testkit::GhaService` (the GitHub Actions cache service v2 and its blob
//! store, on loopback), over the busybox base.
//!
//! A cold machine fills the cache, a wiped one (a brand new root with the same base) reads it. RUN
//! steps write random bytes, so an equal file after a rebuild proves the RUN did not run again. The
//! runner's environment (`ACTIONS_RESULTS_URL`, `ACTIONS_RUNTIME_TOKEN`) comes from the emulator.
//!
//! Needs root (overlayfs, namespaces) and busybox-static (see `support_cache::can_build`).

mod support_cache;

use std::path::PathBuf;
use std::time::Duration;

use kiln_testkit::{GhaOptions, GhaService};
use support_cache::{config_digest, layer_steps, stderr, warning_lines, write_context, Machine, TestDir};

const HOUR: Duration = Duration::from_secs(3600);
const MAIN: &str = "refs/heads/main";

/// A big incompressible layer (2.5 MB), a COPY, a RUN that writes random bytes, a config-only step
/// and a RUN on top of it.
const APP: &str = "\
FROM kiln.test/busybox:latest
RUN head -c 2500000 /dev/urandom > /big.bin
COPY a.txt /a.txt
RUN head -c16 /dev/urandom | od -x > /random.txt
ENV MODE=test
RUN cat /a.txt > /b.txt
";

fn app_context(t: &TestDir) -> PathBuf {
    let ctx = t.path("ctx");
    write_context(&ctx, &[("Dockerfile", APP), ("a.txt", "a\n")]);
    ctx
}

fn runner_env(svc: &GhaService, token: &str) -> Vec<(String, String)> {
    vec![("ACTIONS_RESULTS_URL".to_string(), svc.url()), ("ACTIONS_RUNTIME_TOKEN".to_string(), token.to_string())]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The one export entry of a build's metadata; asserts it succeeded and left nothing out.
fn clean_export(md: &serde_json::Value, err: &str) -> serde_json::Value {
    let exports = md["kiln.cache-exports"].as_array().cloned().unwrap_or_default();
    assert_eq!(exports.len(), 1, "one --cache-to, one export entry: {md:#}");
    let e = exports[0].clone();
    assert!(e.get("warning").is_none(), "the export must succeed: {e:#}\n--- stderr\n{err}");
    assert_eq!(e["unavailable"], 0, "no record left out: {e:#}\n--- stderr\n{err}");
    e
}

/// A cold build with `--cache-to type=gha,scope=app,mode=max`: every step misses and is exported.
fn cold_build(t: &TestDir, name: &str, env: &[(String, String)]) -> (Machine, serde_json::Value) {
    let ctx = app_context(t);
    let cold = t.machine(name, &t.docker_config(name));
    let (err, md) = cold.build_ok(&ctx, &["-t", "kiln.test/app:cold", "--cache-to", "type=gha,scope=app,mode=max"], &as_refs(env));
    let steps = layer_steps(&md);
    assert_eq!(steps.len(), 4, "four steps with a layer (the ENV only changes the config): {steps:#?}");
    assert!(steps.iter().all(|s| s.cache == "miss"), "a fresh root has nothing cached: {steps:#?}");
    let e = clean_export(&md, &err);
    assert!(e["exported"].as_u64().unwrap_or(0) >= steps.len() as u64, "mode=max exports every step: {e:#}");
    (cold, md)
}

/// A warm build on a new machine reading `type=gha,scope=app`: every step hits, same image, and
/// not one warning line. Returns its stderr.
fn warm_build_hits_everything(t: &TestDir, name: &str, env: &[(String, String)], cold: &Machine, cold_md: &serde_json::Value) -> String {
    let ctx = app_context(t);
    let warm = t.machine(name, &t.docker_config(name));
    let (err, md) = warm.build_ok(&ctx, &["-t", "kiln.test/app:warm", "--cache-from", "type=gha,scope=app"], &as_refs(env));
    for s in layer_steps(&md) {
        assert_eq!(s.cache, "hit-registry", "every step of the warm rebuild comes from the gha cache, but {s:?}\n--- stderr\n{err}");
    }
    assert_eq!(config_digest(&md), config_digest(cold_md), "a build entirely from the cache gives the cold build's image");
    assert_eq!(warning_lines(&err), Vec::<String>::new(), "no warning about the cache\n--- stderr\n{err}");
    assert_eq!(
        warm.run("kiln.test/app:warm", &["cat", "/random.txt"]),
        cold.run("kiln.test/app:cold", &["cat", "/random.txt"]),
        "the RUN's random output is the cold build's: it did not run again"
    );
    err
}

#[test]
fn two_second_urls_and_slow_blobs_still_export_every_step_and_warm_hits_every_step() {
    if !support_cache::can_build() {
        return;
    }
    // 400 kB/s: the 2.5 MB layer takes about six seconds each way, three URL lifetimes.
    let svc = GhaService::start(GhaOptions {
        download_url_lifetime: Duration::from_secs(2),
        upload_url_lifetime: Duration::from_secs(2),
        throttle: Some(400_000),
        ..GhaOptions::default()
    })
    .expect("gha emulator");
    let env = runner_env(&svc, &svc.mint_token(&[], Some(MAIN), HOUR));
    let t = TestDir::new();
    let (cold, md1) = cold_build(&t, "cold", &env);
    let uploaded = svc.throttled_bytes();
    assert!(uploaded >= 2_500_000, "the big layer went through the throttle: {uploaded} bytes");
    assert!(svc.entries().iter().any(|e| e.key.starts_with("kiln-index-app-") && e.finalized), "an index entry: {:#?}", svc.entries());
    warm_build_hits_everything(&t, "warm", &env, &cold, &md1);
    assert!(svc.throttled_bytes() >= uploaded + 2_500_000, "the warm build downloaded the big layer through the throttle");
}

#[test]
fn rate_limits_and_busy_blobs_do_not_fail_the_build() {
    if !support_cache::can_build() {
        return;
    }
    let svc = GhaService::start(GhaOptions {
        twirp_429_rate: 0.10,
        retry_after: Duration::from_secs(1),
        blob_503_rate: 0.05,
        seed: 13,
        ..GhaOptions::default()
    })
    .expect("gha emulator");
    let env = runner_env(&svc, &svc.mint_token(&[], Some(MAIN), HOUR));
    let t = TestDir::new();
    let (cold, md1) = cold_build(&t, "cold", &env);
    warm_build_hits_everything(&t, "warm", &env, &cold, &md1);
    assert!(svc.rejected_429() + svc.rejected_503() > 0, "faults were injected: {} 429s, {} 503s", svc.rejected_429(), svc.rejected_503());
}

fn branch_dockerfile() -> &'static str {
    "FROM kiln.test/busybox:latest\nARG BRANCH\nRUN echo \"$BRANCH\" > /branch.txt && head -c16 /dev/urandom | od -x > /r.txt\n"
}

#[test]
fn two_exports_to_one_scope_at_once_keep_both_branches_records() {
    if !support_cache::can_build() {
        return;
    }
    let svc = GhaService::start(GhaOptions::default()).expect("gha emulator");
    let env = runner_env(&svc, &svc.mint_token(&[], Some(MAIN), HOUR));
    let t = TestDir::new();
    let ctx = t.path("ctx");
    write_context(&ctx, &[("Dockerfile", branch_dockerfile())]);
    let machines: Vec<Machine> = ["one", "two"].iter().map(|b| t.machine(b, &t.docker_config(b))).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = ["one", "two"]
            .iter()
            .zip(&machines)
            .map(|(b, m)| {
                let (ctx, env) = (&ctx, &env);
                s.spawn(move || {
                    let arg = format!("BRANCH={b}");
                    let (err, md) = m.build_ok(ctx, &["--build-arg", &arg, "--cache-to", "type=gha,scope=app,mode=max"], &as_refs(env));
                    clean_export(&md, &err);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a branch build");
        }
    });
    let indexes = svc.entries().into_iter().filter(|e| e.key.starts_with("kiln-index-app-") && e.finalized).count();
    assert!(indexes >= 2, "each export wrote its own index generation: {:#?}", svc.entries());
    let fresh = t.machine("fresh", &t.docker_config("fresh"));
    for b in ["one", "two"] {
        let arg = format!("BRANCH={b}");
        let (err, md) = fresh.build_ok(&ctx, &["--build-arg", &arg, "--cache-from", "type=gha,scope=app"], &as_refs(&env));
        for s in layer_steps(&md) {
            assert_eq!(s.cache, "hit-registry", "branch {b}'s records survived the other's export, but {s:?}\n--- stderr\n{err}");
        }
    }
}

#[test]
fn a_read_only_token_reads_hits_writes_nothing_and_says_why_once() {
    if !support_cache::can_build() {
        return;
    }
    let svc = GhaService::start(GhaOptions::default()).expect("gha emulator");
    let t = TestDir::new();
    let (_cold, _) = cold_build(&t, "main", &runner_env(&svc, &svc.mint_token(&[], Some(MAIN), HOUR)));
    let (entries, creates) = (svc.entries().len(), svc.calls("CreateCacheEntry"));

    // A pull request from a fork: it may read main's cache and write nowhere.
    let fork = runner_env(&svc, &svc.mint_token(&[MAIN], None, HOUR));
    let ctx = app_context(&t);
    let pr = t.machine("fork", &t.docker_config("fork"));
    let (o, md) = pr.build(&ctx, &["--cache-from", "type=gha,scope=app", "--cache-to", "type=gha,scope=app,mode=max"], &as_refs(&fork));
    assert!(o.status.success(), "the build succeeds:\n{}", stderr(&o));
    let err = stderr(&o);
    let md = md.expect("metadata");
    for s in layer_steps(&md) {
        assert_eq!(s.cache, "hit-registry", "a read-only token still reads: {s:?}\n--- stderr\n{err}");
    }
    let warnings = warning_lines(&err);
    assert_eq!(warnings.len(), 1, "one line says why nothing is written: {warnings:#?}\n--- stderr\n{err}");
    assert!(warnings[0].contains("type=gha,scope=app") && warnings[0].contains("only read"), "{:?}", warnings[0]);
    assert_eq!(svc.entries().len(), entries, "nothing was written");
    assert_eq!(svc.calls("CreateCacheEntry"), creates, "not even a reservation was tried");
}

/// GitHub Enterprise Server's legacy service (v1): the runner sets only `ACTIONS_CACHE_URL`. With
/// 2-second download URLs, a throttled blob store and 10% of calls answered 429, a cold build
/// exports every step through v1's chunked uploads and a wiped machine hits every step.
#[test]
fn the_legacy_v1_service_of_enterprise_server_exports_and_hits_every_step() {
    if !support_cache::can_build() {
        return;
    }
    let svc = GhaService::start(GhaOptions {
        download_url_lifetime: Duration::from_secs(2),
        throttle: Some(400_000),
        twirp_429_rate: 0.10,
        seed: 7,
        ..GhaOptions::default()
    })
    .expect("gha emulator");
    let env = vec![
        ("ACTIONS_CACHE_URL".to_string(), svc.cache_url()),
        ("ACTIONS_RUNTIME_TOKEN".to_string(), svc.mint_token(&[], Some(MAIN), HOUR)),
        ("GITHUB_SERVER_URL".to_string(), "https://ghe.example.com".to_string()),
    ];
    let t = TestDir::new();
    let (cold, md1) = cold_build(&t, "cold", &env);
    assert!(svc.calls("v1/UploadCache") >= 4, "the layers went up through v1's PATCH: {}", svc.calls("v1/UploadCache"));
    assert!(svc.calls("v1/CommitCache") >= 5, "layers and the index were committed: {}", svc.calls("v1/CommitCache"));
    assert_eq!(svc.calls("CreateCacheEntry"), 0, "nothing spoke v2");
    warm_build_hits_everything(&t, "warm", &env, &cold, &md1);
    assert!(svc.calls("v1/GetCacheEntry") > 0);
}
