use std::path::PathBuf;

use thiserror::Error;

use crate::arch::ArchError;
use crate::ExitStatus;

#[derive(Debug, Error)]
pub enum Error {
    #[error("the sandbox needs root to create namespaces and mounts (running as uid {uid}); run kiln as root, e.g. with sudo")]
    NeedRoot { uid: u32 },
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("cannot start the sandbox init process {}: {source}", binary.display())]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("talking to the sandbox init process for `{command}` failed: {source}")]
    Io { command: String, source: std::io::Error },
    #[error("could not start `{command}` in the sandbox ({stage}): {message}")]
    Setup { command: String, stage: String, message: String },
    #[error("the sandbox init process ({}) for `{command}` ended without reporting an exit status ({status}); check that it calls kiln_sandbox::init::maybe_run() first thing in main", binary.display())]
    InitDied { binary: PathBuf, command: String, status: String },
    /// The run was stopped by a [`crate::Cancel`], or not started because it had fired.
    #[error("{command}: cancelled")]
    Cancelled { command: String },
    #[error("`{command}` failed with {status}{}", render_tail(tail))]
    Failed { command: String, status: ExitStatus, tail: Vec<String> },
    #[error(transparent)]
    Arch(#[from] ArchError),
}

fn render_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        return " (no output)".to_string();
    }
    let mut s = format!("; last {} lines of output:", tail.len());
    for l in tail {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}
