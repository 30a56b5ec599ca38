//! kiln-ci: CI run forensics behind `kiln ci-report`.
//!
//! The question it answers: when one job of a workflow (say the arm64 leg of a build matrix)
//! shows red far more often than its siblings, is it broken, or is it merely slow enough to be the
//! job still running when a newer push cancels the run?
//!
//! The model, in the order data flows:
//! - [`model`]: the slice of GitHub's REST objects that matters: a [`Run`] (one workflow run, with
//!   its concurrency identity: PR number or branch), its [`Job`]s (one per matrix leg, with
//!   timestamps and steps), and check-run [`Annotation`]s, which are where GitHub says *why* a job
//!   was cancelled. A [`History`] is all of them, de-duplicated.
//! - [`read`]: reads `gh api` output from a directory, in any layout of subdirectories. Each file
//!   is recognised by its shape; files of another kind are refused with a reason, broken files fail
//!   with the JSON path. An annotations response does not name its check run (a job's id), so
//!   where it was saved must: `annotations/<id>.json`, `check-runs/<id>/annotations.json` or
//!   `check-runs-<id>-annotations.json`, mixed as you like. Annotations that cannot be placed, by
//!   name or because no job has that id, are listed once per file among the files not used.
//! - [`live`]: fetches the same objects from the API (Link pagination, ETag revalidation kept on
//!   disk, rate-limit waits).
//! - [`mod@analyze`]: classifies every job of every run (success, failure, timed out, skipped, or
//!   cancelled as superseded / manual / before start / fail-fast / unknown), then counts per job:
//!   rates, durations of successful runs, queue times, cancellations while a sibling succeeded,
//!   and failures that hit every job (code) versus one job (runner or flake).
//! - [`verdict`]: says the figures in plain words.
//! - [`mod@render`]: a terminal table, Markdown, JSON, and HTML with inline-SVG charts.
//! - [`synth`]: generated histories with a ledger of what was built, for tests.
//!
//! The library never prints; it logs through `tracing` and returns [`Report`]s and strings.

pub mod analyze;
pub mod error;
pub mod live;
pub mod model;
pub mod read;
pub mod render;
pub mod synth;
pub mod time;
pub mod verdict;

pub use analyze::{analyze, Options, Report};
pub use error::{LiveError, ReadError};
pub use model::{Annotation, History, Job, Run};
pub use read::{read_dir, read_file, Document};
pub use render::{render, Format};
pub use time::Timestamp;
