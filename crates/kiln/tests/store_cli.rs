//! The store under several kiln processes at once: concurrent imports and prunes never lose a tag or a
//! blob that a tag needs, and index.json stays valid.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn spawn(root: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln")
}

fn wait_ok(c: Child) -> String {
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "kiln failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// A small rootfs tarball with distinct content per `n`, built with the tar crate-free `tar` command.
fn rootfs(dir: &Path, n: usize) -> std::path::PathBuf {
    let rootfs = dir.join(format!("rootfs{n}"));
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/id"), format!("image {n}\n").repeat(1000)).unwrap();
    let tar = dir.join(format!("rootfs{n}.tar"));
    let st = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().expect("run tar");
    assert!(st.success());
    tar
}

#[test]
fn concurrent_imports_and_prunes_keep_every_tag_and_blob() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("kiln-root");
    let tars: Vec<_> = (0..6).map(|n| rootfs(t.path(), n)).collect();
    let mut children = Vec::new();
    for (n, tar) in tars.iter().enumerate() {
        let tag = format!("localhost/img{n}:v1");
        children.push(spawn(&root, &["import", tar.to_str().unwrap(), "-t", &tag]));
        if n % 2 == 1 {
            children.push(spawn(&root, &["prune"]));
        }
    }
    for c in children {
        wait_ok(c);
    }
    let images = wait_ok(spawn(&root, &["images", "-q"]));
    let mut names: Vec<&str> = images.lines().collect();
    names.sort();
    assert_eq!(names, (0..6).map(|n| format!("localhost/img{n}:v1")).collect::<Vec<_>>());

    // Every blob each tag needs is present: a final prune frees nothing.
    let pruned = wait_ok(spawn(&root, &["prune"]));
    assert!(pruned.contains("(0 blob(s) deleted, 18 kept)"), "{pruned}");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(root.join("store/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 6);
}

#[test]
fn rmi_with_prune_frees_blobs_at_once() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("kiln-root");
    let tar = rootfs(t.path(), 0);
    wait_ok(spawn(&root, &["import", tar.to_str().unwrap(), "-t", "a:1", "--compression", "zstd"]));
    let out = wait_ok(spawn(&root, &["rmi", "--prune", "a:1"]));
    assert!(out.contains("Untagged: a:1"), "{out}");
    assert!(out.contains("3 blob(s) deleted"), "{out}");
    assert_eq!(fs::read_dir(root.join("store/blobs/sha256")).unwrap().count(), 0);
}
