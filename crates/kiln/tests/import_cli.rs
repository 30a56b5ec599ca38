//! `kiln import` of a busybox rootfs, checked with real OCI tools (skopeo, umoci), then `kiln images`,
//! `kiln rmi` and `kiln prune`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).arg("--root").arg(root).args(args).env_remove("SOURCE_DATE_EPOCH").output().expect("run kiln")
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required in CI");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

fn have_busybox() -> bool {
    let found = Path::new("/bin/busybox").exists();
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("/bin/busybox (busybox-static) is required in CI");
        }
        eprintln!("skipping: /bin/busybox (busybox-static) is not installed");
    }
    found
}

/// A busybox root file system tarball made from Debian's busybox-static.
fn busybox_rootfs_tar(dir: &Path) -> std::path::PathBuf {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "echo"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(st.success());
    tar
}

#[test]
fn import_then_inspect_with_skopeo_then_rmi_and_prune() {
    if !have("skopeo") || !have("tar") || !have_busybox() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("kiln-root");
    let tar = busybox_rootfs_tar(t.path());

    let digest = ok(kiln(&root, &["import", tar.to_str().unwrap(), "-t", "localhost/busybox:test", "-t", "busybox:kiln", "--cmd", "sh"]));
    let digest = digest.trim().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");

    let images = ok(kiln(&root, &["images"]));
    let lines: Vec<&str> = images.lines().collect();
    assert!(lines[0].starts_with("REFERENCE") && lines[0].contains("DIGEST") && lines[0].contains("SIZE") && lines[0].contains("CREATED"));
    assert!(images.contains("localhost/busybox:test"), "{images}");
    assert!(images.contains("busybox:kiln"), "{images}");
    assert!(images.contains(&digest[7..19]), "{images}");
    assert!(images.contains("MB"), "busybox is around a megabyte or more: {images}");

    // skopeo reads the layout by the ref.name annotation and agrees on the digest.
    let store = root.join("store");
    let oci_ref = format!("oci:{}:docker.io/library/busybox:kiln", store.display());
    let out = Command::new("skopeo").args(["inspect", &oci_ref]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&ok(out).into_bytes()).unwrap();
    assert_eq!(info["Digest"], digest.as_str());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(info["Os"], "linux");
    let out = Command::new("skopeo").args(["inspect", "--config", &oci_ref]).output().unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&ok(out).into_bytes()).unwrap();
    assert_eq!(cfg["config"]["Cmd"][0], "sh");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);

    // skopeo copy verifies every blob digest while copying; the layer must hold busybox.
    let out_dir = t.path().join("copied");
    ok(Command::new("skopeo").args(["copy", &oci_ref, &format!("dir:{}", out_dir.display())]).output().unwrap());
    let layer_digest = info["Layers"][0].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let listing = ok(Command::new("tar").arg("-tzf").arg(out_dir.join(&layer_digest)).output().unwrap());
    assert!(listing.lines().any(|l| l.trim_start_matches("./") == "bin/busybox"), "{listing}");

    if have("umoci") {
        let bundle = t.path().join("bundle");
        let image = format!("{}:localhost/busybox:test", store.display());
        ok(Command::new("umoci").args(["unpack", "--rootless", "--image", &image]).arg(&bundle).output().unwrap());
        assert!(bundle.join("rootfs/bin/busybox").is_file());
        assert_eq!(fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(), Path::new("busybox"));
    }

    // rmi one tag: nothing is freed while the other tag holds the image.
    ok(kiln(&root, &["rmi", "localhost/busybox:test"]));
    let pruned = ok(kiln(&root, &["prune"]));
    assert!(pruned.contains("0 blob(s) deleted"), "{pruned}");
    ok(kiln(&root, &["rmi", "busybox:kiln"]));
    let pruned = ok(kiln(&root, &["prune"]));
    assert!(pruned.contains("3 blob(s) deleted"), "{pruned}");
    assert_eq!(fs::read_dir(store.join("blobs/sha256")).unwrap().count(), 0);
    let images = ok(kiln(&root, &["images", "-q"]));
    assert!(images.trim().is_empty(), "{images}");

    let o = kiln(&root, &["rmi", "nothing:here"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such image"), "{o:?}");
}

#[test]
fn import_is_deterministic_with_source_date_epoch() {
    if !have("tar") || !have_busybox() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tar = busybox_rootfs_tar(t.path());
    let run = |root: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(root)
            .args(["import", tar.to_str().unwrap(), "-t", "x:1", "--platform", "linux/arm64"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        ok(o).trim().to_string()
    };
    let a = run(&t.path().join("r1"));
    let b = run(&t.path().join("r2"));
    assert_eq!(a, b, "same tarball and SOURCE_DATE_EPOCH must give the same image digest");
    let cfg_dir = t.path().join("r1/store");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(cfg_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "docker.io/library/x:1");
}

#[test]
fn import_reports_a_missing_tarball_by_name() {
    let t = tempfile::tempdir().unwrap();
    let o = kiln(&t.path().join("r"), &["import", "/nonexistent/rootfs.tar", "-t", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/rootfs.tar"));
}
