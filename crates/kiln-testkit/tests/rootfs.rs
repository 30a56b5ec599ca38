//! Root file system tarballs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use kiln_testkit::{busybox_rootfs_tar, random_rootfs_tar, require_root, require_tool, ROOTFS_MTIME};

struct Item {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    link: Option<String>,
    data: Vec<u8>,
    mtime: u64,
}

fn read_tar(path: &Path) -> (Vec<String>, BTreeMap<String, Item>) {
    let mut order = Vec::new();
    let mut map = BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(path).expect("open tar"));
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().trim_end_matches('/').to_string();
        let h = e.header().clone();
        let mut data = Vec::new();
        if h.entry_type() == tar::EntryType::Regular && h.size().unwrap_or(0) < 1024 * 1024 {
            e.read_to_end(&mut data).expect("read");
        }
        order.push(name.clone());
        map.insert(
            name,
            Item {
                kind: h.entry_type(),
                mode: h.mode().expect("mode"),
                uid: h.uid().expect("uid"),
                link: h.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned()),
                data,
                mtime: h.mtime().expect("mtime"),
            },
        );
    }
    (order, map)
}

#[test]
fn busybox_rootfs_has_applets_users_and_dirs_and_is_deterministic() {
    if !require_tool("busybox") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a.tar");
    let b = tmp.path().join("b.tar");
    busybox_rootfs_tar(&a).expect("write a");
    busybox_rootfs_tar(&b).expect("write b");
    assert_eq!(std::fs::read(&a).expect("read a"), std::fs::read(&b).expect("read b"), "not deterministic");

    let (order, map) = read_tar(&a);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "entries not sorted");
    assert!(map.values().all(|i| i.mtime == ROOTFS_MTIME));

    let bb = &map["bin/busybox"];
    assert_eq!(bb.kind, tar::EntryType::Regular);
    assert_eq!(bb.mode & 0o111, 0o111);
    for applet in ["bin/sh", "bin/ls", "bin/cat", "bin/echo", "bin/mkdir", "usr/bin/env", "bin/sleep"] {
        let item = map.get(applet).unwrap_or_else(|| panic!("{applet} missing"));
        assert_eq!(item.kind, tar::EntryType::Symlink, "{applet}");
        assert_eq!(item.link.as_deref(), Some("/bin/busybox"), "{applet}");
    }
    let passwd = String::from_utf8(map["etc/passwd"].data.clone()).expect("utf8");
    assert!(passwd.contains("root:x:0:0:"));
    assert!(passwd.contains("app:x:1000:1000:"));
    assert!(passwd.contains("nobody:x:65534:"));
    let group = String::from_utf8(map["etc/group"].data.clone()).expect("utf8");
    assert!(group.lines().any(|l| l.starts_with("extra:x:1001:") && l.ends_with(":app")));
    assert_eq!(map["tmp"].mode, 0o1777);
    assert_eq!(map["tmp"].kind, tar::EntryType::Directory);
    assert_eq!(map["home/app"].uid, 1000);
    for d in ["proc", "dev", "sys", "root", "etc"] {
        assert_eq!(map[d].kind, tar::EntryType::Directory, "{d}");
    }
    assert!(map.contains_key("etc/hosts") && map.contains_key("etc/resolv.conf"));
    assert!(!map.keys().any(|k| k.starts_with("proc/") || k.starts_with("dev/")));
}

#[test]
fn busybox_rootfs_runs_a_shell_in_chroot() {
    if !require_tool("busybox") || !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().join("rootfs.tar");
    busybox_rootfs_tar(&t).expect("write");
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let mut ar = tar::Archive::new(std::fs::File::open(&t).expect("open"));
    ar.set_preserve_permissions(true);
    ar.unpack(&root).expect("unpack");
    let out = std::process::Command::new("chroot")
        .arg(&root)
        .args(["/bin/sh", "-c", "id -u app; ls /bin/busybox; echo ok"])
        .output()
        .expect("chroot");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1000\n/bin/busybox\nok\n");
}

#[test]
fn random_rootfs_is_seeded_sized_and_streamed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let one = tmp.path().join("1.tar");
    let again = tmp.path().join("1b.tar");
    let other = tmp.path().join("2.tar");
    let total = 3 * 1024 * 1024 + 17;
    random_rootfs_tar(&one, total, 4, 1).expect("write");
    random_rootfs_tar(&again, total, 4, 1).expect("write");
    random_rootfs_tar(&other, total, 4, 2).expect("write");
    let a = std::fs::read(&one).expect("read");
    assert_eq!(a, std::fs::read(&again).expect("read"), "same seed, different bytes");
    assert_ne!(a, std::fs::read(&other).expect("read"), "different seeds, same bytes");

    let mut ar = tar::Archive::new(&a[..]);
    let mut sizes = Vec::new();
    let mut contents = Vec::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.header().entry_type() == tar::EntryType::Regular {
            let mut d = Vec::new();
            e.read_to_end(&mut d).expect("read");
            sizes.push(d.len() as u64);
            contents.push(d);
        }
    }
    assert_eq!(sizes.len(), 4);
    assert_eq!(sizes.iter().sum::<u64>(), total);
    assert_ne!(contents[0][..4096], contents[1][..4096], "files repeat each other");
    // Incompressible enough: no byte value dominates.
    let mut hist = [0u64; 256];
    contents[0].iter().for_each(|b| hist[*b as usize] += 1);
    let max = *hist.iter().max().unwrap_or(&0);
    assert!(max < contents[0].len() as u64 / 128, "byte distribution skewed: {max}");
}
