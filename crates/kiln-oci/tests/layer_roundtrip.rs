//! Writing layers and applying them back: metadata survives, output is deterministic, whiteouts and
//! opaque directories work, and the digest / diff id are right.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_oci::layer::{
    apply_layer, decompress, write_layer_from_dir, write_layer_from_entries, write_layer_from_overlay_upper, write_layer_from_tar,
    write_layer_to_store, ApplyOptions, EntrySource, LayerEntry, WriteOptions,
};
use kiln_oci::{Compression, Digest, Store};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps { last_access: t, last_modification: t },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A tree with every kind of entry kiln must carry.
fn make_tree(dir: &Path, mtime: i64) {
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    fs::create_dir_all(dir.join("etc/empty")).unwrap();
    fs::write(dir.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(dir.join("usr/bin/tool"), vec![7u8; 100_000]).unwrap();
    fs::set_permissions(dir.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(dir.join("usr/bin/tool"), dir.join("usr/bin/tool-alias")).unwrap();
    symlink("tool", dir.join("usr/bin/link")).unwrap();
    symlink("/etc/passwd", dir.join("abs-link")).unwrap();
    let long = dir.join("l".repeat(120)).join("n".repeat(150));
    fs::create_dir_all(long.parent().unwrap()).unwrap();
    fs::write(&long, b"long name").unwrap();
    fs::write(dir.join("ünïcode"), b"utf8").unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, dir.join("fifo"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o640), 0).unwrap();
    rustix::fs::setxattr(dir.join("etc/passwd").as_path(), "user.kiln", b"v1", rustix::fs::XattrFlags::empty()).ok();
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            dir.join("etc/passwd"),
            Some(rustix::fs::Uid::from_raw(1234)),
            Some(rustix::fs::Gid::from_raw(5678)),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        // security.capability: cap_net_bind_service+ep, as setcap writes it (v2 format).
        let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        rustix::fs::setxattr(dir.join("usr/bin/tool").as_path(), "security.capability", &cap, rustix::fs::XattrFlags::empty()).unwrap();
        fs::set_permissions(dir.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    }
    for p in walk(dir) {
        set_mtime(&dir.join(p), mtime);
    }
    set_mtime(dir, mtime);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out.reverse();
    out
}

fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else { return vec![] };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        let mut v = vec![0u8; 4096];
        let n = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        out.push((name, v[..n].to_vec()));
    }
    out.sort();
    out
}

/// Everything that must survive a round trip, per path.
fn describe(dir: &Path) -> BTreeMap<String, String> {
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    let mut paths = walk(dir);
    paths.sort();
    for rel in paths {
        let p = dir.join(&rel);
        let md = fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            let link = match inodes.get(&md.ino()) {
                Some(first) => format!("hardlink-of {first}"),
                None => {
                    inodes.insert(md.ino(), rel.clone());
                    String::new()
                }
            };
            format!("{} bytes sha {} {link}", md.len(), Digest::sha256_of(&fs::read(&p).unwrap()))
        } else if md.file_type().is_symlink() {
            format!("-> {}", fs::read_link(&p).unwrap().display())
        } else {
            String::new()
        };
        let mtime = if md.is_dir() { 0 } else { md.mtime() };
        out.insert(
            rel,
            format!(
                "mode {:o} owner {}:{} rdev {} mtime {mtime} {content} xattrs {:?}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.rdev(),
                xattrs(&p)
            ),
        );
    }
    out
}

#[test]
fn round_trip_keeps_kinds_modes_owners_links_xattrs_and_times() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 1_700_000_000);
    let (blob, info) = write_layer_from_dir(&src, Vec::new(), &WriteOptions::default()).unwrap();
    assert_eq!(info.digest, Digest::sha256_of(&blob));
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.media_type(), "application/vnd.oci.image.layer.v1.tar+gzip");
    let mut tar = Vec::new();
    decompress(&blob[..]).unwrap().read_to_end(&mut tar).unwrap();
    assert_eq!(info.diff_id, Digest::sha256_of(&tar));
    assert_eq!(info.uncompressed_size, tar.len() as u64);

    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let opts = ApplyOptions { expected_diff_id: Some(info.diff_id.clone()), ..ApplyOptions::default() };
    let report = apply_layer(&blob[..], &dst, &opts).unwrap();
    assert_eq!(report.diff_id, info.diff_id);
    let a = describe(&src);
    let b = describe(&dst);
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{k} differs after the round trip");
    }
    assert!(a.values().any(|v| v.contains("hardlink-of")), "the tree has a hard link");
    if is_root() {
        assert!(a["usr/bin/tool"].contains("security.capability"), "{}", a["usr/bin/tool"]);
        assert!(a["usr/bin/tool"].contains("mode 104755"), "{}", a["usr/bin/tool"]);
        assert!(a["etc/passwd"].contains("owner 1234:5678"));
    }
}

#[test]
fn wrong_diff_id_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let (blob, _) = write_layer_from_dir(&src, Vec::new(), &WriteOptions::default()).unwrap();
    let opts = ApplyOptions { expected_diff_id: Some(Digest::sha256_of(b"other")), ..ApplyOptions::default() };
    let err = apply_layer(&blob[..], &src, &opts).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

#[test]
fn same_tree_gives_same_digest_and_source_date_epoch_clamps_times() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    make_tree(&a, 1_700_000_000);
    make_tree(&b, 1_700_000_000);
    let opts = WriteOptions::default();
    let (_, ia) = write_layer_from_dir(&a, std::io::sink(), &opts).unwrap();
    let (_, ia2) = write_layer_from_dir(&a, std::io::sink(), &opts).unwrap();
    let (_, ib) = write_layer_from_dir(&b, std::io::sink(), &opts).unwrap();
    assert_eq!(ia, ia2);
    assert_eq!(ia.digest, ib.digest, "identical trees built separately must give identical layers");

    // Different mtimes: different layers, unless SOURCE_DATE_EPOCH clamps both.
    make_tree(&t.path().join("c"), 1_800_000_000);
    let (_, ic) = write_layer_from_dir(&t.path().join("c"), std::io::sink(), &opts).unwrap();
    assert_ne!(ia.digest, ic.digest);
    let sde = WriteOptions { source_date_epoch: Some(1_000_000_000), ..WriteOptions::default() };
    let (_, ca) = write_layer_from_dir(&a, std::io::sink(), &sde).unwrap();
    let (_, cc) = write_layer_from_dir(&t.path().join("c"), std::io::sink(), &sde).unwrap();
    assert_eq!(ca.digest, cc.digest);
    assert_ne!(ca.digest, ia.digest);
}

#[test]
fn zstd_and_plain_layers_share_the_diff_id() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 1_700_000_000);
    let mut ids = Vec::new();
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (blob, info) = write_layer_from_dir(&src, Vec::new(), &WriteOptions { compression: c, source_date_epoch: None }).unwrap();
        let dst = t.path().join(format!("dst-{c:?}"));
        fs::create_dir(&dst).unwrap();
        let report = apply_layer(&blob[..], &dst, &ApplyOptions::default()).unwrap();
        assert_eq!(report.diff_id, info.diff_id);
        assert!(dst.join("usr/bin/tool").is_file());
        ids.push(info.diff_id);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_content() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    for d in ["a", "d/sub", "keep"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["a/b", "a/c", "d/e", "d/sub/f", "keep/k"] {
        fs::write(root.join(f), f).unwrap();
    }
    let newfile = t.path().join("new");
    fs::write(&newfile, b"new").unwrap();
    let entries = vec![
        LayerEntry { path: "d/new".into(), source: EntrySource::Host(newfile.clone()) },
        LayerEntry { path: "a/b".into(), source: EntrySource::Whiteout },
        LayerEntry { path: "d".into(), source: EntrySource::Opaque },
        LayerEntry { path: "d".into(), source: EntrySource::Host(t.path().to_path_buf()) },
    ];
    let (blob, _) = write_layer_from_entries(entries, Vec::new(), &WriteOptions::default()).unwrap();
    let names = tar_names(&blob);
    assert_eq!(names, vec!["a/.wh.b", "d/", "d/.wh..wh..opq", "d/new"]);
    apply_layer(&blob[..], &root, &ApplyOptions::default()).unwrap();
    assert!(!root.join("a/b").exists());
    assert!(root.join("a/c").exists());
    assert!(!root.join("d/e").exists());
    assert!(!root.join("d/sub").exists());
    assert_eq!(fs::read(root.join("d/new")).unwrap(), b"new");
    assert!(root.join("keep/k").exists());
    assert!(!root.join("a/.wh.b").exists() && !root.join("d/.wh..wh..opq").exists());
}

#[test]
fn overlay_upper_dirs_become_whiteouts_and_opaque_markers() {
    if !is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs root in CI");
        }
        eprintln!("skipping: overlay whiteouts (char 0/0 devices, trusted.* xattrs) need root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let upper = t.path().join("upper");
    fs::create_dir_all(upper.join("op")).unwrap();
    fs::write(upper.join("op/inner"), b"i").unwrap();
    fs::write(upper.join("plain"), b"p").unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, upper.join("gone"), rustix::fs::FileType::CharacterDevice, rustix::fs::Mode::empty(), 0).unwrap();
    rustix::fs::setxattr(upper.join("op").as_path(), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
    let (blob, _) = write_layer_from_overlay_upper(&upper, Vec::new(), &WriteOptions::default()).unwrap();
    assert_eq!(tar_names(&blob), vec![".wh.gone", "op/", "op/.wh..wh..opq", "op/inner", "plain"]);
    let mut tar = Vec::new();
    decompress(&blob[..]).unwrap().read_to_end(&mut tar).unwrap();
    assert!(!tar.windows(15).any(|w| w == b"trusted.overlay"), "overlay xattrs must not leak into layers");
}

/// Rootless mode mounts overlayfs with `userxattr`: its markers are `user.overlay.*` xattrs. An
/// opaque dir becomes `.wh..wh..opq`, overlay's own xattrs never reach the layer, and the user's
/// other `user.*` xattrs do.
#[test]
fn userxattr_overlay_upper_dirs_become_opaque_markers_without_overlay_xattrs() {
    if !is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs root in CI");
        }
        eprintln!("skipping: overlay whiteouts (char 0/0 devices) need root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let upper = t.path().join("upper");
    fs::create_dir_all(upper.join("op/deeper")).unwrap();
    fs::write(upper.join("op/inner"), b"i").unwrap();
    fs::create_dir_all(upper.join("plain")).unwrap();
    fs::write(upper.join("plain/f"), b"p").unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, upper.join("plain/gone"), rustix::fs::FileType::CharacterDevice, rustix::fs::Mode::empty(), 0)
        .unwrap();
    let set = |p: &str, k: &str, v: &[u8]| rustix::fs::setxattr(upper.join(p).as_path(), k, v, rustix::fs::XattrFlags::empty()).unwrap();
    set("op", "user.overlay.opaque", b"y");
    // Bookkeeping overlay may leave on upper objects (copy-up origin, impure dirs): dropped.
    set("op/inner", "user.overlay.origin", b"\x00\xfb");
    set("plain", "user.overlay.impure", b"y");
    set("plain/f", "user.keep", b"mine");
    let (blob, _) = write_layer_from_overlay_upper(&upper, Vec::new(), &WriteOptions::default()).unwrap();
    assert_eq!(tar_names(&blob), vec!["op/", "op/.wh..wh..opq", "op/deeper/", "op/inner", "plain/", "plain/.wh.gone", "plain/f"]);
    let mut tar = Vec::new();
    decompress(&blob[..]).unwrap().read_to_end(&mut tar).unwrap();
    assert!(!tar.windows(12).any(|w| w == b"user.overlay"), "user.overlay.* xattrs must not leak into layers");
    assert!(tar.windows(22).any(|w| w == b"SCHILY.xattr.user.keep"), "other user.* xattrs are kept");
    // A dir whose opaque marker is not "y" is not opaque.
    let upper2 = t.path().join("upper2");
    fs::create_dir_all(upper2.join("d")).unwrap();
    rustix::fs::setxattr(upper2.join("d").as_path(), "user.overlay.opaque", b"n", rustix::fs::XattrFlags::empty()).unwrap();
    let (blob, _) = write_layer_from_overlay_upper(&upper2, Vec::new(), &WriteOptions::default()).unwrap();
    assert_eq!(tar_names(&blob), vec!["d/"]);
}

#[test]
fn import_style_tar_recompression_keeps_bytes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 1_700_000_000);
    let (plain, info) =
        write_layer_from_dir(&src, Vec::new(), &WriteOptions { compression: Compression::None, source_date_epoch: None }).unwrap();
    let (gz, info2) = write_layer_from_tar(&plain[..], Vec::new(), &WriteOptions::default()).unwrap();
    assert_eq!(info2.diff_id, info.diff_id);
    assert_eq!(info2.digest, Digest::sha256_of(&gz));
}

#[test]
fn layers_stream_into_the_store() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 1_700_000_000);
    let store = Store::open(&t.path().join("kiln")).unwrap();
    let info = write_layer_to_store(&store, |w| Ok(write_layer_from_dir(&src, w, &WriteOptions::default())?.1)).unwrap();
    assert!(store.has_blob(&info.digest));
    assert_eq!(store.blob_size(&info.digest).unwrap(), info.size);
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    apply_layer(store.open_blob(&info.digest).unwrap(), &dst, &ApplyOptions::default()).unwrap();
    assert_eq!(describe(&src), describe(&dst));
}

fn tar_names(blob: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(decompress(blob).unwrap());
    a.entries().unwrap().map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap()).collect()
}

#[test]
fn gnu_tar_reads_what_kiln_writes() {
    let st = std::process::Command::new("sh").arg("-c").arg("command -v tar").output().map(|o| o.status.success()).unwrap_or(false);
    if !st {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tar is required in CI");
        }
        eprintln!("skipping: tar is not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, 1_700_000_000);
    let (blob, _) = write_layer_from_dir(&src, Vec::new(), &WriteOptions::default()).unwrap();
    let layer = t.path().join("layer.tar.gz");
    fs::write(&layer, &blob).unwrap();
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let o = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--same-owner", "-xpzf"])
        .arg(&layer)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (describe(&src), describe(&out));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        // GNU tar restores everything kiln wrote, long and non-ASCII names included.
        assert_eq!(Some(v), b.get(k), "{k}");
    }
}
