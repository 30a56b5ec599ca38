//! Issue 5's acceptance: the registry-backed build cache, end to end with the real `kiln` binary
//! against real `docker-registry` instances, over the busybox base.
//!
//! Each test builds on "machines" (private `--root`s, see `support_cache`): a cold machine fills
//! a cache ref, a wiped one (a brand new root) reads it. RUN steps write random bytes, so an equal
//! file after a rebuild proves the RUN did not execute again. CI variables are scrubbed from every
//! child; the policy tests set GitHub Actions' own on purpose.
//!
//! Needs root (overlayfs, namespaces), busybox-static, skopeo and docker-registry; the platform
//! test also needs `scripts/deps` (qemu-aarch64 binfmt and the arm64 busybox).

mod support_cache;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln_testkit::{FaultKind, FaultProxy, FaultProxyOptions, Registry, TokenServerOptions};
use support_cache::{
    config_digest, digest, layer_steps, manifest_digest, path_str, policy, raw_manifest, stderr, warning_lines, write_context, Machine,
    TestDir,
};

/// Two stages, several RUN and COPY steps, RUNs that write random bytes (so re-running one is
/// visible), and a late `COPY late.txt` with one RUN after it.
const APP: &str = "\
FROM kiln.test/busybox:latest AS builder
RUN mkdir /out && head -c16 /dev/urandom | od -x > /out/builder-random.txt
COPY src/ /out/src/
RUN cat /out/src/a.txt /out/src/b.txt > /out/joined.txt
FROM kiln.test/busybox:latest
COPY --from=builder /out /app
RUN head -c16 /dev/urandom | od -x > /app/final-random.txt
WORKDIR /app
COPY early.txt ./
ENV MODE=test
RUN cat early.txt joined.txt > combined.txt
COPY late.txt ./
RUN cat late.txt >> combined.txt && head -c16 /dev/urandom | od -x > /app/late-random.txt
CMD [\"cat\", \"/app/combined.txt\"]
";

fn app_context(t: &TestDir, late: &str) -> PathBuf {
    let ctx = t.path("ctx");
    write_context(&ctx, &[("Dockerfile", APP), ("src/a.txt", "a\n"), ("src/b.txt", "b\n"), ("early.txt", "early\n"), ("late.txt", late)]);
    ctx
}

fn cache_to_max(reference: &str) -> String {
    format!("type=registry,ref={reference},mode=max")
}

fn cache_from(reference: &str) -> String {
    format!("type=registry,ref={reference}")
}

/// The random files the app's RUN steps wrote, read back through `kiln run`.
fn random_files(m: &Machine, image: &str) -> (String, String, String) {
    (
        m.run(image, &["cat", "/app/builder-random.txt"]),
        m.run(image, &["cat", "/app/final-random.txt"]),
        m.run(image, &["cat", "/app/late-random.txt"]),
    )
}

/// Index of the first step whose instruction starts with `prefix`.
fn position(steps: &[support_cache::Step], prefix: &str) -> usize {
    steps.iter().position(|s| s.instruction.starts_with(prefix)).unwrap_or_else(|| panic!("no step starting with `{prefix}` in {steps:#?}"))
}

/// `kiln cache ls REF`'s record lines (header dropped).
fn cache_ls(m: &Machine, reference: &str) -> Vec<String> {
    let out = m.ok(&["cache", "ls", reference], &[]);
    out.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn warm_rebuild_on_a_wiped_machine_hits_the_registry_everywhere() {
    if !support_cache::can_build() {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let reference = format!("{}/cache/app:main", reg.host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let ctx = app_context(&t, "late-1\n");

    let cold = t.machine("cold", &dc);
    let cold_ref = format!("{}/app:cold", reg.host());
    let (_, md1) = cold.build_ok(&ctx, &["-t", "kiln.test/app:cold", "-t", &cold_ref, "--cache-to", &cache_to_max(&reference)], &[]);
    let first = layer_steps(&md1);
    assert_eq!(first.len(), 10, "ten cacheable steps (3 in the builder stage, 7 in the final one, WORKDIR included): {first:#?}");
    assert!(first.iter().all(|s| s.cache == "miss"), "a fresh root with no --cache-from has nothing cached: {first:#?}");
    let exports = md1["kiln.cache-exports"].as_array().cloned().unwrap_or_default();
    assert_eq!(exports.len(), 1, "one --cache-to, one export entry: {md1:#}");
    assert!(exports[0].get("warning").is_none(), "the export must succeed: {:#}", exports[0]);
    assert!(manifest_digest(&reference, None).is_some(), "the export wrote {reference}");
    let cold_random = random_files(&cold, "kiln.test/app:cold");
    cold.ok(&["push", &cold_ref], &[]);
    cold.wipe();

    // The wiped machine: the cold root is gone, a new one gets the same base imported the same way.
    let warm = t.machine("warm", &dc);
    let warm_ref = format!("{}/app:warm", reg.host());
    let (err2, md2) = warm.build_ok(&ctx, &["-t", "kiln.test/app:warm", "-t", &warm_ref, "--cache-from", &cache_from(&reference)], &[]);
    let second = layer_steps(&md2);
    let names = |v: &[support_cache::Step]| v.iter().map(|s| (s.stage.clone(), s.instruction.clone())).collect::<Vec<_>>();
    assert_eq!(names(&second), names(&first), "the same steps on the wiped machine");
    for s in &second {
        assert_eq!(s.cache, "hit-registry", "every step of the warm rebuild comes from the registry cache, but {s:?}\n--- stderr\n{err2}");
    }
    // The store holds the cold build's own layers as plain tar and the cached ones as the gzip blobs
    // the cache holds, so the local manifests differ; the image (config: every diff id, the history)
    // is the same, and so is what reaches a registry.
    assert_eq!(config_digest(&md2), config_digest(&md1), "a build entirely from the cache gives the cold build's image");
    warm.ok(&["push", &warm_ref], &[]);
    assert_eq!(
        manifest_digest(&warm_ref, None),
        manifest_digest(&cold_ref, None),
        "pushed, the warm build's image has the cold build's manifest digest"
    );
    assert_eq!(
        random_files(&warm, "kiln.test/app:warm"),
        cold_random,
        "the RUN steps' random output is the cold build's: no RUN executed on the wiped machine"
    );
    assert_eq!(warm.run("kiln.test/app:warm", &[]), "early\na\nb\nlate-1\n");
}

#[test]
fn changing_a_late_copy_source_misses_from_that_copy_on_and_explain_names_the_file() {
    if !support_cache::can_build() {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let reference = format!("{}/cache/app:main", reg.host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let ctx = app_context(&t, "late-1\n");
    let cold = t.machine("cold", &dc);
    let (_, md1) = cold.build_ok(&ctx, &["-t", "kiln.test/app:cold", "--cache-to", &cache_to_max(&reference)], &[]);
    let cold_random = random_files(&cold, "kiln.test/app:cold");
    cold.wipe();

    write_context(&ctx, &[("late.txt", "late-2\n")]);
    let warm = t.machine("warm", &dc);
    let (err, md2) = warm.build_ok(&ctx, &["-t", "kiln.test/app:warm", "--cache-from", &cache_from(&reference)], &[]);
    let all = layer_steps(&md2);
    let final_stage = all.last().map(|s| s.stage.clone()).expect("steps");
    let in_final: Vec<_> = all.iter().filter(|s| s.stage == final_stage).cloned().collect();
    let copy_at = position(&in_final, "COPY late.txt");
    for s in all.iter().filter(|s| s.stage != final_stage) {
        assert_eq!(s.cache, "hit-registry", "the builder stage is unchanged: {s:?} in {all:#?}");
    }
    for (i, s) in in_final.iter().enumerate() {
        let want = if i < copy_at { "hit-registry" } else { "miss" };
        assert_eq!(s.cache, want, "final-stage step {i} ({}) after changing late.txt: {all:#?}", s.instruction);
    }
    assert_ne!(digest(&md2), digest(&md1), "new content, new image");
    let (b, f, l) = random_files(&warm, "kiln.test/app:warm");
    assert_eq!((&b, &f), (&cold_random.0, &cold_random.1), "the RUNs before the changed COPY did not execute");
    assert_ne!(l, cold_random.2, "the RUN after the changed COPY executed");
    assert_eq!(warm.run("kiln.test/app:warm", &[]), "early\na\nb\nlate-2\n");

    let explain = warm.ok(&["cache", "explain"], &[]);
    assert!(explain.contains("late.txt"), "`kiln cache explain` must name the changed file late.txt:\n{explain}");
    let copy_line = explain
        .lines()
        .position(|l| l.starts_with("COPY late.txt"))
        .unwrap_or_else(|| panic!("`kiln cache explain` must list the missed step `COPY late.txt ./`:\n{explain}"));
    let why = explain.lines().nth(copy_line + 1).unwrap_or_default();
    assert!(why.contains("late.txt"), "the reason under `COPY late.txt ./` names the file: {why:?}\n{explain}");
    assert!(err.contains("late.txt"), "the build summary explains the miss too:\n{err}");
    let misses = md2["kiln.cache-misses"].to_string();
    assert!(misses.contains("late.txt"), "kiln.cache-misses names the file: {misses}");
}

// ---------------------------------------------------------------------------------------------
// Policy

/// A GitHub webhook payload for a `pull_request` event, trimmed to what matters: the base and head
/// repositories (a fork's head repo has another full_name and `fork: true`).
fn pull_request_payload(repo: &str, head_repo: &str) -> String {
    let fork = repo != head_repo;
    serde_json::json!({
        "action": "synchronize",
        "number": 1,
        "pull_request": {
            "number": 1,
            "head": {
                "ref": "feature",
                "sha": "0123456789abcdef0123456789abcdef01234567",
                "repo": { "full_name": head_repo, "fork": fork, "default_branch": "main" }
            },
            "base": {
                "ref": "main",
                "repo": { "full_name": repo, "fork": false, "default_branch": "main" }
            }
        },
        "repository": { "full_name": repo, "fork": false, "default_branch": "main" }
    })
    .to_string()
}

fn push_payload(repo: &str) -> String {
    serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": "0123456789abcdef0123456789abcdef01234567",
        "repository": { "full_name": repo, "fork": false, "default_branch": "main" },
        "pusher": { "name": "alice" }
    })
    .to_string()
}

fn github_env(event: &str, git_ref: &str, payload: &Path) -> Vec<(String, String)> {
    [
        ("CI", "true"),
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_EVENT_NAME", event),
        ("GITHUB_EVENT_PATH", path_str(payload)),
        ("GITHUB_REPOSITORY", "acme/app"),
        ("GITHUB_REF", git_ref),
        ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
        ("GITHUB_RUN_ID", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Fills a ref from a cold machine (no CI), then builds changed content on a wiped machine with
/// `--cache-from` and `--cache-to` the ref under a GitHub pull request event. Asserts the cache was
/// read, the ref did not move, and the policy is read-only; returns the policy's reason.
fn pull_request_reads_but_never_writes(head_repo: &str) -> String {
    let reg = Registry::start_plain().expect("registry");
    let reference = format!("{}/cache/app:main", reg.host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let ctx = app_context(&t, "late-main\n");
    t.machine("main", &dc).build_ok(&ctx, &["--cache-to", &cache_to_max(&reference)], &[]);
    let before = manifest_digest(&reference, None).expect("the main build wrote the ref");

    // New content, so the build has records the ref lacks: were export allowed, it would write.
    write_context(&ctx, &[("late.txt", "late-pr\n")]);
    let payload = t.path("event.json");
    std::fs::write(&payload, pull_request_payload("acme/app", head_repo)).expect("write event payload");
    let env = github_env("pull_request", "refs/pull/1/merge", &payload);
    let pr = t.machine("pr", &dc);
    let (err, md) = pr.build_ok(&ctx, &["--cache-from", &cache_from(&reference), "--cache-to", &cache_to_max(&reference)], &as_refs(&env));
    let (p, reason) = policy(&md);
    assert_eq!(p, "read-only", "a pull request event reads the cache only: {reason}");
    // The cache was read: everything up to the changed `COPY late.txt` comes from the ref.
    let layer = layer_steps(&md);
    let copy_at = position(&layer, "COPY late.txt");
    for (i, s) in layer.iter().enumerate() {
        let want = if i < copy_at { "hit-registry" } else { "miss" };
        assert_eq!(s.cache, want, "step {i} ({}) of the pull request build: {layer:#?}", s.instruction);
    }
    assert_eq!(
        manifest_digest(&reference, None).as_deref(),
        Some(before.as_str()),
        "a pull request build must not move the cache ref\n{err}"
    );
    reason
}

#[test]
fn pull_request_event_reads_the_cache_and_leaves_the_ref_alone() {
    if !support_cache::can_build() {
        return;
    }
    let reason = pull_request_reads_but_never_writes("acme/app");
    assert!(reason.contains("pull_request"), "the reason names the event: {reason}");
    assert!(!reason.contains("fork"), "a same-repository pull request is not a fork: {reason}");
}

#[test]
fn fork_pull_request_reads_the_cache_and_leaves_the_ref_alone() {
    if !support_cache::can_build() {
        return;
    }
    let reason = pull_request_reads_but_never_writes("mallory/app");
    assert!(reason.contains("fork"), "the reason says the pull request comes from a fork: {reason}");
    assert!(reason.contains("mallory/app"), "the reason names the fork: {reason}");
}

#[test]
fn push_to_main_event_updates_the_ref() {
    if !support_cache::can_build() {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let reference = format!("{}/cache/app:main", reg.host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let ctx = app_context(&t, "late-1\n");
    t.machine("first", &dc).build_ok(&ctx, &["--cache-to", &cache_to_max(&reference)], &[]);
    let before = manifest_digest(&reference, None).expect("the first build wrote the ref");
    let before_records = cache_ls(&t.machine("lister", &dc), &reference).len();

    write_context(&ctx, &[("late.txt", "late-2\n")]);
    let payload = t.path("event.json");
    std::fs::write(&payload, push_payload("acme/app")).expect("write event payload");
    let env = github_env("push", "refs/heads/main", &payload);
    let m = t.machine("push", &dc);
    let (_, md) = m.build_ok(&ctx, &["--cache-from", &cache_from(&reference), "--cache-to", &cache_to_max(&reference)], &as_refs(&env));
    let (p, reason) = policy(&md);
    assert_eq!(p, "read-write", "a push to the default branch writes the cache: {reason}");
    assert!(reason.contains("main"), "the reason names the branch: {reason}");
    let after = manifest_digest(&reference, None).expect("ref still there");
    assert_ne!(after, before, "the push build updated the ref");
    let after_records = cache_ls(&m, &reference).len();
    assert!(
        after_records > before_records,
        "the new records were merged in, keeping the old ones: {before_records} records before, {after_records} after"
    );
}

// ---------------------------------------------------------------------------------------------
// Failures that must not fail the build

#[test]
fn missing_ref_on_the_first_build_is_one_warning() {
    if !support_cache::can_build() {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let reference = format!("{}/cache/never-written:main", reg.host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let ctx = app_context(&t, "late-1\n");
    let m = t.machine("first", &dc);
    let (err, md) = m.build_ok(&ctx, &["--cache-from", &cache_from(&reference), "--cache-to", &cache_to_max(&reference)], &[]);
    let warnings = warning_lines(&err);
    assert_eq!(warnings.len(), 1, "exactly one warning line, about the missing ref; got {warnings:#?}\n--- stderr\n{err}");
    assert!(warnings[0].contains(&reference), "the warning names the ref {reference}: {:?}", warnings[0]);
    assert!(layer_steps(&md).iter().all(|s| s.cache == "miss"), "nothing to hit: {:#?}", layer_steps(&md));
    assert!(manifest_digest(&reference, None).is_some(), "the export then created the ref");
}

/// A registry started and stopped again: its port refuses connections.
fn dead_registry_host() -> String {
    let reg = Registry::start_plain().expect("registry");
    let host = reg.host();
    drop(reg);
    host
}

#[test]
fn registry_down_during_export_is_a_warning_unless_ignore_error_is_false() {
    if !support_cache::can_build() {
        return;
    }
    let reference = format!("{}/cache/app:main", dead_registry_host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let ctx = app_context(&t, "late-1\n");
    let m = t.machine("m", &dc);
    let (err, md) = m.build_ok(&ctx, &["-t", "kiln.test/app:1", "--cache-to", &cache_to_max(&reference)], &[]);
    let warnings = warning_lines(&err);
    assert!(
        warnings.iter().any(|w| w.contains(&reference)),
        "a warning names the unreachable ref {reference}: {warnings:#?}\n--- stderr\n{err}"
    );
    let exports = md["kiln.cache-exports"].to_string();
    assert!(exports.contains("warning"), "the metadata records the failed export: {exports}");
    assert_eq!(m.run("kiln.test/app:1", &[]), "early\na\nb\nlate-1\n", "the image was built and tagged");

    let strict = format!("{},ignore-error=false", cache_to_max(&reference));
    let (o, _) = m.build(&ctx, &["--cache-to", &strict], &[]);
    assert_eq!(o.status.code(), Some(1), "ignore-error=false turns the failed export into a failed build:\n{}", stderr(&o));
    assert!(stderr(&o).contains(&reference), "the error names the ref {reference}:\n{}", stderr(&o));
}

#[test]
fn registry_failing_every_request_during_export_is_a_warning() {
    if !support_cache::can_build() {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let proxy = FaultProxy::start(
        &reg.host(),
        FaultProxyOptions { fault_rate: 1.0, kinds: vec![FaultKind::ServerError, FaultKind::ResetMidBody], ..FaultProxyOptions::default() },
    )
    .expect("fault proxy");
    let reference = format!("{}/cache/app:main", proxy.host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let ctx = app_context(&t, "late-1\n");
    let m = t.machine("m", &dc);
    let (err, md) = m.build_ok(&ctx, &["--cache-to", &cache_to_max(&reference)], &[]);
    assert!(proxy.faults() > 0, "the export did talk to the failing registry");
    assert!(warning_lines(&err).iter().any(|w| w.contains(&reference)), "a warning names the failing ref {reference}:\n{err}");
    assert!(md["kiln.cache-exports"].to_string().contains("warning"), "metadata: {:#}", md["kiln.cache-exports"]);
    proxy.set_fault_rate(0.0);
    assert!(raw_manifest(&reference, None).is_none(), "nothing was written through the failing proxy");
}

#[test]
fn read_only_credential_turns_export_off_with_a_warning_and_fails_with_ignore_error_false() {
    if !support_cache::can_build() {
        return;
    }
    let reg = Registry::start_token(TokenServerOptions {
        read_only: Some(("reader".into(), "reader-password".into())),
        ..TokenServerOptions::default()
    })
    .expect("token registry");
    let (writer, writer_pw) = reg.credentials().expect("token registry credentials");
    let (writer, writer_pw) = (writer.to_string(), writer_pw.to_string());
    let creds = Some((writer.as_str(), writer_pw.as_str()));
    let reference = format!("{}/cache/app:main", reg.host());
    let t = TestDir::new();
    let ctx = app_context(&t, "late-1\n");

    let writer_dc = t.docker_config("writer");
    let w = t.machine("writer", &writer_dc);
    w.login(&reg.host(), &writer, &writer_pw);
    w.build_ok(&ctx, &["--cache-to", &cache_to_max(&reference)], &[]);
    let before = manifest_digest(&reference, creds).expect("the writer filled the ref");

    let reader_dc = t.docker_config("reader");
    let r = t.machine("reader", &reader_dc);
    r.login(&reg.host(), "reader", "reader-password");
    write_context(&ctx, &[("late.txt", "late-reader\n")]);
    let to = cache_to_max(&reference);
    let (err, md) = r.build_ok(&ctx, &["--cache-from", &cache_from(&reference), "--cache-to", &to], &[]);
    assert!(
        layer_steps(&md).iter().any(|s| s.cache == "hit-registry"),
        "a read-only credential still reads the cache: {:#?}",
        layer_steps(&md)
    );
    let warnings = warning_lines(&err);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&reference)
                && ["401", "403", "denied", "cannot write"].iter().any(|why| w.to_ascii_lowercase().contains(why))),
        "a warning names the ref {reference} and says the credential cannot write it: {warnings:#?}\n--- stderr\n{err}"
    );
    assert_eq!(manifest_digest(&reference, creds).as_deref(), Some(before.as_str()), "the ref is untouched");

    write_context(&ctx, &[("late.txt", "late-reader-2\n")]);
    let strict = format!("{to},ignore-error=false");
    let (o, _) = r.build(&ctx, &["--cache-from", &cache_from(&reference), "--cache-to", &strict], &[]);
    assert_eq!(o.status.code(), Some(1), "ignore-error=false: a credential that cannot write fails the build:\n{}", stderr(&o));
    assert!(stderr(&o).contains(&reference), "the error names the ref {reference}:\n{}", stderr(&o));
    assert_eq!(manifest_digest(&reference, creds).as_deref(), Some(before.as_str()), "the ref is still untouched");
}

// ---------------------------------------------------------------------------------------------
// Concurrency

const BRANCHES: usize = 8;

fn branch_dockerfile(branch: &str) -> String {
    // The branch's RUN text differs per branch (as different branches' Dockerfiles do), so its
    // record is recognisable in `kiln cache ls` whatever kiln does with ARGs in RUN text.
    format!(
        "FROM kiln.test/busybox:latest\n\
         ARG BRANCH\n\
         RUN echo common > /common.txt\n\
         COPY shared.txt /\n\
         RUN echo \"branch {branch} built $BRANCH\" > /branch.txt\n"
    )
}

#[test]
fn eight_concurrent_writers_to_one_ref_keep_every_branch() {
    if !support_cache::can_build() {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let reference = format!("{}/cache/app:shared", reg.host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let branches: Vec<String> = (0..BRANCHES).map(|i| format!("b{i}")).collect();
    let contexts: Vec<PathBuf> = branches
        .iter()
        .map(|b| {
            let ctx = t.path(&format!("ctx-{b}"));
            write_context(&ctx, &[("Dockerfile", &branch_dockerfile(b)), ("shared.txt", "shared\n")]);
            ctx
        })
        .collect();
    let machines: Vec<Machine> = branches.iter().map(|b| t.machine(b, &dc)).collect();

    // All machines are ready before any build starts, so the exports overlap as much as they can.
    let to = cache_to_max(&reference);
    let results: Vec<(String, std::process::Output, Option<serde_json::Value>)> = std::thread::scope(|s| {
        let handles: Vec<_> = branches
            .iter()
            .zip(&machines)
            .zip(&contexts)
            .map(|((b, m), ctx)| {
                let to = to.clone();
                s.spawn(move || {
                    let arg = format!("BRANCH={b}");
                    let (o, md) = m.build(ctx, &["--build-arg", &arg, "--cache-to", &to], &[]);
                    (b.clone(), o, md)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("build thread")).collect()
    });
    for (b, o, md) in &results {
        support_cache::assert_ok(o, &format!("build of branch {b}"));
        let md = md.as_ref().expect("metadata");
        let ex = md["kiln.cache-exports"].to_string();
        assert!(!ex.contains("warning"), "branch {b}'s export succeeded: {ex}\n{}", stderr(o));
        // Not asserted (contention depends on timing), but shown with --nocapture.
        eprintln!("branch {b}: export took {} read-merge-write cycle(s)", md["kiln.cache-exports"][0]["attempts"]);
    }

    // The ref is a valid OCI image manifest whose config and layers the registry really has.
    let raw = raw_manifest(&reference, None).expect("skopeo inspect --raw reads the ref");
    let manifest: serde_json::Value = serde_json::from_slice(&raw).expect("the ref is JSON");
    assert_eq!(manifest["schemaVersion"], 2, "{manifest:#}");
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{manifest:#}");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.kiln.cache.config.v1+json", "{manifest:#}");
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert!(!layers.is_empty(), "{manifest:#}");
    let blobs = layers.iter().chain(std::iter::once(&manifest["config"]));
    for d in blobs {
        let digest = d["digest"].as_str().expect("descriptor digest");
        let url = format!("{}/v2/cache/app/blobs/{digest}", reg.url());
        let head = kiln_testkit::http::request("HEAD", &url, &[], &[]).expect("HEAD blob");
        assert_eq!(head.status, 200, "the registry holds blob {digest} that the ref lists");
    }

    let lines = cache_ls(&machines[0], &reference);
    for b in &branches {
        assert!(
            lines.iter().any(|l| l.contains(&format!("branch {b} built"))),
            "branch {b}'s final record survived the concurrent exports; `kiln cache ls` shows:\n{}",
            lines.join("\n")
        );
    }

    // The records are not just listed but usable: one wiped machine rebuilds every branch, and each
    // branch's own last step comes from the registry.
    let fresh = t.machine("fresh", &dc);
    for (b, ctx) in branches.iter().zip(&contexts) {
        let arg = format!("BRANCH={b}");
        let (_, md) = fresh.build_ok(ctx, &["--build-arg", &arg, "--cache-from", &cache_from(&reference)], &[]);
        let layer = layer_steps(&md);
        assert!(layer.iter().all(|s| s.cache != "miss"), "branch {b} rebuilt from the cache: {layer:#?}");
        let last = layer.last().expect("steps");
        assert_eq!(last.cache, "hit-registry", "branch {b}'s own step comes from the ref: {layer:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Platforms

const MULTI: &str = "\
FROM kiln.test/busybox:${TARGETARCH}
RUN uname -m > /arch && head -c16 /dev/urandom | od -x > /random.txt
COPY f.txt /
RUN cat /arch /f.txt > /both.txt
";

#[test]
fn two_platforms_share_one_ref_without_evicting_each_other() {
    if !support_cache::can_build() || !kiln_testkit::require_tool("qemu-aarch64-static") || !support_cache::can_build_arm64() {
        return;
    }
    let reg = Registry::start_plain().expect("registry");
    let reference = format!("{}/cache/multi:main", reg.host());
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let ctx = t.path("ctx");
    write_context(&ctx, &[("Dockerfile", MULTI), ("f.txt", "f\n")]);
    let to = cache_to_max(&reference);

    let cold = t.two_arch_machine("cold", &dc);
    let mut cold_digests = Vec::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let (_, md) = cold.build_ok(&ctx, &["--platform", platform, "--cache-to", &to], &[]);
        let layer = layer_steps(&md);
        assert!(layer.iter().all(|s| s.platform == platform), "steps report their platform: {layer:#?}");
        cold_digests.push((platform, config_digest(&md)));
    }
    let lines = cache_ls(&cold, &reference);
    cold.wipe();
    let platforms: BTreeSet<&str> = lines.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert!(
        platforms.contains("linux/amd64") && platforms.contains("linux/arm64"),
        "`kiln cache ls` shows both platforms' records (the second export kept the first's):\n{}",
        lines.join("\n")
    );

    let warm = t.two_arch_machine("warm", &dc);
    for (platform, cold_digest) in &cold_digests {
        let (_, md) = warm.build_ok(&ctx, &["--platform", platform, "--cache-from", &cache_from(&reference)], &[]);
        let layer = layer_steps(&md);
        assert_eq!(layer.len(), 3, "{layer:#?}");
        for s in &layer {
            assert_eq!(s.cache, "hit-registry", "{platform} rebuilds on a wiped machine entirely from the ref: {layer:#?}");
        }
        assert_eq!(&config_digest(&md), cold_digest, "{platform}: the same image as the cold build");
    }
}
