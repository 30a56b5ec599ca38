//! The one error type of the crate. Every variant that comes from talking to a registry carries the
//! reference it was about and, when there was one, the HTTP status, and its message ends with what the
//! user can do about it.

use std::io;

/// Everything that can go wrong while talking to a registry or moving an image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry (or its token server) refused our credentials, or we had none.
    #[error("{reference}: registry {registry} answered HTTP {status} Unauthorized{detail}; check credentials: kiln login {registry}")]
    Unauthorized { registry: String, reference: String, status: u16, detail: String },
    /// Authenticated, but not allowed.
    #[error("{reference}: registry {registry} answered HTTP 403 Forbidden{detail}; the account lacks access to this repository (check the name, or log in as a user who may: kiln login {registry})")]
    Forbidden { registry: String, reference: String, detail: String },
    /// The manifest, tag, blob or repository does not exist.
    #[error("{reference}: {what} not found on registry {registry} (HTTP 404){detail}; check the repository name and tag")]
    NotFound { registry: String, reference: String, what: String, detail: String },
    /// Any other unexpected status, after retries where retrying made sense.
    #[error("{reference}: registry {registry} answered HTTP {status} to {request}{detail}; try again later, or check the registry's logs")]
    Status {
        registry: String,
        reference: String,
        status: u16,
        /// `METHOD /path`.
        request: String,
        detail: String,
    },
    /// The connection failed (refused, reset, TLS, DNS) and retries ran out.
    #[error("{reference}: cannot talk to registry {registry}: {message}; check the address and that the registry is up (plain-HTTP registries off loopback need --insecure-registry {registry})")]
    Transport { registry: String, reference: String, message: String },
    /// The token server failed to hand out a token.
    #[error("{reference}: token server {realm} for registry {registry} answered HTTP {status}{detail}; check credentials: kiln login {registry}")]
    TokenServer { registry: String, reference: String, realm: String, status: u16, detail: String },
    /// Content did not hash to the digest it was asked for by.
    #[error("{reference}: digest mismatch for {what}: expected {expected}, got {actual}; the content was corrupted on the way and was not stored, try again")]
    DigestMismatch { reference: String, what: String, expected: String, actual: String },
    /// Content had a different length than its descriptor said.
    #[error("{reference}: size mismatch for {what}: expected {expected} bytes, got {actual}; the content was not stored, try again")]
    SizeMismatch { reference: String, what: String, expected: u64, actual: u64 },
    /// A manifest or index that does not parse, or that kiln cannot use.
    #[error("{reference}: {message}")]
    InvalidManifest { reference: String, message: String },
    /// A platform was asked for that the index does not have.
    #[error("{reference}: no image for platform {platform} in the index (it has: {available}); pick one with --platform")]
    NoPlatform { reference: String, platform: String, available: String },
    /// A platform was asked for, and the reference names a single image for another one.
    #[error("{reference}: the image is for {actual}, not {wanted} (the reference names one image, not a multi-platform index); pull it without --platform, or use a reference that has an image for {wanted}")]
    WrongPlatform { reference: String, wanted: String, actual: String },
    /// Reading credentials, running a credential helper or writing config.json failed.
    #[error("credentials for {registry}: {message}")]
    Credentials { registry: String, message: String },
    /// The local side (store, OCI layout, file) failed.
    #[error("{context}: {source}")]
    Local {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Errors from the local store.
    #[error("{context}: {message}")]
    Store { context: String, message: String },
}

impl RegistryError {
    /// True when the same request might succeed if sent again (used by the retry loops).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Carries a [`RegistryError`] through `std::io::Read`, whose signature only allows `io::Error`.
pub(crate) fn into_io(e: RegistryError) -> io::Error {
    io::Error::other(e)
}

/// Recovers a [`RegistryError`] that travelled through an `io::Error`, or wraps the I/O error.
pub(crate) fn from_io(e: io::Error, context: impl Into<String>) -> RegistryError {
    if !e.get_ref().is_some_and(|i| i.is::<RegistryError>()) {
        return RegistryError::Local { context: context.into(), source: e };
    }
    match e.into_inner().map(|b| b.downcast::<RegistryError>()) {
        Some(Ok(r)) => *r,
        Some(Err(other)) => RegistryError::Local { context: context.into(), source: io::Error::other(other) },
        None => RegistryError::Local { context: context.into(), source: io::Error::other("I/O error without detail") },
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
