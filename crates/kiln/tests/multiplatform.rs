//! Issue 6's acceptance: one multi-platform build into an OCI index (arm64 under qemu-user-static),
//! `kiln run --platform`, pushes checked with skopeo, and a smoke test failing on one platform
//! stopping the push. Bases are busybox amd64 and arm64 imported offline (`scripts/deps` unpacks the
//! arm64 busybox-static), picked per platform with `FROM …:${TARGETARCH}`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testkit::Registry;
use tempfile::TempDir;

const ARM_BUSYBOX: &str = "/var/lib/kiln-test/busybox-arm64/bin/busybox";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ready() -> bool {
    if !kiln_testkit::require_root() || !kiln_testkit::require_tool("skopeo") || !kiln_testkit::require_tool("qemu-aarch64-static") {
        return false;
    }
    let have = Path::new(ARM_BUSYBOX).exists() && Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists();
    if !have {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run scripts/deps: arm64 busybox or the qemu-aarch64 binfmt handler is missing");
        eprintln!("skipping: run scripts/deps first (arm64 busybox at {ARM_BUSYBOX} and the qemu-aarch64 binfmt handler)");
    }
    have
}

struct Kiln {
    root: TempDir,
    work: TempDir,
}

impl Kiln {
    fn new() -> Kiln {
        let k = Kiln { root: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() };
        for (arch, bb) in [("amd64", "/bin/busybox"), ("arm64", ARM_BUSYBOX)] {
            let tar = k.work.path().join(format!("busybox-{arch}.tar"));
            let st = Command::new(repo_root().join("scripts/busybox-rootfs")).arg(&tar).env("BUSYBOX", bb).status().unwrap();
            assert!(st.success(), "scripts/busybox-rootfs for {arch}");
            let platform = format!("linux/{arch}");
            let tag = format!("kiln.test/busybox:{arch}");
            k.ok(&["import", "--platform", &platform, tar.to_str().unwrap(), "-t", &tag]);
        }
        let ctx = k.ctx();
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), "FROM kiln.test/busybox:${TARGETARCH}\nRUN uname -m > /arch\n").unwrap();
        k
    }

    fn ctx(&self) -> PathBuf {
        self.work.path().join("ctx")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_ROOT", self.root.path())
            .env("SOURCE_DATE_EPOCH", "0")
            .env("CI", "true")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn skopeo_raw(reference: &str) -> Option<serde_json::Value> {
    let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", reference]).output().unwrap();
    o.status.success().then(|| serde_json::from_slice(&o.stdout).unwrap())
}

fn platforms_of(index: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn one_build_two_platforms_one_index_and_run_under_emulation() {
    if !ready() {
        return;
    }
    let k = Kiln::new();
    let reg = Registry::start_plain().unwrap();
    let tag = format!("{}/multi:1", reg.host());
    let ctx = k.ctx();
    let md = k.work.path().join("md.json");
    let oci = k.work.path().join("multi.tar");
    let out = format!("type=oci,dest={}", oci.display());
    k.ok(&[
        "build", ctx.to_str().unwrap(), "--platform", "linux/amd64,linux/arm64", "-t", &tag, "--push", "--output", "type=image",
        "--output", &out, "--metadata-file", md.to_str().unwrap(),
    ]);
    // The index (pushed and written as oci-archive) has one manifest per platform.
    let pushed = skopeo_raw(&format!("docker://{tag}")).expect("skopeo inspects the pushed index");
    assert_eq!(pushed["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(platforms_of(&pushed), vec!["linux/amd64", "linux/arm64"]);
    let archived = skopeo_raw(&format!("oci-archive:{}", oci.display())).expect("skopeo reads the oci-archive");
    assert_eq!(platforms_of(&archived), vec!["linux/amd64", "linux/arm64"]);
    // skopeo inspects each child too.
    for m in pushed["manifests"].as_array().unwrap() {
        let child = format!("docker://{}/multi@{}", reg.host(), m["digest"].as_str().unwrap());
        let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", &child]).output().unwrap();
        assert!(o.status.success(), "skopeo inspect {child}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // The arm64 image really ran arm64 binaries.
    assert_eq!(k.ok(&["run", "--platform", "linux/arm64", &tag, "--", "cat", "/arch"]).trim(), "aarch64");
    assert_eq!(k.ok(&["run", "--platform", "linux/amd64", &tag, "--", "cat", "/arch"]).trim(), "x86_64");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&md).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], pushed_digest(&tag));
    assert_eq!(meta["kiln.images"].as_array().unwrap().len(), 2);
}

/// The digest of the index as the registry serves it, computed by `sha256sum` (not by kiln).
fn pushed_digest(tag: &str) -> String {
    use std::io::Write;
    let raw = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &format!("docker://{tag}")]).output().unwrap();
    assert!(raw.status.success());
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&raw.stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap())
}

#[test]
fn a_smoke_test_failing_on_one_platform_fails_the_build_and_pushes_nothing() {
    if !ready() {
        return;
    }
    let k = Kiln::new();
    let reg = Registry::start_plain().unwrap();
    let tag = format!("{}/smoke:1", reg.host());
    let ctx = k.ctx();
    let o = k.run(&[
        "build", ctx.to_str().unwrap(), "--platform", "linux/amd64,linux/arm64", "-t", &tag, "--push",
        "--test", "test \"$(cat /arch)\" = x86_64",
    ]);
    assert!(!o.status.success(), "the arm64 smoke test must fail the build");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("linux/arm64"), "the error names the platform: {err}");
    assert!(skopeo_raw(&format!("docker://{tag}")).is_none(), "nothing may be pushed");
    let images = k.ok(&["images"]);
    assert!(!images.contains("smoke"), "nothing may be tagged: {images}");
}

#[test]
fn a_stage_from_the_build_platform_runs_natively_inside_a_foreign_build() {
    if !ready() {
        return;
    }
    // The cross-compiling pattern: the builder stage runs on the build platform, the final stage
    // is the target platform's.
    let k = Kiln::new();
    let ctx = k.work.path().join("cross");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM --platform=$BUILDPLATFORM kiln.test/busybox:${BUILDARCH} AS build\n\
         RUN uname -m > /built-on\n\
         FROM kiln.test/busybox:${TARGETARCH}\n\
         COPY --from=build /built-on /built-on\n\
         RUN uname -m > /arch\n",
    )
    .unwrap();
    k.ok(&["build", ctx.to_str().unwrap(), "--platform", "linux/arm64", "-t", "kiln.test/cross:1"]);
    let out = k.ok(&["run", "--platform", "linux/arm64", "kiln.test/cross:1", "--", "cat", "/built-on", "/arch"]);
    assert_eq!(out, "x86_64\naarch64\n");
}

#[test]
fn a_missing_emulator_is_a_clear_error() {
    if !kiln_testkit::require_root() {
        return;
    }
    // riscv64 has no binfmt handler here: the error names the package and the command to enable it.
    let k = Kiln { root: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() };
    let tar = k.work.path().join("bb.tar");
    assert!(Command::new(repo_root().join("scripts/busybox-rootfs")).arg(&tar).status().unwrap().success());
    k.ok(&["import", "--platform", "linux/riscv64", tar.to_str().unwrap(), "-t", "kiln.test/busybox:riscv64"]);
    let ctx = k.ctx();
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM kiln.test/busybox:${TARGETARCH}\nRUN true\n").unwrap();
    let o = k.run(&["build", ctx.to_str().unwrap(), "--platform", "linux/riscv64"]);
    if Path::new("/proc/sys/fs/binfmt_misc/qemu-riscv64").exists() {
        eprintln!("qemu-riscv64 is registered here; the missing-emulator path cannot be shown");
        return;
    }
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("qemu-user-static") && err.contains("update-binfmts"), "{err}");
    assert!(err.contains("Dockerfile:2"), "names the step: {err}");
}
