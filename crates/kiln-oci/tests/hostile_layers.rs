//! Crafted hostile layers: nothing may be written outside the target root, and each case either fails
//! with an error naming the entry or is confined inside the root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{snapshot, RawTar};
use kiln_oci::layer::{apply_layer, ApplyOptions, LayerError};

struct Sandbox {
    _t: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("sentinel"), b"untouched").unwrap();
        Sandbox { _t: t, base, root, outside }
    }

    /// Applies `layer`, then checks that the sandbox outside the root is exactly as before.
    fn apply(&self, layer: &[u8]) -> Result<kiln_oci::layer::ApplyReport, LayerError> {
        let before = snapshot(&self.outside);
        let siblings_before = names(&self.base);
        let r = apply_layer(layer, &self.root, &ApplyOptions::default());
        assert_eq!(snapshot(&self.outside), before, "the sentinel dir outside the root changed");
        assert_eq!(names(&self.base), siblings_before, "something appeared beside the root");
        assert_eq!(fs::read(self.outside.join("sentinel")).unwrap(), b"untouched");
        r
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn assert_hostile(r: Result<kiln_oci::layer::ApplyReport, LayerError>, entry: &str) {
    match r {
        Err(e @ LayerError::Hostile { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(entry), "error should name {entry:?}: {msg}");
        }
        other => panic!("expected a refusal naming {entry:?}, got {other:?}"),
    }
}

#[test]
fn dotdot_path_is_refused() {
    let s = Sandbox::new();
    let r = s.apply(&RawTar::new().file("../outside/sentinel", b"pwned").bytes());
    assert_hostile(r, "../outside/sentinel");
    let r = s.apply(&RawTar::new().file("a/../../outside/new", b"pwned").bytes());
    assert_hostile(r, "a/../../outside/new");
}

#[test]
fn absolute_path_is_confined() {
    let s = Sandbox::new();
    let abs = format!("{}/sentinel", s.outside.display());
    s.apply(&RawTar::new().file(&abs, b"confined").file("/etc/passwd", b"root").bytes()).unwrap();
    let inside = s.root.join(abs.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"confined");
    assert_eq!(fs::read(s.root.join("etc/passwd")).unwrap(), b"root");
}

#[test]
fn relative_symlink_escape_then_write_through_it_is_confined() {
    let s = Sandbox::new();
    let layer = RawTar::new().symlink("esc", "../outside").file("esc/sentinel", b"pwned").file("esc/new", b"x").bytes();
    s.apply(&layer).unwrap();
    assert_eq!(fs::read(s.root.join("outside/sentinel")).unwrap(), b"pwned");
    assert_eq!(fs::read_link(s.root.join("esc")).unwrap(), Path::new("../outside"));
}

#[test]
fn absolute_symlink_to_host_dir_then_write_is_confined() {
    let s = Sandbox::new();
    let target = s.outside.display().to_string();
    let layer = RawTar::new().symlink("evil", &target).file("evil/sentinel", b"pwned").bytes();
    s.apply(&layer).unwrap();
    let confined = s.root.join(target.trim_start_matches('/')).join("sentinel");
    assert_eq!(fs::read(confined).unwrap(), b"pwned");
}

#[test]
fn symlink_to_slash_then_nested_write_is_confined() {
    let s = Sandbox::new();
    let nested = format!("slash/{}/deep/file", s.outside.display().to_string().trim_start_matches('/'));
    let layer = RawTar::new().symlink("slash", "/").file(&nested, b"x").bytes();
    s.apply(&layer).unwrap();
    assert!(s.root.join(s.outside.strip_prefix("/").unwrap()).join("deep/file").is_file());
}

#[test]
fn hard_link_to_outside_is_refused() {
    let s = Sandbox::new();
    let r = s.apply(&RawTar::new().hardlink("hl", "../outside/sentinel").bytes());
    assert_hostile(r, "hl");
    // An absolute hard-link target is taken inside the root, where it does not exist: refused too.
    let abs = format!("{}/sentinel", s.outside.display());
    let r = s.apply(&RawTar::new().hardlink("hl2", &abs).bytes());
    assert_hostile(r, "hl2");
    assert!(fs::symlink_metadata(s.root.join("hl2")).is_err());
}

#[test]
fn hard_link_to_a_symlink_pointing_out_cannot_write_outside() {
    let s = Sandbox::new();
    let abs = format!("{}/sentinel", s.outside.display());
    let layer = RawTar::new().symlink("s", &abs).hardlink("h", "s").file("h", b"pwned via link").file("s", b"pwned via symlink").bytes();
    s.apply(&layer).unwrap();
    assert_eq!(fs::read(s.root.join("h")).unwrap(), b"pwned via link");
    assert_eq!(fs::read(s.root.join("s")).unwrap(), b"pwned via symlink");
}

#[test]
fn hard_link_through_escaping_symlink_dir_is_confined() {
    let s = Sandbox::new();
    let layer = RawTar::new().symlink("d", "../outside").hardlink("hl", "d/sentinel").bytes();
    // d/sentinel resolves to root/outside/sentinel, which does not exist inside the root.
    assert_hostile(s.apply(&layer), "hl");
}

#[test]
fn whiteout_of_dotdot_is_refused() {
    let s = Sandbox::new();
    assert_hostile(s.apply(&RawTar::new().dir("sub/").file("sub/.wh...", b"").bytes()), "sub/.wh...");
    assert_hostile(s.apply(&RawTar::new().file(".wh..", b"").bytes()), ".wh..");
    assert!(s.root.join("sub").is_dir());
}

#[test]
fn whiteout_with_traversal_is_refused() {
    let s = Sandbox::new();
    assert_hostile(s.apply(&RawTar::new().file("../outside/.wh.sentinel", b"").bytes()), "../outside/.wh.sentinel");
    assert_hostile(s.apply(&RawTar::new().file("a/../../.wh.outside", b"").bytes()), "a/../../.wh.outside");
    // Through a symlink the whiteout is confined: it removes inside the root only.
    fs::create_dir(s.root.join("outside")).unwrap();
    fs::write(s.root.join("outside/sentinel"), b"inner").unwrap();
    s.apply(&RawTar::new().symlink("o", "/outside").file("o/.wh.sentinel", b"").bytes()).unwrap();
    assert!(!s.root.join("outside/sentinel").exists());
}

#[test]
fn devices_are_created_inside_only() {
    let s = Sandbox::new();
    let layer = RawTar::new()
        .device(tar::EntryType::Char, "dev/null", 1, 3)
        .device(tar::EntryType::Fifo, "run/fifo", 0, 0)
        .symlink("hostdev", "/dev")
        .device(tar::EntryType::Char, "hostdev/kiln-test-evil-node", 1, 3)
        .bytes();
    let report = s.apply(&layer).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(s.root.join("run/fifo")).unwrap().file_type().is_fifo());
    assert!(!Path::new("/dev/kiln-test-evil-node").exists());
    if rustix::process::geteuid().is_root() {
        assert!(fs::symlink_metadata(s.root.join("dev/null")).unwrap().file_type().is_char_device());
        assert!(fs::symlink_metadata(s.root.join("dev/kiln-test-evil-node")).unwrap().file_type().is_char_device());
    } else {
        assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
    }
    assert_hostile(s.apply(&RawTar::new().device(tar::EntryType::Block, "../sda", 8, 0).bytes()), "../sda");
}

#[test]
fn oversized_gnu_long_name_is_refused_and_long_names_work() {
    let s = Sandbox::new();
    let huge = vec![b'a'; 2 * 1024 * 1024];
    let r = s.apply(&RawTar::new().gnu_long_name(&huge).file("x", b"").bytes());
    assert!(matches!(r, Err(LayerError::Hostile { ref reason, .. }) if reason.contains("1 MiB")), "{r:?}");

    let long = format!("{}/{}", "d".repeat(150), "f".repeat(200));
    s.apply(&RawTar::new().gnu_long_name(long.as_bytes()).file("short", b"long").bytes()).unwrap();
    assert_eq!(fs::read(s.root.join(&long)).unwrap(), b"long");

    let escaping = format!("../{}", "e".repeat(120));
    assert_hostile(s.apply(&RawTar::new().gnu_long_name(escaping.as_bytes()).file("short", b"").bytes()), &escaping);
}

#[test]
fn pax_path_override_is_checked() {
    let s = Sandbox::new();
    let r = s.apply(&RawTar::new().pax(&[("path", b"../outside/sentinel")]).file("innocent", b"pwned").bytes());
    assert_hostile(r, "../outside/sentinel");
    assert!(!s.root.join("innocent").exists());
    s.apply(&RawTar::new().pax(&[("path", b"/pax/abs")]).file("innocent", b"ok").bytes()).unwrap();
    assert_eq!(fs::read(s.root.join("pax/abs")).unwrap(), b"ok");
    let huge = vec![b'p'; 1024 * 1024 + 10];
    assert!(s.apply(&RawTar::new().pax(&[("comment", &huge)]).file("x", b"").bytes()).is_err());
}

#[test]
fn file_replacing_a_dir_with_an_escaping_symlink_removes_only_inside() {
    let s = Sandbox::new();
    let layer = RawTar::new()
        .dir("d/")
        .symlink("d/s", &s.outside.display().to_string())
        .symlink("d/rel", "../../outside")
        .file("d", b"now a file")
        .bytes();
    s.apply(&layer).unwrap();
    assert_eq!(fs::read(s.root.join("d")).unwrap(), b"now a file");
}

#[test]
fn write_to_a_final_symlink_replaces_the_link() {
    let s = Sandbox::new();
    let abs = format!("{}/sentinel", s.outside.display());
    s.apply(&RawTar::new().symlink("f", &abs).file("f", b"replaced").bytes()).unwrap();
    assert!(fs::symlink_metadata(s.root.join("f")).unwrap().is_file());
}

#[test]
fn symlink_loops_give_a_clear_error() {
    let s = Sandbox::new();
    let r = s.apply(&RawTar::new().symlink("l1", "l2").symlink("l2", "l1").file("l1/x", b"").bytes());
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("too many levels of symbolic links"), "{msg}");
}

#[test]
fn chained_relative_symlinks_stay_inside() {
    let s = Sandbox::new();
    let layer = RawTar::new().dir("a/").symlink("a/b", "../../../..").symlink("c", "a/b/outside").file("c/sentinel", b"x").bytes();
    s.apply(&layer).unwrap();
    assert_eq!(fs::read(s.root.join("outside/sentinel")).unwrap(), b"x");
}

#[test]
fn gzip_hostile_layer_is_refused_too() {
    let s = Sandbox::new();
    assert_hostile(s.apply(&RawTar::new().file("../x", b"").gzip()), "../x");
}
