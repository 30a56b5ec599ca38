//! The outputs a buildx workflow asks for, checked for their effect with the tools that read them:
//! `type=local`/`type=tar`/`-o -` (the root file system as files), `type=image,…,push=true` (the
//! seed workflow's push by digest; skopeo finds it), compression and annotations where buildx puts
//! them, layers compressed on several threads read by skopeo and kiln, and `--load` into a private `dockerd` (`docker run` of the loaded image).
//!
//! Needs root and busybox-static, plus the tool each test names.

mod support_build;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support_build::{assert_ok, path_str, read_json, stderr, stdout, write_context, Kiln, BASE, KILN};

const DOCKERFILE: &str = "\
ARG BASE
FROM ${BASE}
RUN mkdir -p /app && echo built > /app/built.txt && rm /usr/bin/yes
COPY hello.txt /app/
CMD [\"cat\", \"/app/built.txt\", \"/app/hello.txt\"]
";

fn context(k: &Kiln) -> std::path::PathBuf {
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", DOCKERFILE), ("hello.txt", "hello\n")]);
    ctx
}

/// `kiln --root … build CTX --build-arg BASE=… ARGS…` with extra environment.
fn build_env(k: &Kiln, args: &[&str], env: &[(&str, &str)]) -> Output {
    let ctx = context(k);
    let mut c = Command::new(KILN);
    c.arg("--root").arg(&k.root).args(["build", path_str(&ctx), "--build-arg", &format!("BASE={BASE}"), "--progress", "plain"]);
    c.args(args).env_remove("SOURCE_DATE_EPOCH").env_remove("CI").env_remove("DOCKER_HOST");
    // buildx's default provenance makes every pushed image an index (tests/attestations.rs).
    c.env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
    for (n, v) in env {
        c.env(n, v);
    }
    c.stdin(Stdio::null()).output().expect("run kiln")
}

fn build_ok(k: &Kiln, args: &[&str]) -> Value {
    let md = k.path(&format!("md-{}.json", args.len()));
    let mut all = vec!["--metadata-file", path_str(&md)];
    all.extend_from_slice(args);
    let o = build_env(k, &all, &[]);
    assert_ok(&o, &format!("kiln build {args:?}"));
    read_json(&md)
}

fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn tar_list(tar: &Path) -> Vec<String> {
    let o = tool("tar", &["-tf", path_str(tar)]);
    assert_ok(&o, "tar -tf");
    stdout(&o).lines().map(|l| l.trim_start_matches("./").to_string()).collect()
}

#[test]
fn local_and_tar_outputs_hold_the_root_file_system() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let out = k.path("out");
    fs::create_dir_all(out.join("app")).unwrap();
    fs::write(out.join("kept-by-kiln.txt"), "mine").unwrap();
    fs::write(out.join("app/hello.txt"), "stale").unwrap();
    let tar = k.path("fs.tar");
    // Two outputs in one build, as buildx 0.13+ allows.
    let md = build_ok(&k, &["-o", &format!("type=local,dest={}", path_str(&out)), "-o", &format!("type=tar,dest={}", path_str(&tar))]);
    assert!(md["containerimage.digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{md:#}");
    assert_eq!(fs::read_to_string(out.join("app/built.txt")).unwrap(), "built\n");
    assert_eq!(fs::read_to_string(out.join("app/hello.txt")).unwrap(), "hello\n", "same-named files are replaced");
    assert_eq!(fs::read_to_string(out.join("kept-by-kiln.txt")).unwrap(), "mine", "other files in dest are kept, as BuildKit keeps them");
    assert!(out.join("bin/busybox").is_file(), "the base's files are there");
    assert!(fs::symlink_metadata(out.join("usr/bin/cal")).is_ok(), "its neighbour is kept");
    assert!(fs::symlink_metadata(out.join("usr/bin/yes")).is_err(), "a file the RUN deleted is gone");
    assert!(!k.tmp.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("kiln-rootfs")), "no scratch left");

    let names = tar_list(&tar);
    for want in ["app/built.txt", "app/hello.txt", "bin/busybox"] {
        assert!(names.iter().any(|n| n == want), "{want} in the tar: {names:?}");
    }
    assert!(!names.iter().any(|n| n == "usr/bin/yes" || n.contains(".wh.")), "no deleted file, no whiteout: {names:?}");
    // No image was tagged: only the outputs asked for are written.
    assert!(!k.image_refs().iter().any(|r| r.contains("app")), "{:?}", k.image_refs());
}

#[test]
fn dash_writes_the_tar_to_stdout_and_nothing_else() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let o = build_env(&k, &["-o", "-"], &[]);
    assert_ok(&o, "kiln build -o -");
    let tar = k.path("stdout.tar");
    fs::write(&tar, &o.stdout).unwrap();
    let names = tar_list(&tar);
    assert!(names.iter().any(|n| n == "app/built.txt"), "the tar on stdout holds the build's files: {names:?}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("\nsha256:"), "the digest line is not mixed into the tar");
    let o = build_env(&k, &["-o", "-", "-q"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("-q prints the image digest to stdout, where an --output with dest=- writes"), "{}", stderr(&o));
}

#[test]
fn image_push_true_pushes_and_push_by_digest_reports_the_digest() {
    if !support_build::can_build() || !kiln_testkit::require_tool("skopeo") {
        return;
    }
    let reg = kiln_testkit::Registry::start_plain().unwrap();
    let k = Kiln::new();
    let repo = format!("{}/seed/app", reg.host());
    // The seed workflow's line, verbatim but for the registry.
    let line = format!("type=image,name={repo},push-by-digest=true,name-canonical=true,push=true");
    let md = build_ok(&k, &["--output", &line]);
    let digest = md["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(md["kiln.pushed"], digest.as_str(), "{md:#}");
    let o = tool("skopeo", &["inspect", "--tls-verify=false", "--raw", &format!("docker://{repo}@{digest}")]);
    assert_ok(&o, "skopeo inspect the pushed digest");
    let o = tool("skopeo", &["list-tags", "--tls-verify=false", &format!("docker://{repo}")]);
    let tags: Value = serde_json::from_str(&stdout(&o)).unwrap_or(Value::Null);
    assert!(tags["Tags"].as_array().is_none_or(Vec::is_empty), "push by digest leaves no tag: {tags}");
    let names = md["image.name"].as_str().unwrap();
    assert!(names.split(',').any(|n| n == format!("{repo}@{digest}")), "name-canonical reports NAME@DIGEST: {names}");

    // name= as a quoted list: every name is pushed, and the store keeps them too (store=true).
    let (a, b) = (format!("{}/x/a:1", reg.host()), format!("{}/x/b:2", reg.host()));
    let md = build_ok(&k, &["--output", &format!("type=image,\"name={a},{b}\",push=true")]);
    for n in [&a, &b] {
        let o = tool("skopeo", &["inspect", "--tls-verify=false", "--raw", &format!("docker://{n}")]);
        assert_ok(&o, &format!("skopeo inspect {n}"));
        assert!(k.image_refs().iter().any(|r| r == n), "{n} is in the store: {:?}", k.image_refs());
    }
    assert_eq!(md["image.name"], format!("{a},{b}"));

    // oci-mediatypes=false: Docker's schema 2, as registries and old engines know it.
    let d = format!("{}/x/docker:1", reg.host());
    build_ok(&k, &["--output", &format!("type=registry,name={d},oci-mediatypes=false")]);
    let o = tool("skopeo", &["inspect", "--tls-verify=false", "--raw", &format!("docker://{d}")]);
    assert_ok(&o, "skopeo inspect the schema 2 push");
    let m: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{m:#}");
    assert_eq!(m["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    assert!(m["layers"].as_array().unwrap().iter().all(|l| l["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"), "{m:#}");
}

/// The blobs of an OCI layout directory, by media type, and its index.json.
fn layout(dir: &Path) -> (Value, Value) {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let manifest: Value = serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(digest)).unwrap()).unwrap();
    (index, manifest)
}

#[test]
fn compression_and_annotations_land_where_buildx_puts_them() {
    if !support_build::can_build() || !kiln_testkit::require_tool("skopeo") {
        return;
    }
    let k = Kiln::new();
    let dir = k.path("layout");
    let line = format!(
        "type=oci,dest={},tar=false,compression=zstd,annotation.org.opencontainers.image.title=Kiln,annotation-index-descriptor.org.example.where=layout",
        path_str(&dir)
    );
    let md = build_ok(&k, &["-t", "kiln.test/ann:v1", "-o", &line, "--annotation", "org.example.flag=yes"]);
    let (index, manifest) = layout(&dir);
    let desc = &index["manifests"][0];
    assert_eq!(desc["annotations"]["org.example.where"], "layout", "index-descriptor: {index:#}");
    assert_eq!(desc["annotations"]["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "Kiln", "{manifest:#}");
    assert_eq!(manifest["annotations"]["org.example.flag"], "yes", "--annotation goes to the manifest by default");
    assert_eq!(desc["digest"], md["containerimage.digest"], "the build reports the digest it wrote");
    let is_zstd = |m: &Value| -> Vec<bool> {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let blob = fs::read(dir.join("blobs/sha256").join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"))).unwrap();
                let zstd = l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd";
                assert_eq!(zstd, blob[..4] == [0x28, 0xb5, 0x2f, 0xfd], "the media type says what the bytes are: {l}");
                zstd
            })
            .collect()
    };
    // The base arrived gzipped and stays so (BuildKit's rule without force-compression); the
    // layers this build made are zstd.
    assert_eq!(is_zstd(&manifest), [false, true, true], "{manifest:#}");
    let forced = line.replace("compression=zstd", "compression=zstd,force-compression=true");
    build_ok(&k, &["-t", "kiln.test/ann:v1", "-o", &forced]);
    assert_eq!(is_zstd(&layout(&dir).1), [true, true, true], "force-compression recompresses the base too");
    // skopeo reads it back (decompressing zstd) into a docker-free directory copy.
    let o = tool("skopeo", &["copy", &format!("oci:{}:v1", path_str(&dir)), &format!("dir:{}", path_str(&k.path("copied")))]);
    assert_ok(&o, "skopeo copy oci:… dir:…");

    // An annotation the output has no place for fails the build, before anything is written.
    let o = build_env(&k, &["--annotation", "index:org.example.k=v"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("this build makes no image index (it has one platform)"), "{}", stderr(&o));
}

#[test]
fn load_puts_the_image_into_the_docker_engine() {
    if !support_build::can_build() || !kiln_testkit::require_tool("dockerd") || !kiln_testkit::require_tool("docker") {
        return;
    }
    let k = Kiln::new();
    // No engine: a clear error, before the build is spent.
    let o = build_env(&k, &["-t", "kiln.test/load:v1", "--load"], &[("DOCKER_HOST", "unix:///nonexistent/kiln.sock")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--load: no Docker engine answers at unix:///nonexistent/kiln.sock"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("RUN mkdir"), "nothing was built: {}", stderr(&o));

    let Some(d) = kiln_testkit::Dockerd::start_or_skip() else { return };
    let md = k.path("md.json");
    let o = build_env(&k, &["-t", "kiln.test/load:v1", "--load", "--metadata-file", path_str(&md)], &[("DOCKER_HOST", d.host())]);
    assert_ok(&o, "kiln build --load");
    let md = read_json(&md);
    let inspect: Value = serde_json::from_str(&stdout(&d.docker(&["image", "inspect", "kiln.test/load:v1"]))).unwrap_or(Value::Null);
    assert_eq!(inspect[0]["Id"], md["containerimage.config.digest"], "docker's image id is kiln's config digest");
    let run = d.docker(&["run", "--rm", "--network", "none", "kiln.test/load:v1"]);
    assert_ok(&run, "docker run the loaded image");
    assert_eq!(stdout(&run), "built\nhello\n");

    // type=docker without dest is the same as --load, under its own name=.
    let o = build_env(&k, &["-o", "type=docker,name=kiln.test/load:v2"], &[("DOCKER_HOST", d.host())]);
    assert_ok(&o, "kiln build -o type=docker");
    assert_ok(&d.docker(&["image", "inspect", "kiln.test/load:v2"]), "docker image inspect v2");
}

/// Layers compressed on several threads (issue 14) are ordinary blobs to other clients: a zstd and
/// a gzip image pushed by `kiln build --output type=registry,compression=…` are copied by skopeo
/// (which decompresses and checks every layer against its diff id) and pulled back by kiln.
#[test]
fn layers_compressed_in_parallel_are_read_by_skopeo_and_pulled_back_by_kiln() {
    if !support_build::can_build() || !kiln_testkit::require_tool("skopeo") {
        return;
    }
    let reg = kiln_testkit::Registry::start_plain().unwrap();
    let k = Kiln::new();
    for (codec, media, threads) in
        [("zstd", "application/vnd.oci.image.layer.v1.tar+zstd", "2"), ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip", "8")]
    {
        let name = format!("{}/par/app:{codec}", reg.host());
        let md = k.path(&format!("md-{codec}.json"));
        let line = format!("type=registry,name={name},compression={codec},force-compression=true");
        let o = build_env(&k, &["--metadata-file", path_str(&md), "--output", &line], &[("KILN_COMPRESS_THREADS", threads)]);
        assert_ok(&o, &format!("kiln build --output {line}"));
        let digest = read_json(&md)["containerimage.digest"].as_str().unwrap().to_string();
        let dir = k.path(&format!("skopeo-{codec}"));
        let o = tool("skopeo", &["copy", "--src-tls-verify=false", &format!("docker://{name}"), &format!("oci:{}:x", path_str(&dir))]);
        assert_ok(&o, &format!("skopeo copy docker://{name} oci:…"));
        let (_, manifest) = layout(&dir);
        let layers = manifest["layers"].as_array().unwrap();
        assert!(!layers.is_empty() && layers.iter().all(|l| l["mediaType"] == media), "{codec}: {manifest:#}");
        if codec == "gzip" {
            for l in layers {
                let blob = dir.join("blobs/sha256").join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
                assert_ok(&tool("gzip", &["-t", path_str(&blob)]), "gzip -t on a pushed layer");
            }
        }
        let fresh = Kiln::new();
        // `kiln run` pulls the image into an empty root (decompressing each layer) and runs it.
        let out = fresh.run(&format!("{}/par/app@{digest}", reg.host()), &["cat", "/app/built.txt"]);
        assert_eq!(out.trim(), "built", "{codec}: the pulled image runs");
    }
}
