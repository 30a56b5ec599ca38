//! Shared by `cache_cli.rs`: "machines" (a private kiln root with the busybox base imported the
//! same way on every one, so their base digests and hence their cache keys agree), the real `kiln`
//! binary run with a scrubbed CI environment, metadata readers, and registry probes via skopeo.
//!
//! A machine is what a CI runner is: wiping it means making a new one. The Docker client
//! configuration (`DOCKER_CONFIG`, where `kiln login` writes) is per test, not per machine, so a
//! test can log in once and build on several machines, or log in as different users on purpose.

// Each test uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

#[path = "../support_common/mod.rs"]
mod common;
pub use common::*;

pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");
pub const BASE: &str = "kiln.test/busybox:latest";
pub const ARM_BUSYBOX: &str = "/var/lib/kiln-test/busybox-arm64/bin/busybox";

/// Root (overlayfs, namespaces), busybox-static for the base, skopeo to look at refs and
/// docker-registry to serve them. Outside CI a missing one skips (with the reason printed); in CI
/// it fails.
pub fn can_build() -> bool {
    kiln_testkit::require_root()
        && kiln_testkit::require_tool("busybox")
        && kiln_testkit::require_tool("skopeo")
        && kiln_testkit::require_tool("docker-registry")
        && kiln_testkit::require_tool("sha256sum")
}

/// Whether arm64 builds can run here (qemu-user binfmt handler and the arm64 busybox, both from
/// `scripts/deps`). Under `CI=true` their absence fails the test.
pub fn can_build_arm64() -> bool {
    let have = Path::new(ARM_BUSYBOX).exists() && Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists();
    if !have {
        let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        assert!(!ci, "CI must run scripts/deps: the arm64 busybox ({ARM_BUSYBOX}) or the qemu-aarch64 binfmt handler is missing");
        eprintln!("skipping: run scripts/deps first (arm64 busybox at {ARM_BUSYBOX} and the qemu-aarch64 binfmt handler)");
    }
    have
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Environment variables a CI provider sets, which `--cache-policy auto` reads. They are removed
/// from every child so that the environment the tests run in (often CI itself) cannot change what
/// kiln decides; a test that wants them passes them explicitly.
fn is_ci_var(name: &str) -> bool {
    name == "CI"
        || name.starts_with("GITHUB_")
        || name.starts_with("GITLAB_")
        || name.starts_with("CI_")
        || name.starts_with("BUILDKITE")
        || name == "RUNNER_OS"
}

/// A test's private space: a temp dir holding its machines, contexts and `DOCKER_CONFIG`s.
pub struct TestDir {
    pub tmp: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir { tmp: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A fresh machine with the amd64 busybox base imported, using `docker_config` for credentials.
    ///
    /// Every machine imports the same bytes under the same file name (`kiln import` records the
    /// name in the image's history) with `SOURCE_DATE_EPOCH=0`, so the base's manifest digest,
    /// and with it every cache key, is the same on every machine.
    pub fn machine(&self, name: &str, docker_config: &Path) -> Machine {
        let m = self.bare_machine(name, docker_config);
        let rootfs = m.scratch.join("busybox.tar");
        kiln_testkit::busybox_rootfs_tar(&rootfs).expect("busybox rootfs tarball");
        m.ok(&["import", path_str(&rootfs), "-t", BASE], &[("SOURCE_DATE_EPOCH", "0")]);
        m
    }

    /// A fresh machine with both busybox bases imported as `kiln.test/busybox:amd64` and `:arm64`
    /// (so `FROM kiln.test/busybox:${TARGETARCH}` picks the right one).
    pub fn two_arch_machine(&self, name: &str, docker_config: &Path) -> Machine {
        let m = self.bare_machine(name, docker_config);
        for (arch, busybox) in [("amd64", "/bin/busybox"), ("arm64", ARM_BUSYBOX)] {
            let tar = m.scratch.join(format!("busybox-{arch}.tar"));
            let st = Command::new(repo_root().join("scripts/busybox-rootfs"))
                .arg(&tar)
                .env("BUSYBOX", busybox)
                .env("SOURCE_DATE_EPOCH", "0")
                .stdout(Stdio::null())
                .status()
                .expect("run scripts/busybox-rootfs");
            assert!(st.success(), "scripts/busybox-rootfs for {arch}");
            let platform = format!("linux/{arch}");
            let tag = format!("kiln.test/busybox:{arch}");
            m.ok(&["import", "--platform", &platform, path_str(&tar), "-t", &tag], &[("SOURCE_DATE_EPOCH", "0")]);
        }
        m
    }

    fn bare_machine(&self, name: &str, docker_config: &Path) -> Machine {
        let root = self.path(&format!("{name}-root"));
        let scratch = self.path(name);
        fs::create_dir_all(&root).expect("create root");
        fs::create_dir_all(&scratch).expect("create scratch dir");
        Machine { root, docker_config: docker_config.to_path_buf(), scratch }
    }

    /// A new, empty `DOCKER_CONFIG` directory.
    pub fn docker_config(&self, name: &str) -> PathBuf {
        let d = self.path(&format!("docker-config-{name}"));
        fs::create_dir_all(&d).expect("create DOCKER_CONFIG");
        d
    }
}

/// One kiln root: what a CI runner would hold between two steps of one job.
pub struct Machine {
    pub root: PathBuf,
    pub docker_config: PathBuf,
    scratch: PathBuf,
}

impl Machine {
    /// `kiln --root ROOT ARGS…` with CI variables, `SOURCE_DATE_EPOCH` and `KILN_ROOT` removed,
    /// `DOCKER_CONFIG` set to this machine's, and then `env` applied.
    pub fn cmd_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut c = Command::new(KILN);
        c.arg("--root").arg(&self.root).args(args);
        // buildx's default provenance makes every pushed image an index (tests/attestations.rs).
        c.env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str() {
                if is_ci_var(k) {
                    c.env_remove(k);
                }
            }
        }
        c.env_remove("SOURCE_DATE_EPOCH").env_remove("KILN_ROOT").env("DOCKER_CONFIG", &self.docker_config);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("run kiln");
        if let Some(input) = stdin {
            let mut s = child.stdin.take().expect("stdin");
            s.write_all(input.as_bytes()).expect("write kiln's stdin");
        }
        child.wait_with_output().expect("wait for kiln")
    }

    /// Wipes the machine: its whole kiln root (store, local cache, snapshots) is deleted. A
    /// failure here means a build left something behind it cannot delete (a mount, say).
    pub fn wipe(self) {
        fs::remove_dir_all(&self.root).unwrap_or_else(|e| panic!("wipe {}: {e}", self.root.display()));
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_with(args, &[], None)
    }

    /// Runs kiln, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let o = self.cmd_with(args, env, None);
        assert_ok(&o, &format!("kiln {args:?}"));
        stdout(&o)
    }

    /// `kiln login HOST -u USER --password-stdin` into this machine's `DOCKER_CONFIG`.
    pub fn login(&self, host: &str, user: &str, password: &str) {
        let o = self.cmd_with(&["login", host, "-u", user, "--password-stdin"], &[], Some(password));
        assert_ok(&o, &format!("kiln login {host} -u {user}"));
    }

    /// `kiln build CONTEXT --progress plain --metadata-file MD EXTRA…` with `env`. Returns the
    /// process output and the metadata (when the build wrote it).
    pub fn build(&self, context: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Output, Option<Value>) {
        let md = self.scratch.join(format!("md-{}.json", unique()));
        let mut args = vec!["build", path_str(context), "--progress", "plain", "--metadata-file", path_str(&md)];
        args.extend_from_slice(extra);
        let o = self.cmd_with(&args, env, None);
        let v = md.exists().then(|| read_json(&md));
        (o, v)
    }

    /// Builds, asserts success, returns (stderr, metadata).
    pub fn build_ok(&self, context: &Path, extra: &[&str], env: &[(&str, &str)]) -> (String, Value) {
        let (o, md) = self.build(context, extra, env);
        assert_ok(&o, &format!("kiln build {extra:?}"));
        let md = md.unwrap_or_else(|| panic!("kiln build succeeded but wrote no metadata file:\n{}", stderr(&o)));
        (stderr(&o), md)
    }

    /// `kiln run IMAGE -- CMD…`; asserts success and returns stdout.
    pub fn run(&self, image: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", image, "--"];
        args.extend_from_slice(cmd);
        self.ok(&args, &[])
    }
}

pub fn policy(md: &Value) -> (String, String) {
    let p = &md["kiln.cache-policy"];
    (
        p["policy"].as_str().unwrap_or_else(|| panic!("no kiln.cache-policy.policy in {md:#}")).to_string(),
        p["reason"].as_str().unwrap_or_default().to_string(),
    )
}

/// The lines of `text` that are warnings (kiln prints them as `warning: …`).
pub fn warning_lines(text: &str) -> Vec<String> {
    text.lines().filter(|l| l.to_ascii_lowercase().contains("warning")).map(str::to_string).collect()
}

/// `skopeo inspect --raw docker://REF`: the manifest bytes, or `None` when the ref does not exist
/// (or cannot be read).
pub fn raw_manifest(reference: &str, creds: Option<(&str, &str)>) -> Option<Vec<u8>> {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--tls-verify=false", "--raw"]);
    let joined;
    if let Some((u, p)) = creds {
        joined = format!("{u}:{p}");
        c.args(["--creds", &joined]);
    }
    let o = c.arg(format!("docker://{reference}")).output().expect("run skopeo");
    o.status.success().then_some(o.stdout)
}

/// The manifest digest of a ref (`sha256:` of the raw bytes), or `None` when it does not exist.
pub fn manifest_digest(reference: &str, creds: Option<(&str, &str)>) -> Option<String> {
    let raw = raw_manifest(reference, creds)?;
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run sha256sum");
    child.stdin.take().expect("stdin").write_all(&raw).expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    let hex = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(hex.len(), 64, "sha256sum printed {:?}", String::from_utf8_lossy(&out.stdout));
    Some(format!("sha256:{hex}"))
}
