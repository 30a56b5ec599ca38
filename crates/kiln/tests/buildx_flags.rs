//! `docker buildx build` flags about the image and the terminal: `--label`, `--iidfile`, `-q`,
//! `--provenance`/`--sbom` (buildx's values; what kiln does not act on refused), the buildx flags
//! kiln refuses by name, and `RUN --security=insecure`, refused rather than run confined.
//!
//! Needs root and busybox-static.

mod support_build;

use std::fs;

use support_build::{assert_ok, config_digest, path_str, read_json, stderr, stdout, write_context, Kiln, BASE};

fn labels_of(k: &Kiln, image: &str) -> serde_json::Value {
    let o = k.cmd(&["inspect", image]);
    assert_ok(&o, "kiln inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect JSON");
    fn find(v: &serde_json::Value) -> Option<serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(l) = m.get("Labels") {
                    return Some(l.clone());
                }
                m.values().find_map(find)
            }
            serde_json::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v).unwrap_or(serde_json::Value::Null)
}

#[test]
fn labels_go_on_the_image_over_the_dockerfiles_and_change_no_cache_key() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nLABEL a=dockerfile b=keep\nRUN echo hi > /x\n")]);
    let md = k.build_md(&ctx, &["-t", "kiln.test/labels:1", "--label", "a=cli", "--label", "org.opencontainers.image.source=https://x/y"]);
    let labels = labels_of(&k, "kiln.test/labels:1");
    assert_eq!(labels["a"], "cli", "--label wins over LABEL: {labels}");
    assert_eq!(labels["b"], "keep", "the Dockerfile's other labels stay: {labels}");
    assert_eq!(labels["org.opencontainers.image.source"], "https://x/y", "{labels}");

    // Another label value: the image changes, no step runs again.
    let md2 = k.build_md(&ctx, &["-t", "kiln.test/labels:2", "--label", "a=other"]);
    assert_ne!(config_digest(&md), config_digest(&md2), "a different label is a different image");
    for s in support_build::layer_steps(&md2) {
        assert_eq!(s.cache, "hit-local", "a label is no step's input: {} ran again", s.instruction);
    }
    assert_eq!(labels_of(&k, "kiln.test/labels:2")["a"], "other");

    let o = k.build(&ctx, &["--label", "nokv"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--label \"nokv\": expected KEY=VALUE"), "{}", stderr(&o));
}

#[test]
fn iidfile_holds_the_config_digest_and_quiet_prints_only_the_digest() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo quiet > /q\n")]);
    let iid = k.path("iid");
    let md = k.path("md.json");
    let o = k.cmd(&[
        "build",
        path_str(&ctx),
        "--build-arg",
        &format!("BASE={BASE}"),
        "-q",
        "--iidfile",
        path_str(&iid),
        "--metadata-file",
        path_str(&md),
    ]);
    assert_ok(&o, "kiln build -q");
    let md = read_json(&md);
    assert_eq!(stderr(&o), "", "-q: nothing on stderr");
    assert_eq!(stdout(&o).trim(), md["containerimage.digest"].as_str().unwrap(), "-q: stdout is the digest alone");
    assert_eq!(fs::read_to_string(&iid).unwrap(), config_digest(&md), "--iidfile: the image ID (config digest), no newline");

    // Without -q the progress and summary are there (so the test above can fail).
    let o = k.build(&ctx, &[]);
    assert_ok(&o, "kiln build");
    assert!(stderr(&o).contains("kiln: built "), "{}", stderr(&o));
}

#[test]
fn provenance_and_sbom_take_buildx_values_and_refuse_what_kiln_does_not_act_on() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\n")]);
    for ok in [&["--provenance=false", "--sbom=false"][..], &["--provenance", "0", "--sbom", "false"], &["--provenance=mode=max"]] {
        assert_ok(&k.build(&ctx, ok), &format!("{ok:?}"));
    }
    for (args, want) in [
        (&["--provenance=mode=huge"][..], "--provenance \"mode=huge\": mode=\"huge\": expected min or max"),
        (&["--sbom", "generator=docker/scout-sbom-indexer:latest"], "natively"),
    ] {
        let o = k.build(&ctx, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn buildx_flags_kiln_lacks_are_refused_by_name_not_by_clap() {
    let k = tempfile::tempdir().unwrap();
    let ctx = k.path().join("ctx");
    write_context(&ctx, &[("Dockerfile", "FROM scratch\n")]);
    for args in [
        &["--builder", "mybuilder"][..],
        &["--allow", "network.host"],
        &["--call", "outline"],
        &["--check"],
        &["--cgroup-parent", "x"],
        &["--no-cache-filter", "stage"],
        &["--detach"],
        &["--debug"],
    ] {
        let o = std::process::Command::new(support_build::KILN)
            .arg("--root")
            .arg(k.path().join("root"))
            .arg("build")
            .arg(&ctx)
            .args(args)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&format!("{} is a docker buildx flag kiln does not support: ", args[0])), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

#[test]
fn run_security_insecure_is_refused_not_run_confined() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN --security=insecure touch /ran\n")]);
    let o = k.build(&ctx, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("Dockerfile:3: RUN --security=insecure is not supported by kiln"), "{}", stderr(&o));
}
