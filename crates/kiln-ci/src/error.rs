//! Errors. Each names the file or URL, the place inside it, and what to do next.

use std::path::PathBuf;

use thiserror::Error;

/// Reading recorded API responses from disk.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("{}: cannot read: {err}; check the path", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    #[error("{}: the file is empty; re-run the `gh api` command that wrote it", path.display())]
    Empty { path: PathBuf },

    #[error(
        "{}: not a workflow-runs, jobs or check-run annotations response (it is {what}); \
         kiln ci-report reads the output of `gh api repos/OWNER/REPO/actions/workflows/FILE/runs`, \
         `.../actions/runs/ID/jobs` and `.../check-runs/ID/annotations`",
        path.display()
    )]
    NotCiData { path: PathBuf, what: String },

    #[error(
        "{}:{line}:{column}: field `{field}`: {message}; the response was edited or is from an \
         unsupported API version, fetch it again with `gh api`",
        path.display()
    )]
    Field { path: PathBuf, field: String, line: usize, column: usize, message: String },

    #[error(
        "{}:{line}:{column}: malformed JSON at field `{field}`: {message}; the file is probably \
         truncated, fetch it again with `gh api`",
        path.display()
    )]
    Syntax { path: PathBuf, field: String, line: usize, column: usize, message: String },

    #[error("{}: no *.json files found; give the folder where `gh api` output was saved", dir.display())]
    NoFiles { dir: PathBuf },
}

impl ReadError {
    /// The reason without the file name, for listing refused files in a report.
    pub fn short_reason(&self) -> String {
        match self {
            ReadError::NotCiData { what, .. } => format!("refused: {what}, not runs, jobs or annotations"),
            ReadError::Empty { .. } => "refused: empty file".into(),
            other => other.to_string(),
        }
    }

    /// Prefix field paths with the page index of `gh api --slurp` output.
    pub(crate) fn in_slurped_page(self, page: usize) -> ReadError {
        match self {
            ReadError::Field { path, field, line, column, message } => {
                ReadError::Field { path, field: format!("[{page}].{field}"), line, column, message }
            }
            ReadError::Syntax { path, field, line, column, message } => {
                ReadError::Syntax { path, field: format!("[{page}].{field}"), line, column, message }
            }
            other => other,
        }
    }
}

/// Talking to the GitHub API.
#[derive(Debug, Error)]
pub enum LiveError {
    #[error(
        "GitHub rate limit hit at {url} (HTTP {status}); it resets at {reset} (in {wait_secs} s), \
         which is longer than --max-wait {max_wait_secs} s; run again after the reset, raise --max-wait, \
         or pass --token / GITHUB_TOKEN for a higher limit"
    )]
    RateLimited { url: String, status: u16, reset: String, wait_secs: u64, max_wait_secs: u64 },

    #[error("{url}: HTTP {status}: {message}; {hint}")]
    Status { url: String, status: u16, message: String, hint: &'static str },

    #[error("{url}: {message}; check --api-url and the network")]
    Transport { url: String, message: String },

    #[error("{url}: {err}")]
    Body { url: String, err: ReadError },

    #[error("{}: cannot write: {err}; check the directory or pass another --root / --save", path.display())]
    Cache { path: PathBuf, err: std::io::Error },

    #[error("--repo `{0}` is not OWNER/NAME")]
    BadRepo(String),
}
