//! Other tools accept what `kiln build` writes: an OCI archive (`skopeo`, `buildah pull`), an OCI
//! layout directory (`skopeo`, `umoci unpack`) and a docker archive (`docker load` into a dockerd
//! started privately for the test). Also: a build secret leaves no trace in the store, the image,
//! the metadata file or the build's output.
//!
//! Needs root and busybox-static, plus the tool each test names.

mod support_build;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support_build::{assert_ok, digest, path_str, read_json, stderr, stdout, write_context, Kiln};

const DOCKERFILE: &str = "\
ARG BASE
FROM ${BASE} AS builder
RUN mkdir /out && echo built > /out/built.txt
FROM ${BASE}
COPY --from=builder /out /app
COPY hello.txt /app/
ENV GREETING=hi
WORKDIR /app
LABEL org.example.test=outputs
EXPOSE 8080/tcp
CMD [\"cat\", \"/app/built.txt\", \"/app/hello.txt\"]
";

/// Builds the test image with the given extra outputs and returns the metadata.
fn build_with_outputs(k: &Kiln, outputs: &[String]) -> Value {
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", DOCKERFILE), ("hello.txt", "hello\n")]);
    let mut args: Vec<&str> = vec!["-t", "kiln.test/out:v1"];
    for o in outputs {
        args.push("--output");
        args.push(o);
    }
    k.build_md(&ctx, &args)
}

fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn tool_ok(program: &str, args: &[&str]) -> String {
    let o = tool(program, args);
    assert_ok(&o, &format!("{program} {}", args.join(" ")));
    stdout(&o)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Checks the config fields the Dockerfile sets, in the OCI/Docker config JSON (`config` object).
fn assert_config(cfg: &Value, who: &str) {
    assert_eq!(cfg["Cmd"], serde_json::json!(["cat", "/app/built.txt", "/app/hello.txt"]), "{who}: Cmd in {cfg:#}");
    assert_eq!(cfg["WorkingDir"], "/app", "{who}: WorkingDir in {cfg:#}");
    assert_eq!(cfg["Labels"]["org.example.test"], "outputs", "{who}: Labels in {cfg:#}");
    assert!(cfg["ExposedPorts"].get("8080/tcp").is_some(), "{who}: ExposedPorts in {cfg:#}");
    let env: Vec<&str> = cfg["Env"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert!(env.contains(&"GREETING=hi"), "{who}: Env in {cfg:#}");
}

#[test]
fn oci_archive_is_accepted_by_skopeo() {
    if !support_build::can_build() || !kiln_testkit::require_tool("skopeo") {
        return;
    }
    let k = Kiln::new();
    let tar = k.path("x.tar");
    let md = build_with_outputs(&k, &[format!("type=oci,dest={}", path_str(&tar))]);
    let inspect = json(&tool_ok("skopeo", &["inspect", &format!("oci-archive:{}", path_str(&tar))]));
    assert_eq!(inspect["Digest"], digest(&md), "skopeo sees the manifest kiln reported");
    assert_eq!(inspect["Labels"]["org.example.test"], "outputs");
    let cfg = json(&tool_ok("skopeo", &["inspect", "--config", &format!("oci-archive:{}", path_str(&tar))]));
    assert_config(&cfg["config"], "skopeo inspect --config oci-archive");
}

#[test]
fn oci_layout_dir_is_accepted_by_skopeo_and_umoci() {
    if !support_build::can_build() || !kiln_testkit::require_tool("skopeo") || !kiln_testkit::require_tool("umoci") {
        return;
    }
    let k = Kiln::new();
    let dir = k.path("layout");
    let md = build_with_outputs(&k, &[format!("type=oci,dest={},tar=false", path_str(&dir))]);
    let inspect = json(&tool_ok("skopeo", &["inspect", &format!("oci:{}", path_str(&dir))]));
    assert_eq!(inspect["Digest"], digest(&md));
    let mut top: Vec<String> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    top.sort();
    assert_eq!(top, ["blobs", "index.json", "oci-layout"], "only what the image-layout spec names");

    // The store keeps the layers the build made as plain tar (nothing waited on gzip); the layout,
    // like anything that leaves the store, has them gzipped, with the same config (diff ids).
    let blob = |root: &Path, d: &str| read_json(&root.join("blobs/sha256").join(d.trim_start_matches("sha256:")));
    let exported = blob(&dir, digest(&md).as_str());
    let store_digest = md["kiln.store.digest"].as_str().unwrap_or_else(|| panic!("no kiln.store.digest: {md:#}")).to_string();
    assert_ne!(store_digest, digest(&md), "the store's form differs from the exported one");
    let local = blob(&k.store(), &store_digest);
    let types = |m: &Value| -> Vec<String> {
        m["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap().to_string()).collect()
    };
    assert!(types(&exported).iter().all(|t| t == "application/vnd.oci.image.layer.v1.tar+gzip"), "{exported:#}");
    let local_types = types(&local);
    assert_eq!(local_types[0], "application/vnd.oci.image.layer.v1.tar+gzip", "the imported base stays as imported: {local:#}");
    assert!(
        local_types[1..].iter().all(|t| t == "application/vnd.oci.image.layer.v1.tar"),
        "built layers are plain in the store: {local:#}"
    );
    assert_eq!(local["config"]["digest"], exported["config"]["digest"], "one config for both forms");

    // umoci wants the tag the layout's index names.
    let index = read_json(&dir.join("index.json"));
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_else(|| panic!("the layout's index.json names no ref.name: {index:#}"))
        .to_string();
    let bundle = k.path("bundle");
    tool_ok("umoci", &["unpack", "--image", &format!("{}:{tag}", path_str(&dir)), path_str(&bundle)]);
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read_to_string(rootfs.join("app/built.txt")).unwrap_or_default(), "built\n", "layer from the builder stage");
    assert_eq!(fs::read_to_string(rootfs.join("app/hello.txt")).unwrap_or_default(), "hello\n", "layer from the context");
    assert!(rootfs.join("bin/busybox").is_file(), "base layer");
    let runtime = read_json(&bundle.join("config.json"));
    assert_eq!(runtime["process"]["cwd"], "/app", "umoci's runtime config follows the image's WORKDIR");
}

#[test]
fn oci_archive_is_accepted_by_buildah_pull() {
    if !support_build::can_build() || !kiln_testkit::require_tool("buildah") {
        return;
    }
    let k = Kiln::new();
    let tar = k.path("x.tar");
    build_with_outputs(&k, &[format!("type=oci,dest={}", path_str(&tar))]);
    // buildah's storage is private to the test so parallel tests and the host never meet.
    let broot = k.path("buildah-root");
    let brun = k.path("buildah-runroot");
    let buildah = |args: &[&str]| -> String {
        let mut all = vec!["--root", path_str(&broot), "--runroot", path_str(&brun), "--storage-driver", "vfs"];
        all.extend_from_slice(args);
        tool_ok("buildah", &all)
    };
    let pulled = buildah(&["pull", "--quiet", &format!("oci-archive:{}", path_str(&tar))]);
    let id = pulled.lines().last().unwrap_or_default().trim().to_string();
    assert!(!id.is_empty(), "buildah pull printed no image id");
    let img = json(&buildah(&["inspect", "--type", "image", &id]));
    assert_config(&img["OCIv1"]["config"], "buildah inspect");

    let ctr = buildah(&["from", "--pull-never", &id]).trim().to_string();
    let mnt = PathBuf::from(buildah(&["mount", &ctr]).trim());
    let content = fs::read_to_string(mnt.join("app/hello.txt")).unwrap_or_default();
    buildah(&["umount", &ctr]);
    buildah(&["rm", &ctr]);
    assert_eq!(content, "hello\n", "buildah's container has the file kiln's COPY wrote");
}

#[test]
fn docker_archive_loads_into_dockerd() {
    if !support_build::can_build() || !kiln_testkit::require_tool("dockerd") || !kiln_testkit::require_tool("docker") {
        return;
    }
    let k = Kiln::new();
    let tar = k.path("y.tar");
    let md = build_with_outputs(&k, &[format!("type=docker,dest={}", path_str(&tar))]);
    let Some(d) = kiln_testkit::Dockerd::start_or_skip() else { return };
    let o = d.docker(&["load", "-i", path_str(&tar)]);
    assert_ok(&o, "docker load");
    assert!(stdout(&o).contains("kiln.test/out:v1"), "docker load names the tag: {}", stdout(&o));
    let o = d.docker(&["image", "inspect", "kiln.test/out:v1"]);
    assert_ok(&o, "docker image inspect");
    let inspect = json(&stdout(&o));
    let img = &inspect[0];
    assert_eq!(img["Id"], md["containerimage.config.digest"], "docker's image id is kiln's config digest");
    assert_config(&img["Config"], "docker image inspect");
    assert_eq!(img["RootFS"]["Layers"].as_array().map(Vec::len), Some(3), "base + two COPY layers: {:#}", img["RootFS"]);
}

/// Decompresses a blob when it is gzip or zstd; other blobs are searched as they are.
fn plain_bytes(path: &Path) -> Vec<u8> {
    let raw = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let program = match raw.get(..4) {
        Some([0x1f, 0x8b, _, _]) => "gzip",
        Some([0x28, 0xb5, 0x2f, 0xfd]) => "zstd",
        _ => return raw,
    };
    let o = Command::new(program).arg("-dc").arg(path).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert_ok(&o, &format!("{program} -dc {}", path.display()));
    o.stdout
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secret_leaves_no_trace_in_layers_config_metadata_or_logs() {
    if !support_build::can_build() || !kiln_testkit::require_tool("sha256sum") {
        return;
    }
    let k = Kiln::new();
    let secret = format!("kiln-secret-{}", support_build::unique());
    let secret_file = k.path("tok.txt");
    fs::write(&secret_file, &secret).expect("write secret");
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\n\
             FROM ${BASE}\n\
             RUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null && echo used\n\
             RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -c1-64 > /secret.sha256\n\
             CMD [\"cat\", \"/secret.sha256\"]\n",
        )],
    );
    let md_path = k.path("md.json");
    let tar = k.path("x.tar");
    let secret_arg = format!("id=tok,src={}", path_str(&secret_file));
    let oci = format!("type=oci,dest={}", path_str(&tar));
    let o = k.build(
        &ctx,
        &[
            "-t",
            "kiln.test/secret:1",
            "--secret",
            &secret_arg,
            "--metadata-file",
            path_str(&md_path),
            "--output",
            "type=image",
            "--output",
            &oci,
        ],
    );
    assert_ok(&o, "build with a secret");
    let s = secret.as_bytes();

    // The secret really was mounted: the image holds its hash (never the value).
    let want = tool_ok("sha256sum", &[path_str(&secret_file)]);
    assert_eq!(k.run("kiln.test/secret:1", &[]).trim(), &want[..64]);
    let gone = k.cmd(&["run", "kiln.test/secret:1", "--", "test", "-e", "/run/secrets/tok"]);
    assert!(!gone.status.success(), "the secret file must not remain in the image");

    assert!(stderr(&o).contains("used"), "the RUN's output is shown (so the log check below sees it):\n{}", stderr(&o));
    assert!(!contains(&o.stdout, s) && !contains(&o.stderr, s), "the secret appears in the build's output:\n{}", stderr(&o));
    assert!(!contains(&fs::read(&md_path).expect("metadata"), s), "the secret appears in the metadata file");
    assert!(!contains(&fs::read(&tar).expect("oci archive"), s), "the secret appears in the OCI archive");

    // Every blob in the store (layers decompressed, configs with their history, manifests), and
    // every other file under the kiln root (snapshots, cache records).
    let blobs = support_build::list_files(&k.store().join("blobs"));
    assert!(blobs.len() >= 4, "the store holds the image's blobs: {blobs:?}");
    for rel in &blobs {
        let p = k.store().join("blobs").join(rel);
        assert!(!contains(&plain_bytes(&p), s), "the secret appears in store blob {rel}");
    }
    for rel in support_build::list_files(&k.root) {
        let p = k.root.join(&rel);
        assert!(!contains(&fs::read(&p).unwrap_or_default(), s), "the secret appears in {rel} under the kiln root");
    }
    let md = read_json(&md_path);
    let cfg_hex = md["containerimage.config.digest"].as_str().and_then(|d| d.strip_prefix("sha256:")).expect("config digest");
    let cfg = read_json(&k.store().join("blobs/sha256").join(cfg_hex));
    let history = cfg["history"].as_array().cloned().unwrap_or_default();
    assert!(
        history.iter().any(|h| h["created_by"].as_str().is_some_and(|c| c.contains("/run/secrets/tok"))),
        "history records the RUN: {history:#?}"
    );
    assert!(!cfg.to_string().contains(&secret), "the secret appears in the config or its history");
}
