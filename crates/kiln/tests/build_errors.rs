//! Bad input to `kiln build`: each case fails with exit code 1, names the Dockerfile's file:line,
//! and leaves the store exactly as it was (same blobs, same index.json).
//!
//! The failing instruction is the first one that would write anything, so a kiln that checks
//! before it writes leaves no trace at all.
//!
//! Needs root and busybox-static; see `support_build::can_build`.

mod support_build;

use support_build::{assert_exit_1, stderr, write_context, Kiln};

/// Builds a context holding `dockerfile` (plus `files`), expects failure, and returns stderr.
/// Asserts exit code 1, `Dockerfile:LINE` in the message, and an untouched store.
fn expect_failure(dockerfile: &str, files: &[(&str, &str)], line: u32) -> String {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", dockerfile)]);
    write_context(&ctx, files);
    // A file beside the context, so that `../outside.txt` exists and only the context rule stops it.
    write_context(&k.path(""), &[("outside.txt", "outside\n")]);
    let before = k.store_snapshot();
    let o = k.build(&ctx, &["-t", "kiln.test/bad:1"]);
    let err = stderr(&o);
    assert_exit_1(&o, "a build with bad input");
    assert!(err.contains(&format!("Dockerfile:{line}")), "the message must name Dockerfile:{line}:\n{err}");
    let after = k.store_snapshot();
    assert_eq!(before.0, after.0, "the failed build wrote blobs to the store:\n{err}");
    assert_eq!(before.1, after.1, "the failed build changed the store's index.json:\n{err}");
    assert!(!k.image_refs().iter().any(|r| r.contains("bad")), "a failed build tags nothing");
    err
}

#[test]
fn copy_from_outside_the_context() {
    if !support_build::can_build() {
        return;
    }
    let err = expect_failure("ARG BASE\nFROM ${BASE}\nCOPY ../outside.txt /\n", &[], 3);
    assert!(err.contains("outside"), "the message says the path is outside the context:\n{err}");
}

#[test]
fn copy_of_a_missing_file() {
    if !support_build::can_build() {
        return;
    }
    let err = expect_failure("ARG BASE\nFROM ${BASE}\nENV A=1\nCOPY present.txt missing.txt /\n", &[("present.txt", "x\n")], 4);
    assert!(err.contains("missing.txt"), "the message names the missing file:\n{err}");
}

#[test]
fn copy_from_an_unknown_stage() {
    if !support_build::can_build() {
        return;
    }
    // BuildKit reads an unknown --from name as an image; kiln does too, so the error is that the
    // image is not in the store, and it must still point at the COPY's line.
    let err = expect_failure("ARG BASE\nFROM ${BASE} AS first\nFROM ${BASE}\nCOPY --from=nosuchstage /x /x\n", &[], 4);
    assert!(err.contains("nosuchstage"), "the message names the stage/image:\n{err}");
}

#[test]
fn unknown_instruction() {
    if !support_build::can_build() {
        return;
    }
    let err = expect_failure("ARG BASE\nFROM ${BASE}\nRUN true\nFOO bar\n", &[], 4);
    assert!(err.contains("FOO"), "the message names the instruction:\n{err}");
}

#[test]
fn bad_run_mount() {
    if !support_build::can_build() {
        return;
    }
    let err = expect_failure("ARG BASE\nFROM ${BASE}\nRUN --mount=type=bogus true\n", &[], 3);
    assert!(err.contains("bogus"), "the message names the bad mount type:\n{err}");
}

#[test]
fn dockerfile_syntax_error() {
    if !support_build::can_build() {
        return;
    }
    let err = expect_failure("ARG BASE\nFROM ${BASE}\nRUN true\nRUN <<EOF\necho never terminated\n", &[], 4);
    assert!(err.contains("heredoc"), "the message says what is malformed:\n{err}");
}

#[test]
fn from_with_wrong_argument_count() {
    if !support_build::can_build() {
        return;
    }
    let err = expect_failure("ARG BASE\nFROM ${BASE} AS\nRUN true\n", &[], 2);
    assert!(err.contains("FROM"), "the message names the instruction:\n{err}");
}

/// Builds `FROM <base>` and checks the failure: exit 1, the image named, a hint to pull or import
/// it, the FROM line, and an untouched store.
fn expect_missing_base(base: &str) {
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", &format!("FROM {base}\nRUN true\n"))]);
    let before = k.store_snapshot();
    let o = k.cmd(&["build", support_build::path_str(&ctx), "-t", "kiln.test/bad:1", "--progress", "plain"]);
    let err = stderr(&o);
    assert_exit_1(&o, "a build from a missing base image");
    assert!(err.contains(base), "the message names the image:\n{err}");
    assert!(err.contains("kiln pull") || err.contains("kiln import"), "the message says to pull or import it:\n{err}");
    assert!(err.contains("Dockerfile:1"), "the message names the FROM line:\n{err}");
    assert_eq!(before, k.store_snapshot(), "nothing written to the store");
}

/// `kiln.local/…` names kiln's own namespace, which is never pulled: only the store is asked.
#[test]
fn missing_local_base_image_says_to_pull_or_import_it() {
    if !support_build::can_build() {
        return;
    }
    expect_missing_base("kiln.local/not-there:1");
}

/// A registry reference kiln tries to pull; the pull fails at once (nothing listens on loopback
/// port 1), and the message must still say how to get the image (e.g. `kiln import` offline).
#[test]
fn missing_base_image_whose_pull_fails_says_to_pull_or_import_it() {
    if !support_build::can_build() {
        return;
    }
    expect_missing_base("127.0.0.1:1/not-there:1");
}

#[test]
fn cache_mount_with_target_root_is_rejected() {
    if !support_build::can_build() {
        return;
    }
    // No target: BuildKit joins it to the working dir, here `/`, and rejects mounting over the
    // root ("invalid mount target \"/\"") before running anything.
    let err = expect_failure("ARG BASE\nFROM ${BASE}\nRUN --mount=type=cache,id=x true\n", &[], 3);
    assert!(err.contains("target"), "the message says the mount target is invalid:\n{err}");
}

#[test]
fn bind_mount_from_an_unknown_stage() {
    if !support_build::can_build() {
        return;
    }
    let err = expect_failure("ARG BASE\nFROM ${BASE}\nRUN --mount=type=bind,from=nosuchstage,target=/x true\n", &[], 3);
    assert!(err.contains("nosuchstage"), "the message names the stage/image:\n{err}");
}

/// The `error:` line states its location and message once: a message that repeats itself
/// ("X: X") reads as two errors.
#[test]
fn error_message_is_not_repeated() {
    if !support_build::can_build() {
        return;
    }
    for (dockerfile, line) in [
        ("ARG BASE\nFROM ${BASE}\nFOO bar\n", 3),
        ("ARG BASE\nFROM ${BASE}\nRUN --mount=type=bogus true\n", 3),
        ("ARG BASE\nFROM ${BASE}\nRUN <<EOF\necho never terminated\n", 3),
    ] {
        let err = expect_failure(dockerfile, &[], line);
        let error_lines: String = err.lines().filter(|l| l.starts_with("error:")).collect::<Vec<_>>().join("\n");
        let times = error_lines.matches(&format!("Dockerfile:{line}")).count();
        assert_eq!(times, 1, "the error names Dockerfile:{line} {times} times; it should say it once:\n{error_lines}");
    }
}
