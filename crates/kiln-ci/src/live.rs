//! The live client: fetch a workflow's runs, their jobs, and the annotations of cancelled jobs
//! from the GitHub REST API.
//!
//! It is deliberately small and blocking (one request at a time): the report needs a few hundred
//! requests at most, and going one at a time is what GitHub asks of API clients. Every response is
//! kept on disk with its ETag, so a second report over the same history sends conditional requests
//! and gets `304 Not Modified`, which GitHub does not count against the rate limit. When the rate
//! limit is hit, the client waits for the reset if that is soon enough (`max_wait`), else stops
//! with the time of the reset.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LiveError;
use crate::model::History;
use crate::read::{add_documents, read_bytes, Document};
use crate::time::Timestamp;

/// A GitHub token. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Token {
        Token(s.into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// `https://api.github.com`, or a GitHub Enterprise / test server base URL.
    pub api_url: String,
    /// `owner/name`.
    pub repo: String,
    /// The workflow file name (`ci.yml`) or numeric id.
    pub workflow: String,
    pub token: Option<Token>,
    pub since: Option<Timestamp>,
    pub limit: Option<usize>,
    /// Where responses and their ETags are kept between runs; `None` disables conditional requests.
    pub etag_dir: Option<PathBuf>,
    /// Also write every page fetched here, in the layout `--dir` reads.
    pub save_dir: Option<PathBuf>,
    /// The longest rate-limit wait that is sat out rather than reported.
    pub max_wait: Duration,
}

/// Counters for the summary line and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FetchStats {
    pub requests: usize,
    pub not_modified: usize,
    pub rate_limit_waits: usize,
    pub pages: usize,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    url: String,
    etag: String,
    #[serde(default)]
    link: Option<String>,
    body: String,
}

type Sleeper = Box<dyn FnMut(Duration) + Send>;

pub struct Fetcher {
    cfg: LiveConfig,
    agent: ureq::Agent,
    sleep: Sleeper,
    pub stats: FetchStats,
}

const MAX_BODY: u64 = 256 * 1024 * 1024;
const RATE_LIMIT_RETRIES: usize = 3;

impl Fetcher {
    pub fn new(cfg: LiveConfig) -> Result<Fetcher, LiveError> {
        let valid = cfg.repo.split('/').filter(|p| !p.is_empty()).count() == 2 && cfg.repo.matches('/').count() == 1;
        if !valid {
            return Err(LiveError::BadRepo(cfg.repo.clone()));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("kiln-ci/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Fetcher { cfg, agent, sleep: Box::new(std::thread::sleep), stats: FetchStats::default() })
    }

    /// Replace how rate-limit waits are spent (tests record them instead of sleeping).
    pub fn with_sleeper(mut self, sleep: impl FnMut(Duration) + Send + 'static) -> Fetcher {
        self.sleep = Box::new(sleep);
        self
    }

    fn base(&self) -> String {
        format!("{}/repos/{}", self.cfg.api_url.trim_end_matches('/'), self.cfg.repo)
    }

    /// Fetch runs (newest first, up to `limit`), the jobs of each, and annotations of cancelled jobs.
    pub fn fetch(&mut self) -> Result<History, LiveError> {
        let mut history = History::default();
        let per_page = self.cfg.limit.map_or(100, |l| l.clamp(1, 100));
        let mut url = format!("{}/actions/workflows/{}/runs?per_page={per_page}", self.base(), self.cfg.workflow);
        if let Some(since) = self.cfg.since {
            url.push_str(&format!("&created=%3E%3D{}", since.date()));
        }
        let mut runs = Vec::new();
        let mut page = 0;
        let mut next = Some(url);
        while let Some(u) = next.take() {
            page += 1;
            let (docs, link) = self.get_documents(&u, &format!("runs-page-{page}.json"))?;
            for d in docs {
                if let Document::Runs(r) = d {
                    runs.extend(r);
                }
            }
            let full = self.cfg.limit.is_some_and(|l| runs.len() >= l);
            if !full {
                next = link;
            }
        }
        if let Some(l) = self.cfg.limit {
            runs.truncate(l);
        }
        if let Some(since) = self.cfg.since {
            runs.retain(|r| r.created_at >= since);
        }
        tracing::info!("{} runs listed", runs.len());

        let run_ids: Vec<u64> = runs.iter().map(|r| r.id).collect();
        history.add_runs(runs);
        for id in run_ids {
            let first = format!("{}/actions/runs/{id}/jobs?per_page=100&filter=latest", self.base());
            let jobs = self.collect(&first, &format!("jobs-{id}"), &mut history)?;
            for job_id in jobs {
                let url = format!("{}/check-runs/{job_id}/annotations?per_page=100", self.base());
                self.collect(&url, &format!("check-runs-{job_id}-annotations"), &mut history)?;
            }
        }
        history.finish();
        Ok(history)
    }

    /// Follow the pages starting at `first` into `history`; returns the ids of cancelled jobs seen.
    fn collect(&mut self, first: &str, stem: &str, history: &mut History) -> Result<Vec<u64>, LiveError> {
        let mut cancelled = Vec::new();
        let mut next = Some(first.to_string());
        let mut page = 0;
        while let Some(u) = next.take() {
            page += 1;
            let (docs, link) = self.get_documents(&u, &format!("{stem}-page-{page}.json"))?;
            for d in &docs {
                if let Document::Jobs(jobs) = d {
                    cancelled.extend(jobs.iter().filter(|j| j.conclusion.as_deref() == Some("cancelled")).map(|j| j.id));
                }
            }
            add_documents(history, &u, docs);
            next = link;
        }
        Ok(cancelled)
    }

    fn get_documents(&mut self, url: &str, save_as: &str) -> Result<(Vec<Document>, Option<String>), LiveError> {
        let (body, link) = self.get(url)?;
        self.stats.pages += 1;
        if let Some(dir) = &self.cfg.save_dir {
            write_atomic(&dir.join(save_as), &body).map_err(|err| LiveError::Cache { path: dir.clone(), err })?;
        }
        // The URL stands in for a file name so that errors (and annotation ids) refer to it.
        let docs = read_bytes(Path::new(url), &body).map_err(|err| LiveError::Body { url: url.to_string(), err })?;
        Ok((docs, link))
    }

    /// GET with ETag revalidation and rate-limit handling; returns the body and the next-page URL.
    fn get(&mut self, url: &str) -> Result<(Vec<u8>, Option<String>), LiveError> {
        let cached = self.cache_load(url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.agent.get(url).set("Accept", "application/vnd.github+json").set("X-GitHub-Api-Version", "2022-11-28");
            if let Some(t) = &self.cfg.token {
                req = req.set("Authorization", &format!("Bearer {}", t.0));
            }
            if let Some(c) = &cached {
                req = req.set("If-None-Match", &c.etag);
            }
            self.stats.requests += 1;
            tracing::debug!("GET {url}");
            match req.call() {
                Ok(resp) if resp.status() == 304 => {
                    let Some(c) = cached else {
                        return Err(LiveError::Status {
                            url: url.into(),
                            status: 304,
                            message: "Not Modified for a request that was not conditional".into(),
                            hint: "the server or a proxy is misbehaving",
                        });
                    };
                    self.stats.not_modified += 1;
                    let link = resp.header("link").map(String::from).or(c.link);
                    return Ok((c.body.into_bytes(), link.as_deref().and_then(next_link)));
                }
                Ok(resp) => {
                    let etag = resp.header("etag").map(String::from);
                    let link = resp.header("link").map(String::from);
                    let mut body = Vec::new();
                    resp.into_reader()
                        .take(MAX_BODY)
                        .read_to_end(&mut body)
                        .map_err(|e| LiveError::Transport { url: url.into(), message: format!("reading the body: {e}") })?;
                    if let Some(etag) = etag {
                        self.cache_store(url, &etag, link.as_deref(), &body);
                    }
                    return Ok((body, link.as_deref().and_then(next_link)));
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let retry_after = resp.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
                    let remaining = resp.header("x-ratelimit-remaining").map(|v| v.trim().to_string());
                    let reset = resp.header("x-ratelimit-reset").and_then(|v| v.trim().parse::<i64>().ok());
                    let message = error_message(resp);
                    let limited = status == 429
                        || retry_after.is_some()
                        || remaining.as_deref() == Some("0")
                        || (status == 403 && message.to_ascii_lowercase().contains("rate limit"));
                    if (status == 403 || status == 429) && limited {
                        let now = Timestamp::now();
                        let wait = match (retry_after, reset) {
                            (Some(s), _) => s,
                            (None, Some(r)) => r.saturating_sub(now.0).max(0) as u64 + 1,
                            // A secondary limit without a hint: GitHub asks for at least a minute.
                            (None, None) => 60,
                        };
                        if wait <= self.cfg.max_wait.as_secs() && attempt <= RATE_LIMIT_RETRIES {
                            tracing::warn!("rate limited at {url} (HTTP {status}); waiting {wait} s");
                            self.stats.rate_limit_waits += 1;
                            (self.sleep)(Duration::from_secs(wait));
                            continue;
                        }
                        return Err(LiveError::RateLimited {
                            url: url.into(),
                            status,
                            reset: Timestamp(now.0.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX))).to_string(),
                            wait_secs: wait,
                            max_wait_secs: self.cfg.max_wait.as_secs(),
                        });
                    }
                    let hint = match status {
                        401 => "the token is missing, invalid or expired: pass a valid --token or set GITHUB_TOKEN",
                        403 => "the token may lack access: it needs `actions:read` (and `checks:read` for annotations)",
                        404 => "check --repo OWNER/NAME and --workflow (the file name, e.g. ci.yml); private repositories need a token",
                        _ => "try again later; if it persists, check https://www.githubstatus.com",
                    };
                    return Err(LiveError::Status { url: url.into(), status, message, hint });
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(LiveError::Transport { url: url.into(), message: t.to_string() });
                }
            }
        }
    }

    fn cache_path(&self, url: &str) -> Option<PathBuf> {
        self.cfg.etag_dir.as_ref().map(|d| d.join(format!("{:016x}.json", fnv1a(url.as_bytes()))))
    }

    fn cache_load(&self, url: &str) -> Option<CacheEntry> {
        let path = self.cache_path(url)?;
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<CacheEntry>(&bytes) {
            // The URL is stored too: a hash collision must not serve another page.
            Ok(e) if e.url == url => Some(e),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("ignoring unreadable ETag cache entry {}: {e}", path.display());
                None
            }
        }
    }

    fn cache_store(&self, url: &str, etag: &str, link: Option<&str>, body: &[u8]) {
        let Some(path) = self.cache_path(url) else { return };
        let Ok(body) = String::from_utf8(body.to_vec()) else { return };
        let entry = CacheEntry { url: url.into(), etag: etag.into(), link: link.map(String::from), body };
        let Ok(bytes) = serde_json::to_vec(&entry) else { return };
        // The cache only saves requests; failing to write it must not fail the report.
        if let Err(e) = write_atomic(&path, &bytes) {
            tracing::warn!("cannot write ETag cache {}: {e}", path.display());
        }
    }
}

fn error_message(resp: ureq::Response) -> String {
    let mut body = String::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_string(&mut body);
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// The `rel="next"` target of a Link header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            Some(target.strip_prefix('<')?.strip_suffix('>')?.to_string())
        } else {
            None
        }
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Write via a temp file, fsync and rename, so a crash never leaves half a cache entry.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("entry");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        let h = r#"<https://api.github.com/repositories/1/actions/runs?page=2>; rel="next", <https://api.github.com/repositories/1/actions/runs?page=5>; rel="last""#;
        assert_eq!(next_link(h).as_deref(), Some("https://api.github.com/repositories/1/actions/runs?page=2"));
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="prev""#), None);
    }

    #[test]
    fn token_debug_is_redacted() {
        assert_eq!(format!("{:?}", Token::new("ghp_secret")), "Token(<redacted>)");
    }
}
