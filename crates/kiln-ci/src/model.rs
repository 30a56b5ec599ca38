//! The slice of GitHub's Actions REST objects that the analysis needs.
//!
//! Fields are lenient on purpose: recordings from 2019 to today differ (older jobs carry no
//! `created_at`, webhook payloads drop some run fields), so only what identifies an object is
//! required (`id`, a run's `created_at`, a job's `run_id`, `name` and `status`). Unknown fields are
//! ignored. A field that is present but of the wrong type is still an error, named by its path.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::time::Timestamp;

/// One workflow run (`GET /repos/{o}/{r}/actions/runs` item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    /// The workflow file, e.g. `.github/workflows/ci.yml`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub workflow_id: Option<u64>,
    #[serde(default)]
    pub run_number: Option<u64>,
    #[serde(default)]
    pub run_attempt: Option<u32>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub head_sha: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub run_started_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub pull_requests: Vec<PullRef>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub display_title: Option<String>,
    /// The repository, so that runs of `ci.yml` in two repositories are not mixed.
    #[serde(default)]
    pub repository: Option<RepoRef>,
}

/// The part of a run's `repository` that names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRef {
    pub full_name: String,
}

/// The part of a run's `pull_requests` entry that identifies the PR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRef {
    pub number: u64,
}

/// One job of a run (`GET /repos/{o}/{r}/actions/runs/{id}/jobs` item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Also the id of the job's check run, which is where its annotations live.
    pub id: u64,
    pub run_id: u64,
    #[serde(default)]
    pub run_attempt: Option<u32>,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub steps: Vec<Step>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub runner_name: Option<String>,
    #[serde(default)]
    pub workflow_name: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub check_run_url: Option<String>,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub number: Option<u64>,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
}

/// One check-run annotation (`GET /repos/{o}/{r}/check-runs/{id}/annotations` item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub annotation_level: String,
    pub message: String,
    #[serde(default)]
    pub title: Option<String>,
}

impl Job {
    /// The check run that holds this job's annotations: the tail of `check_run_url`, which for
    /// Actions jobs equals the job id.
    pub fn check_run_id(&self) -> u64 {
        self.check_run_url.as_deref().and_then(|u| u.rsplit('/').next()).and_then(|t| t.parse().ok()).unwrap_or(self.id)
    }

    /// Whether any step ever began; a job cancelled while queued has none.
    pub fn ever_started(&self) -> bool {
        self.steps.iter().any(|s| s.started_at.is_some() && s.status != "queued" && s.status != "pending")
    }
}

/// Everything read from a directory or the API, merged and de-duplicated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    /// Sorted by creation time, then id.
    pub runs: Vec<Run>,
    /// Sorted by run id, then job id.
    pub jobs: Vec<Job>,
    /// Keyed by check-run id.
    pub annotations: BTreeMap<u64, Vec<Annotation>>,
    /// Files that were refused or only partly usable, with the reason, so nothing vanishes silently.
    pub notes: Vec<FileNote>,
}

/// A file (or URL) that contributed nothing or less than it seemed to, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileNote {
    pub file: String,
    pub reason: String,
}

impl History {
    /// Add runs; a run seen twice (pages overlap, or before/after recordings) keeps its latest state.
    pub fn add_runs(&mut self, runs: impl IntoIterator<Item = Run>) {
        self.runs.extend(runs);
    }

    pub fn add_jobs(&mut self, jobs: impl IntoIterator<Item = Job>) {
        self.jobs.extend(jobs);
    }

    pub fn add_annotations(&mut self, check_run_id: u64, items: Vec<Annotation>) {
        let slot = self.annotations.entry(check_run_id).or_default();
        for a in items {
            if !slot.contains(&a) {
                slot.push(a);
            }
        }
    }

    /// Sort and de-duplicate; call once everything is added.
    pub fn finish(&mut self) {
        // Latest state wins: completed beats in progress, then the later update.
        let run_rank = |r: &Run| (r.status.as_deref() == Some("completed"), r.updated_at);
        let mut by_id: BTreeMap<u64, Run> = BTreeMap::new();
        for r in self.runs.drain(..) {
            match by_id.get(&r.id) {
                Some(old) if run_rank(old) >= run_rank(&r) => {}
                _ => {
                    by_id.insert(r.id, r);
                }
            }
        }
        self.runs = by_id.into_values().collect();
        self.runs.sort_by_key(|r| (r.created_at, r.id));

        let job_rank = |j: &Job| (j.status == "completed", j.completed_at);
        let mut jobs: BTreeMap<u64, Job> = BTreeMap::new();
        for j in self.jobs.drain(..) {
            match jobs.get(&j.id) {
                Some(old) if job_rank(old) >= job_rank(&j) => {}
                _ => {
                    jobs.insert(j.id, j);
                }
            }
        }
        self.jobs = jobs.into_values().collect();
        self.jobs.sort_by_key(|j| (j.run_id, j.id));
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
