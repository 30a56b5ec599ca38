//! `--cache-to type=inline`: a plain pushed image carries its own cache. Built and pushed with the
//! inline cache on one machine, the image warms a build on a wiped machine through `--cache-from
//! type=registry,ref=IMAGE`: every step hits. skopeo sees the records in the pushed config.
//!
//! Needs root, busybox-static and skopeo.

mod support_build;

use std::process::Command;

use serde_json::Value;
use support_build::{assert_ok, stderr, stdout, write_context, Kiln};

const DOCKERFILE: &str = "\
ARG BASE
FROM ${BASE}
RUN echo one > /one.txt
COPY a.txt /a.txt
ENV MODE=inline
RUN cat /one.txt /a.txt > /both.txt
";

fn steps(md: &Value) -> Vec<(String, String)> {
    md["kiln.steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["instruction"].as_str().unwrap_or("").to_string(), s["cache"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn an_image_pushed_with_an_inline_cache_warms_a_wiped_machine() {
    if !support_build::can_build() || !kiln_testkit::require_tool("skopeo") {
        return;
    }
    let reg = kiln_testkit::Registry::start_plain().unwrap();
    let image = format!("{}/inline/app:v1", reg.host());
    let first = Kiln::reproducible();
    let ctx = first.path("ctx");
    write_context(&ctx, &[("Dockerfile", DOCKERFILE), ("a.txt", "a\n")]);
    let md = first.build_md(&ctx, &["-t", &image, "--push", "--cache-to", "type=inline"]);
    assert!(steps(&md).iter().all(|(_, c)| c == "miss" || c == "none"), "a cold build: {:?}", steps(&md));
    assert_eq!(md["kiln.cache-exports"][0]["reference"], "inline", "{md:#}");
    assert_eq!(md["kiln.cache-exports"][0]["exported"], 4, "the image's chain: two RUNs, the COPY, the ENV");

    let o =
        Command::new("skopeo").args(["inspect", "--tls-verify=false", "--config", "--raw", &format!("docker://{image}")]).output().unwrap();
    assert_ok(&o, "skopeo inspect --config");
    let config: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let records = config["dev.kiln.cache.v1"]["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 4, "the pushed config carries the records: {config:#}");
    assert_eq!(md["containerimage.config.digest"], o_digest(&image), "the metadata names the config as pushed");

    // A wiped machine: nothing local, only the image in the registry.
    let second = Kiln::reproducible();
    let ctx2 = second.path("ctx");
    write_context(&ctx2, &[("Dockerfile", DOCKERFILE), ("a.txt", "a\n")]);
    let md2 = second.build_md(&ctx2, &["--cache-from", &format!("type=registry,ref={image}"), "-t", "kiln.test/inline:warm"]);
    let s2 = steps(&md2);
    assert!(s2.iter().all(|(_, c)| c == "hit-registry" || c == "none"), "every step hits the image's inline cache: {s2:?}");
    assert!(s2.iter().any(|(_, c)| c == "hit-registry"));
    assert_eq!(second.run("kiln.test/inline:warm", &["cat", "/both.txt"]), "one\na\n", "the hits give the image's files");

    // A changed file misses from the COPY on, as with any cache.
    let third = Kiln::reproducible();
    let ctx3 = third.path("ctx");
    write_context(&ctx3, &[("Dockerfile", DOCKERFILE), ("a.txt", "changed\n")]);
    let md3 = third.build_md(&ctx3, &["--cache-from", &format!("type=registry,ref={image}")]);
    let s3: Vec<String> = steps(&md3).into_iter().map(|(_, c)| c).collect();
    assert_eq!(s3, ["none", "hit-registry", "miss", "none", "miss"], "{:?}", steps(&md3));
}

/// The config digest of `image` as the registry serves it.
fn o_digest(image: &str) -> String {
    let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &format!("docker://{image}")]).output().unwrap();
    let m: Value = serde_json::from_str(&stdout(&o)).unwrap();
    m["config"]["digest"].as_str().unwrap().to_string()
}

#[test]
fn inline_is_an_export_of_mode_min_only() {
    let k = tempfile::tempdir().unwrap();
    let ctx = k.path().join("ctx");
    write_context(&ctx, &[("Dockerfile", "FROM scratch\n")]);
    for (args, want) in [
        (&["--cache-to", "type=inline,mode=max"][..], "type=inline exports mode=min"),
        (&["--cache-from", "type=inline"][..], "use --cache-from type=registry,ref=IMAGE"),
        (&["--cache-to", "type=inline,ref=x"][..], "ref"),
        (&["--cache-to", "type=gha,version=3"][..], "must be 1 or 2"),
    ] {
        let o =
            Command::new(support_build::KILN).arg("--root").arg(k.path().join("root")).arg("build").arg(&ctx).args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}
