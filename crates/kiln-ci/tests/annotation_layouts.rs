//! Where a check run's annotations were saved: `annotations/<id>.json`,
//! `check-runs/<id>/annotations.json` and `check-runs-<id>-annotations.json` all place them, mixed
//! in one directory too; a file that cannot be placed is listed once; a broken one is an error that
//! names it.

mod support;

use std::path::{Path, PathBuf};

use kiln_ci::synth::Synth;
use kiln_ci::{analyze, read_dir, render, Format, Options, ReadError};
use serde_json::{json, Value};
use support::layouts::{annotated_causes, outcomes, put, write_cancelled_only, Layout};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/github-api"))
}

fn report_json(dir: &Path) -> Value {
    let history = read_dir(dir).unwrap();
    serde_json::from_str(&render(&analyze(&history, &Options::default()), Format::Json)).unwrap()
}

/// For a few seeds: the cancelled-only history with annotations laid out by `layout` gives every
/// annotated job the cause its annotation states, and the same report as the layout kiln always read.
fn check_layout(layout: impl Fn(usize) -> Option<Layout> + Copy) {
    for seed in [1, 7, 2026] {
        let s = Synth::two_arch(seed);
        let (with, flat, without) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_cancelled_only(&s, with.path(), layout);
        write_cancelled_only(&s, flat.path(), |_| Some(Layout::Flat));
        write_cancelled_only(&s, without.path(), |_| None);
        let (got, flat, without) = (report_json(with.path()), report_json(flat.path()), report_json(without.path()));

        let causes = annotated_causes(&s);
        let (got_o, without_o) = (outcomes(&got), outcomes(&without));
        for (key, cause) in &causes {
            assert_eq!(got_o.get(key), Some(cause), "seed {seed}: {key:?}");
        }
        // The test means something: some superseded cancels are shown by their annotation alone.
        let by_annotation_only =
            causes.iter().filter(|(k, c)| c.as_str() == "cancelled/superseded" && without_o[*k] == "cancelled/unknown").count();
        assert!(by_annotation_only > 0, "seed {seed}: inference alone already explains every cancel");
        assert_eq!(got, flat, "seed {seed}: the layout changed the report");
        assert_eq!(got["notes"], json!([]), "seed {seed}: every annotation file should be placed");
    }
}

#[test]
fn annotations_dir_layout_classifies_the_cancels() {
    check_layout(|_| Some(Layout::AnnotationsDir));
}

#[test]
fn check_runs_dir_layout_classifies_the_cancels() {
    check_layout(|_| Some(Layout::CheckRunsDir));
}

#[test]
fn a_history_mixing_the_three_layouts_classifies_the_cancels() {
    check_layout(|i| Some(Layout::ALL[i % 3]));
}

/// The recorded `gh api .../check-runs/ID/annotations` bodies, saved in the new layouts, are read
/// under the id their place gives. No job in the fixtures owns those check runs, so each file is
/// also listed, once, as not used.
#[test]
fn recorded_annotation_bodies_are_placed_by_where_they_are_saved() {
    let dir = tempfile::tempdir().unwrap();
    // (fixture, where it goes, check run, annotations in it): ids and counts from SOURCES.md.
    let files = [
        ("zlxlabs-ci-templates__check-run-112800869472-annotations.json", "annotations/112800869472.json", 112_800_869_472u64, 5),
        ("PyGithub__CheckRun.testCheckRunAnnotationAttributes__1.json", "check-runs/1280914700/annotations.json", 1_280_914_700, 2),
        ("octokit.rb__Checks.check_run_annotations.auto-paginates_the_results__0.json", "annotations/51295429.json", 51_295_429, 1),
    ];
    for (fixture, rel, _, _) in files {
        put(dir.path(), rel, &std::fs::read_to_string(fixtures().join(fixture)).unwrap());
    }
    // And a real jobs list, so the directory holds jobs that are not these check runs.
    put(dir.path(), "jobs-34616832399.json", &std::fs::read_to_string(fixtures().join("cascade__run_jobs.json")).unwrap());
    let history = read_dir(dir.path()).unwrap();
    assert_eq!(history.jobs.len(), 18);
    for (_, rel, id, n) in files {
        assert_eq!(history.annotations.get(&id).map(Vec::len), Some(n), "{rel}");
        let notes: Vec<_> = history.notes.iter().filter(|note| note.file == rel).collect();
        assert_eq!(notes.len(), 1, "{rel}: {notes:?}");
        let want = format!("{n} annotation(s) not used: no job in the input has check run {id};");
        assert!(notes[0].reason.starts_with(&want), "{rel}: {}", notes[0].reason);
    }
    assert_eq!(history.notes.len(), files.len(), "{:#?}", history.notes);
}

/// A file whose id no job has, and a file whose name gives no id, each saved with `--paginate`
/// (two pages in one file), are each listed once; the rest of the report does not change.
#[test]
fn annotations_that_cannot_be_placed_are_listed_once_per_file() {
    let s = Synth::two_arch(7);
    let (dir, clean) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    s.write_dir(dir.path(), 30).unwrap();
    s.write_dir(clean.path(), 30).unwrap();
    let page = |m: &str| json!([{"annotation_level": "warning", "message": m, "path": "README.md"}]).to_string();
    let two_pages = format!("{}{}", page("first page"), page("second page"));
    assert!(s.jobs.values().flatten().all(|j| j["id"] != 123), "123 must be no job's id");
    put(dir.path(), "annotations/123.json", &two_pages);
    put(dir.path(), "annotations/probe.json", &two_pages);

    let history = read_dir(dir.path()).unwrap();
    let notes: Vec<(&str, &str)> = history.notes.iter().map(|n| (n.file.as_str(), n.reason.as_str())).collect();
    assert_eq!(notes.len(), 2, "{notes:#?}");
    let (file, reason) = notes.iter().find(|(f, _)| *f == "annotations/123.json").expect("the unowned id is listed");
    assert!(reason.starts_with("2 annotation(s) not used: no job in the input has check run 123;"), "{file}: {reason}");
    let (file, reason) = notes.iter().find(|(f, _)| *f == "annotations/probe.json").expect("the unnamed file is listed");
    assert!(reason.starts_with("2 annotation(s) not used: the file name does not say which check run"), "{file}: {reason}");
    assert!(reason.contains("annotations/<JOB_ID>.json") && reason.contains("check-runs/<JOB_ID>/annotations.json"), "{reason}");

    let mut got = report_json(dir.path());
    got["notes"] = json!([]);
    assert_eq!(got, report_json(clean.path()));
}

/// A broken annotations file in either new layout stops the read with an error naming the file
/// (and the field when there is one); one that is some other response is refused by name. Never a
/// panic.
#[test]
fn a_malformed_annotations_file_is_an_error_that_names_it() {
    let s = Synth::two_arch(7);
    let id = *s.annotations.keys().next().unwrap();
    let body = serde_json::to_string_pretty(&s.annotations_of(id)).unwrap();
    let cases = [
        ("truncated", Layout::AnnotationsDir, body[..body.len() / 2].to_string(), "malformed JSON"),
        ("wrong type", Layout::CheckRunsDir, body.replacen("\"message\": \"", "\"message\": 5, \"x\": \"", 1), "field `[0].message`"),
        ("not JSON", Layout::AnnotationsDir, "<html>502 Bad Gateway</html>".to_string(), "malformed JSON"),
    ];
    for (what, layout, text, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_cancelled_only(&s, dir.path(), |_| None);
        put(dir.path(), &layout.path(id), &text);
        let got = std::panic::catch_unwind(|| read_dir(dir.path()));
        let err = match got {
            Err(_) => panic!("{what}: reading panicked"),
            Ok(Ok(_)) => panic!("{what}: a broken annotations file was accepted"),
            Ok(Err(e)) => e,
        };
        let msg = err.to_string();
        assert!(matches!(err, ReadError::Syntax { .. } | ReadError::Field { .. }), "{what}: {msg}");
        assert!(msg.contains(&layout.path(id)) && msg.contains(says), "{what}: {msg}");
    }

    // Valid JSON of another kind (the API's answer for a check run that is gone) is refused by name.
    let dir = tempfile::tempdir().unwrap();
    write_cancelled_only(&s, dir.path(), |_| None);
    let gone = r#"{"message":"Not Found","documentation_url":"https://docs.github.com/rest/checks/runs#list-check-run-annotations","status":"404"}"#;
    put(dir.path(), &Layout::AnnotationsDir.path(id), gone);
    let history = read_dir(dir.path()).unwrap();
    assert_eq!(history.notes.len(), 1, "{:#?}", history.notes);
    assert_eq!(history.notes[0].file, Layout::AnnotationsDir.path(id));
    assert!(history.notes[0].reason.contains("a GitHub error response: \"Not Found\""), "{}", history.notes[0].reason);
}
