//! The wire between the library (parent) and the re-executed init process.
//!
//! - fd 3 in the init process: the [`Spec`](crate::Spec) as JSON, read to EOF.
//! - fd 4: reports, one JSON [`Report`] per line, written by the init processes. The sandboxed
//!   side's copy is close-on-exec, so a successful `execve` just closes it.
//! - environment: [`INIT_ENV`] (the protocol version) and [`PARENT_ENV`] (the caller's pid, so
//!   that the init can tell whether its parent died before it armed its parent-death signal).
//!
//! Reports: one `Started` from the outer init once it has forked PID 1; from PID 1 one `Created`
//! per mount point, written as soon as it exists in the root (so that a run killed half-way
//! through setup still knows what to remove), and at most one `SetupFailed` (nothing was
//! executed); last, exactly one `Exit` from the outer init, unless it was killed. `Started` may
//! come before, between or after the `Created` reports.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The argv marker that selects init mode (together with [`INIT_ENV`]).
pub const INIT_ARG: &str = "__kiln-sandbox-init";
/// The environment marker that selects init mode; its value is the protocol version.
pub const INIT_ENV: &str = "_KILN_SANDBOX_INIT";
pub const PROTOCOL_VERSION: &str = "3";
/// The caller's pid, in decimal.
pub const PARENT_ENV: &str = "_KILN_SANDBOX_PARENT";
pub const SPEC_FD: i32 = 3;
pub const REPORT_FD: i32 = 4;

/// A path the sandbox created in the root to mount on, with the parent directory's times from
/// just before and just after creation, so that removal can put them back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedPath {
    /// Absolute path inside the root, with every symlink already resolved.
    pub path: PathBuf,
    pub is_dir: bool,
    pub parent_times_before: ((i64, i64), (i64, i64)),
    pub parent_mtime_after: (i64, i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// PID 1 of the sandbox, as a pid of the caller's PID namespace. When the outer init dies
    /// without an `Exit`, the caller waits for this process: its end means the kernel has
    /// killed and reaped everything else in the namespace.
    Started {
        pid: i32,
    },
    Created(Vec<CreatedPath>),
    SetupFailed {
        stage: String,
        message: String,
    },
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
}
