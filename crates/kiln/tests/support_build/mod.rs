//! Shared by the `build_*` integration tests: a private kiln root with the busybox base imported,
//! contexts written from `(path, content)` lists, the real `kiln` binary, and readers for the
//! metadata file and the store.
//!
//! Every test gets its own temporary directory (its own `--root`), so tests run in parallel.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "../support_common/mod.rs"]
mod common;
pub use common::*;

pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");
pub const BASE: &str = "kiln.test/busybox:latest";

/// Whether this machine can run builds: root (overlayfs, namespaces) and busybox-static for the
/// base image. Outside CI a missing one skips the test (with the reason printed); in CI it fails.
pub fn can_build() -> bool {
    kiln_testkit::require_root() && kiln_testkit::require_tool("busybox")
}

/// A private kiln root with `kiln.test/busybox:latest` imported, in a temp dir removed on drop.
pub struct Kiln {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Kiln {
    pub fn new() -> Kiln {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("root");
        let rootfs = tmp.path().join("busybox.tar");
        kiln_testkit::busybox_rootfs_tar(&rootfs).expect("busybox rootfs tarball");
        let k = Kiln { tmp, root };
        let o = k.cmd(&["import", path_str(&rootfs), "-t", BASE]);
        assert_ok(&o, "kiln import busybox");
        k
    }

    /// A machine whose base has the same digest on every machine (the same bytes imported under
    /// the same name with `SOURCE_DATE_EPOCH=0`), so cache keys agree across machines: what a
    /// wiped CI runner is.
    pub fn reproducible() -> Kiln {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("root");
        let rootfs = tmp.path().join("busybox.tar");
        kiln_testkit::busybox_rootfs_tar(&rootfs).expect("busybox rootfs tarball");
        let o = Command::new(KILN)
            .arg("--root")
            .arg(&root)
            .args(["import", path_str(&rootfs), "-t", BASE])
            .env("SOURCE_DATE_EPOCH", "0")
            .output()
            .expect("run kiln import");
        assert_ok(&o, "kiln import busybox");
        Kiln { tmp, root }
    }

    /// Like [`Kiln::new`], with the kiln root at `root` (e.g. on a file system the test made).
    pub fn with_root(root: PathBuf) -> Kiln {
        let tmp = tempfile::tempdir().expect("temp dir");
        let rootfs = tmp.path().join("busybox.tar");
        kiln_testkit::busybox_rootfs_tar(&rootfs).expect("busybox rootfs tarball");
        let k = Kiln { tmp, root };
        let o = k.cmd(&["import", path_str(&rootfs), "-t", BASE]);
        assert_ok(&o, "kiln import busybox");
        k
    }

    /// A path inside this test's temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `kiln --root ROOT ARGS…`, with `SOURCE_DATE_EPOCH` and `CI` cleared so that the
    /// environment of the test run cannot change what kiln does.
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(KILN)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("CI")
            // buildx's default provenance makes every pushed image an index; tests/attestations.rs
            // covers it, the other tests are about other things.
            .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
            .output()
            .expect("run kiln")
    }

    /// `kiln build CONTEXT --build-arg BASE=… --progress plain EXTRA…`.
    pub fn build(&self, context: &Path, extra: &[&str]) -> Output {
        let base_arg = format!("BASE={BASE}");
        let mut args = vec!["build", path_str(context), "--build-arg", &base_arg, "--progress", "plain"];
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    /// Builds, asserts success, and returns the metadata file's JSON.
    pub fn build_md(&self, context: &Path, extra: &[&str]) -> Value {
        let md = self.path(&format!("md-{}.json", unique()));
        let mut args: Vec<&str> = vec!["--metadata-file", path_str(&md)];
        args.extend_from_slice(extra);
        let o = self.build(context, &args);
        assert_ok(&o, "kiln build");
        read_json(&md)
    }

    /// `kiln run IMAGE -- CMD…`; asserts success and returns stdout.
    pub fn run(&self, image: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", image];
        if !cmd.is_empty() {
            args.push("--");
            args.extend_from_slice(cmd);
        }
        let o = self.cmd(&args);
        assert_ok(&o, &format!("kiln run {image} {cmd:?}"));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The store directory (an OCI image layout).
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// What the store holds: its blob names and its index.json, to compare before and after.
    pub fn store_snapshot(&self) -> (Vec<String>, String) {
        let store = self.store();
        let blobs = list_files(&store.join("blobs"));
        let index = fs::read_to_string(store.join("index.json")).expect("store index.json");
        (blobs, index)
    }

    /// The references `kiln images` lists (first column, header dropped).
    pub fn image_refs(&self) -> Vec<String> {
        let o = self.cmd(&["images"]);
        assert_ok(&o, "kiln images");
        String::from_utf8_lossy(&o.stdout).lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
    }
}

/// Every regular file under `dir`, as paths relative to it, sorted. Symlinks are not followed
/// (a snapshot's absolute links would lead out to the host) and devices and fifos are skipped.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(rel) = p.strip_prefix(dir) {
                    out.push(rel.display().to_string());
                }
            }
        }
    }
    out.sort();
    out
}
