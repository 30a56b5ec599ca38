//! What to run: the [`Spec`] a caller fills in, which travels as JSON to the init process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One process to run in a root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The root file system (for a build step, the merged overlay of the parent layers).
    pub root: PathBuf,
    /// The command and its arguments; `argv[0]` without a `/` is looked up in the `PATH` of
    /// [`Spec::env`] (or the default Docker `PATH`), inside the root.
    pub argv: Vec<String>,
    /// The whole environment, as `KEY=VALUE` strings; nothing of kiln's own environment leaks in.
    /// `HOME` is added from the user's passwd entry when missing, as runc does.
    pub env: Vec<String>,
    /// `""` (root), `name`, `uid`, `name:group`, `uid:gid` (BuildKit's rules; see `user.rs`).
    pub user: String,
    /// The working directory inside the root; created if missing, owned by the user.
    pub workdir: PathBuf,
    /// The UTS host name inside the sandbox.
    pub hostname: String,
    pub network: Network,
    /// Extra mounts requested by the step, applied after the built-in ones, parents first.
    pub mounts: Vec<Mount>,
    /// Mount a read-only `/sys` (as Docker and BuildKit do).
    pub mount_sys: bool,
}

impl Spec {
    /// A spec with Docker's defaults: root user, `/` as working dir, host network, host name
    /// `kiln`, read-only `/sys`, no extra mounts.
    pub fn new(root: impl Into<PathBuf>, argv: Vec<String>) -> Spec {
        Spec {
            root: root.into(),
            argv,
            env: Vec::new(),
            user: String::new(),
            workdir: PathBuf::from("/"),
            hostname: "kiln".to_string(),
            network: Network::Host,
            mounts: Vec::new(),
            mount_sys: true,
        }
    }

    /// The command as a user would read it, for error messages.
    pub fn command_line(&self) -> String {
        self.argv
            .iter()
            .map(|a| {
                if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
                    a.clone()
                } else {
                    format!("'{}'", a.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The network the process sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Network {
    /// The host's network stack (BuildKit's default for builds: outbound access).
    #[default]
    Host,
    /// A fresh network namespace with only `lo`, brought up.
    None,
}

/// A mount requested by the step. Targets are paths inside the root; they are resolved inside it
/// (symlinks cannot point out) and created when missing, then removed after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    /// A host file or directory, bind-mounted.
    Bind { source: PathBuf, target: PathBuf, readonly: bool },
    /// A fresh tmpfs (mode 1777), optionally limited to `size_bytes`.
    Tmpfs { target: PathBuf, size_bytes: Option<u64> },
    /// A persistent host directory owned by the caller, mounted read-write; created if missing.
    Cache { source: PathBuf, target: PathBuf },
    /// A secret file. Its content is copied into a private tmpfs inside the sandbox's mount
    /// namespace and bind-mounted read-only at the target, so it never touches the root.
    Secret {
        id: String,
        source: PathBuf,
        /// Default `/run/secrets/<id>`.
        target: Option<PathBuf>,
        /// Default `0o400`.
        mode: Option<u32>,
        uid: u32,
        gid: u32,
    },
}

impl Mount {
    /// Where the mount appears inside the root.
    pub fn target(&self) -> PathBuf {
        match self {
            Mount::Bind { target, .. } | Mount::Tmpfs { target, .. } => target.clone(),
            Mount::Cache { target, .. } => target.clone(),
            Mount::Secret { id, target, .. } => target.clone().unwrap_or_else(|| PathBuf::from("/run/secrets").join(id)),
        }
    }
}
