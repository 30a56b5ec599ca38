//! Generated histories, checked against the generator's ledger (what it built), not against
//! numbers copied from kiln's own output.

use std::path::Path;

use kiln_ci::analyze::{CancelKind, FailureScope, Outcome};
use kiln_ci::synth::Synth;
use kiln_ci::{analyze, read_dir, render, Format, Options, ReadError};
use serde_json::{json, Value};

fn report_for(s: &Synth) -> kiln_ci::Report {
    let dir = tempfile::tempdir().unwrap();
    s.write_dir(dir.path(), 30).unwrap();
    let history = read_dir(dir.path()).unwrap();
    analyze(&history, &Options::default())
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2] + 1) / 2
    }
}

#[test]
fn two_arch_history_reproduces_issue_7() {
    for seed in [1, 7, 2026] {
        let s = Synth::two_arch(seed);
        let report = report_for(&s);
        assert_eq!(report.workflows.len(), 1);
        let w = &report.workflows[0];
        assert_eq!(w.runs, 64);
        assert_eq!(w.runs_with_jobs, 64);
        let amd = w.job("amd64").expect("amd64 job, labelled by its matrix value");
        let arm = w.job("arm64").expect("arm64 job");
        assert_eq!(amd.name, "build (amd64)");

        // The table from the issue.
        assert_eq!((amd.runs, amd.success, amd.cancelled.total, amd.failure), (64, 58, 5, 1), "seed {seed}");
        assert_eq!((arm.runs, arm.success, arm.cancelled.total, arm.failure), (64, 50, 13, 1), "seed {seed}");
        let (ad, rd) = (amd.duration.as_ref().unwrap(), arm.duration.as_ref().unwrap());
        assert_eq!(ad.median, 382);
        assert_eq!(rd.median, 553);
        assert_eq!(rd.max, 819);
        // ... and the same figures from the generator's own draws.
        for (job, stats) in [("build (amd64)", ad), ("build (arm64)", rd)] {
            let drawn = s.ledger.durations[job].clone();
            assert_eq!(stats.count, drawn.len());
            assert_eq!(stats.median, median(drawn.clone()));
            assert_eq!(stats.max, *drawn.iter().max().unwrap());
        }
        for ((job, conclusion), n) in &s.ledger.conclusions {
            let j = w.job(job).unwrap();
            let got = match conclusion.as_str() {
                "success" => j.success,
                "failure" => j.failure,
                "cancelled" => j.cancelled.total,
                other => panic!("generator made an unexpected conclusion {other}"),
            };
            assert_eq!(got, *n, "{job} {conclusion}");
        }
        for ((job, kind), n) in &s.ledger.cancel_kinds {
            let c = &w.job(job).unwrap().cancelled;
            let got = match kind.as_str() {
                "superseded" => c.superseded,
                "manual" => c.manual,
                "before_start" => c.before_start,
                other => panic!("unexpected kind {other}"),
            };
            assert_eq!(got, *n, "{job} {kind}");
        }

        // The cancel ratio is 2.6×.
        let ratio = w.cancel_ratio.as_ref().expect("cancel ratio");
        assert_eq!((ratio.most.as_str(), ratio.least.as_str(), ratio.ratio), ("arm64", "amd64", Some(2.6)));
        assert!(w.verdict.iter().any(|v| v.starts_with("The cancel ratio is 2.6×")), "{:#?}", w.verdict);

        // The failure is a code failure: both jobs of the same run.
        assert_eq!(w.code_failures, 1);
        assert_eq!(w.single_job_failures, 0);
        let f = &w.failures[0];
        assert_eq!(f.run.id, s.ledger.code_failure_runs[0]);
        assert_eq!(f.scope, FailureScope::EveryJob);
        assert_eq!(f.failed_jobs, vec!["amd64".to_string(), "arm64".to_string()]);
        assert!(w.verdict.iter().any(|v| v.contains("a code failure (both jobs)")), "{:#?}", w.verdict);

        // Runs where arm64 was cancelled while amd64 succeeded: as many as the generator made.
        let made = s.ledger.cancelled_while_sibling_succeeded.len();
        assert!(made > 0);
        assert_eq!(w.pair("arm64", "amd64"), made);
        assert_eq!(arm.cancelled_while_sibling_succeeded, made);
        assert_eq!(w.pair("amd64", "arm64"), 0);
        let sentence = format!("In {made} runs arm64 was cancelled while amd64 succeeded.");
        assert!(w.verdict.contains(&sentence), "{:#?}", w.verdict);

        // The headline, in the words of the issue.
        assert_eq!(
            w.verdict[0],
            "arm64's red marks are mostly cancellations (13 of 14); arm64 takes 45% longer than amd64 \
             (median 553 s vs 382 s), so it is the job still running when a newer push cancels the run."
        );
    }
}

#[test]
fn every_format_carries_the_findings() {
    let s = Synth::two_arch(3);
    let report = report_for(&s);
    let made = s.ledger.cancelled_while_sibling_succeeded.len();
    let sentence = format!("In {made} runs arm64 was cancelled while amd64 succeeded");

    let table = render(&report, Format::Table);
    assert!(table.contains("The cancel ratio is 2.6×") && table.contains(&sentence), "{table}");
    assert!(table.lines().any(|l| l.trim_start().starts_with("arm64") && l.contains("553 s") && l.contains("819 s")));

    let md = render(&report, Format::Markdown);
    assert!(md.contains("| job | runs |"), "{md}");
    assert!(md.contains("| arm64 | 64 | 50 | 1 |"), "{md}");
    assert!(md.contains("a code failure (both jobs)") && md.contains(&sentence));

    let js: Value = serde_json::from_str(&render(&report, Format::Json)).unwrap();
    let w = &js["workflows"][0];
    assert_eq!(w["cancel_ratio"]["ratio"], json!(2.6));
    assert_eq!(w["code_failures"], json!(1));
    let arm = w["jobs"].as_array().unwrap().iter().find(|j| j["label"] == "arm64").unwrap();
    assert_eq!(arm["cancelled_while_sibling_succeeded"], json!(made));
    assert_eq!(arm["duration"]["median"], json!(553));

    let html = render(&report, Format::Html);
    assert!(html.starts_with("<!doctype html>"));
    assert_eq!(html.matches("<svg").count(), 2, "a duration-over-time chart and a histogram");
    assert!(html.contains("The cancel ratio is 2.6×"));
    // Opens with no network: no scripts, no external resources.
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("<link"));
    assert!(!html.contains("href="));
    // One circle per successful job run with a duration.
    assert_eq!(html.matches("<circle").count(), 58 + 50);
}

#[test]
fn runs_without_jobs_are_listed_not_dropped() {
    let mut s = Synth::two_arch(11);
    let ids = s.run_ids();
    let gone = [ids[3], ids[20], ids[40]];
    s.drop_jobs(&gone);
    let report = report_for(&s);
    let w = &report.workflows[0];
    assert_eq!(w.runs, 64);
    assert_eq!(w.runs_with_jobs, 61);
    let listed: Vec<u64> = w.runs_missing_jobs.iter().map(|r| r.id).collect();
    assert_eq!(listed, s.ledger.runs_without_jobs);
    assert!(w.verdict.iter().any(|v| v.starts_with("3 of 64 runs have no jobs in the input")), "{:#?}", w.verdict);
    let md = render(&report, Format::Markdown);
    for id in gone {
        assert!(md.contains(&format!("- run {id} ")), "{md}");
    }
}

fn run(id: u64, branch: &str, pr: Option<u64>, created: &str, updated: &str) -> Value {
    json!({"id": id, "run_number": id, "name": "ci", "path": ".github/workflows/ci.yml", "head_branch": branch,
           "status": "completed", "conclusion": "cancelled", "created_at": created, "updated_at": updated,
           "pull_requests": pr.map(|n| vec![json!({"number": n})]).unwrap_or_default(), "jobs_url": ""})
}

fn job(id: u64, run_id: u64, name: &str, conclusion: &str, started: &str, completed: &str, ran: bool) -> Value {
    let steps = if ran {
        json!([{"name": "build", "status": "completed", "conclusion": conclusion, "number": 1,
                "started_at": started, "completed_at": completed}])
    } else {
        json!([])
    };
    json!({"id": id, "run_id": run_id, "name": name, "status": "completed", "conclusion": conclusion,
           "created_at": started, "started_at": started, "completed_at": completed, "steps": steps})
}

fn kinds_for(runs: Vec<Value>, jobs: Vec<Value>, annotations: &[(u64, &str)]) -> Vec<(String, Outcome)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("runs.json"), json!({"workflow_runs": runs}).to_string()).unwrap();
    std::fs::write(dir.path().join("jobs.json"), json!({"jobs": jobs}).to_string()).unwrap();
    for (id, msg) in annotations {
        let body = json!([{"annotation_level": "failure", "message": msg, "path": ".github"}]);
        std::fs::write(dir.path().join(format!("check-runs-{id}-annotations.json")), body.to_string()).unwrap();
    }
    let report = analyze(&read_dir(dir.path()).unwrap(), &Options::default());
    let mut out = Vec::new();
    for w in &report.workflows {
        for j in &w.jobs {
            for p in &j.points {
                out.push((format!("{}@{}", j.name, p.run_id), p.outcome.clone()));
            }
        }
    }
    out
}

#[test]
fn cancel_causes_follow_the_evidence() {
    let c = |k| Outcome::Cancelled(k);
    let runs = vec![
        run(1, "main", None, "2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z"),
        // Created while run 1 was still going, same branch: supersedes it.
        run(2, "main", None, "2026-01-01T10:05:00Z", "2026-01-01T10:20:00Z"),
        // A PR run created while run 2 was going: a different group, so it supersedes nothing.
        run(3, "topic", Some(7), "2026-01-01T10:15:00Z", "2026-01-01T10:30:00Z"),
        run(4, "main", None, "2026-01-01T12:00:00Z", "2026-01-01T12:10:00Z"),
    ];
    let jobs = vec![
        job(11, 1, "x", "cancelled", "2026-01-01T10:00:10Z", "2026-01-01T10:05:30Z", true),
        job(21, 2, "x", "cancelled", "2026-01-01T10:05:10Z", "2026-01-01T10:19:00Z", true),
        job(31, 3, "x", "success", "2026-01-01T10:15:10Z", "2026-01-01T10:25:00Z", true),
        job(41, 4, "x", "failure", "2026-01-01T12:00:10Z", "2026-01-01T12:03:00Z", true),
        job(42, 4, "y", "cancelled", "2026-01-01T12:00:10Z", "2026-01-01T12:03:05Z", true),
        job(43, 4, "z", "cancelled", "2026-01-01T12:00:10Z", "2026-01-01T12:00:10Z", false),
    ];
    let got = kinds_for(runs.clone(), jobs.clone(), &[]);
    let want = vec![
        ("x@1".to_string(), c(CancelKind::Superseded)),
        ("x@2".to_string(), c(CancelKind::Unknown)),
        ("x@3".to_string(), Outcome::Success),
        ("x@4".to_string(), Outcome::Failure),
        ("y@4".to_string(), c(CancelKind::FailFast)),
        ("z@4".to_string(), c(CancelKind::BeforeStart)),
    ];
    assert_eq!(got, want);

    // GitHub's own words beat inference, both ways.
    let got = kinds_for(
        runs,
        jobs,
        &[
            (11, "The run was canceled by @maintainer."),
            (21, "Canceling since a higher priority waiting request for 'ci-refs/heads/main' exists"),
        ],
    );
    assert_eq!(got[0], ("x@1".to_string(), c(CancelKind::Manual)));
    assert_eq!(got[1], ("x@2".to_string(), c(CancelKind::Superseded)));
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn truncated_json_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Synth::two_arch(5);
    let page = serde_json::to_string_pretty(&s.runs_page(1, 30)).unwrap();
    // Cut inside the 3rd run, as an interrupted download would.
    let cut = page.match_indices("\"head_sha\"").nth(2).unwrap().0 + 15;
    let path = write(dir.path(), "runs-page-1.json", &page[..cut]);
    let err = kiln_ci::read_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ReadError::Syntax { .. }), "{msg}");
    assert!(msg.contains("runs-page-1.json"), "{msg}");
    assert!(msg.contains("workflow_runs[2].head_sha"), "{msg}");
    // And the directory read fails instead of reporting on part of the data.
    let err = read_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("runs-page-1.json") && err.contains("workflow_runs[2]"), "{err}");
}

#[test]
fn wrong_or_missing_fields_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = Synth::two_arch(5);
    let id = s.run_ids()[0];
    let mut page = s.jobs_page(id);
    page["jobs"][1]["started_at"] = json!(12);
    let path = write(dir.path(), "jobs-bad-type.json", &page.to_string());
    let msg = kiln_ci::read_file(&path).unwrap_err().to_string();
    assert!(msg.contains("jobs-bad-type.json") && msg.contains("jobs[1].started_at"), "{msg}");

    let mut page = s.jobs_page(id);
    page["jobs"][0].as_object_mut().unwrap().remove("name");
    let path = write(dir.path(), "jobs-no-name.json", &page.to_string());
    let msg = kiln_ci::read_file(&path).unwrap_err().to_string();
    assert!(msg.contains("jobs-no-name.json") && msg.contains("jobs[0]") && msg.contains("missing field `name`"), "{msg}");

    let mut page = s.runs_page(1, 5);
    page["workflow_runs"][4]["created_at"] = json!("last tuesday");
    let path = write(dir.path(), "runs-bad-time.json", &serde_json::to_string_pretty(&page).unwrap());
    let msg = kiln_ci::read_file(&path).unwrap_err().to_string();
    assert!(msg.contains("workflow_runs[4].created_at") && msg.contains("last tuesday"), "{msg}");

    for (name, text) in [("empty.json", "  \n"), ("garbage.json", "hello"), ("number.json", "42")] {
        let path = write(dir.path(), name, text);
        let msg = kiln_ci::read_file(&path).unwrap_err().to_string();
        assert!(msg.contains(name), "{msg}");
    }
}

#[test]
fn since_and_limit_select_runs() {
    let s = Synth::two_arch(9);
    let dir = tempfile::tempdir().unwrap();
    s.write_dir(dir.path(), 30).unwrap();
    let history = read_dir(dir.path()).unwrap();
    let r = analyze(&history, &Options { limit: Some(10), ..Options::default() });
    assert_eq!(r.workflows[0].runs, 10);
    let newest: Vec<u64> = s.run_ids().into_iter().rev().take(10).collect();
    assert!(r.workflows[0].jobs[0].points.iter().all(|p| newest.contains(&p.run_id)));
    let tenth = history.runs[history.runs.len() - 10].created_at;
    let r = analyze(&history, &Options { since: Some(tenth), ..Options::default() });
    assert_eq!(r.workflows[0].runs, 10);
    let r = analyze(&history, &Options { workflow: Some("build.yml".into()), ..Options::default() });
    assert_eq!(r.workflows[0].runs, 64);
    let r = analyze(&history, &Options { workflow: Some("other.yml".into()), ..Options::default() });
    assert!(r.workflows.is_empty());
}

#[test]
fn html_escapes_names_from_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let runs = vec![run(1, "main", None, "2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z")];
    let jobs = vec![
        job(11, 1, "<script>alert(1)</script>", "success", "2026-01-01T10:00:10Z", "2026-01-01T10:05:30Z", true),
        job(12, 1, "a & b", "success", "2026-01-01T10:00:10Z", "2026-01-01T10:04:30Z", true),
    ];
    std::fs::write(dir.path().join("runs.json"), json!({"workflow_runs": runs}).to_string()).unwrap();
    std::fs::write(dir.path().join("jobs.json"), json!({"jobs": jobs}).to_string()).unwrap();
    let report = analyze(&read_dir(dir.path()).unwrap(), &Options::default());
    let html = render(&report, Format::Html);
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && html.contains("a &amp; b"));
    let md = render(&report, Format::Markdown);
    assert!(!md.contains("<script"), "{md}");
}
