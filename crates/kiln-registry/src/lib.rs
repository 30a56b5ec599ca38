//! kiln-registry: the OCI distribution client.
//!
//! The model: a [`Client`] speaks HTTP to registries on behalf of every thread of a transfer. For
//! each registry it learns once, from `GET /v2/`, how to authenticate (anonymous, basic, or bearer
//! tokens from the challenge's realm), and it keeps tokens per registry and scope set, refreshing
//! one a margin before it expires and again whenever a request comes back 401 (reading the
//! credentials anew, so a long transfer never dies of an expired token). Every request goes through
//! one retry policy: exponential backoff with jitter on connection failures, 429 and 5xx, with
//! Retry-After honoured and a bound on attempts.
//!
//! On top of that sit blobs ([`Client::blob_reader`] resumes downloads with `Range` and verifies the
//! digest at the end; [`Client::push_blob`] skips, mounts, or uploads monolithically or in chunks),
//! manifests ([`Client::get_manifest`] verifies what it got), and the image copier
//! ([`copy_image`]) that moves an image between any [`ImageSource`] and [`ImageDest`]: registry
//! repositories, the local store, OCI layouts. A pull ([`pull_image`], [`pull_to_store`]) keeps an
//! index verbatim and fetches only the platforms asked for; [`Tagging`] says when the store's tag
//! may move to what the registry names. [`merge`] assembles multi-platform indexes from images
//! already pushed (`kiln manifest merge`, buildx's `imagetools create`).
//!
//! Why blocking I/O (`ureq` 2 with rustls) and threads rather than async: a transfer is a handful of
//! long streams (one per layer, at most `parallel` at once), which threads handle with no runtime,
//! no executor-aware locking and a small dependency tree; and every body is streamed through fixed
//! buffers (1 MiB), so memory stays flat however large the layers grow.

pub mod auth;
pub mod blob;
pub mod client;
pub mod credentials;
pub mod error;
pub mod local;
pub mod manifest;
pub mod merge;
pub mod pull;
pub mod transfer;

pub use blob::{copy_large, BlobReader, PushOutcome};
pub use client::{is_loopback, Client, ClientOptions, Repo};
pub use credentials::Credentials;
pub use error::{RegistryError, Result};
pub use local::LocalImages;
pub use manifest::FetchedManifest;
pub use pull::{pull_to_store, StorePull, Tagging};
pub use transfer::{
    copy_image, pull_image, run_parallel, CopyOptions, CopyResult, ImageDest, ImageSource, NoProgress, PlatformSelection, Progress,
    ProgressReader, PullResult, RegistryDest, RegistrySource,
};
