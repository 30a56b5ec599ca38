//! The wire between the library (parent) and the re-executed init process.
//!
//! - fd 3 in the init process: the [`Spec`](crate::Spec) as JSON, read to EOF.
//! - fd 4: reports, one JSON [`Report`] per line, written by the init processes. The sandboxed
//!   side's copy is close-on-exec, so a successful `execve` just closes it.
//!
//! The order is always: at most one `Created` (mount points made in the root), at most one
//! `SetupFailed` (nothing was executed), then exactly one `Exit` from the outer init process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The argv marker that selects init mode (together with [`INIT_ENV`]).
pub const INIT_ARG: &str = "__kiln-sandbox-init";
/// The environment marker that selects init mode; its value is the protocol version.
pub const INIT_ENV: &str = "_KILN_SANDBOX_INIT";
pub const PROTOCOL_VERSION: &str = "1";
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
