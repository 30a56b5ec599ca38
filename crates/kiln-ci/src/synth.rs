//! Synthetic run histories for tests and demos, written in the exact shape the GitHub API returns.
//!
//! The generator does not compute the report's figures: it builds runs scenario by scenario and
//! keeps a [`Ledger`] of what it built (which runs were cancelled while the sibling succeeded, which
//! failure hit both jobs, which durations it drew), so a test can hold the analysis to the ledger.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde_json::{json, Value};

use crate::time::Timestamp;

/// A deterministic generator (splitmix64) so histories are reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// What the generator built, to check the analysis against.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub runs: usize,
    /// (job name, conclusion) → count.
    pub conclusions: BTreeMap<(String, String), usize>,
    /// (job name, cancel kind as the report spells it) → count.
    pub cancel_kinds: BTreeMap<(String, String), usize>,
    /// Successful durations drawn per job, in seconds.
    pub durations: BTreeMap<String, Vec<i64>>,
    /// Run ids where the first job was cancelled while the second succeeded.
    pub cancelled_while_sibling_succeeded: Vec<u64>,
    /// Run ids where every job failed.
    pub code_failure_runs: Vec<u64>,
    /// Run ids whose jobs were left out on purpose.
    pub runs_without_jobs: Vec<u64>,
}

/// A generated history: API objects plus the ledger.
#[derive(Debug, Clone, Default)]
pub struct Synth {
    /// Oldest first.
    pub runs: Vec<Value>,
    pub jobs: BTreeMap<u64, Vec<Value>>,
    /// Keyed by job (check-run) id.
    pub annotations: BTreeMap<u64, Vec<Value>>,
    pub ledger: Ledger,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    BothSucceed,
    BothFail,
    BothSuperseded { annotated: bool },
    BothManual,
    SlowCancelled { annotated: bool },
    SlowCancelledBeforeStart,
}

const SUPERSEDED: &str = "Canceling since a higher priority waiting request for 'build-refs/heads/main' exists";
const MANUAL: &str = "The run was canceled by @octocat.";

impl Synth {
    /// The history from issue 7: jobs `build (amd64)` and `build (arm64)` over 64 runs;
    /// amd64 58 success / 5 cancelled / 1 failure, median 382 s; arm64 50 / 13 / 1, median 553 s,
    /// max 819 s; the one failure hits both jobs of the same run.
    pub fn two_arch(seed: u64) -> Synth {
        let mut rng = Rng::new(seed);
        let mut scenarios = Vec::new();
        scenarios.extend([Scenario::BothSuperseded { annotated: true }; 2]);
        scenarios.extend([Scenario::BothSuperseded { annotated: false }; 2]);
        scenarios.push(Scenario::BothManual);
        scenarios.extend([Scenario::SlowCancelled { annotated: true }; 4]);
        scenarios.extend([Scenario::SlowCancelled { annotated: false }; 3]);
        scenarios.push(Scenario::SlowCancelledBeforeStart);
        scenarios.push(Scenario::BothFail);
        scenarios.resize(63, Scenario::BothSucceed);
        rng.shuffle(&mut scenarios);
        // The newest run cannot be superseded by a run that is not in the history.
        scenarios.push(Scenario::BothSucceed);

        let amd = durations(&mut rng, 58, 382, (300, 470), None);
        let arm = durations(&mut rng, 50, 553, (460, 760), Some(819));
        Synth::build(&mut rng, &scenarios, amd, arm)
    }

    fn build(rng: &mut Rng, scenarios: &[Scenario], mut amd: Vec<i64>, mut arm: Vec<i64>) -> Synth {
        let mut s = Synth::default();
        let (fast, slow) = ("build (amd64)", "build (arm64)");
        let mut t = Timestamp::parse("2026-03-02T09:00:00Z").map_or(1_772_442_000, |t| t.0);
        // Push to main, or to a pull request: a superseded run's successor shares its group.
        let mut group: Option<u64> = None;
        for (i, sc) in scenarios.iter().enumerate() {
            let run_id = 9_100_000_000 + i as u64 * 10;
            let created = t;
            let superseding =
                matches!(sc, Scenario::BothSuperseded { .. } | Scenario::SlowCancelled { .. } | Scenario::SlowCancelledBeforeStart);
            let (qa, qb) = (rng.range(3, 20), rng.range(5, 60));
            let mut jobs = Vec::new();
            let mut notes: Vec<(u64, &str)> = Vec::new();
            let (fast_id, slow_id) = (run_id * 10 + 1, run_id * 10 + 2);
            let next_created;
            match *sc {
                Scenario::BothSucceed => {
                    let (a, b) = (pop(&mut amd), pop(&mut arm));
                    jobs.push(job(fast_id, run_id, fast, created, Some(created + qa), created + qa + a, "success"));
                    jobs.push(job(slow_id, run_id, slow, created, Some(created + qb), created + qb + b, "success"));
                    s.ledger.durations.entry(fast.into()).or_default().push(a);
                    s.ledger.durations.entry(slow.into()).or_default().push(b);
                    next_created = created + rng.range(3600, 10_800);
                }
                Scenario::BothFail => {
                    jobs.push(job(fast_id, run_id, fast, created, Some(created + qa), created + qa + 95, "failure"));
                    jobs.push(job(slow_id, run_id, slow, created, Some(created + qb), created + qb + 140, "failure"));
                    s.ledger.code_failure_runs.push(run_id);
                    next_created = created + rng.range(3600, 10_800);
                }
                Scenario::BothSuperseded { .. } | Scenario::BothManual => {
                    let annotated = matches!(sc, Scenario::BothSuperseded { annotated: true });
                    let cut = created + 200;
                    next_created = if *sc == Scenario::BothManual { created + rng.range(3600, 7200) } else { cut - 5 };
                    jobs.push(job(fast_id, run_id, fast, created, Some(created + qa), cut, "cancelled"));
                    jobs.push(job(slow_id, run_id, slow, created, Some(created + qb), cut, "cancelled"));
                    let (kind, note) = if *sc == Scenario::BothManual {
                        ("manual", Some(MANUAL))
                    } else {
                        ("superseded", annotated.then_some(SUPERSEDED))
                    };
                    for (id, name) in [(fast_id, fast), (slow_id, slow)] {
                        *s.ledger.cancel_kinds.entry((name.into(), kind.into())).or_default() += 1;
                        if let Some(n) = note {
                            notes.push((id, n));
                        }
                    }
                }
                Scenario::SlowCancelled { annotated } => {
                    let a = pop(&mut amd);
                    jobs.push(job(fast_id, run_id, fast, created, Some(created + qa), created + qa + a, "success"));
                    s.ledger.durations.entry(fast.into()).or_default().push(a);
                    // The newer push lands after amd64 is done but while arm64 is still building.
                    next_created = created + qa + a + 20;
                    jobs.push(job(slow_id, run_id, slow, created, Some(created + qb), next_created + 5, "cancelled"));
                    if annotated {
                        notes.push((slow_id, SUPERSEDED));
                    }
                    *s.ledger.cancel_kinds.entry((slow.into(), "superseded".into())).or_default() += 1;
                    s.ledger.cancelled_while_sibling_succeeded.push(run_id);
                }
                Scenario::SlowCancelledBeforeStart => {
                    let a = pop(&mut amd);
                    jobs.push(job(fast_id, run_id, fast, created, Some(created + qa), created + qa + a, "success"));
                    s.ledger.durations.entry(fast.into()).or_default().push(a);
                    next_created = created + qa + a + 20;
                    // No arm64 runner came free before the newer push: the job never started.
                    jobs.push(job(slow_id, run_id, slow, created, None, next_created + 5, "cancelled"));
                    *s.ledger.cancel_kinds.entry((slow.into(), "before_start".into())).or_default() += 1;
                    s.ledger.cancelled_while_sibling_succeeded.push(run_id);
                }
            }
            for j in &jobs {
                let name = j["name"].as_str().unwrap_or_default().to_string();
                let c = j["conclusion"].as_str().unwrap_or_default().to_string();
                *s.ledger.conclusions.entry((name, c)).or_default() += 1;
            }
            for (id, msg) in notes {
                s.annotations.insert(id, vec![annotation(msg)]);
            }
            let conclusion = if matches!(sc, Scenario::BothFail) {
                "failure"
            } else if jobs.iter().any(|j| j["conclusion"] == "cancelled") {
                "cancelled"
            } else {
                "success"
            };
            let updated =
                jobs.iter().filter_map(|j| j["completed_at"].as_str().and_then(Timestamp::parse)).map(|t| t.0).max().unwrap_or(created);
            let this_group = group.unwrap_or_else(|| if rng.range(0, 3) == 0 { 100 + i as u64 } else { 0 });
            s.runs.push(run(run_id, i as u64 + 1, this_group, created, updated, conclusion));
            s.jobs.insert(run_id, jobs);
            group = superseding.then_some(this_group);
            t = next_created;
        }
        s.ledger.runs = s.runs.len();
        s
    }

    /// Leave out the jobs of these runs, as when a download was interrupted.
    pub fn drop_jobs(&mut self, run_ids: &[u64]) {
        for id in run_ids {
            if let Some(jobs) = self.jobs.remove(id) {
                for j in jobs {
                    let name = j["name"].as_str().unwrap_or_default().to_string();
                    let c = j["conclusion"].as_str().unwrap_or_default().to_string();
                    if let Some(n) = self.ledger.conclusions.get_mut(&(name, c)) {
                        *n = n.saturating_sub(1);
                    }
                }
                self.ledger.runs_without_jobs.push(*id);
            }
        }
    }

    /// Run ids, oldest first.
    pub fn run_ids(&self) -> Vec<u64> {
        self.runs.iter().filter_map(|r| r["id"].as_u64()).collect()
    }

    /// A list-runs page as the API returns it: newest first, `per_page` runs, page numbers from 1.
    pub fn runs_page(&self, page: usize, per_page: usize) -> Value {
        let newest: Vec<&Value> = self.runs.iter().rev().collect();
        let items: Vec<&Value> = newest.iter().skip(page.saturating_sub(1) * per_page).take(per_page).copied().collect();
        json!({ "total_count": self.runs.len(), "workflow_runs": items })
    }

    pub fn pages(&self, per_page: usize) -> usize {
        self.runs.len().div_ceil(per_page.max(1))
    }

    pub fn jobs_page(&self, run_id: u64) -> Value {
        let jobs = self.jobs.get(&run_id).cloned().unwrap_or_default();
        json!({ "total_count": jobs.len(), "jobs": jobs })
    }

    pub fn annotations_of(&self, job_id: u64) -> Value {
        Value::Array(self.annotations.get(&job_id).cloned().unwrap_or_default())
    }

    /// Write the history as `gh api` would save it: `runs-page-N.json`, `jobs-RUN.json`,
    /// `check-runs-JOB-annotations.json`.
    pub fn write_dir(&self, dir: &Path, per_page: usize) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let write = |name: String, v: &Value| -> io::Result<()> {
            let text = serde_json::to_string_pretty(v).map_err(io::Error::other)?;
            std::fs::write(dir.join(name), text)
        };
        for p in 1..=self.pages(per_page) {
            write(format!("runs-page-{p}.json"), &self.runs_page(p, per_page))?;
        }
        for id in self.jobs.keys() {
            write(format!("jobs-{id}.json"), &self.jobs_page(*id))?;
        }
        for id in self.annotations.keys() {
            write(format!("check-runs-{id}-annotations.json"), &self.annotations_of(*id))?;
        }
        Ok(())
    }
}

fn pop(v: &mut Vec<i64>) -> i64 {
    v.pop().unwrap_or(400)
}

/// `n` durations whose median is exactly `median` (the two middle values, or the middle one, equal
/// it), the rest spread over `spread`, with `max` as the single largest when given. Shuffled.
fn durations(rng: &mut Rng, n: usize, median: i64, spread: (i64, i64), max: Option<i64>) -> Vec<i64> {
    let mut v = Vec::with_capacity(n);
    let middle = if n.is_multiple_of(2) { 2 } else { 1 };
    let below = (n - middle) / 2;
    let mut above = n - middle - below;
    for _ in 0..below {
        v.push(rng.range(spread.0, median - 1));
    }
    v.extend(std::iter::repeat_n(median, middle));
    if let Some(m) = max {
        v.push(m);
        above -= 1;
    }
    for _ in 0..above {
        v.push(rng.range(median + 1, spread.1));
    }
    rng.shuffle(&mut v);
    v
}

fn ts(t: i64) -> String {
    Timestamp(t).to_string()
}

fn job(id: u64, run_id: u64, name: &str, created: i64, started: Option<i64>, completed: i64, conclusion: &str) -> Value {
    let arm = name.contains("arm64");
    let steps = match started {
        None => Vec::new(),
        Some(s) => {
            let mid = if conclusion == "cancelled" { "cancelled" } else { conclusion };
            vec![
                json!({"name": "Set up job", "status": "completed", "conclusion": "success", "number": 1, "started_at": ts(s), "completed_at": ts(s + 2)}),
                json!({"name": "Build image", "status": "completed", "conclusion": mid, "number": 2, "started_at": ts(s + 2), "completed_at": ts(completed - 1)}),
                json!({"name": "Complete job", "status": "completed", "conclusion": if conclusion == "cancelled" { "skipped" } else { "success" }, "number": 3, "started_at": ts(completed - 1), "completed_at": ts(completed)}),
            ]
        }
    };
    json!({
        "id": id,
        "run_id": run_id,
        "workflow_name": "build",
        "head_branch": "main",
        "run_attempt": 1,
        "status": "completed",
        "conclusion": conclusion,
        "created_at": ts(created),
        "started_at": ts(started.unwrap_or(completed)),
        "completed_at": ts(completed),
        "name": name,
        "steps": steps,
        "check_run_url": format!("https://api.github.com/repos/example/app/check-runs/{id}"),
        "labels": [if arm { "ubuntu-24.04-arm" } else { "ubuntu-24.04" }],
        "runner_name": started.map(|_| format!("GitHub Actions {}", id % 1000)),
    })
}

fn run(id: u64, number: u64, group: u64, created: i64, updated: i64, conclusion: &str) -> Value {
    let (event, branch, prs) = if group == 0 {
        ("push", "main".to_string(), json!([]))
    } else {
        ("pull_request", format!("feature-{group}"), json!([{ "number": group, "id": group * 7 }]))
    };
    json!({
        "id": id,
        "name": "build",
        "path": ".github/workflows/build.yml",
        "workflow_id": 4242,
        "run_number": number,
        "run_attempt": 1,
        "event": event,
        "head_branch": branch,
        "head_sha": format!("{:040x}", id),
        "status": "completed",
        "conclusion": conclusion,
        "created_at": ts(created),
        "updated_at": ts(updated),
        "run_started_at": ts(created),
        "pull_requests": prs,
        "html_url": format!("https://github.com/example/app/actions/runs/{id}"),
        "jobs_url": format!("https://api.github.com/repos/example/app/actions/runs/{id}/jobs"),
        "display_title": format!("change {number}"),
    })
}

fn annotation(message: &str) -> Value {
    json!({
        "path": ".github",
        "blob_href": "https://github.com/example/app/blob/main/.github",
        "start_line": 1, "start_column": null, "end_line": 1, "end_column": null,
        "annotation_level": "failure",
        "title": "",
        "message": message,
        "raw_details": ""
    })
}
