//! One generated history saved with its check-run annotations in different layouts on disk. Only
//! where the annotation files sit differs, so whatever reads them must reach the same verdicts.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use kiln_ci::synth::Synth;
use serde_json::{json, Value};

/// Where a check run's annotations (`gh api repos/O/N/check-runs/ID/annotations`) are saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `check-runs-<id>-annotations.json`: what `Synth::write_dir` and `--save` write.
    Flat,
    /// `annotations/<id>.json`
    AnnotationsDir,
    /// `check-runs/<id>/annotations.json`
    CheckRunsDir,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Flat, Layout::AnnotationsDir, Layout::CheckRunsDir];

    pub fn path(self, id: u64) -> String {
        match self {
            Layout::Flat => format!("check-runs-{id}-annotations.json"),
            Layout::AnnotationsDir => format!("annotations/{id}.json"),
            Layout::CheckRunsDir => format!("check-runs/{id}/annotations.json"),
        }
    }
}

/// Write `text` at `rel` under `dir`, making the folders on the way.
pub fn put(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
}

/// Write only the cancelled runs of `s`, as `gh api ".../runs?status=cancelled"` saves them (the
/// way the recorded `cascade__runs_cancelled.json` was captured), the jobs of those runs, and every
/// annotation the generator made: the i-th annotated check run's in `layout(i)`, none for `None`.
///
/// The successful runs in between are absent, so a newer run of the same concurrency group is
/// often not in the input, and then GitHub's annotation is the only evidence that a job was
/// superseded.
pub fn write_cancelled_only(s: &Synth, dir: &Path, layout: impl Fn(usize) -> Option<Layout>) {
    let runs: Vec<&Value> = s.runs.iter().rev().filter(|r| r["conclusion"] == "cancelled").collect();
    put(dir, "runs-cancelled.json", &json!({ "total_count": runs.len(), "workflow_runs": runs }).to_string());
    for r in &runs {
        let id = r["id"].as_u64().unwrap();
        put(dir, &format!("jobs-{id}.json"), &s.jobs_page(id).to_string());
    }
    for (i, id) in s.annotations.keys().enumerate() {
        if let Some(l) = layout(i) {
            put(dir, &l.path(*id), &serde_json::to_string_pretty(&s.annotations_of(*id)).unwrap());
        }
    }
}

/// What the generator's annotation says cancelled each annotated job, keyed by (run id, job name),
/// in the report's words (`cancelled/superseded`, `cancelled/manual`).
pub fn annotated_causes(s: &Synth) -> BTreeMap<(u64, String), String> {
    let mut out = BTreeMap::new();
    for (job_id, notes) in &s.annotations {
        let job = s.jobs.values().flatten().find(|j| j["id"].as_u64() == Some(*job_id)).expect("annotated job exists");
        let message = notes[0]["message"].as_str().unwrap();
        let kind = if message.contains("higher priority waiting request") {
            "superseded"
        } else if message.contains("canceled by @") {
            "manual"
        } else {
            panic!("the generator wrote an annotation of no known kind: {message}")
        };
        let key = (job["run_id"].as_u64().unwrap(), job["name"].as_str().unwrap().to_string());
        out.insert(key, format!("cancelled/{kind}"));
    }
    out
}

/// Every job of every run in a JSON report, keyed by (run id, job name): `success`,
/// `cancelled/superseded`, `cancelled/unknown`, ...
pub fn outcomes(report: &Value) -> BTreeMap<(u64, String), String> {
    let mut out = BTreeMap::new();
    for w in report["workflows"].as_array().unwrap() {
        for j in w["jobs"].as_array().unwrap() {
            for p in j["points"].as_array().unwrap() {
                let o = &p["outcome"];
                let kind = match o["detail"].as_str() {
                    Some(d) => format!("{}/{d}", o["kind"].as_str().unwrap()),
                    None => o["kind"].as_str().unwrap().to_string(),
                };
                out.insert((p["run_id"].as_u64().unwrap(), j["name"].as_str().unwrap().to_string()), kind);
            }
        }
    }
    out
}
