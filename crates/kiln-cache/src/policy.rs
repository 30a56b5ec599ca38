//! `--cache-policy`: who may write the shared cache.
//!
//! A registry cache is shared by every build that names its ref, so writing it is a trust decision:
//! a pull request from a fork must not be able to plant layers that the next build of `main` will
//! reuse (cache poisoning), and a pull request from the repository itself should not churn the cache
//! that `main` warms (it reads it; its own records would be evicted by the next push anyway). The
//! GitHub Actions cache (`type=gha`) is shared the same way and follows the same policy. So
//! `auto` reads the CI provider's description of *why* the build runs and decides:
//!
//! | where | event | policy |
//! | --- | --- | --- |
//! | GitHub Actions | `pull_request`, `pull_request_target`, review events, `issue_comment` | read-only (fork or not) |
//! | GitHub Actions | `push` (default branch, other branches, tags), `release`, `workflow_dispatch`, `schedule`, `repository_dispatch`, `merge_group`, `create` | read-write |
//! | GitHub Actions | `workflow_run` triggered from a fork or by a pull request | read-only, else read-write |
//! | GitHub Actions | any other event | read-only (not known to be trusted) |
//! | GitLab CI | `merge_request_event`, `external_pull_request_event`, or an MR pipeline | read-only |
//! | GitLab CI | anything else (branch and tag pipelines, schedules, web) | read-write |
//! | Buildkite | `BUILDKITE_PULL_REQUEST` set to a number | read-only |
//! | Buildkite | otherwise | read-write |
//! | other CI (`CI=true`) | — | read-write |
//! | not CI | — | read-write |
//!
//! Pushes to feature branches write, as BuildKit users expect of `--cache-to` on their own branches:
//! the code is the project's own (only people with write access can push a branch), and the merge on
//! export keeps the default branch's records beside the branch's (see `docs/cache.md`).
//!
//! The decision is a pure function of an environment map and a file reader ([`resolve`]), so that
//! every row above is a table test; [`resolve_from_process`] feeds it the real environment.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

/// The `--cache-policy` flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyChoice {
    /// Decide from the CI environment (the default).
    #[default]
    Auto,
    ReadWrite,
    ReadOnly,
    Off,
}

impl FromStr for PolicyChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(PolicyChoice::Auto),
            "read-write" => Ok(PolicyChoice::ReadWrite),
            "read-only" => Ok(PolicyChoice::ReadOnly),
            "off" => Ok(PolicyChoice::Off),
            other => Err(format!("--cache-policy {other:?}: use auto, read-write, read-only or off")),
        }
    }
}

/// What the build may do with the cache stores named by `--cache-from` / `--cache-to`.
///
/// The embedded local cache under the kiln root is not governed by this (it is private to the
/// machine; `--no-cache` is what turns it off): `read-only` and `off` only concern the shared stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    /// Import from `--cache-from`, export to `--cache-to`.
    ReadWrite,
    /// Import from `--cache-from`; `--cache-to` is skipped.
    ReadOnly,
    /// Neither: `--cache-from` and `--cache-to` are ignored.
    Off,
}

impl CachePolicy {
    pub fn allows_import(self) -> bool {
        matches!(self, CachePolicy::ReadWrite | CachePolicy::ReadOnly)
    }
    pub fn allows_export(self) -> bool {
        matches!(self, CachePolicy::ReadWrite)
    }
}

impl fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CachePolicy::ReadWrite => "read-write",
            CachePolicy::ReadOnly => "read-only",
            CachePolicy::Off => "off",
        })
    }
}

/// The policy that applies and a sentence saying why, for the summary and `--metadata-file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedPolicy {
    pub policy: CachePolicy,
    /// The CI provider recognised (`github-actions`, `gitlab-ci`, `buildkite`, `ci`), `None` locally
    /// or when the policy was given explicitly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'static str>,
    /// e.g. "GitHub Actions pull_request event from a fork (alice/app): cache is read-only".
    pub reason: String,
}

impl fmt::Display for ResolvedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache policy {}: {}", self.policy, self.reason)
    }
}

fn rp(policy: CachePolicy, provider: Option<&'static str>, reason: String) -> ResolvedPolicy {
    ResolvedPolicy { policy, provider, reason }
}

fn truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Resolves `choice` against an environment (`env("NAME")`) and a file reader (for GitHub's event
/// payload at `GITHUB_EVENT_PATH`). Never fails: an unreadable payload only makes the reason vaguer
/// (and never makes a pull request writable, since the event name alone decides that).
pub fn resolve(choice: PolicyChoice, env: &dyn Fn(&str) -> Option<String>, read_file: &dyn Fn(&Path) -> Option<String>) -> ResolvedPolicy {
    match choice {
        PolicyChoice::ReadWrite => return rp(CachePolicy::ReadWrite, None, "--cache-policy read-write was given".into()),
        PolicyChoice::ReadOnly => return rp(CachePolicy::ReadOnly, None, "--cache-policy read-only was given".into()),
        PolicyChoice::Off => return rp(CachePolicy::Off, None, "--cache-policy off was given".into()),
        PolicyChoice::Auto => {}
    }
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    if truthy(env("GITHUB_ACTIONS")) {
        return github(&env, read_file);
    }
    if truthy(env("GITLAB_CI")) {
        return gitlab(&env);
    }
    if truthy(env("BUILDKITE")) {
        return buildkite(&env);
    }
    if truthy(env("CI")) {
        return rp(
            CachePolicy::ReadWrite,
            Some("ci"),
            "CI=true without a recognised provider (GitHub Actions, GitLab CI, Buildkite): cache is read-write; \
             pass --cache-policy read-only for untrusted builds"
                .into(),
        );
    }
    rp(CachePolicy::ReadWrite, None, "local build (not in CI): cache is read-write".into())
}

/// [`resolve`] over the process environment and file system.
pub fn resolve_from_process(choice: PolicyChoice) -> ResolvedPolicy {
    resolve(choice, &|k| std::env::var(k).ok(), &|p| std::fs::read_to_string(p).ok())
}

const GH: Option<&str> = Some("github-actions");

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(|v| v.as_str())
}

fn bool_at(v: &serde_json::Value, path: &[&str]) -> Option<bool> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(|v| v.as_bool())
}

fn github(env: &dyn Fn(&str) -> Option<String>, read_file: &dyn Fn(&Path) -> Option<String>) -> ResolvedPolicy {
    let event = env("GITHUB_EVENT_NAME").unwrap_or_default();
    let repo = env("GITHUB_REPOSITORY");
    let git_ref = env("GITHUB_REF").unwrap_or_default();
    let payload: serde_json::Value = env("GITHUB_EVENT_PATH")
        .and_then(|p| read_file(Path::new(&p)))
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    // The head repository of a pull request names where its code comes from.
    let fork_of = |head: &[&str]| -> Option<String> {
        let mut name_path = head.to_vec();
        name_path.push("full_name");
        let full = str_at(&payload, &name_path);
        match (full, repo.as_deref()) {
            (Some(f), Some(r)) if !f.eq_ignore_ascii_case(r) => Some(f.to_string()),
            (Some(_), Some(_)) => None,
            _ => {
                let mut fork_path = head.to_vec();
                fork_path.push("fork");
                bool_at(&payload, &fork_path).filter(|f| *f).map(|_| full.unwrap_or("another repository").to_string())
            }
        }
    };
    let ro = |why: String| rp(CachePolicy::ReadOnly, GH, why);
    let rw = |why: String| rp(CachePolicy::ReadWrite, GH, why);
    match event.as_str() {
        "pull_request" | "pull_request_target" | "pull_request_review" | "pull_request_review_comment" => {
            match fork_of(&["pull_request", "head", "repo"]) {
                Some(f) => ro(format!("GitHub Actions {event} event from a fork ({f}): cache is read-only")),
                None => ro(format!("GitHub Actions {event} event: cache is read-only (pull requests read the cache; pushes write it)")),
            }
        }
        "issue_comment" => ro("GitHub Actions issue_comment event (may build a pull request's code): cache is read-only".into()),
        "push" => {
            if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
                return rw(format!("GitHub Actions push of tag {tag}: cache is read-write"));
            }
            let branch = git_ref.strip_prefix("refs/heads/").unwrap_or(&git_ref);
            match str_at(&payload, &["repository", "default_branch"]) {
                Some(d) if d == branch => rw(format!("GitHub Actions push to the default branch {branch}: cache is read-write")),
                Some(_) => rw(format!(
                    "GitHub Actions push to branch {branch} of this repository: cache is read-write \
                     (the default branch's records are kept by the merge)"
                )),
                None => rw(format!("GitHub Actions push to {git_ref}: cache is read-write")),
            }
        }
        "release" => rw("GitHub Actions release event: cache is read-write".into()),
        "workflow_dispatch" | "schedule" | "repository_dispatch" | "merge_group" | "create" => {
            rw(format!("GitHub Actions {event} event (the repository's own code): cache is read-write"))
        }
        "workflow_run" => {
            if let Some(f) = fork_of(&["workflow_run", "head_repository"]) {
                return ro(format!("GitHub Actions workflow_run event triggered from a fork ({f}): cache is read-only"));
            }
            match str_at(&payload, &["workflow_run", "event"]) {
                Some(e) if e.starts_with("pull_request") => {
                    ro(format!("GitHub Actions workflow_run event triggered by a {e} run: cache is read-only"))
                }
                Some(e) => rw(format!("GitHub Actions workflow_run event triggered by a {e} run: cache is read-write")),
                None => ro("GitHub Actions workflow_run event whose trigger is unknown (no event payload): cache is read-only".into()),
            }
        }
        "" => ro("GitHub Actions without GITHUB_EVENT_NAME: cache is read-only to be safe".into()),
        other => ro(format!(
            "GitHub Actions {other} event is not known to be trusted: cache is read-only (pass --cache-policy read-write to override)"
        )),
    }
}

fn gitlab(env: &dyn Fn(&str) -> Option<String>) -> ResolvedPolicy {
    const GL: Option<&str> = Some("gitlab-ci");
    let source = env("CI_PIPELINE_SOURCE").unwrap_or_default();
    let mr = source == "merge_request_event" || env("CI_MERGE_REQUEST_IID").is_some();
    if mr {
        let fork = match (env("CI_MERGE_REQUEST_SOURCE_PROJECT_ID"), env("CI_PROJECT_ID")) {
            (Some(src), Some(this)) => src != this,
            _ => false,
        };
        let from = env("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH").unwrap_or_else(|| "another project".into());
        return if fork {
            rp(CachePolicy::ReadOnly, GL, format!("GitLab CI merge request pipeline from a fork ({from}): cache is read-only"))
        } else {
            rp(CachePolicy::ReadOnly, GL, "GitLab CI merge request pipeline: cache is read-only".into())
        };
    }
    if source == "external_pull_request_event" {
        return rp(CachePolicy::ReadOnly, GL, "GitLab CI external pull request pipeline: cache is read-only".into());
    }
    if let Some(tag) = env("CI_COMMIT_TAG") {
        return rp(CachePolicy::ReadWrite, GL, format!("GitLab CI pipeline for tag {tag}: cache is read-write"));
    }
    let branch = env("CI_COMMIT_BRANCH").or_else(|| env("CI_COMMIT_REF_NAME")).unwrap_or_default();
    let why = match env("CI_DEFAULT_BRANCH") {
        Some(d) if d == branch => format!("GitLab CI pipeline on the default branch {branch}: cache is read-write"),
        _ if branch.is_empty() => format!("GitLab CI {source} pipeline: cache is read-write"),
        _ => format!("GitLab CI pipeline on branch {branch}: cache is read-write"),
    };
    rp(CachePolicy::ReadWrite, GL, why)
}

/// `git@github.com:org/app.git` and `https://github.com/org/app` name the same repository.
fn normalise_repo_url(u: &str) -> String {
    let u = u.trim().to_ascii_lowercase();
    let u = u.split_once("://").map(|(_, r)| r.to_string()).unwrap_or(u);
    let u = u.rsplit_once('@').map(|(_, r)| r.to_string()).unwrap_or(u);
    let u = u.replacen(':', "/", 1);
    u.trim_end_matches('/').trim_end_matches(".git").to_string()
}

fn buildkite(env: &dyn Fn(&str) -> Option<String>) -> ResolvedPolicy {
    const BK: Option<&str> = Some("buildkite");
    let pr = env("BUILDKITE_PULL_REQUEST").filter(|v| v != "false");
    if let Some(pr) = pr {
        let fork = match (env("BUILDKITE_PULL_REQUEST_REPO"), env("BUILDKITE_REPO")) {
            (Some(a), Some(b)) => normalise_repo_url(&a) != normalise_repo_url(&b),
            _ => false,
        };
        return if fork {
            rp(CachePolicy::ReadOnly, BK, format!("Buildkite pull request #{pr} from a fork: cache is read-only"))
        } else {
            rp(CachePolicy::ReadOnly, BK, format!("Buildkite pull request #{pr}: cache is read-only"))
        };
    }
    if let Some(tag) = env("BUILDKITE_TAG") {
        return rp(CachePolicy::ReadWrite, BK, format!("Buildkite build of tag {tag}: cache is read-write"));
    }
    let branch = env("BUILDKITE_BRANCH").unwrap_or_default();
    let why = match env("BUILDKITE_PIPELINE_DEFAULT_BRANCH") {
        Some(d) if d == branch => format!("Buildkite build of the default branch {branch}: cache is read-write"),
        _ => format!("Buildkite build of branch {branch}: cache is read-write"),
    };
    rp(CachePolicy::ReadWrite, BK, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const EVENT_PATH: &str = "/github/workflow/event.json";

    /// A `pull_request` payload in the shape of GitHub's webhook docs (trimmed to what matters).
    fn pr_payload(head_repo: &str, head_is_fork: bool) -> String {
        serde_json::json!({
            "action": "opened",
            "number": 7,
            "pull_request": {
                "number": 7,
                "head": {"ref": "feature", "sha": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
                         "repo": {"full_name": head_repo, "fork": head_is_fork, "default_branch": "main"}},
                "base": {"ref": "main", "repo": {"full_name": "octo/app", "fork": false, "default_branch": "main"}}
            },
            "repository": {"full_name": "octo/app", "default_branch": "main", "fork": false}
        })
        .to_string()
    }

    fn push_payload(git_ref: &str) -> String {
        serde_json::json!({
            "ref": git_ref,
            "before": "0000000000000000000000000000000000000000",
            "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "repository": {"full_name": "octo/app", "default_branch": "main", "fork": false},
            "pusher": {"name": "octocat"}
        })
        .to_string()
    }

    fn run(vars: &[(&str, &str)], payload: Option<String>) -> ResolvedPolicy {
        let env: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        resolve(PolicyChoice::Auto, &|k| env.get(k).cloned(), &|p| (p == Path::new(EVENT_PATH)).then(|| payload.clone()).flatten())
    }

    fn gh(event: &str, git_ref: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CI", "true".into()),
            ("GITHUB_ACTIONS", "true".into()),
            ("GITHUB_EVENT_NAME", event.into()),
            ("GITHUB_EVENT_PATH", EVENT_PATH.into()),
            ("GITHUB_REPOSITORY", "octo/app".into()),
            ("GITHUB_REF", git_ref.into()),
        ]
    }

    fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        v.iter().map(|(k, s)| (*k, s.as_str())).collect()
    }

    #[test]
    fn github_actions_table() {
        use CachePolicy::*;
        let cases: Vec<(&str, &str, Option<String>, CachePolicy, &str)> = vec![
            ("pull_request", "refs/pull/7/merge", Some(pr_payload("octo/app", false)), ReadOnly, "pull_request event: cache is read-only"),
            (
                "pull_request",
                "refs/pull/7/merge",
                Some(pr_payload("alice/app", true)),
                ReadOnly,
                "pull_request event from a fork (alice/app)",
            ),
            (
                "pull_request_target",
                "refs/heads/main",
                Some(pr_payload("alice/app", true)),
                ReadOnly,
                "pull_request_target event from a fork",
            ),
            (
                "pull_request_target",
                "refs/heads/main",
                Some(pr_payload("octo/app", false)),
                ReadOnly,
                "pull_request_target event: cache is read-only",
            ),
            // No payload: the event name alone keeps a pull request read-only.
            ("pull_request", "refs/pull/7/merge", None, ReadOnly, "pull_request event"),
            ("push", "refs/heads/main", Some(push_payload("refs/heads/main")), ReadWrite, "push to the default branch main"),
            (
                "push",
                "refs/heads/feature/x",
                Some(push_payload("refs/heads/feature/x")),
                ReadWrite,
                "push to branch feature/x of this repository",
            ),
            ("push", "refs/tags/v1.2.0", Some(push_payload("refs/tags/v1.2.0")), ReadWrite, "push of tag v1.2.0"),
            ("push", "refs/heads/main", None, ReadWrite, "push to refs/heads/main"),
            (
                "release",
                "refs/tags/v1.2.0",
                Some(r#"{"action":"published","release":{"tag_name":"v1.2.0"}}"#.into()),
                ReadWrite,
                "release event",
            ),
            ("schedule", "refs/heads/main", None, ReadWrite, "schedule event"),
            ("workflow_dispatch", "refs/heads/main", None, ReadWrite, "workflow_dispatch event"),
            ("issue_comment", "refs/heads/main", None, ReadOnly, "issue_comment"),
            ("deployment_status", "refs/heads/main", None, ReadOnly, "not known to be trusted"),
            (
                "workflow_run",
                "refs/heads/main",
                Some(r#"{"workflow_run":{"event":"pull_request","head_repository":{"full_name":"mallory/app","fork":true}}}"#.into()),
                ReadOnly,
                "triggered from a fork (mallory/app)",
            ),
            (
                "workflow_run",
                "refs/heads/main",
                Some(r#"{"workflow_run":{"event":"pull_request","head_repository":{"full_name":"octo/app","fork":false}}}"#.into()),
                ReadOnly,
                "triggered by a pull_request run",
            ),
            (
                "workflow_run",
                "refs/heads/main",
                Some(r#"{"workflow_run":{"event":"push","head_repository":{"full_name":"octo/app","fork":false}}}"#.into()),
                ReadWrite,
                "triggered by a push run",
            ),
        ];
        for (event, git_ref, payload, want, reason) in cases {
            let vars = gh(event, git_ref);
            let got = run(&as_refs(&vars), payload);
            assert_eq!(got.policy, want, "{event} {git_ref}: {}", got.reason);
            assert!(got.reason.contains(reason), "{event} {git_ref}: {:?} lacks {reason:?}", got.reason);
            assert_eq!(got.provider, Some("github-actions"));
        }
    }

    #[test]
    fn github_fork_detected_from_the_fork_flag_when_names_are_missing() {
        let payload = r#"{"pull_request":{"head":{"repo":{"fork":true}}}}"#.to_string();
        let vars = gh("pull_request", "refs/pull/1/merge");
        let vars: Vec<_> = as_refs(&vars).into_iter().filter(|(k, _)| *k != "GITHUB_REPOSITORY").collect();
        let got = run(&vars, Some(payload));
        assert_eq!(got.policy, CachePolicy::ReadOnly);
        assert!(got.reason.contains("from a fork"), "{}", got.reason);
    }

    #[test]
    fn gitlab_buildkite_generic_and_local() {
        use CachePolicy::*;
        type Case = (Vec<(&'static str, &'static str)>, CachePolicy, &'static str, Option<&'static str>);
        let cases: Vec<Case> = vec![
            (
                vec![
                    ("CI", "true"),
                    ("GITLAB_CI", "true"),
                    ("CI_PIPELINE_SOURCE", "merge_request_event"),
                    ("CI_MERGE_REQUEST_IID", "3"),
                    ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", "99"),
                    ("CI_PROJECT_ID", "12"),
                    ("CI_MERGE_REQUEST_SOURCE_PROJECT_PATH", "alice/app"),
                ],
                ReadOnly,
                "merge request pipeline from a fork (alice/app)",
                Some("gitlab-ci"),
            ),
            (
                vec![
                    ("CI", "true"),
                    ("GITLAB_CI", "true"),
                    ("CI_PIPELINE_SOURCE", "merge_request_event"),
                    ("CI_MERGE_REQUEST_SOURCE_PROJECT_ID", "12"),
                    ("CI_PROJECT_ID", "12"),
                ],
                ReadOnly,
                "GitLab CI merge request pipeline: cache is read-only",
                Some("gitlab-ci"),
            ),
            (
                vec![
                    ("CI", "true"),
                    ("GITLAB_CI", "true"),
                    ("CI_PIPELINE_SOURCE", "push"),
                    ("CI_COMMIT_BRANCH", "main"),
                    ("CI_DEFAULT_BRANCH", "main"),
                ],
                ReadWrite,
                "default branch main",
                Some("gitlab-ci"),
            ),
            (
                vec![("CI", "true"), ("GITLAB_CI", "true"), ("CI_PIPELINE_SOURCE", "push"), ("CI_COMMIT_TAG", "v2")],
                ReadWrite,
                "tag v2",
                Some("gitlab-ci"),
            ),
            (
                vec![
                    ("CI", "true"),
                    ("BUILDKITE", "true"),
                    ("BUILDKITE_PULL_REQUEST", "42"),
                    ("BUILDKITE_PULL_REQUEST_REPO", "https://github.com/alice/app.git"),
                    ("BUILDKITE_REPO", "git@github.com:octo/app.git"),
                ],
                ReadOnly,
                "pull request #42 from a fork",
                Some("buildkite"),
            ),
            (
                vec![
                    ("CI", "true"),
                    ("BUILDKITE", "true"),
                    ("BUILDKITE_PULL_REQUEST", "42"),
                    ("BUILDKITE_PULL_REQUEST_REPO", "https://github.com/octo/app.git"),
                    ("BUILDKITE_REPO", "git@github.com:octo/app.git"),
                ],
                ReadOnly,
                "Buildkite pull request #42: cache",
                Some("buildkite"),
            ),
            (
                vec![
                    ("CI", "true"),
                    ("BUILDKITE", "true"),
                    ("BUILDKITE_PULL_REQUEST", "false"),
                    ("BUILDKITE_BRANCH", "main"),
                    ("BUILDKITE_PIPELINE_DEFAULT_BRANCH", "main"),
                ],
                ReadWrite,
                "default branch main",
                Some("buildkite"),
            ),
            (vec![("CI", "true")], ReadWrite, "without a recognised provider", Some("ci")),
            (vec![("CI", "1")], ReadWrite, "without a recognised provider", Some("ci")),
            (vec![], ReadWrite, "local build", None),
            (vec![("CI", "false")], ReadWrite, "local build", None),
        ];
        for (vars, want, reason, provider) in cases {
            let got = run(&vars, None);
            assert_eq!(got.policy, want, "{vars:?}: {}", got.reason);
            assert!(got.reason.contains(reason), "{vars:?}: {:?} lacks {reason:?}", got.reason);
            assert_eq!(got.provider, provider, "{vars:?}");
        }
    }

    #[test]
    fn explicit_choices_win_over_the_environment() {
        let vars = gh("push", "refs/heads/main");
        let env: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let get = |k: &str| env.get(k).cloned();
        let none = |_: &Path| None;
        let ro = resolve("read-only".parse().unwrap(), &get, &none);
        assert_eq!(ro.policy, CachePolicy::ReadOnly);
        assert!(ro.reason.contains("--cache-policy read-only"));
        assert_eq!(resolve(PolicyChoice::Off, &get, &none).policy, CachePolicy::Off);
        assert!(!CachePolicy::Off.allows_import());
        assert!(CachePolicy::ReadOnly.allows_import() && !CachePolicy::ReadOnly.allows_export());
        assert!("sometimes".parse::<PolicyChoice>().unwrap_err().contains("auto, read-write"));
        let json = serde_json::to_value(&ro).unwrap();
        assert_eq!(json["policy"], "read-only");
    }

    #[test]
    fn repo_urls_normalise() {
        assert_eq!(normalise_repo_url("git@github.com:Octo/App.git"), "github.com/octo/app");
        assert_eq!(normalise_repo_url("https://github.com/octo/app"), "github.com/octo/app");
    }
}
