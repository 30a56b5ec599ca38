//! `--progress rawjson`: a real build pushed to a real registry writes only JSON lines on stderr,
//! with the documented events (see crates/kiln/src/progress/rawjson.rs), byte transfers included.
//!
//! Needs root (overlayfs, namespaces), busybox-static and docker-registry (all in scripts/deps).

mod support_build;

use std::collections::BTreeMap;

use serde_json::Value;
use support_build::{assert_ok, path_str, stderr, write_context, Kiln, BASE};

#[test]
fn a_pushed_build_reports_steps_output_transfers_and_messages_as_json_lines() {
    assert!(
        support_build::can_build() && kiln_testkit::require_tool("docker-registry"),
        "this test needs root, busybox-static and docker-registry: run scripts/deps as root"
    );
    let reg = kiln_testkit::Registry::start_plain().expect("start docker-registry");
    let k = Kiln::new();
    let ctx = k.path("ctx");
    // Random bytes do not compress: the layer is pushed as ~3 MiB, more than one progress report.
    write_context(&ctx, &[("Dockerfile", &format!("FROM {BASE}\nRUN head -c 3000000 /dev/urandom > /big && echo made-it\n"))]);
    let target = format!("{}/json/app:1", reg.host());
    let o = k.cmd(&["build", path_str(&ctx), "-t", &target, "--push", "--progress", "rawjson"]);
    assert_ok(&o, "kiln build --progress rawjson --push");

    let err = stderr(&o);
    let events: Vec<Value> =
        err.lines().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{err}"))).collect();
    for e in &events {
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "time: {e}");
    }
    let of = |name: &'static str| events.iter().filter(move |e| e["event"] == name);

    let run = "RUN head -c 3000000 /dev/urandom > /big && echo made-it";
    let start = of("step-start").find(|e| e["instruction"] == run).unwrap_or_else(|| panic!("no step-start for the RUN:\n{err}"));
    let step = start["step"].as_u64().expect("a step number");
    assert!(start["stage"].is_string(), "{start}");
    assert!(of("step-output").any(|e| e["step"] == step && e["line"] == "made-it" && e["instruction"] == run), "{err}");
    let end = of("step-end").find(|e| e["step"] == step).unwrap_or_else(|| panic!("no step-end for the RUN:\n{err}"));
    assert_eq!((end["status"].as_str(), end["cache"].clone()), (Some("done"), Value::Null), "{end}");
    assert!(end["seconds"].is_f64() && end["platform"].is_string(), "{end}");

    // Each blob pushed: reports that grow to its size, the last one complete.
    let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in of("transfer") {
        let what = t["what"].as_str().expect("what").to_string();
        let (done, total) = (t["done"].as_u64().expect("done"), t["total"].as_u64().expect("a pushed blob's size is known"));
        assert!(what.starts_with(&format!("push {target} sha256:")), "{t}");
        assert!(done <= total, "{t}");
        if let Some((before, _)) = last.get(&what) {
            assert!(done >= *before, "progress went back: {t}");
        }
        last.insert(what, (done, total));
    }
    assert!(last.len() >= 2, "the layer and the config are pushed: {last:?}\n{err}");
    assert!(last.values().all(|(done, total)| done == total), "{last:?}");
    assert!(last.values().any(|(_, total)| *total > 2 << 20), "the big layer: {last:?}");
    assert!(
        of("transfer").any(|t| t["total"].as_u64().is_some_and(|n| n > 2 << 20) && t["done"].as_u64() < t["total"].as_u64()),
        "the big layer's push was reported before it ended:\n{err}"
    );

    assert!(of("info").any(|e| e["message"].as_str().is_some_and(|m| m.starts_with(&format!("pushed {target} (sha256:")))), "{err}");
    assert!(of("info").any(|e| e["message"].as_str().is_some_and(|m| m.starts_with("kiln: built sha256:"))), "{err}");
}

/// Transfers named `cache REF sha256:…` (a layer fetched from a registry cache) and `pull IMAGE
/// sha256:…` (a base image pulled), each reported up to its size.
fn transfers_named(err: &str, prefix: &str) -> BTreeMap<String, (u64, Option<u64>)> {
    let mut last = BTreeMap::new();
    for l in err.lines() {
        let Ok(e) = serde_json::from_str::<Value>(l) else { continue };
        if e["event"] == "transfer" && e["what"].as_str().is_some_and(|w| w.starts_with(prefix)) {
            last.insert(e["what"].as_str().unwrap_or_default().to_string(), (e["done"].as_u64().unwrap_or(0), e["total"].as_u64()));
        }
    }
    last
}

#[test]
fn cache_imports_and_base_pulls_report_their_bytes() {
    assert!(
        support_build::can_build() && kiln_testkit::require_tool("docker-registry"),
        "this test needs root, busybox-static and docker-registry: run scripts/deps as root"
    );
    let reg = kiln_testkit::Registry::start_plain().expect("start docker-registry");
    let first = Kiln::reproducible();
    // The base in the registry, so that a wiped machine pulls it.
    let base = format!("{}/json/busybox:1", reg.host());
    assert_ok(&first.cmd(&["copy", &format!("store:{BASE}"), &base]), "kiln copy the base to the registry");
    let ctx = first.path("ctx");
    write_context(&ctx, &[("Dockerfile", &format!("FROM {base}\nRUN head -c 3000000 /dev/urandom > /big\n"))]);
    let cache = format!("type=registry,ref={}/json/cache:1", reg.host());
    let o = first.cmd(&["build", path_str(&ctx), "--cache-to", &format!("{cache},mode=max"), "--progress", "rawjson"]);
    assert_ok(&o, "cold build exporting the cache");
    let err = stderr(&o);
    let exported = transfers_named(&err, &format!("cache-export {}/json/cache:1 sha256:", reg.host()));
    assert!(
        exported.values().any(|(d, t)| Some(*d) == *t && *d > 2 << 20),
        "the 3 MB layer, uploaded to the cache to the end: {exported:?}\n{err}"
    );

    // A wiped machine, with an output that needs the layers locally: the cached layer is fetched.
    let second = Kiln::new();
    let out = second.path("out");
    let o = second.cmd(&[
        "build",
        path_str(&ctx),
        "--cache-from",
        &cache,
        "--progress",
        "rawjson",
        "-o",
        &format!("type=local,dest={}", path_str(&out)),
    ]);
    assert_ok(&o, "warm build on a wiped machine");
    let err = stderr(&o);
    let pulled = transfers_named(&err, &format!("pull {base} sha256:"));
    assert!(!pulled.is_empty() && pulled.values().all(|(d, t)| Some(*d) == *t), "the base pull, complete: {pulled:?}\n{err}");
    let fetched = transfers_named(&err, &format!("cache {}/json/cache:1 sha256:", reg.host()));
    assert!(fetched.values().any(|(d, t)| Some(*d) == *t && *d > 2 << 20), "the cached 3 MB layer, fetched to the end: {fetched:?}\n{err}");
    assert!(out.join("big").is_file());
}
