//! The example workflow (`examples/github-actions/docker-publish.yml`), run for real: the steps a
//! push to main runs, against a loopback `docker-registry`, with kiln built from this tree.
//!
//! For each architecture of the build job's matrix (arm64 under qemu-user), the test runs the
//! workflow's own `Image name` script, then `scripts/action-args` with the kiln step's `with:`
//! inputs (the expressions in them evaluated for a push to main), then `kiln` with that argv, then
//! the action's outputs and the workflow's `Record the digest` script. The merge job's script then
//! runs on the collected digests, and skopeo checks that `:main` and `:latest` are one index with
//! both platforms. Two things differ from GitHub, both named here: `ghcr.io` is the loopback
//! registry, and `build-args`' BASE (Docker Hub's busybox) is a busybox imported offline.
//!
//! The workflow is written as the target, as buildx users write it: until `kiln build` accepts
//! `--output type=image,name=…,push-by-digest=true,name-canonical=true,push=true` (issue 12, the
//! outputs part), this test fails at the build step with kiln's refusal of `name=`. With that line
//! rewritten to today's `--tag NAME --output type=registry,push-by-digest=true`, the rest of it
//! (both architectures, the digests, the merge, skopeo's checks) was seen to pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

const ARM_BUSYBOX: &str = kiln_testkit::ARM64_BUSYBOX;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn need() {
    for t in ["docker-registry", "skopeo", "jq", "qemu-aarch64-static"] {
        assert!(which(t), "`{t}` is not installed: run scripts/deps as root; this test never skips");
    }
    assert!(
        Path::new(ARM_BUSYBOX).exists() && Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        "arm64 busybox at {ARM_BUSYBOX} or the qemu-aarch64 binfmt handler is missing: run scripts/deps as root"
    );
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(str::to_string)));
    assert_eq!(uid.as_deref(), Some("0"), "kiln build needs root for its sandbox (CI runs as root)");
}

/// The step of `job` with this name.
fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|st| st.get("name").map(s).as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no step {name:?}"))
}

/// Every `${{ … }}` in `text` replaced from `values`; an expression the table lacks fails the test
/// (the workflow changed: say here what the expression gives on a push to main).
fn eval(text: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let j = after.find("}}").unwrap_or_else(|| panic!("unclosed expression in {text:?}"));
        let e = after[..j].trim();
        out.push_str(
            values.get(e).unwrap_or_else(|| panic!("the test does not know what `{e}` is on a push to main; add it to the table")),
        );
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

/// Runs a workflow `run:` script with bash, as the runner does (`bash -e`), in `cwd`.
fn run_script(script: &str, cwd: &Path, env: &[(&str, String)]) -> String {
    let o = Command::new("bash")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "script failed:\n{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `k=v` lines and `k<<DELIM … DELIM` blocks of a `$GITHUB_OUTPUT` file.
fn github_output(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some((k, delim)) = l.split_once("<<") {
            let v: Vec<&str> = lines.by_ref().take_while(|l| *l != delim).collect();
            out.insert(k.to_string(), v.join("\n"));
        } else if let Some((k, v)) = l.split_once('=') {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

fn skopeo_raw(reference: &str) -> (serde_json::Value, Vec<u8>) {
    let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", reference]).output().unwrap();
    assert!(o.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&o.stderr));
    (serde_json::from_slice(&o.stdout).unwrap(), o.stdout)
}

#[test]
fn the_example_workflow_builds_both_architectures_pushes_by_digest_and_merges_against_a_local_registry() {
    need();
    let reg = kiln_testkit::Registry::start_plain().unwrap();
    let host = reg.host();
    let root = repo_root();
    let wf: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("examples/github-actions/docker-publish.yml")).unwrap()).unwrap();
    let build_job = &wf["jobs"]["build"];
    let merge_job = &wf["jobs"]["merge"];
    let kiln_bin_dir = Path::new(env!("CARGO_BIN_EXE_kiln")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", kiln_bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let work = tempfile::tempdir().unwrap();
    let runner_temp = work.path().join("runner-temp");
    std::fs::create_dir_all(runner_temp.join("digests")).unwrap();
    let repository = "Acme/Hello";

    let archs: Vec<String> = build_job["strategy"]["matrix"]["include"].as_sequence().unwrap().iter().map(|m| s(&m["arch"])).collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    for arch in &archs {
        // A fresh runner: its own kiln root and Docker config, a busybox base for its architecture.
        let kiln_root = work.path().join(format!("root-{arch}"));
        let docker_config = work.path().join(format!("docker-{arch}"));
        std::fs::create_dir_all(&docker_config).unwrap();
        let tar = work.path().join(format!("busybox-{arch}.tar"));
        let bb = if arch == "arm64" { ARM_BUSYBOX } else { "/bin/busybox" };
        let st = Command::new(root.join("scripts/busybox-rootfs")).arg(&tar).env("BUSYBOX", bb).status().unwrap();
        assert!(st.success(), "scripts/busybox-rootfs for {arch}");
        let base = format!("kiln.test/busybox:{arch}");
        let imp = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["import", "--platform", &format!("linux/{arch}"), tar.to_str().unwrap(), "-t", &base])
            .env("KILN_ROOT", &kiln_root)
            .output()
            .unwrap();
        assert!(imp.status.success(), "{}", String::from_utf8_lossy(&imp.stderr));

        // The workflow's `Image name` step, with ghcr.io being the loopback registry.
        let out_file = work.path().join(format!("image-output-{arch}"));
        std::fs::write(&out_file, "").unwrap();
        let script = s(&step(build_job, "Image name")["run"]).replace("ghcr.io", &host);
        run_script(&script, &root, &[("GITHUB_REPOSITORY", repository.into()), ("GITHUB_OUTPUT", out_file.display().to_string())]);
        let image = github_output(&std::fs::read_to_string(&out_file).unwrap())["name"].clone();
        assert_eq!(image, format!("{host}/acme/hello"));

        // The kiln step's inputs, evaluated for a push to main.
        let values: BTreeMap<&str, String> = BTreeMap::from([
            ("matrix.arch", arch.clone()),
            ("steps.image.outputs.name", image.clone()),
            ("github.event_name != 'pull_request'", "true".into()),
            (
                "github.event_name != 'pull_request' && format('type=registry,ref={0}:buildcache,mode=max', steps.image.outputs.name) || ''",
                format!("type=registry,ref={image}:buildcache,mode=max"),
            ),
        ]);
        let kiln_step = step(build_job, "Build, test, push by digest");
        assert_eq!(s(&kiln_step["uses"]), "./");
        let action: Value = serde_yaml::from_str(&std::fs::read_to_string(root.join("action.yml")).unwrap()).unwrap();
        let mut inputs: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in action["inputs"].as_mapping().unwrap() {
            inputs.insert(s(k), v.get("default").map(s).unwrap_or_default());
        }
        for (k, v) in kiln_step["with"].as_mapping().unwrap() {
            let k = s(k);
            assert!(inputs.contains_key(&k), "with.{k} is not an input of action.yml");
            inputs.insert(k, eval(&s(v), &values));
        }
        // The one substitution: no Docker Hub here, so the base is the busybox imported above.
        assert_eq!(inputs["build-args"], "BASE=docker.io/library/busybox:1.36");
        inputs.insert("build-args".into(), format!("BASE={base}"));

        let dir = work.path().join(format!("action-{arch}"));
        let mut cmd = Command::new(root.join("scripts/action-args"));
        cmd.arg("build").arg(&dir).current_dir(&root);
        for (k, v) in &inputs {
            cmd.env(format!("INPUT_{}", k.to_uppercase()), v);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "scripts/action-args: {}", String::from_utf8_lossy(&o.stderr));
        let raw = std::fs::read(dir.join("argv")).unwrap();
        let mut argv: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8(a.to_vec()).unwrap()).collect();
        argv.pop();
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&argv)
            .current_dir(&root)
            .env("KILN_ROOT", &kiln_root)
            .env("DOCKER_CONFIG", &docker_config)
            .env("SOURCE_DATE_EPOCH", "0")
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_EVENT_NAME", "push")
            .env("GITHUB_REF", "refs/heads/main")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "kiln {argv:?} failed for {arch}:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(log.contains("test passed"), "the smoke test ran on {arch}: {log}");

        // The action's outputs, then the workflow's `Record the digest` step.
        let gh_out = work.path().join(format!("build-output-{arch}"));
        std::fs::write(&gh_out, "").unwrap();
        let o = Command::new(root.join("scripts/action-args")).arg("outputs").arg(&dir).env("GITHUB_OUTPUT", &gh_out).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let outputs = github_output(&std::fs::read_to_string(&gh_out).unwrap());
        let digest = outputs["digest"].clone();
        assert!(digest.starts_with("sha256:"), "{outputs:?}");
        let meta: serde_json::Value = serde_json::from_str(&outputs["metadata"]).unwrap();
        assert_eq!(meta["containerimage.digest"], digest.as_str());
        let (pushed, _) = skopeo_raw(&format!("docker://{image}@{digest}"));
        // As with buildx, the default `mode=min` provenance makes the digest name an index: the
        // platform's image and its attestation manifest (tests/attestations.rs checks their content).
        let entries = pushed["manifests"].as_array().cloned().unwrap_or_default();
        let images: Vec<_> = entries.iter().filter(|m| m["platform"]["os"] != "unknown").collect();
        let attestations: Vec<_> = entries.iter().filter(|m| m["platform"]["os"] == "unknown").collect();
        assert_eq!((images.len(), attestations.len()), (1, 1), "one image and its provenance were pushed by digest: {pushed}");
        assert_eq!(images[0]["platform"]["architecture"], *arch, "{pushed}");
        assert_eq!(attestations[0]["annotations"]["vnd.docker.reference.digest"], images[0]["digest"], "{pushed}");
        let record = step(build_job, "Record the digest");
        assert_eq!(s(&record["if"]), "github.event_name != 'pull_request'");
        run_script(&s(&record["run"]), &root, &[("DIGEST", digest), ("RUNNER_TEMP", runner_temp.display().to_string())]);
    }
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw", &format!("docker://{host}/acme/hello:latest")])
        .output()
        .unwrap();
    assert!(!o.status.success(), "push by digest tags nothing");

    // The merge job's script, on the digests both jobs recorded (download-artifact puts them in
    // one directory).
    assert_eq!(s(&merge_job["if"]), "github.event_name == 'push' && github.ref == 'refs/heads/main'");
    let merge = step(merge_job, "Merge the per-architecture images into one index");
    assert_eq!(s(&merge["working-directory"]), "${{ runner.temp }}/digests");
    let summary = work.path().join("summary.md");
    let env = [
        ("GITHUB_REPOSITORY", repository.to_string()),
        ("RUNNER_TEMP", runner_temp.display().to_string()),
        ("GITHUB_STEP_SUMMARY", summary.display().to_string()),
        ("PATH", path.clone()),
        ("KILN_ROOT", work.path().join("root-merge").display().to_string()),
        ("DOCKER_CONFIG", work.path().join("docker-amd64").display().to_string()),
        ("CI", "true".into()),
    ];
    run_script(&s(&merge["run"]).replace("ghcr.io", &host), &runner_temp.join("digests"), &env);
    let (main, main_bytes) = skopeo_raw(&format!("docker://{host}/acme/hello:main"));
    let (_, latest_bytes) = skopeo_raw(&format!("docker://{host}/acme/hello:latest"));
    assert_eq!(main_bytes, latest_bytes, ":main and :latest are the same index");
    let entries = main["manifests"].as_array().unwrap();
    let attested = entries.iter().filter(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest").count();
    assert_eq!(attested, 2, "the merged index keeps each platform's attestation manifest: {main}");
    let platforms: Vec<String> = entries
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .map(|m| format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap()))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert!(std::fs::read_to_string(&summary).unwrap().contains(&format!("index: {host}/acme/hello@sha256:")));
    // And the last step, `kiln manifest inspect`, names both platforms.
    let inspect = s(&step(merge_job, "Inspect the index")["run"]).replace("ghcr.io", &host);
    let shown = run_script(&inspect, &root, &env);
    assert!(shown.contains("Platform:  linux/amd64") && shown.contains("Platform:  linux/arm64"), "{shown}");
}
