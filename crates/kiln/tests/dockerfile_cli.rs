//! `kiln dockerfile dump` run as a user runs it: the built binary, a file or stdin, and the
//! `error: FILE:LINE:COL: message` contract with exit code 1.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const REAL_WORLD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/real-world/files");

fn kiln(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(data) = stdin {
            input.write_all(data).expect("write stdin");
        }
    }
    child.wait_with_output().expect("wait for kiln")
}

#[test]
fn dump_from_file_prints_buildkit_dump() {
    let file = format!("{REAL_WORLD}/buildkit.Dockerfile");
    let want = std::fs::read(format!("{REAL_WORLD}/buildkit.expected")).expect("shared real-world data");
    let out = kiln(&["dockerfile", "dump", &file], None);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&want));
}

#[test]
fn dump_crlf_windows_file() {
    let file = format!("{REAL_WORLD}/win-php-crlf.Dockerfile");
    let want = std::fs::read(format!("{REAL_WORLD}/win-php-crlf.expected")).expect("shared real-world data");
    let out = kiln(&["dockerfile", "dump", &file], None);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, want);
}

#[test]
fn dump_from_stdin_with_dash_and_without_file() {
    let src = b"FROM alpine\nRUN echo hi\n";
    for args in [&["dockerfile", "dump", "-"][..], &["dockerfile", "dump"][..]] {
        let out = kiln(args, Some(src));
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "(from \"alpine\")\n(run \"echo hi\")\n");
    }
}

#[test]
fn parse_error_names_file_line_column_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("Dockerfile");
    std::fs::write(&path, "FROM a\n\n  ENV ONLYKEY\n").expect("write Dockerfile");
    let p = path.to_str().expect("utf-8 temp path");
    let out = kiln(&["dockerfile", "dump", p], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("error: {p}:3:3: ENV must have two arguments")), "stderr: {err}");
}

#[test]
fn stdin_error_is_named_stdin() {
    let out = kiln(&["dockerfile", "dump", "-"], Some(b"FROM a\nRUN <<EOF\nnever ends\n"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: <stdin>:2:1: unterminated heredoc"), "stderr: {err}");
}

#[test]
fn rejected_real_world_file_exits_1() {
    let file = format!("{REAL_WORLD}/dotnetfw-template-runtime.Dockerfile");
    let out = kiln(&["dockerfile", "dump", &file], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dotnetfw-template-runtime.Dockerfile:31:1:"), "stderr: {err}");
}

#[test]
fn missing_file_exits_1_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope");
    let out = kiln(&["dockerfile", "dump", path.to_str().expect("utf-8 temp path")], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
