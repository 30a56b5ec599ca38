//! Issue 6's acceptance: one multi-platform build into an OCI index (arm64 under qemu-user-static),
//! `kiln run --platform`, pushes checked with skopeo, and a smoke test failing on one platform
//! stopping the push. Then the store's multi-platform model: a tag names the registry's index, pulls
//! fetch the platforms asked for into it, and FROM, run, push and copy pick (or demand) platforms
//! from it, never another platform's image in place of the one asked for. Bases are busybox amd64 and arm64 imported offline (`scripts/deps` unpacks the
//! arm64 busybox-static), picked per platform with `FROM …:${TARGETARCH}`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testkit::Registry;
use tempfile::TempDir;

const ARM_BUSYBOX: &str = kiln_testkit::ARM64_BUSYBOX;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ready() -> bool {
    if !kiln_testkit::require_root() || !kiln_testkit::require_tool("skopeo") || !kiln_testkit::require_tool("qemu-aarch64-static") {
        return false;
    }
    kiln_testkit::require_arm64()
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

    /// A machine whose store holds nothing.
    fn empty() -> Kiln {
        Kiln { root: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() }
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kiln {args:?} should have failed:\n{}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `kiln inspect REF` of the local store.
    fn inspect(&self, reference: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", reference])).unwrap()
    }

    /// Writes a context whose Dockerfile is `dockerfile`, under `name`.
    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let ctx = self.work.path().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        ctx
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
            // buildx's default provenance makes every pushed image an index (tests/attestations.rs).
            .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
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
        "build",
        ctx.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &tag,
        "--push",
        "--output",
        "type=image",
        "--output",
        &out,
        "--metadata-file",
        md.to_str().unwrap(),
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
    let mut child = Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
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
        "build",
        ctx.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        &tag,
        "--push",
        "--test",
        "test \"$(cat /arch)\" = x86_64",
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

/// What `uname -m` says on this machine, natively.
const HOST_UNAME: &str = std::env::consts::ARCH;

/// Pushes `k`'s imported amd64 and arm64 busyboxes to `reg` as one two-platform index, `<reg>/base:1`
/// (each image pushed first, then merged by digest with `kiln manifest merge`), and returns its reference.
fn push_two_platform_base(k: &Kiln, reg: &Registry) -> String {
    let h = reg.host();
    let mut sources = Vec::new();
    for arch in ["amd64", "arm64"] {
        let out = k.ok(&["copy", &format!("store:kiln.test/busybox:{arch}"), &format!("{h}/base:{arch}")]);
        sources.push(format!("{h}/base@{}", out.split_whitespace().last().unwrap()));
    }
    let tag = format!("{h}/base:1");
    k.ok(&["manifest", "merge", "-t", &tag, &sources[0], &sources[1]]);
    let index = skopeo_raw(&format!("docker://{tag}")).expect("the merged base is in the registry");
    assert_eq!(platforms_of(&index), vec!["linux/amd64", "linux/arm64"]);
    tag
}

/// `kiln inspect`'s `platforms` of a local index: (platform, present), sorted.
fn stored_platforms(k: &Kiln, reference: &str) -> Vec<(String, bool)> {
    let j = k.inspect(reference);
    assert_eq!(j["mediaType"], "application/vnd.oci.image.index.v1+json", "{reference} names an index in the store: {j:#}");
    let mut v: Vec<(String, bool)> = j["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["platform"].as_str().unwrap().to_string(), p["present"].as_bool().unwrap()))
        .collect();
    v.sort();
    v
}

fn both(amd64: bool, arm64: bool) -> Vec<(String, bool)> {
    vec![("linux/amd64".to_string(), amd64), ("linux/arm64".to_string(), arm64)]
}

#[test]
fn a_native_build_after_a_two_platform_build_from_a_registry_base_runs_the_hosts_base() {
    if !ready() {
        return;
    }
    let k = Kiln::new();
    let reg = Registry::start_plain().unwrap();
    let base = push_two_platform_base(&k, &reg);

    // A machine that has never seen the base builds for both platforms: each platform's base is
    // pulled, and both land in the one index the base's tag names.
    let m = Kiln::empty();
    let two = m.context("two", &format!("FROM {base}\nRUN uname -m > /arch\n"));
    m.ok(&["build", two.to_str().unwrap(), "--platform", "linux/amd64,linux/arm64", "-t", "kiln.test/two:1"]);
    assert_eq!(m.ok(&["run", "--pull", "never", "--platform", "linux/arm64", "kiln.test/two:1", "--", "cat", "/arch"]).trim(), "aarch64");
    assert_eq!(m.ok(&["run", "--pull", "never", "--platform", "linux/amd64", "kiln.test/two:1", "--", "cat", "/arch"]).trim(), "x86_64");
    assert_eq!(stored_platforms(&m, &base), both(true, true));
    assert_eq!(m.inspect(&base)["digest"].as_str().unwrap(), pushed_digest(&base), "the registry's index, verbatim");

    // A plain build FROM the same tag runs the host's base natively, not the other one under qemu.
    let native = m.context("native", &format!("FROM {base}\nRUN uname -m > /native\n"));
    m.ok(&["build", native.to_str().unwrap(), "-t", "kiln.test/native:1"]);
    assert_eq!(m.ok(&["run", "--pull", "never", "kiln.test/native:1", "--", "cat", "/native"]).trim(), HOST_UNAME);
    assert_eq!(m.ok(&["run", "--pull", "never", &base, "--", "uname", "-m"]).trim(), HOST_UNAME);
    // Whichever platform's pull finished last, the tag serves both from the store.
    for (platform, uname) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        assert_eq!(m.ok(&["run", "--pull", "never", "--platform", platform, &base, "--", "uname", "-m"]).trim(), uname);
    }
}

#[test]
fn pull_keeps_the_index_and_fetches_the_platforms_asked_for() {
    if !ready() {
        return;
    }
    let k = Kiln::new();
    let reg = Registry::start_plain().unwrap();
    let base = push_two_platform_base(&k, &reg);
    let index = pushed_digest(&base);

    // Default: the host's platform only; the index is kept whole, arm64 listed but not fetched.
    let m = Kiln::empty();
    m.ok(&["pull", &base]);
    assert_eq!(m.inspect(&base)["digest"].as_str().unwrap(), index);
    assert_eq!(stored_platforms(&m, &base), both(true, false));
    assert_eq!(m.ok(&["run", "--pull", "never", &base, "--", "uname", "-m"]).trim(), HOST_UNAME);
    let e = m.fails(&["run", "--pull", "never", "--platform", "linux/arm64", &base, "--", "uname", "-m"]);
    let want =
        format!("{base} has no image for linux/arm64 in the local store (it has: linux/amd64); kiln pull --platform linux/arm64 {base}");
    assert!(e.contains(&want), "expected `{want}` in:\n{e}");

    // Pulling the second platform fills in the same index: the tag does not move.
    m.ok(&["pull", "--platform", "linux/arm64", &base]);
    assert_eq!(m.inspect(&base)["digest"].as_str().unwrap(), index);
    assert_eq!(stored_platforms(&m, &base), both(true, true));
    assert_eq!(m.ok(&["run", "--pull", "never", "--platform", "linux/arm64", &base, "--", "uname", "-m"]).trim(), "aarch64");
    assert_eq!(m.ok(&["run", "--pull", "never", "--platform", "linux/amd64", &base, "--", "uname", "-m"]).trim(), "x86_64");

    // A platform the index does not list is an error even when kiln may pull.
    let e = m.fails(&["run", "--platform", "linux/s390x", &base, "--", "true"]);
    assert!(e.contains("linux/s390x") && e.contains("linux/arm64") && !e.contains("base image"), "{e}");

    // --all-platforms, and a list.
    let all = Kiln::empty();
    all.ok(&["pull", "--all-platforms", &base]);
    assert_eq!(stored_platforms(&all, &base), both(true, true));
    let list = Kiln::empty();
    list.ok(&["pull", "--platform", "linux/amd64,linux/arm64", &base]);
    assert_eq!(stored_platforms(&list, &base), both(true, true));
    let arm = Kiln::empty();
    arm.ok(&["pull", "--platform", "linux/arm64", &base]);
    assert_eq!(stored_platforms(&arm, &base), both(false, true));
    // `kiln run` without --pull never fetches the missing platform into the index.
    assert_eq!(arm.ok(&["run", &base, "--", "uname", "-m"]).trim(), HOST_UNAME);
    assert_eq!(stored_platforms(&arm, &base), both(true, true));

    // With the registry gone, FROM takes the host's image from the stored index and names the
    // platform it lacks instead of building on another one.
    let off = Kiln::empty();
    off.ok(&["pull", &base]);
    drop(reg);
    let ctx = off.context("offline", &format!("FROM {base}\nRUN uname -m > /arch\n"));
    off.ok(&["build", ctx.to_str().unwrap(), "-t", "kiln.test/offline:1"]);
    assert_eq!(off.ok(&["run", "--pull", "never", "kiln.test/offline:1", "--", "cat", "/arch"]).trim(), HOST_UNAME);
    let e = off.fails(&["build", ctx.to_str().unwrap(), "--platform", "linux/arm64", "-t", "kiln.test/offline:arm"]);
    assert!(
        e.contains("has no image for linux/arm64 in the local store") && e.contains(&format!("kiln pull --platform linux/arm64 {base}")),
        "{e}"
    );
}

#[test]
fn run_of_a_platform_an_image_is_not_for_is_an_error() {
    if !ready() {
        return;
    }
    // The tag names one amd64 image: asking for arm64 must not run it.
    let k = Kiln::new();
    let e = k.fails(&["run", "--pull", "never", "--platform", "linux/arm64", "kiln.test/busybox:amd64", "--", "uname", "-m"]);
    assert!(e.contains("kiln.test/busybox:amd64 has no image for linux/arm64 in the local store (it has: linux/amd64)"), "{e}");
    // and the other way round for the arm64 one; without --platform a lone image runs as it is.
    let e = k.fails(&["run", "--pull", "never", "--platform", "linux/amd64", "kiln.test/busybox:arm64", "--", "uname", "-m"]);
    assert!(e.contains("has no image for linux/amd64 in the local store (it has: linux/arm64)"), "{e}");
    assert_eq!(k.ok(&["run", "--pull", "never", "kiln.test/busybox:arm64", "--", "uname", "-m"]).trim(), "aarch64");
}

#[test]
fn push_and_copy_of_an_index_tag_send_every_platform_or_name_the_missing_one() {
    if !ready() {
        return;
    }
    let k = Kiln::new();
    let reg = Registry::start_plain().unwrap();
    let h = reg.host();
    let base = push_two_platform_base(&k, &reg);
    let index = pushed_digest(&base);

    let m = Kiln::empty();
    m.ok(&["pull", &base]);
    let want =
        format!("{base} has no image for linux/arm64 in the local store (it has: linux/amd64); kiln pull --platform linux/arm64 {base}");
    let copied = format!("{h}/copied:1");
    let e = m.fails(&["copy", &format!("store:{base}"), &copied]);
    assert!(e.contains(&want), "expected `{want}` in:\n{e}");
    assert!(skopeo_raw(&format!("docker://{copied}")).is_none(), "nothing may be pushed");
    let e = m.fails(&["copy", "--platform", "linux/arm64", &format!("store:{base}"), &format!("{h}/copied:arm64")]);
    assert!(e.contains(&want), "expected `{want}` in:\n{e}");
    // The platform that is here can go on its own.
    m.ok(&["copy", "--platform", "linux/amd64", &format!("store:{base}"), &format!("{h}/copied:amd64")]);
    let one = skopeo_raw(&format!("docker://{h}/copied:amd64")).unwrap();
    assert!(one.get("manifests").is_none(), "one image, not an index: {one}");

    // A second tag in the store names the same partial index; pushing it needs every platform.
    let pushed = format!("{h}/pushed:1");
    m.ok(&["copy", &format!("store:{base}"), &format!("store:{pushed}")]);
    let e = m.fails(&["push", &pushed]);
    assert!(e.contains(&format!("{pushed} has no image for linux/arm64 in the local store (it has: linux/amd64)")), "{e}");
    assert!(skopeo_raw(&format!("docker://{pushed}")).is_none(), "nothing may be pushed");

    // With both fetched, push and copy send the whole index, byte for byte the registry's.
    m.ok(&["pull", "--platform", "linux/arm64", &base]);
    assert_eq!(m.ok(&["copy", &format!("store:{base}"), &copied]).split_whitespace().last().unwrap(), index);
    assert_eq!(platforms_of(&skopeo_raw(&format!("docker://{copied}")).unwrap()), vec!["linux/amd64", "linux/arm64"]);
    assert_eq!(m.ok(&["push", &pushed]).split_whitespace().last().unwrap(), index);
    assert_eq!(pushed_digest(&pushed), index);
    for arch in ["amd64", "arm64"] {
        let o = Command::new("skopeo")
            .args(["--override-arch", arch, "inspect", "--tls-verify=false", &format!("docker://{pushed}")])
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo inspect {pushed} for {arch}: {}", String::from_utf8_lossy(&o.stderr));
    }
}
