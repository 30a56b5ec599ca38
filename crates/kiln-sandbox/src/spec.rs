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
    /// Lines added to the `/etc/hosts` the process sees (the host's, bind-mounted read-only):
    /// `IP<TAB>NAME` each, in order, as Docker writes `--add-host`.
    #[serde(default)]
    pub extra_hosts: Vec<HostEntry>,
    /// Size of the `/dev/shm` tmpfs in bytes; `None` is Docker's default, 64 MiB.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Resource limits set with `setrlimit` just before `execve` (while still root, so that a
    /// hard limit can be raised), inherited by everything the command starts.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Variables whose values are secrets: added to the process's environment at `execve` (over
    /// a same-named one of [`Spec::env`]), and nowhere else, so that nothing that shows or keys
    /// `env` ever holds them.
    #[serde(default)]
    pub secret_env: Vec<SecretEnv>,
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
            extra_hosts: Vec::new(),
            shm_size: None,
            rlimits: Vec::new(),
            secret_env: Vec::new(),
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
        source: SecretSource,
        /// Default `/run/secrets/<id>`.
        target: Option<PathBuf>,
        /// Default `0o400`.
        mode: Option<u32>,
        uid: u32,
        gid: u32,
    },
    /// An ssh agent's socket (a socket of the caller's, which it keeps listening while the run
    /// lasts), bind-mounted at the target. The mount point is removed after the run like any
    /// other, so no layer holds the socket.
    Ssh { id: String, socket: PathBuf, target: PathBuf },
}

impl Mount {
    /// Where the mount appears inside the root.
    pub fn target(&self) -> PathBuf {
        match self {
            Mount::Bind { target, .. } | Mount::Tmpfs { target, .. } => target.clone(),
            Mount::Cache { target, .. } | Mount::Ssh { target, .. } => target.clone(),
            Mount::Secret { id, target, .. } => target.clone().unwrap_or_else(|| PathBuf::from("/run/secrets").join(id)),
        }
    }
}

/// One `/etc/hosts` line: `ip` is an IPv4 or IPv6 address, already checked by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub ip: String,
}

/// The resources `setrlimit(2)` knows, by the names Docker's `--ulimit` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resource {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl Resource {
    /// Every resource, in the order of [`Resource::name`]s listed in messages.
    pub const ALL: [Resource; 16] = [
        Resource::As,
        Resource::Core,
        Resource::Cpu,
        Resource::Data,
        Resource::Fsize,
        Resource::Locks,
        Resource::Memlock,
        Resource::Msgqueue,
        Resource::Nice,
        Resource::Nofile,
        Resource::Nproc,
        Resource::Rss,
        Resource::Rtprio,
        Resource::Rttime,
        Resource::Sigpending,
        Resource::Stack,
    ];

    /// Docker's name (`nofile`, `nproc`, …).
    pub fn name(self) -> &'static str {
        match self {
            Resource::As => "as",
            Resource::Core => "core",
            Resource::Cpu => "cpu",
            Resource::Data => "data",
            Resource::Fsize => "fsize",
            Resource::Locks => "locks",
            Resource::Memlock => "memlock",
            Resource::Msgqueue => "msgqueue",
            Resource::Nice => "nice",
            Resource::Nofile => "nofile",
            Resource::Nproc => "nproc",
            Resource::Rss => "rss",
            Resource::Rtprio => "rtprio",
            Resource::Rttime => "rttime",
            Resource::Sigpending => "sigpending",
            Resource::Stack => "stack",
        }
    }

    /// The resource Docker calls `name`, if any (names are case-sensitive, as in Docker).
    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// A soft and a hard limit for one resource; [`Rlimit::INFINITY`] is "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

impl Rlimit {
    /// `RLIM_INFINITY`: what Docker's `-1` and `infinity` mean.
    pub const INFINITY: u64 = u64::MAX;
}

/// A secret's bytes. `Debug` prints `<redacted>`; the value travels to the init process over a
/// pipe, never through a file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretSource {
    /// A host file, read by the init process when it mounts the secret.
    File(PathBuf),
    /// The bytes themselves (a secret taken from an environment variable).
    Value(SecretValue),
}

impl From<PathBuf> for SecretSource {
    fn from(p: PathBuf) -> SecretSource {
        SecretSource::File(p)
    }
}

/// An environment variable whose value is a secret (`RUN --mount=type=secret,env=NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnv {
    pub name: String,
    pub value: SecretValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_never_show_in_debug() {
        let mut spec = Spec::new("/r", vec!["true".into()]);
        spec.secret_env.push(SecretEnv { name: "TOKEN".into(), value: SecretValue::new(b"hunter2".to_vec()) });
        spec.mounts.push(Mount::Secret {
            id: "s".into(),
            source: SecretSource::Value(SecretValue::new(b"hunter3".to_vec())),
            target: None,
            mode: None,
            uid: 0,
            gid: 0,
        });
        let shown = format!("{spec:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("TOKEN") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn resource_names_round_trip() {
        for r in Resource::ALL {
            assert_eq!(Resource::from_name(r.name()), Some(r));
        }
        assert_eq!(Resource::from_name("NOFILE"), None);
        assert_eq!(Resource::from_name("files"), None);
    }
}
