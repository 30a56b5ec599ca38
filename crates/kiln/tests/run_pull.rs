//! `kiln run` pulls what the store lacks, as `docker run` and `podman run` do: `--pull missing`
//! (the default), `always` (resolve the tag again) and `never` (the store only), against a real
//! `docker-registry`; the images are busybox root file systems pushed there by another kiln root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testkit::Registry;
use tempfile::TempDir;

fn ready() -> bool {
    kiln_testkit::require_root() && kiln_testkit::require_tool("docker-registry")
}

/// One kiln machine: its own root.
struct Kiln {
    root: TempDir,
}

impl Kiln {
    fn new() -> Kiln {
        Kiln { root: tempfile::tempdir().unwrap() }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_ROOT", self.root.path())
            .env("CI", "true")
            .env_remove("KILN_LOG")
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

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kiln {args:?} should have failed:\n{}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn tags(&self) -> Vec<String> {
        self.ok(&["images", "-q"]).lines().map(str::to_string).collect()
    }
}

/// A busybox root file system tarball; with `marker`, plus `/marker` holding it.
fn rootfs(dir: &Path, marker: Option<&str>) -> PathBuf {
    let tar = dir.join(format!("rootfs-{}.tar", marker.unwrap_or("plain")));
    kiln_testkit::busybox_rootfs_tar(&tar).unwrap();
    if let Some(m) = marker {
        let extra = dir.join("extra");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::write(extra.join("marker"), format!("{m}\n")).unwrap();
        let st = Command::new("tar").arg("-rf").arg(&tar).arg("-C").arg(&extra).arg("marker").status().unwrap();
        assert!(st.success(), "tar -r");
    }
    tar
}

/// Imports the rootfs as `image` on a pusher machine and pushes it.
fn publish(pusher: &Kiln, dir: &Path, image: &str, marker: Option<&str>) {
    let tar = rootfs(dir, marker);
    pusher.ok(&["import", tar.to_str().unwrap(), "-t", image]);
    pusher.ok(&["push", image]);
}

#[test]
fn run_pulls_an_image_that_is_only_in_a_registry() {
    if !ready() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/run/bb:1", reg.host());
    publish(&Kiln::new(), work.path(), &image, None);

    let k = Kiln::new();
    assert_eq!(k.ok(&["run", &image, "--", "echo", "hello from the registry"]), "hello from the registry\n");
    assert_eq!(k.tags(), vec![image.clone()], "the pull is tagged in the store");
    // Now it is here: --pull never runs it.
    assert_eq!(k.ok(&["run", "--pull", "never", &image, "--", "echo", "again"]), "again\n");
    // The registry flags `kiln pull` takes, --platform, and an explicit --pull missing.
    let other = Kiln::new();
    let host = kiln_oci::Platform::host().to_string();
    let out = other.ok(&["run", "--pull", "missing", "--insecure-registry", &reg.host(), "--platform", &host, &image, "--", "echo", "ok"]);
    assert_eq!(out, "ok\n");
}

#[test]
fn run_pull_never_and_a_failed_pull_are_clear_errors_about_the_image() {
    if !ready() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/run/bb:1", reg.host());
    publish(&Kiln::new(), work.path(), &image, None);

    let k = Kiln::new();
    let e = k.fails(&["run", "--pull", "never", &image, "--", "true"]);
    assert!(e.contains(&format!("image {image} is not in the local store")) && e.contains("kiln pull"), "{e}");
    assert!(!e.contains("base image"), "kiln run builds nothing: {e}");
    assert!(k.tags().is_empty(), "nothing was pulled");

    // A tag the registry does not have: the pull's failure, named for the image.
    let missing = format!("{}/run/bb:nope", reg.host());
    let e = k.fails(&["run", &missing, "--", "true"]);
    assert!(e.contains(&format!("image {missing}")) && e.contains("pulling it failed") && e.contains("404"), "{e}");
    assert!(!e.contains("base image"), "{e}");
}

#[test]
fn run_pull_always_resolves_the_tag_again() {
    if !ready() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/run/bb:1", reg.host());
    let pusher = Kiln::new();
    publish(&pusher, work.path(), &image, Some("v1"));

    let k = Kiln::new();
    assert_eq!(k.ok(&["run", &image, "--", "cat", "/marker"]), "v1\n");
    // The tag moves in the registry; the default keeps using what the store has.
    publish(&pusher, work.path(), &image, Some("v2"));
    assert_eq!(k.ok(&["run", &image, "--", "cat", "/marker"]), "v1\n");
    assert_eq!(k.ok(&["run", "--pull", "always", &image, "--", "cat", "/marker"]), "v2\n");
    // and the store's tag followed the registry's.
    assert_eq!(k.ok(&["run", "--pull", "never", &image, "--", "cat", "/marker"]), "v2\n");
}
