//! From a [`History`] to a [`Report`]: classify every job of every run, then count per job.
//!
//! A cancelled job is put in exactly one bucket, by the strongest evidence available:
//! 1. its check-run annotations, which are GitHub's own words ("Canceling since a higher priority
//!    waiting request for '&lt;group&gt;' exists" = superseded, "The run was canceled by @user" = manual);
//! 2. no step ever started = cancelled before it started (it cost a red mark, not runner time);
//! 3. a newer run in the same concurrency group (same PR number, else same branch, within the same
//!    workflow) was created before this job ended = superseded;
//! 4. a sibling job of the same run failed first = fail-fast;
//! 5. otherwise unknown (most often a manual cancel whose annotations were not fetched).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{FileNote, History, Job, Run};
use crate::time::Timestamp;

/// Which runs to look at.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only runs created at or after this instant.
    pub since: Option<Timestamp>,
    /// Only the newest N runs (after `since` and `workflow`).
    pub limit: Option<usize>,
    /// Only runs of this workflow: its file name (`ci.yml`), path or display name.
    pub workflow: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelKind {
    Superseded,
    Manual,
    BeforeStart,
    FailFast,
    Unknown,
}

/// What happened to one job in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    Success,
    Failure,
    TimedOut,
    Skipped,
    Cancelled(CancelKind),
    /// neutral, action_required, startup_failure, stale, or a conclusion GitHub adds later.
    Other(String),
    InProgress,
}

impl Outcome {
    fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failure | Outcome::TimedOut)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub workflows: Vec<WorkflowReport>,
    /// Jobs whose run is not in the input at all (by run id), so they cannot be placed.
    pub orphan_jobs: Vec<OrphanJobs>,
    /// Files refused or only partly used.
    pub notes: Vec<FileNote>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrphanJobs {
    pub run_id: u64,
    pub jobs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRef {
    pub id: u64,
    pub number: Option<u64>,
    pub created_at: Timestamp,
    pub conclusion: String,
}

impl RunRef {
    /// `#12` when the run number is known, else the run id.
    pub fn label(&self) -> String {
        match self.number {
            Some(n) => format!("#{n}"),
            None => format!("id {}", self.id),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureScope {
    /// Every job that ran failed: the code (or the workflow) is broken.
    EveryJob,
    /// One job failed and its siblings did not: that job's runner, platform or a flaky test.
    OneJob,
    /// More than one but not all.
    SomeJobs,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureRun {
    pub run: RunRef,
    pub scope: FailureScope,
    pub failed_jobs: Vec<String>,
    /// Jobs that ran (not skipped) in that run.
    pub jobs_in_run: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CancelCounts {
    pub total: usize,
    pub superseded: usize,
    pub manual: usize,
    pub before_start: usize,
    pub fail_fast: usize,
    pub unknown: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurationStats {
    pub count: usize,
    pub median: i64,
    pub p90: i64,
    pub max: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStats {
    /// The job name, whitespace-normalised (`build (arm64)`).
    pub name: String,
    /// What the report calls it: the matrix value when siblings share a base name (`arm64`).
    pub label: String,
    pub runs: usize,
    pub success: usize,
    pub failure: usize,
    pub timed_out: usize,
    pub skipped: usize,
    pub cancelled: CancelCounts,
    pub other: usize,
    pub in_progress: usize,
    /// cancelled / runs.
    pub cancel_rate: f64,
    /// Of successful runs, in seconds.
    pub duration: Option<DurationStats>,
    /// started_at - created_at, in seconds.
    pub queue: Option<DurationStats>,
    pub cancelled_while_sibling_succeeded: usize,
    pub failures_every_job: usize,
    pub failures_this_job_only: usize,
    pub points: Vec<Point>,
}

impl JobStats {
    /// Failures, time-outs and cancellations: everything that shows red (or grey) on a PR.
    pub fn red_marks(&self) -> usize {
        self.failure + self.timed_out + self.cancelled.total
    }
}

/// One job in one run, for charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub run_id: u64,
    pub at: Timestamp,
    /// Wall time from start to end, when the job started.
    pub seconds: Option<i64>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairStat {
    pub job: String,
    pub sibling: String,
    pub runs_together: usize,
    /// Runs where `job` was cancelled while `sibling` succeeded.
    pub cancelled_while_sibling_succeeded: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CancelRatio {
    /// Label of the job cancelled most often (by rate).
    pub most: String,
    pub least: String,
    /// most.cancel_rate / least.cancel_rate, rounded to one decimal; None when `least` was never cancelled.
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowReport {
    pub workflow: String,
    pub runs: usize,
    pub runs_by_conclusion: BTreeMap<String, usize>,
    pub first_run: Option<Timestamp>,
    pub last_run: Option<Timestamp>,
    pub runs_with_jobs: usize,
    /// Runs for which no job was found in the input: counted in `runs`, absent from job figures.
    pub runs_missing_jobs: Vec<RunRef>,
    pub jobs: Vec<JobStats>,
    pub pairs: Vec<PairStat>,
    pub failures: Vec<FailureRun>,
    pub code_failures: usize,
    pub single_job_failures: usize,
    pub cancel_ratio: Option<CancelRatio>,
    pub verdict: Vec<String>,
}

impl WorkflowReport {
    pub fn job(&self, label_or_name: &str) -> Option<&JobStats> {
        self.jobs.iter().find(|j| j.label == label_or_name || j.name == label_or_name)
    }

    pub fn pair(&self, job: &str, sibling: &str) -> usize {
        self.pairs.iter().find(|p| p.job == job && p.sibling == sibling).map_or(0, |p| p.cancelled_while_sibling_succeeded)
    }
}

/// Collapse whitespace so `build  (arm64)` and `build (arm64)` are one job.
pub fn normalize_job_name(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `build (arm64)` → (`build`, Some(`arm64`)).
pub fn split_matrix(name: &str) -> (&str, Option<&str>) {
    if let Some(stripped) = name.strip_suffix(')') {
        if let Some(i) = stripped.find(" (") {
            return (&stripped[..i], Some(&stripped[i + 2..]));
        }
    }
    (name, None)
}

fn workflow_key(r: &Run) -> String {
    match &r.repository {
        Some(repo) => format!("{} {}", repo.full_name, workflow_in_repo(r)),
        None => workflow_in_repo(r),
    }
}

fn workflow_in_repo(r: &Run) -> String {
    if let Some(p) = r.path.as_deref().filter(|p| !p.is_empty()) {
        // `path` may carry `@ref` for reusable workflows; the file is what users recognise.
        return p.split('@').next().unwrap_or(p).to_string();
    }
    if let Some(n) = r.name.as_deref().filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    match r.workflow_id {
        Some(id) => format!("workflow {id}"),
        None => "(unknown workflow)".into(),
    }
}

fn matches_workflow(r: &Run, want: &str) -> bool {
    let path = r.path.as_deref().unwrap_or("");
    let path = path.split('@').next().unwrap_or(path);
    let file = path.rsplit('/').next().unwrap_or(path);
    want == path || want == file || r.name.as_deref() == Some(want) || r.workflow_id.map(|i| i.to_string()).as_deref() == Some(want)
}

/// The concurrency group GitHub most likely used: `${{ github.workflow }}-${{ PR number || ref }}`.
fn group_key(r: &Run) -> Option<String> {
    if let Some(pr) = r.pull_requests.first() {
        return Some(format!("pr:{}", pr.number));
    }
    r.head_branch.as_deref().map(|b| format!("ref:{b}"))
}

/// Analyse a history.
pub fn analyze(history: &History, opts: &Options) -> Report {
    let mut runs: Vec<&Run> = history
        .runs
        .iter()
        .filter(|r| opts.since.is_none_or(|s| r.created_at >= s))
        .filter(|r| opts.workflow.as_deref().is_none_or(|w| matches_workflow(r, w)))
        .collect();
    runs.sort_by_key(|r| (r.created_at, r.id));
    if let Some(limit) = opts.limit {
        let skip = runs.len().saturating_sub(limit);
        runs.drain(..skip);
    }

    let known_runs: BTreeSet<u64> = history.runs.iter().map(|r| r.id).collect();
    let mut jobs_by_run: BTreeMap<u64, Vec<&Job>> = BTreeMap::new();
    let mut orphans: BTreeMap<u64, usize> = BTreeMap::new();
    for j in &history.jobs {
        if known_runs.contains(&j.run_id) {
            jobs_by_run.entry(j.run_id).or_default().push(j);
        } else {
            *orphans.entry(j.run_id).or_default() += 1;
        }
    }

    let mut by_workflow: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        by_workflow.entry(workflow_key(r)).or_default().push(r);
    }

    Report {
        workflows: by_workflow.into_iter().map(|(name, runs)| analyze_workflow(name, &runs, &jobs_by_run, history)).collect(),
        orphan_jobs: orphans.into_iter().map(|(run_id, jobs)| OrphanJobs { run_id, jobs }).collect(),
        notes: history.notes.clone(),
    }
}

/// The latest attempt of each job name in a run (a re-run replaces the earlier verdict).
fn latest_attempts<'a>(jobs: &[&'a Job]) -> Vec<&'a Job> {
    let mut best: BTreeMap<String, &Job> = BTreeMap::new();
    for j in jobs {
        let key = normalize_job_name(&j.name);
        let rank = |x: &Job| (x.run_attempt.unwrap_or(1), x.id);
        match best.get(&key) {
            Some(old) if rank(old) >= rank(j) => {}
            _ => {
                best.insert(key, j);
            }
        }
    }
    best.into_values().collect()
}

struct Classified<'a> {
    run: &'a Run,
    /// (normalised name, job, outcome)
    jobs: Vec<(String, &'a Job, Outcome)>,
}

fn classify_job(job: &Job, run: &Run, siblings: &[&Job], group_runs: &[&Run], history: &History) -> Outcome {
    if job.status != "completed" {
        return Outcome::InProgress;
    }
    match job.conclusion.as_deref() {
        Some("success") => Outcome::Success,
        Some("failure") => Outcome::Failure,
        Some("timed_out") => Outcome::TimedOut,
        Some("skipped") => Outcome::Skipped,
        Some("cancelled") => Outcome::Cancelled(cancel_kind(job, run, siblings, group_runs, history)),
        Some(other) => Outcome::Other(other.to_string()),
        None => Outcome::Other("none".into()),
    }
}

fn cancel_kind(job: &Job, run: &Run, siblings: &[&Job], group_runs: &[&Run], history: &History) -> CancelKind {
    if let Some(notes) = history.annotations.get(&job.check_run_id()) {
        for a in notes {
            let m = a.message.to_ascii_lowercase();
            if m.contains("higher priority waiting request") {
                return CancelKind::Superseded;
            }
            if m.contains("canceled by @") || m.contains("cancelled by @") {
                return CancelKind::Manual;
            }
        }
    }
    if !job.ever_started() {
        return CancelKind::BeforeStart;
    }
    let ended = job.completed_at.or(run.updated_at);
    if let Some(end) = ended {
        let newer = group_runs.iter().any(|o| o.id != run.id && o.created_at > run.created_at && o.created_at <= end);
        if newer {
            return CancelKind::Superseded;
        }
        let sibling_failed_first = siblings.iter().any(|s| {
            s.id != job.id
                && matches!(s.conclusion.as_deref(), Some("failure") | Some("timed_out"))
                && s.completed_at.is_some_and(|c| c <= end)
        });
        if sibling_failed_first {
            return CancelKind::FailFast;
        }
    }
    CancelKind::Unknown
}

fn stats(mut v: Vec<i64>) -> Option<DurationStats> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    // Median of an even count is the mean of the middle two, rounded to whole seconds.
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2] + 1).div_euclid(2) };
    // Nearest-rank p90: the smallest value with at least 90% of values at or below it.
    let rank = (n * 9).div_ceil(10).max(1);
    Some(DurationStats { count: n, median, p90: v[rank - 1], max: v[n - 1] })
}

fn analyze_workflow(name: String, runs: &[&Run], jobs_by_run: &BTreeMap<u64, Vec<&Job>>, history: &History) -> WorkflowReport {
    let mut groups: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        if let Some(g) = group_key(r) {
            groups.entry(g).or_default().push(r);
        }
    }

    let mut runs_by_conclusion: BTreeMap<String, usize> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut classified = Vec::new();
    for r in runs {
        let conclusion = if r.status.as_deref() == Some("completed") {
            r.conclusion.clone().unwrap_or_else(|| "none".into())
        } else {
            r.status.clone().unwrap_or_else(|| "unknown".into())
        };
        *runs_by_conclusion.entry(conclusion.clone()).or_default() += 1;
        let rr = RunRef { id: r.id, number: r.run_number, created_at: r.created_at, conclusion };
        let jobs = match jobs_by_run.get(&r.id) {
            Some(j) if !j.is_empty() => latest_attempts(j),
            _ => {
                missing.push(rr);
                continue;
            }
        };
        let group_runs: &[&Run] = group_key(r).and_then(|g| groups.get(&g)).map_or(&[], Vec::as_slice);
        let jobs = jobs.iter().map(|j| (normalize_job_name(&j.name), *j, classify_job(j, r, &jobs, group_runs, history))).collect();
        classified.push(Classified { run: r, jobs });
    }

    let names: BTreeSet<String> = classified.iter().flat_map(|c| c.jobs.iter().map(|(n, _, _)| n.clone())).collect();
    let labels = labels_for(&names);

    let mut per_job: BTreeMap<String, JobStats> = names
        .iter()
        .map(|n| {
            let label = labels.get(n).cloned().unwrap_or_else(|| n.clone());
            (n.clone(), empty_stats(n.clone(), label))
        })
        .collect();
    let mut durations: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut queues: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();

    for c in &classified {
        let ran: Vec<&(String, &Job, Outcome)> = c.jobs.iter().filter(|(_, _, o)| *o != Outcome::Skipped).collect();
        let failed: Vec<String> = ran.iter().filter(|(_, _, o)| o.is_failure()).map(|(n, _, _)| n.clone()).collect();
        let scope = if failed.is_empty() {
            None
        } else if failed.len() == ran.len() {
            Some(FailureScope::EveryJob)
        } else if failed.len() == 1 {
            Some(FailureScope::OneJob)
        } else {
            Some(FailureScope::SomeJobs)
        };
        if let Some(scope) = scope {
            failures.push(FailureRun {
                run: RunRef {
                    id: c.run.id,
                    number: c.run.run_number,
                    created_at: c.run.created_at,
                    conclusion: c.run.conclusion.clone().unwrap_or_else(|| "none".into()),
                },
                scope,
                failed_jobs: failed.iter().map(|n| labels.get(n).cloned().unwrap_or_else(|| n.clone())).collect(),
                jobs_in_run: ran.len(),
            });
        }
        let any_sibling_success = |me: &str| c.jobs.iter().any(|(n, _, o)| n != me && *o == Outcome::Success);

        for (n, job, outcome) in &c.jobs {
            let Some(s) = per_job.get_mut(n) else { continue };
            s.runs += 1;
            let seconds = match (job.started_at, job.completed_at) {
                (Some(a), Some(b)) if b.0 >= a.0 && job.ever_started() => Some(b.0 - a.0),
                _ => None,
            };
            match outcome {
                Outcome::Success => {
                    s.success += 1;
                    if let Some(d) = seconds {
                        durations.entry(n.clone()).or_default().push(d);
                    }
                }
                Outcome::Failure => s.failure += 1,
                Outcome::TimedOut => s.timed_out += 1,
                Outcome::Skipped => s.skipped += 1,
                Outcome::Other(_) => s.other += 1,
                Outcome::InProgress => s.in_progress += 1,
                Outcome::Cancelled(k) => {
                    s.cancelled.total += 1;
                    match k {
                        CancelKind::Superseded => s.cancelled.superseded += 1,
                        CancelKind::Manual => s.cancelled.manual += 1,
                        CancelKind::BeforeStart => s.cancelled.before_start += 1,
                        CancelKind::FailFast => s.cancelled.fail_fast += 1,
                        CancelKind::Unknown => s.cancelled.unknown += 1,
                    }
                    if any_sibling_success(n) {
                        s.cancelled_while_sibling_succeeded += 1;
                    }
                }
            }
            if outcome.is_failure() {
                match scope {
                    Some(FailureScope::EveryJob) => s.failures_every_job += 1,
                    Some(FailureScope::OneJob) => s.failures_this_job_only += 1,
                    _ => {}
                }
            }
            if job.ever_started() {
                if let (Some(created), Some(started)) = (job.created_at, job.started_at) {
                    if started >= created {
                        queues.entry(n.clone()).or_default().push(started.0 - created.0);
                    }
                }
            }
            s.points.push(Point { run_id: c.run.id, at: c.run.created_at, seconds, outcome: outcome.clone() });

            for (other, _, other_outcome) in &c.jobs {
                if other == n {
                    continue;
                }
                let e = pairs.entry((n.clone(), other.clone())).or_default();
                e.0 += 1;
                if matches!(outcome, Outcome::Cancelled(_)) && *other_outcome == Outcome::Success {
                    e.1 += 1;
                }
            }
        }
    }

    let mut jobs: Vec<JobStats> = per_job.into_values().collect();
    jobs.sort_by(|a, b| a.label.cmp(&b.label).then_with(|| a.name.cmp(&b.name)));
    for j in &mut jobs {
        j.cancel_rate = if j.runs == 0 { 0.0 } else { j.cancelled.total as f64 / j.runs as f64 };
        j.duration = stats(durations.remove(&j.name).unwrap_or_default());
        j.queue = stats(queues.remove(&j.name).unwrap_or_default());
    }
    let label_of = |n: &str| labels.get(n).cloned().unwrap_or_else(|| n.to_string());
    let pairs: Vec<PairStat> = pairs
        .into_iter()
        .filter(|(_, (_, c))| *c > 0)
        .map(|((a, b), (together, c))| PairStat {
            job: label_of(&a),
            sibling: label_of(&b),
            runs_together: together,
            cancelled_while_sibling_succeeded: c,
        })
        .collect();

    let code_failures = failures.iter().filter(|f| f.scope == FailureScope::EveryJob).count();
    let single_job_failures = failures.iter().filter(|f| f.scope == FailureScope::OneJob).count();
    let cancel_ratio = cancel_ratio(&jobs);

    let mut report = WorkflowReport {
        workflow: name,
        runs: runs.len(),
        runs_by_conclusion,
        first_run: runs.first().map(|r| r.created_at),
        last_run: runs.last().map(|r| r.created_at),
        runs_with_jobs: classified.len(),
        runs_missing_jobs: missing,
        jobs,
        pairs,
        failures,
        code_failures,
        single_job_failures,
        cancel_ratio,
        verdict: Vec::new(),
    };
    report.verdict = crate::verdict::verdict(&report);
    report
}

fn empty_stats(name: String, label: String) -> JobStats {
    JobStats {
        name,
        label,
        runs: 0,
        success: 0,
        failure: 0,
        timed_out: 0,
        skipped: 0,
        cancelled: CancelCounts::default(),
        other: 0,
        in_progress: 0,
        cancel_rate: 0.0,
        duration: None,
        queue: None,
        cancelled_while_sibling_succeeded: 0,
        failures_every_job: 0,
        failures_this_job_only: 0,
        points: Vec::new(),
    }
}

/// Short labels: a matrix job is called by its matrix value when that is unambiguous, because the
/// question is usually "arm64 or amd64", not "which build".
fn labels_for(names: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut value_count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut base_count: BTreeMap<&str, usize> = BTreeMap::new();
    for n in names {
        let (base, m) = split_matrix(n);
        *base_count.entry(base).or_default() += 1;
        if let Some(m) = m {
            *value_count.entry(m).or_default() += 1;
        }
    }
    names
        .iter()
        .map(|n| {
            let (base, m) = split_matrix(n);
            let label = match m {
                Some(m)
                    if base_count.get(base).copied().unwrap_or(0) >= 2
                        && value_count.get(m).copied().unwrap_or(0) == 1
                        && !names.contains(m) =>
                {
                    m.to_string()
                }
                _ => n.clone(),
            };
            (n.clone(), label)
        })
        .collect()
}

fn cancel_ratio(jobs: &[JobStats]) -> Option<CancelRatio> {
    // Jobs that are almost always skipped (deploy gates and the like) say nothing about cancels.
    let considered: Vec<&JobStats> = jobs.iter().filter(|j| j.runs > j.skipped).collect();
    if considered.len() < 2 {
        return None;
    }
    let rate = |j: &JobStats| j.cancel_rate;
    let most = considered.iter().copied().max_by(|a, b| rate(a).total_cmp(&rate(b)).then_with(|| b.name.cmp(&a.name)))?;
    let least = considered
        .iter()
        .copied()
        .filter(|j| j.name != most.name)
        .min_by(|a, b| rate(a).total_cmp(&rate(b)).then_with(|| a.name.cmp(&b.name)))?;
    if most.cancelled.total == 0 {
        return None;
    }
    let ratio = (least.cancel_rate > 0.0).then(|| (most.cancel_rate / least.cancel_rate * 10.0).round() / 10.0);
    Some(CancelRatio { most: most.label.clone(), least: least.label.clone(), ratio })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_names_split_and_label() {
        assert_eq!(split_matrix("build (arm64)"), ("build", Some("arm64")));
        assert_eq!(split_matrix("lint"), ("lint", None));
        assert_eq!(normalize_job_name("  build   (arm64) "), "build (arm64)");
        let names: BTreeSet<String> = ["build (amd64)", "build (arm64)", "test (x)"].iter().map(|s| s.to_string()).collect();
        let l = labels_for(&names);
        assert_eq!(l["build (arm64)"], "arm64");
        assert_eq!(l["test (x)"], "test (x)");
    }

    #[test]
    fn percentiles() {
        let s = stats((1..=10).collect()).unwrap();
        assert_eq!((s.median, s.p90, s.max, s.count), (6, 9, 10, 10));
        let s = stats(vec![5]).unwrap();
        assert_eq!((s.median, s.p90, s.max), (5, 5, 5));
        assert!(stats(vec![]).is_none());
    }
}
