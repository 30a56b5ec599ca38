//! The one error type of the testkit.

use std::path::PathBuf;

/// Everything that can go wrong while starting or talking to a test service.
///
/// Messages name the service, the place and what to check next, because they
/// surface as test failures that someone has to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a named path failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("write registry config", ...).
        what: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Net {
        /// What was being done ("connect to 127.0.0.1:5000", ...).
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper program could not be run or failed.
    #[error("running `{program}` failed: {detail}")]
    Tool {
        /// The program name.
        program: String,
        /// Exit status and stderr, or the spawn error.
        detail: String,
    },
    /// The registry process did not become ready.
    #[error("docker-registry on {addr} did not start: {reason}\n--- registry log ({log}) ---\n{log_text}")]
    RegistryStart {
        /// The address it was told to listen on.
        addr: String,
        /// Why we gave up (exited with status, timed out, ...).
        reason: String,
        /// Path of the log file.
        log: PathBuf,
        /// The tail of the log file.
        log_text: String,
    },
    /// An HTTP exchange broke the protocol or the URL was not understood.
    #[error("HTTP {what}: {detail}")]
    Http {
        /// What was being done ("parse status line from 127.0.0.1:5000", ...).
        what: String,
        /// The details.
        detail: String,
    },
    /// Key or certificate generation for the token server failed.
    #[error("token server crypto: {0}")]
    Crypto(String),
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}

pub(crate) fn net(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Net { what, source }
}
