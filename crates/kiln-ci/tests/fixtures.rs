//! Every recorded GitHub API response in ../shared/fixtures/github-api, one by one.
//!
//! What each file *should* be comes from SOURCES.md (written when the data was collected, by
//! someone else), not from kiln's own classifier: the endpoint column says runs, jobs, annotations or
//! something else, and the contents column says how many objects are inside.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_ci::{read_file, Document, ReadError};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/github-api"))
}

#[derive(Debug, PartialEq)]
enum Expect {
    Runs(usize),
    Jobs(usize),
    Annotations(usize),
    Refused,
}

/// The first number before `word` in the contents cell, e.g. "20 run(s): success×20" → 20.
fn count(contents: &str, word: &str) -> usize {
    contents
        .split(';')
        .find_map(|part| {
            let part = part.trim();
            let (n, rest) = part.split_once(' ')?;
            rest.starts_with(word).then(|| n.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn expectations() -> BTreeMap<String, Expect> {
    let sources = std::fs::read_to_string(fixtures().join("SOURCES.md")).expect("SOURCES.md must exist beside the fixtures");
    let mut out = BTreeMap::new();
    for line in sources.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let file = cells[0].trim_matches('`').to_string();
        let (endpoint, contents) = if cells.len() >= 6 { (cells[2], cells[4]) } else { (cells[1], cells[3]) };
        let expect = if endpoint == "list workflow runs" || endpoint == "get a workflow run" {
            Expect::Runs(count(contents, "run"))
        } else if endpoint.starts_with("webhook payload (workflow_run.") {
            Expect::Runs(1)
        } else if endpoint == "list jobs for a run" || endpoint == "get a job" || endpoint.starts_with("jobs array") {
            Expect::Jobs(count(contents, "job"))
        } else if endpoint.starts_with("webhook payload (workflow_job.") {
            Expect::Jobs(1)
        } else if endpoint == "list check-run annotations" {
            Expect::Annotations(count(contents, "annotation"))
        } else {
            Expect::Refused
        };
        out.insert(file, expect);
    }
    out
}

fn actual(path: &Path) -> Result<Expect, ReadError> {
    let docs = read_file(path)?;
    let (mut runs, mut jobs, mut notes) = (0, 0, 0);
    let mut kinds = 0;
    for d in &docs {
        match d {
            Document::Runs(r) => {
                runs += r.len();
                kinds |= 1;
            }
            Document::Jobs(j) => {
                jobs += j.len();
                kinds |= 2;
            }
            Document::Annotations { items, .. } => {
                notes += items.len();
                kinds |= 4;
            }
        }
    }
    Ok(match kinds {
        2 => Expect::Jobs(jobs),
        4 => Expect::Annotations(notes),
        // An empty runs page (total_count 0) is runs with nothing in it.
        _ => Expect::Runs(runs),
    })
}

#[test]
fn sources_md_lists_every_file_and_there_are_84() {
    let expected = expectations();
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures directory must exist")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    assert!(on_disk.len() >= 84, "expected at least 84 recorded responses, found {}", on_disk.len());
    let listed: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(on_disk, listed, "SOURCES.md and the directory disagree");
}

#[test]
fn every_runs_and_jobs_file_is_read_and_every_other_file_is_refused_by_name() {
    let expected = expectations();
    let mut read = 0;
    let mut refused = 0;
    for (file, want) in &expected {
        let path = fixtures().join(file);
        let got = std::panic::catch_unwind(|| actual(&path));
        let got = match got {
            Ok(g) => g,
            Err(_) => panic!("{file}: reading it panicked"),
        };
        match (want, got) {
            (Expect::Refused, Err(e)) => {
                let msg = e.to_string();
                assert!(matches!(e, ReadError::NotCiData { .. }), "{file}: wrong kind of error: {msg}");
                assert!(msg.contains(file.as_str()), "{file}: message does not name the file: {msg}");
                assert!(msg.contains("not a workflow-runs, jobs or check-run annotations response"), "{msg}");
                refused += 1;
            }
            (Expect::Refused, Ok(g)) => panic!("{file}: SOURCES.md says it is neither runs nor jobs, but it was read as {g:?}"),
            (want, Err(e)) => panic!("{file}: expected {want:?}, got error: {e}"),
            (want, Ok(got)) => {
                assert_eq!(&got, want, "{file}: object count differs from SOURCES.md");
                read += 1;
            }
        }
    }
    assert_eq!(read + refused, expected.len());
    // 37 + 11 list/get runs, 7 + 2 + 1 jobs, 15 webhook payloads, 4 annotation lists.
    assert_eq!(read, 77, "files read");
    assert_eq!(refused, 7, "files refused");
}

#[test]
fn the_whole_directory_reads_and_lists_what_it_did_not_use() {
    let history = kiln_ci::read_dir(&fixtures()).expect("fixture directory reads");
    // Count distinct run and job ids with a plain JSON walk, independent of kiln's reader.
    let (run_ids, job_ids) = ids_by_walking();
    assert!(run_ids.len() >= 186, "SOURCES.md promises 186 unique REST runs, walk found {}", run_ids.len());
    assert_eq!(history.runs.len(), run_ids.len());
    assert_eq!(history.jobs.len(), job_ids.len());
    let refused: Vec<&str> = history.notes.iter().filter(|n| n.reason.starts_with("refused")).map(|n| n.file.as_str()).collect();
    let want: Vec<String> = expectations().into_iter().filter(|(_, e)| *e == Expect::Refused).map(|(f, _)| f).collect();
    assert_eq!(refused, want.iter().map(String::as_str).collect::<Vec<_>>());
    // The one annotation file named after its check run is read under that id; the others are
    // listed as unused. So is that one, once: no job in the fixtures is check run 112800869472
    // (SOURCES.md: the zlxlabs job `probe` was not captured).
    assert_eq!(history.annotations.get(&112_800_869_472).map(Vec::len), Some(5));
    let unused: Vec<&str> = history.notes.iter().filter(|n| n.reason.contains("annotation(s) not used")).map(|n| n.file.as_str()).collect();
    assert_eq!(unused.len(), 4, "{unused:?}");
    let zlx = "zlxlabs-ci-templates__check-run-112800869472-annotations.json";
    let zlx_notes: Vec<_> = history.notes.iter().filter(|n| n.file == zlx).collect();
    assert_eq!(zlx_notes.len(), 1, "{zlx_notes:?}");
    assert!(zlx_notes[0].reason.contains("no job in the input has check run 112800869472"), "{zlx_notes:?}");

    let report = kiln_ci::analyze(&history, &kiln_ci::Options::default());
    let total: usize = report.workflows.iter().map(|w| w.runs).sum();
    assert_eq!(total, run_ids.len(), "no run may be dropped");
    // cascade run 34616832399 is the one real run with a full job list: 18 jobs, 8 failed.
    let cascade =
        report.workflows.iter().find(|w| w.workflow == "acamarata/cascade .github/workflows/ci.yml").expect("cascade ci workflow");
    assert_eq!(cascade.runs_with_jobs, 1);
    assert_eq!(cascade.jobs.len(), 18);
    assert_eq!(cascade.jobs.iter().map(|j| j.failure).sum::<usize>(), 8);
    assert_eq!(cascade.jobs.iter().map(|j| j.skipped).sum::<usize>(), 1);
    // Its cancelled run has no jobs: it must be listed, not dropped.
    assert!(cascade.runs_missing_jobs.iter().any(|r| r.id == 34_091_698_642));
    let failing = cascade.failures.iter().find(|f| f.run.id == 34_616_832_399).expect("failure recorded");
    assert_eq!(failing.failed_jobs.len(), 8);
    assert_eq!(failing.jobs_in_run, 17);
}

/// Ids of run objects (items of `workflow_runs`, single runs with `jobs_url`, webhook `workflow_run`)
/// and job objects (items of `jobs`, bare job arrays, single jobs, webhook `workflow_job`).
fn ids_by_walking() -> (std::collections::BTreeSet<u64>, std::collections::BTreeSet<u64>) {
    use serde_json::Value;
    let mut runs = std::collections::BTreeSet::new();
    let mut jobs = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let id = |o: &Value| o.get("id").and_then(Value::as_u64);
        match &v {
            Value::Object(o) => {
                if let Some(Value::Array(a)) = o.get("workflow_runs") {
                    runs.extend(a.iter().filter_map(id));
                } else if let Some(Value::Array(a)) = o.get("jobs") {
                    jobs.extend(a.iter().filter_map(id));
                } else if let Some(r) = o.get("workflow_run") {
                    runs.extend(id(r));
                } else if let Some(j) = o.get("workflow_job") {
                    jobs.extend(id(j));
                } else if o.contains_key("jobs_url") {
                    runs.extend(id(&v));
                } else if o.contains_key("run_id") && o.contains_key("steps") {
                    jobs.extend(id(&v));
                }
            }
            Value::Array(a) => {
                jobs.extend(a.iter().filter(|x| x.get("run_id").is_some()).filter_map(id));
            }
            _ => {}
        }
    }
    (runs, jobs)
}

/// Damaged copies of every recorded file (cut short at many points, or with a byte changed) are
/// either read or refused with an error naming the file, and never panic.
#[test]
fn damaged_fixtures_never_panic() {
    let mut checked = 0;
    for file in expectations().keys() {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let name = Path::new("damaged").join(file);
        let mut variants: Vec<Vec<u8>> = (1..12).map(|k| bytes[..bytes.len() * k / 12].to_vec()).collect();
        for k in 1..12 {
            let mut v = bytes.clone();
            let i = v.len() * k / 12;
            v[i] = [b'"', b'{', b']', b'0', b':', 0xff][k % 6];
            variants.push(v);
        }
        for v in variants {
            let outcome = std::panic::catch_unwind(|| kiln_ci::read::read_bytes(&name, &v));
            match outcome {
                Err(_) => panic!("{file}: a damaged copy made the reader panic"),
                Ok(Err(e)) => assert!(e.to_string().contains(file.as_str()), "{file}: {e}"),
                Ok(Ok(_)) => {}
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 84 * 22);
}
