//! Issue 17, item 1: `kiln cache explain` names what changed between two real builds, in the
//! words of the inputs builds record (`kiln-cache` `inputs`), never in names no build makes.
//!
//! One machine, the local cache only. Each change is the first difference in its own stage, so
//! each has a step built on an unchanged parent to be explained against.
//!
//! Needs root (overlayfs, namespaces) and busybox-static.

mod support_cache;

use support_cache::{layer_steps, write_context, TestDir};

const DOCKERFILE: &str = "\
FROM kiln.test/busybox:latest AS files
COPY app.txt /app.txt

FROM kiln.test/busybox:latest AS args
ARG VERSION=1
RUN echo \"$VERSION\" > /version.txt

FROM kiln.test/busybox:latest
ENV MODE=@MODE@
RUN echo \"$MODE\" > /mode.txt
COPY --from=files /app.txt /app.txt
COPY --from=args /version.txt /version.txt
";

/// The line under `step` in `kiln cache explain`'s output.
fn reason<'a>(explain: &'a str, step: &str) -> &'a str {
    let at = explain.lines().position(|l| l == step).unwrap_or_else(|| panic!("`kiln cache explain` lists no step `{step}`:\n{explain}"));
    explain.lines().nth(at + 1).unwrap_or_default().trim()
}

#[test]
fn explain_names_a_changed_file_build_arg_and_env() {
    if !support_cache::can_build() {
        return;
    }
    let t = TestDir::new();
    let dc = t.docker_config("user");
    let m = t.machine("m", &dc);
    let ctx = t.path("ctx");
    write_context(&ctx, &[("Dockerfile", &DOCKERFILE.replace("@MODE@", "dev")), ("app.txt", "one\n")]);
    let (_, md1) = m.build_ok(&ctx, &["-t", "kiln.test/explain:1"], &[]);
    assert!(layer_steps(&md1).iter().all(|s| s.cache == "miss"), "a fresh root: {:#?}", layer_steps(&md1));
    assert_eq!(md1["kiln.cache-misses"], serde_json::json!([]), "nothing was cached to explain against");

    write_context(&ctx, &[("Dockerfile", &DOCKERFILE.replace("@MODE@", "prod")), ("app.txt", "two\n")]);
    let (err, md2) = m.build_ok(&ctx, &["-t", "kiln.test/explain:2", "--build-arg", "VERSION=2"], &[]);
    assert_eq!(m.run("kiln.test/explain:2", &["cat", "/app.txt", "/version.txt", "/mode.txt"]), "two\n2\nprod\n");

    let explain = m.ok(&["cache", "explain"], &[]);
    assert_eq!(reason(&explain, "COPY app.txt /app.txt"), "file app.txt changed", "{explain}");
    assert_eq!(reason(&explain, "RUN echo \"$VERSION\" > /version.txt"), "build arg VERSION changed: was \"1\", now \"2\"", "{explain}");
    assert_eq!(reason(&explain, "ENV MODE=prod"), "the instruction changed: was `ENV MODE=dev`, now `ENV MODE=prod`", "{explain}");

    // The build said the same, in its summary and its metadata, and nothing else: the steps after
    // a change missed because of it, and an ARG whose value changed is not a change by itself.
    let misses: Vec<(String, String)> = md2["kiln.cache-misses"]
        .as_array()
        .expect("kiln.cache-misses")
        .iter()
        .map(|m| (m["step"].as_str().unwrap_or_default().to_string(), m["changed"].as_str().unwrap_or_default().to_string()))
        .collect();
    let want = [
        ("COPY app.txt /app.txt", "file app.txt changed"),
        ("RUN echo \"$VERSION\" > /version.txt", "build arg VERSION changed: was \"1\", now \"2\""),
        ("ENV MODE=prod", "the instruction changed: was `ENV MODE=dev`, now `ENV MODE=prod`"),
    ];
    let mut got = misses.clone();
    got.sort();
    let mut want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    want.sort();
    assert_eq!(got, want, "the second build's explained misses\n--- stderr\n{err}");
    for (step, why) in &misses {
        assert!(err.contains(&format!("miss: {step}: {why}")), "the summary explains {step}:\n{err}");
    }
    let steps = layer_steps(&md2);
    let status = |prefix: &str| steps.iter().find(|s| s.instruction.starts_with(prefix)).map(|s| s.cache.clone());
    assert_eq!(status("ARG VERSION"), None, "ARG is config-only");
    assert_eq!(status("RUN echo \"$MODE\""), Some("miss".into()), "{steps:#?}");
}
