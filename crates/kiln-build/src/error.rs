//! Build failures. Each says what failed, where (Dockerfile file:line for a step), and what to do.

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
    #[error("cannot read the Dockerfile {}", path.display())]
    Dockerfile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] kiln_oci::StoreError),
    #[error("layer {digest}")]
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
}

impl BuildError {
    pub(crate) fn step(at: impl std::fmt::Display, message: impl Into<String>) -> BuildError {
        BuildError::Step { at: at.to_string(), message: message.into() }
    }
}
