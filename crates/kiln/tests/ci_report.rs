//! `kiln ci-report` as a user runs it: the built binary on the recorded fixtures, on generated
//! histories, on broken input, and live against a local replay server.

#[path = "../../kiln-ci/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_ci::synth::Synth;
use serde_json::{json, Value};
use support::layouts::{annotated_causes, outcomes, put, write_cancelled_only, Layout};
use support::replay::synth_server;
use support::server::{Resp, Server};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/github-api"))
}

fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["--root", root.to_str().unwrap(), "ci-report"])
        .args(args)
        .env_remove("GITHUB_TOKEN")
        .env_remove("KILN_ROOT")
        .output()
        .expect("run kiln")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

const FORMATS: [&str; 4] = ["table", "markdown", "json", "html"];

#[test]
fn fixtures_directory_in_every_format() {
    let root = tempfile::tempdir().unwrap();
    let dir = fixtures();
    assert!(dir.join("SOURCES.md").exists(), "shared fixtures are missing");
    for format in FORMATS {
        let out = kiln(root.path(), &[dir.to_str().unwrap(), "--format", format]);
        let text = ok(&out);
        // The refused files are listed by name, whatever the format.
        assert!(text.contains("PyGithub__WorkflowRun.test_timing__0.json"), "{format}");
        match format {
            "table" => {
                assert!(text.contains("workflow acamarata/cascade .github/workflows/ci.yml"), "{text}");
                assert!(text.contains("files not used"));
            }
            "markdown" => assert!(text.starts_with("# CI report") && text.contains("| job | runs |")),
            "json" => {
                let v: Value = serde_json::from_str(&text).expect("valid JSON");
                let runs: u64 = v["workflows"].as_array().unwrap().iter().map(|w| w["runs"].as_u64().unwrap()).sum();
                assert!(runs >= 186, "{runs}");
                assert_eq!(
                    v["notes"].as_array().unwrap().iter().filter(|n| n["reason"].as_str().unwrap().starts_with("refused")).count(),
                    7
                );
            }
            "html" => assert!(text.starts_with("<!doctype html>") && text.contains("<svg")),
            _ => unreachable!(),
        }
    }
}

#[test]
fn generated_history_in_every_format() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = Synth::two_arch(77);
    s.write_dir(data.path(), 30).unwrap();
    let made = s.ledger.cancelled_while_sibling_succeeded.len();
    let sentence = format!("In {made} runs arm64 was cancelled while amd64 succeeded");
    for format in FORMATS {
        let out_file = root.path().join(format!("report.{format}"));
        let out = kiln(root.path(), &[data.path().to_str().unwrap(), "--format", format, "-o", out_file.to_str().unwrap()]);
        assert!(ok(&out).is_empty(), "with -o nothing goes to stdout");
        let text = std::fs::read_to_string(&out_file).unwrap();
        assert!(text.contains("2.6×"), "{format}: {text}");
        assert!(text.contains(&sentence), "{format}: {text}");
        assert!(text.contains("a code failure (both jobs)"), "{format}");
        assert!(text.contains("arm64's red marks are mostly cancellations (13 of 14)"), "{format}");
        if format == "json" {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["workflows"][0]["cancel_ratio"]["ratio"], serde_json::json!(2.6));
        }
    }
    // --limit and --workflow select runs.
    let out = kiln(root.path(), &[data.path().to_str().unwrap(), "--format", "json", "--limit", "10", "--workflow", "build.yml"]);
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["workflows"][0]["runs"], 10);
    let out = kiln(root.path(), &[data.path().to_str().unwrap(), "--since", "2099-01-01"]);
    assert!(ok(&out).contains("no runs in the input"));
}

#[test]
fn broken_input_fails_naming_file_and_field() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = Synth::two_arch(2);
    s.write_dir(data.path(), 30).unwrap();
    let id = s.run_ids()[5];
    let path = data.path().join(format!("jobs-{id}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() * 2 / 3]).unwrap();
    let out = kiln(root.path(), &[data.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("jobs-{id}.json")) && err.contains("field `jobs["), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let root = tempfile::tempdir().unwrap();
    for args in [&[][..], &["--repo", "o/r"][..], &["some-dir", "--repo", "o/r", "--workflow", "x.yml"][..], &["d", "--format", "pdf"][..]]
    {
        let out = kiln(root.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = kiln(root.path(), &["d", "--since", "whenever"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since `whenever`"));
}

#[test]
fn live_mode_keeps_etags_under_the_root_and_revalidates() {
    let root = tempfile::tempdir().unwrap();
    let s = Synth::two_arch(31);
    let server = synth_server(s.clone());
    let args = ["--repo", "o/r", "--workflow", "ci.yml", "--api-url", server.base.as_str(), "--format", "json"];
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["--root", root.path().to_str().unwrap(), "ci-report"])
            .args(args)
            .env("GITHUB_TOKEN", "from-env")
            .output()
            .unwrap();
        serde_json::from_str::<Value>(&ok(&out)).unwrap()
    };
    let first = run();
    let after_first = server.requests().len();
    assert_eq!(after_first, 3 + 64 + 18);
    assert!(server.requests().iter().all(|r| r.header("authorization") == Some("Bearer from-env")));
    let etags = root.path().join("ci-report").join("etags");
    assert!(std::fs::read_dir(&etags).unwrap().count() >= after_first);
    let second = run();
    assert_eq!(first, second);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2 * after_first);
    assert!(reqs[after_first..].iter().all(|r| r.header("if-none-match").is_some()), "second run must be conditional");
    assert_eq!(first["workflows"][0]["cancel_ratio"]["ratio"], serde_json::json!(2.6));
}

#[test]
fn live_mode_rate_limit_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let reset = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 7200;
    let server = Server::start(move |_, _| {
        Resp::status(403, r#"{"message":"API rate limit exceeded for 127.0.0.1."}"#)
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", reset.to_string())
    });
    let out = kiln(root.path(), &["--repo", "o/r", "--workflow", "ci.yml", "--api-url", &server.base, "--max-wait", "5"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rate limit") && err.contains("HTTP 403") && err.contains("resets at"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

/// `kiln ci-report --format json` on the cancelled-only history (see `write_cancelled_only`) with
/// its annotations laid out by `layout`: every annotated cancel gets the cause its annotation
/// states, and the report is the one the `check-runs-<id>-annotations.json` layout gives.
fn check_layout(layout: impl Fn(usize) -> Option<Layout> + Copy) {
    let root = tempfile::tempdir().unwrap();
    let s = Synth::two_arch(77);
    let (with, flat, without) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_cancelled_only(&s, with.path(), layout);
    write_cancelled_only(&s, flat.path(), |_| Some(Layout::Flat));
    write_cancelled_only(&s, without.path(), |_| None);
    let report =
        |dir: &Path| -> Value { serde_json::from_str(&ok(&kiln(root.path(), &[dir.to_str().unwrap(), "--format", "json"]))).unwrap() };
    let (got, flat, without) = (report(with.path()), report(flat.path()), report(without.path()));
    let (got_o, without_o) = (outcomes(&got), outcomes(&without));
    let causes = annotated_causes(&s);
    for (key, cause) in &causes {
        assert_eq!(got_o.get(key), Some(cause), "{key:?}");
    }
    let superseded_by_annotation_only: Vec<_> =
        causes.iter().filter(|(k, c)| c.as_str() == "cancelled/superseded" && without_o[*k] == "cancelled/unknown").collect();
    assert!(!superseded_by_annotation_only.is_empty(), "inference alone already explains every cancel");
    assert_eq!(got, flat);
    assert_eq!(got["notes"], json!([]));
}

#[test]
fn annotations_saved_as_annotations_dir_id_json_classify_the_cancels() {
    check_layout(|_| Some(Layout::AnnotationsDir));
}

#[test]
fn annotations_saved_as_check_runs_id_annotations_json_classify_the_cancels() {
    check_layout(|_| Some(Layout::CheckRunsDir));
}

#[test]
fn annotations_in_mixed_layouts_classify_the_cancels() {
    check_layout(|i| Some(Layout::ALL[i % 3]));
}

#[test]
fn annotations_whose_check_run_no_job_has_are_listed_once() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = Synth::two_arch(77);
    s.write_dir(data.path(), 30).unwrap();
    assert!(s.jobs.values().flatten().all(|j| j["id"] != 123));
    // Two pages in one file, as `gh api --paginate` saves them.
    let page = json!([{"annotation_level": "notice", "message": "Runner image updated", "path": ".github"}]).to_string();
    put(data.path(), "annotations/123.json", &format!("{page}\n{page}"));
    let text = ok(&kiln(root.path(), &[data.path().to_str().unwrap()]));
    assert!(text.contains("files not used (1):"), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("annotations/123.json")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("annotation(s) not used: no job in the input has check run 123"), "{text}");
    // The findings themselves do not change.
    assert!(text.contains("arm64's red marks are mostly cancellations (13 of 14)"), "{text}");
}

#[test]
fn malformed_annotations_file_fails_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = Synth::two_arch(77);
    write_cancelled_only(&s, data.path(), |_| Some(Layout::AnnotationsDir));
    let id = *s.annotations.keys().last().unwrap();
    let rel = Layout::AnnotationsDir.path(id);
    let text = std::fs::read_to_string(data.path().join(&rel)).unwrap();
    std::fs::write(data.path().join(&rel), &text[..text.len() / 2]).unwrap();
    let out = kiln(root.path(), &[data.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&rel) && err.contains("malformed JSON"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn help_names_the_annotation_layouts() {
    let root = tempfile::tempdir().unwrap();
    let text = ok(&kiln(root.path(), &["--help"]));
    for layout in ["annotations/ID.json", "check-runs/ID/annotations.json", "check-runs-ID-annotations.json"] {
        assert!(text.contains(layout), "{layout}: {text}");
    }
}
