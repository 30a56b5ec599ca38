//! `kiln ci-report`: flags and wiring; the work is in `kiln-ci`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use kiln_ci::live::{Fetcher, LiveConfig, Token};
use kiln_ci::render::Format;
use kiln_ci::time::{parse_since, Timestamp};

use crate::Global;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  kiln ci-report ./runs --format markdown\n  kiln ci-report --repo owner/app --workflow ci.yml --since 30d --format html -o report.html"
)]
pub struct Args {
    /// A directory of `gh api` JSON: run pages, jobs of each run, check-run annotations.
    ///
    /// Files are found in any subdirectory and recognised by their content. A check run's
    /// annotations (a job's check-run id is its job id) are placed by where they were saved:
    /// annotations/ID.json, check-runs/ID/annotations.json, or a file name with the id after
    /// check-runs- (check-runs-ID-annotations.json, and what --save writes), mixed as you like.
    /// Annotations that cannot be placed, or whose id no job has, are listed under "files not used".
    #[arg(value_name = "DIR", conflicts_with = "repo", required_unless_present = "repo")]
    pub dir: Option<PathBuf>,
    /// Fetch live from the GitHub API instead: OWNER/NAME.
    #[arg(long, value_name = "OWNER/NAME", requires = "workflow")]
    pub repo: Option<String>,
    /// The workflow file (e.g. ci.yml) or id. With DIR it selects that workflow's runs.
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<String>,
    /// GitHub token (default: $GITHUB_TOKEN); without one the API allows 60 requests an hour.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: Option<Token>,
    /// API base URL (GitHub Enterprise, or a local test server).
    #[arg(long, default_value = "https://api.github.com")]
    pub api_url: String,
    /// Only runs created since: a date (2024-05-01), an RFC 3339 time, or an age (30d, 12h, 2w).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only the newest N runs (live mode defaults to 100).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "markdown", "json", "html"])]
    pub format: String,
    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Longest rate-limit wait (seconds) to sit out; a longer one stops with the reset time.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub max_wait: u64,
    /// Live mode: also save every page fetched into this directory (readable later as DIR).
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Live mode: do not use or update the ETag cache under <root>/ci-report/etags.
    #[arg(long)]
    pub no_cache: bool,
}

fn parse_token(s: &str) -> Result<Token, String> {
    if s.trim().is_empty() {
        return Err("the token is empty".into());
    }
    Ok(Token::new(s.trim()))
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let since = match a.since.as_deref() {
        Some(s) => Some(
            parse_since(s, Timestamp::now())
                .with_context(|| format!("--since `{s}` is not a date (2024-05-01), an RFC 3339 time or an age (30d, 12h, 2w)"))?,
        ),
        None => None,
    };
    let format: Format = a.format.parse().map_err(anyhow::Error::msg)?;
    let (history, workflow_filter) = if let Some(repo) = a.repo {
        let Some(workflow) = a.workflow else { bail!("--repo needs --workflow FILE (e.g. ci.yml)") };
        let cfg = LiveConfig {
            api_url: a.api_url,
            repo,
            workflow,
            token: a.token,
            since,
            limit: Some(a.limit.unwrap_or(100)),
            etag_dir: (!a.no_cache).then(|| g.root().join("ci-report").join("etags")),
            save_dir: a.save,
            max_wait: Duration::from_secs(a.max_wait),
        };
        let mut fetcher = Fetcher::new(cfg)?;
        let history = fetcher.fetch()?;
        tracing::info!(
            "{} requests, {} not modified, {} rate-limit waits",
            fetcher.stats.requests,
            fetcher.stats.not_modified,
            fetcher.stats.rate_limit_waits
        );
        (history, None)
    } else if let Some(dir) = a.dir {
        (kiln_ci::read_dir(&dir)?, a.workflow)
    } else {
        bail!("give a DIR of `gh api` output, or --repo OWNER/NAME --workflow FILE");
    };
    let report = kiln_ci::analyze(&history, &kiln_ci::Options { since, limit: a.limit, workflow: workflow_filter });
    let text = kiln_ci::render(&report, format);
    match a.output {
        Some(path) => std::fs::write(&path, text).with_context(|| format!("cannot write the report to {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
