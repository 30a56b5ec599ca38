//! Build failures. Each says what failed, where (Dockerfile file:line for a step), and what to do.
//!
//! Every message includes its cause, so an error flattened with `to_string()` still says why; a
//! printer that walks `source()` (the CLI) skips a cause whose text is already in the message, so
//! nothing is said twice.

use std::io;
use std::path::PathBuf;

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] kiln_dockerfile::ParseError),
    #[error(transparent)]
    Instruction(#[from] kiln_dockerfile::instructions::InstructionError),
    /// A step failed; `at` is `file:line`.
    #[error("{at}: {message}")]
    Step { at: String, message: String },
    #[error("cannot read the Dockerfile {}: {source}", path.display())]
    Dockerfile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] kiln_oci::StoreError),
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        #[source]
        source: kiln_oci::layer::LayerError,
    },
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("base image {reference}: {message}")]
    Base { reference: String, message: String },
    #[error("output {output}: {message}")]
    Output { output: String, message: String },
    #[error("{0}")]
    Usage(String),
    /// A step failed for a reason that is not the step's own (a full disk, a store error): the
    /// step's place and text, then the cause.
    #[error("{at}: {step}: {source}")]
    InStep {
        at: String,
        step: String,
        #[source]
        source: Box<BuildError>,
    },
    /// The build was cancelled (a signal); what finished is kept (see [`crate::Cancel`]).
    #[error("build cancelled: {kept}")]
    Cancelled { kept: String },
}

impl BuildError {
    /// Places an error in the step it happened in, unless it already says where (or is a cancel).
    pub(crate) fn in_step(self, at: &str, step: &str) -> BuildError {
        match self {
            e @ (BuildError::Step { .. } | BuildError::InStep { .. } | BuildError::Cancelled { .. }) => e,
            e => BuildError::InStep { at: at.to_string(), step: step.to_string(), source: Box::new(e) },
        }
    }

    pub(crate) fn step(at: impl std::fmt::Display, message: impl Into<String>) -> BuildError {
        BuildError::Step { at: at.to_string(), message: message.into() }
    }
}
