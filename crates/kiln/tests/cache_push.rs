//! Issue 5: "a fully cached build pushed to the same registry copies the layers by cross-repo mount
//! and downloads nothing". A cold build exports its cache to one repository; a wiped machine then
//! builds from that cache and pushes to another repository of the same registry: every step hits,
//! no cached layer lands in the local store, and the pushed image is complete (skopeo copies it,
//! verifying every blob).

mod support_cache;

use std::process::Command;

use kiln_testkit::Registry;
use support_cache::*;

fn store_blobs(root: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("store/blobs/sha256"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_fully_cached_build_pushes_by_mounting_and_downloads_no_layer() {
    if !can_build() || !kiln_testkit::require_tool("skopeo") {
        return;
    }
    let t = TestDir::new();
    let reg = Registry::start_plain().unwrap();
    let cache = format!("type=registry,ref={}/app/cache:main,mode=max", reg.host());
    let cache_from = format!("type=registry,ref={}/app/cache:main", reg.host());
    let ctx = t.path("ctx");
    write_context(
        &ctx,
        &[
            ("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN head -c 200000 /dev/urandom > /blob\nCOPY app.txt /app.txt\n"),
            ("app.txt", "the app"),
        ],
    );
    let base = format!("BASE={BASE}");
    let cfg = t.docker_config("c");
    let cold = t.machine("cold", &cfg);
    // The cold build pushes too, so its reported digest is the exported (gzip) form, as the warm one's is.
    let cold_image = format!("{}/app/image:0", reg.host());
    let (_, md_cold) = cold.build_ok(&ctx, &["--build-arg", &base, "--cache-to", &cache, "-t", &cold_image, "--push"], &[]);
    let layers_cold: Vec<String> = cold_layers(&cold.root, &digest(&md_cold));

    let warm = t.machine("warm", &cfg);
    let before = store_blobs(&warm.root);
    let image = format!("{}/app/image:1", reg.host());
    let (_, md) = warm.build_ok(&ctx, &["--build-arg", &base, "--cache-from", &cache_from, "-t", &image, "--push"], &[]);
    let misses: Vec<_> = layer_steps(&md).into_iter().filter(|s| s.cache != "hit-registry").collect();
    assert!(misses.is_empty(), "every layer step should hit the registry cache: {misses:?}");
    assert_eq!(digest(&md), digest(&md_cold), "same image as the cold build");
    // Nothing the cache holds was downloaded: the store gained only the new config and manifest.
    let gained: Vec<String> = store_blobs(&warm.root).into_iter().filter(|b| !before.contains(b)).collect();
    for l in &layers_cold[1..] {
        assert!(!gained.contains(l), "cached layer {l} was downloaded; gained {gained:?}");
    }
    assert!(gained.len() <= 2, "only config and manifest may appear locally: {gained:?}");
    // The pushed image is whole: skopeo copies it out and verifies every blob.
    let out = t.path("copied");
    let st = Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false", &format!("docker://{image}"), &format!("oci:{}:x", out.display())])
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy of the pushed image");
}

/// The layer digests (hex) of the image `manifest_digest` in `root`'s store, base layer first.
fn cold_layers(root: &std::path::Path, manifest_digest: &str) -> Vec<String> {
    let hex = manifest_digest.trim_start_matches("sha256:");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("store/blobs/sha256").join(hex)).unwrap()).unwrap();
    m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string()).collect()
}
