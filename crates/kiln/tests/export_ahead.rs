//! Issue 14, export as you go: a step's layer is compressed and uploaded (to every registry
//! `--cache-to` and, with `--push`, to the image's repository) while later steps run; the manifests
//! are written at the end. Checked against a real `docker-registry`: the blob is there while the
//! build is still blocked in a later step, a cold build and a warm build from its cache push the same
//! manifest, a layer of a stage the image does not hold never reaches the image's repository (nor a
//! `mode=min` cache), and a build whose last step fails pushes no manifest.

mod support_cache;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::Registry;
use serde_json::Value;
use support_cache::*;

/// Whether `repo` of the registry at `host` has the blob `digest` (a HEAD with curl).
fn repo_has_blob(host: &str, repo: &str, digest: &str) -> bool {
    let st = Command::new("curl")
        .args(["-sfI", "-o", "/dev/null", &format!("http://{host}/v2/{repo}/blobs/{digest}")])
        .status()
        .expect("run curl");
    st.success()
}

/// The layer digests a manifest in the registry lists (`None`: no such manifest).
fn layers_of(reference: &str) -> Option<Vec<String>> {
    let raw = raw_manifest(reference, None)?;
    let m: Value = serde_json::from_slice(&raw).expect("manifest JSON");
    Some(m["layers"].as_array().expect("layers").iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect())
}

/// The blobs linked into `repo` in the registry's storage (what uploads and mounts create).
fn linked_layers(reg: &Registry, repo: &str) -> Vec<String> {
    let dir = reg.storage_dir().join("docker/registry/v2/repositories").join(repo).join("_layers/sha256");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| format!("sha256:{}", e.file_name().to_string_lossy())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

const TWO_STAGES: &str = "ARG BASE\nFROM ${BASE} AS builder\nRUN head -c 300000 /dev/urandom > /tool && echo built > /built\n\
FROM ${BASE}\nRUN head -c 400000 /dev/urandom > /data\nCOPY --from=builder /built /built\nRUN seq 1 20000 > /numbers\n";

#[test]
fn a_cold_builds_pushed_manifest_equals_the_warm_rebuilds_and_builder_layers_stay_out_of_the_image() {
    if !can_build() || !kiln_testkit::require_tool("curl") {
        return;
    }
    let t = TestDir::new();
    let reg = Registry::start_plain().unwrap();
    let host = reg.host();
    let ctx = t.path("ctx");
    write_context(&ctx, &[("Dockerfile", TWO_STAGES)]);
    let base = format!("BASE={BASE}");
    let max = format!("type=registry,ref={host}/app/cache:max,mode=max");
    let min = format!("type=registry,ref={host}/app/min:main,mode=min");
    let cfg = t.docker_config("c");
    let env = [("SOURCE_DATE_EPOCH", "0")];

    let cold = t.machine("cold", &cfg);
    let cold_ref = format!("{host}/app/image:cold");
    let (err, md_cold) =
        cold.build_ok(&ctx, &["--build-arg", &base, "--cache-to", &max, "--cache-to", &min, "-t", &cold_ref, "--push"], &env);
    assert!(err.contains("exported ahead while building:"), "the cold build sends its layers ahead:\n{err}");
    let pushed_cold = manifest_digest(&cold_ref, None).expect("the cold image was pushed");
    assert_eq!(pushed_cold, digest(&md_cold), "the metadata names the pushed manifest");

    // The builder stage's layer is a mode=max cache layer, never an image layer, nor a mode=min one.
    let image_layers = layers_of(&cold_ref).unwrap();
    let max_layers = layers_of(&format!("{host}/app/cache:max")).expect("the mode=max cache ref");
    let min_layers = layers_of(&format!("{host}/app/min:main")).expect("the mode=min cache ref");
    let builder: Vec<&String> = max_layers.iter().filter(|l| !image_layers.contains(l)).collect();
    assert_eq!(builder.len(), 1, "one builder-stage layer in the mode=max cache: max {max_layers:?}, image {image_layers:?}");
    for b in &builder {
        assert!(repo_has_blob(&host, "app/cache", b), "the mode=max cache holds the builder layer {b}");
        assert!(!repo_has_blob(&host, "app/image", b), "builder layer {b} reached the image's repository");
        assert!(!repo_has_blob(&host, "app/min", b), "builder layer {b} reached the mode=min cache");
        assert!(!min_layers.contains(b), "the mode=min cache lists the builder layer");
    }
    for l in &image_layers {
        assert!(repo_has_blob(&host, "app/image", l), "image layer {l} missing from the image's repository");
    }

    // A wiped machine builds again from the cache and pushes the very same manifest.
    cold.wipe();
    let warm = t.machine("warm", &cfg);
    let warm_ref = format!("{host}/app/image:warm");
    let from = format!("type=registry,ref={host}/app/cache:max");
    let (err, md_warm) = warm.build_ok(&ctx, &["--build-arg", &base, "--cache-from", &from, "-t", &warm_ref, "--push"], &env);
    let misses: Vec<_> = layer_steps(&md_warm).into_iter().filter(|s| s.cache != "hit-registry").collect();
    assert!(misses.is_empty(), "every layer step hits the cache: {misses:?}\n{err}");
    assert_eq!(manifest_digest(&warm_ref, None).as_deref(), Some(pushed_cold.as_str()), "warm push = cold push:\n{err}");
    assert_eq!(digest(&md_warm), pushed_cold);
}

#[test]
fn a_layer_reaches_the_registry_while_a_later_step_still_runs() {
    if !can_build() || !kiln_testkit::require_tool("curl") {
        return;
    }
    let t = TestDir::new();
    let reg = Registry::start_plain().unwrap();
    let host = reg.host();
    let ctx = t.path("ctx");
    // The last RUN waits (bounded) for a file the test creates in the bound context directory.
    let dockerfile = "ARG BASE\nFROM ${BASE}\nRUN head -c 3000000 /dev/urandom > /first\n\
        RUN --mount=type=bind,source=gate,target=/gate sh -c 'i=0; while [ ! -e /gate/open ]; do sleep 0.1; i=$((i+1)); [ $i -lt 1800 ] || exit 7; done'\n";
    write_context(&ctx, &[("Dockerfile", dockerfile), ("gate/.keep", "")]);
    let cfg = t.docker_config("c");
    let m = t.machine("m", &cfg);
    let image = format!("{host}/app/image:1");
    let cache = format!("type=registry,ref={host}/app/cache:main,mode=max");
    let base = format!("BASE={BASE}");
    let mut child = Command::new(KILN)
        .arg("--root")
        .arg(&m.root)
        .args(["build", path_str(&ctx), "--progress", "plain", "--build-arg", &base, "--cache-to", &cache, "-t", &image, "--push"])
        .env("DOCKER_CONFIG", &m.docker_config)
        // One image manifest, as the test reads it (no default provenance index).
        .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
        .env_remove("CI")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln build");
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());

    // The first RUN's layer is the only step layer the cache can get before the gate opens.
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let cached = linked_layers(&reg, "app/cache");
        if let Some(l) = cached.first() {
            break l.clone();
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("kiln ended ({st}) before any layer reached the registry:\n{}", reader.join().unwrap());
        }
        assert!(Instant::now() < deadline, "no layer reached the cache repository while the build ran");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(child.try_wait().unwrap().is_none(), "the build is still blocked in its last step");
    assert_eq!(manifest_digest(&image, None), None, "no manifest before the build ends");
    assert!(raw_manifest(&format!("{host}/app/cache:main"), None).is_none(), "no cache record before the build ends");
    // The image's repository gets the same blob (uploaded once, mounted there), also ahead.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !linked_layers(&reg, "app/image").contains(&seen) {
        assert!(child.try_wait().unwrap().is_none(), "the build ended before the gate opened");
        assert!(Instant::now() < deadline, "{seen} never reached the image's repository ahead of the push");
        std::thread::sleep(Duration::from_millis(50));
    }

    std::fs::write(ctx.join("gate/open"), "").unwrap();
    let st = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert!(st.success(), "kiln build: {st}\n{err}");
    let layers = layers_of(&image).expect("the image was pushed at the end");
    assert!(layers.contains(&seen), "the blob sent ahead is the one the image names: {seen} not in {layers:?}");
    let cached = layers_of(&format!("{host}/app/cache:main")).expect("the cache ref was written at the end");
    assert!(cached.contains(&seen), "the cache names the blob sent ahead");
    assert!(err.contains("exported ahead while building:"), "{err}");
}

#[test]
fn a_build_whose_last_step_fails_pushes_no_manifest_and_keeps_its_finished_steps() {
    if !can_build() {
        return;
    }
    let t = TestDir::new();
    let reg = Registry::start_plain().unwrap();
    let host = reg.host();
    let ctx = t.path("ctx");
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN head -c 200000 /dev/urandom > /one\nRUN exit 3\n")]);
    let cfg = t.docker_config("c");
    let m = t.machine("m", &cfg);
    let image = format!("{host}/app/image:1");
    let cache = format!("type=registry,ref={host}/app/cache:main,mode=max");
    let base = format!("BASE={BASE}");
    let (o, _) = m.build(&ctx, &["--build-arg", &base, "--cache-to", &cache, "-t", &image, "--push"], &[]);
    assert_exit_1(&o, "a build whose last RUN exits 3");
    assert!(stderr(&o).contains("exit"), "{}", stderr(&o));
    // Neither the image nor the cache ref exists: a failed build writes no manifest.
    assert_eq!(manifest_digest(&image, None), None, "a failed build pushed its image");
    assert_eq!(manifest_digest(&format!("{host}/app/cache:main"), None), None, "a failed build wrote its cache ref");
    // What finished is kept, as before: the local cache has the first step.
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN head -c 200000 /dev/urandom > /one\nRUN true\n")]);
    let (_, md) = m.build_ok(&ctx, &["--build-arg", &base], &[]);
    let cached: Vec<String> = layer_steps(&md).into_iter().map(|s| format!("{} {}", s.cache, s.instruction)).collect();
    assert_eq!(cached[0], "hit-local RUN head -c 200000 /dev/urandom > /one", "{cached:?}");
}
