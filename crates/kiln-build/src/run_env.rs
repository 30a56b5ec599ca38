//! What every `RUN` of a build runs in, beyond what the Dockerfile says: `kiln build`'s
//! `--network`, `--add-host`, `--shm-size`, `--ulimit`, `--secret` and `--ssh`, parsed here with
//! `docker buildx build`'s syntax and meaning into one [`RunEnvironment`].
//!
//! # Model
//!
//! A Dockerfile describes the steps; the build's caller describes the machine they run on. The
//! two meet in the sandbox spec of each `RUN` (`solve/run.rs`):
//!
//! - **network**: a `RUN --network=none|host` of the Dockerfile wins; a `RUN` without the flag,
//!   or with `--network=default`, gets the build-wide [`NetworkMode`]. BuildKit's `default` is
//!   a sandboxed network namespace with outside access (a bridge or CNI network). kiln has no
//!   such namespace: its `default` is the host's network, which also has outside access, but
//!   shares the host's interfaces and ports. `none` is a namespace with only `lo`.
//! - **hosts**: [`HostEntry`]s are added to the `/etc/hosts` a `RUN` sees (the host's file,
//!   mounted read-only), never to a layer.
//! - **shm**: the size of the `/dev/shm` tmpfs (Docker's 64 MiB when not given).
//! - **ulimits**: [`Ulimit`]s set with `setrlimit` just before the command is executed; a
//!   resource not named keeps kiln's own limit, as BuildKit's steps keep buildkitd's.
//! - **secrets**: an id for each [`SecretSource`], a file or an environment variable of kiln's
//!   process. A `RUN --mount=type=secret,id=ID` sees the value as a file (`target=`, default
//!   `/run/secrets/ID`), as an environment variable (`env=NAME`), or both; the value is read
//!   when the step runs and handed to the sandbox over a pipe, so it never reaches a layer, the
//!   image config, a cache key or a log.
//!
//! # Cache keys
//!
//! None of this enters a step's cache key, as in BuildKit: what a `RUN` writes is supposed to
//! depend on its command and inputs, not on the network it could reach, the resolver entries,
//! the size of `/dev/shm` or its limits, and making every step miss because a CI job passes
//! `--ulimit nofile=65536` would defeat a shared cache. A `RUN --network=…` written in the
//! Dockerfile is part of the instruction, so it is keyed (`solve/canon.rs`). Of a secret, only
//! what the Dockerfile says is keyed (the mount's id, target, `env=` name); its value never is,
//! so a rotated token does not rebuild anything. Likewise for an ssh mount: its id, target,
//! `required`, mode and owner are keyed, the agent and its keys never are.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use kiln_sandbox::{HostEntry, Resource};

/// Everything a build's `RUN`s run in that the Dockerfile does not say. `Default` is what
/// `kiln build` does without any of the flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEnvironment {
    /// `--network`: for every `RUN` that does not say `--network=none|host` itself.
    pub network: NetworkMode,
    /// `--add-host`, in the order given.
    pub extra_hosts: Vec<HostEntry>,
    /// `--shm-size`, in bytes (`None`: 64 MiB).
    pub shm_size: Option<u64>,
    /// `--ulimit`, one per resource (a later flag for the same resource wins, as in Docker).
    pub ulimits: Vec<Ulimit>,
    /// `--secret`, by id (a later flag for the same id wins, as in BuildKit's store).
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--ssh`: the agent socket for each id (a later flag for the same id wins, as buildx
    /// dedupes them).
    pub ssh: BTreeMap<String, PathBuf>,
    /// kiln's own agents, serving `--ssh ID=KEY` files; their sockets are in `ssh`, and they
    /// stop when the last copy of this environment goes.
    pub key_agents: Vec<KeyAgentHandle>,
}

/// A shared handle on a [`crate::ssh_keys::KeyAgent`]; equal when it is the same agent.
#[derive(Debug, Clone)]
pub struct KeyAgentHandle(pub std::sync::Arc<crate::ssh_keys::KeyAgent>);

impl PartialEq for KeyAgentHandle {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for KeyAgentHandle {}

impl RunEnvironment {
    /// Parses `kiln build`'s flags, each as `docker buildx build` reads it. `env` looks up kiln's
    /// environment (`std::env::var_os` in the binary), for `--secret`.
    pub fn from_flags(flags: &RunFlags<'_>, env: &dyn Fn(&str) -> Option<OsString>) -> Result<RunEnvironment, RunEnvError> {
        let mut out = RunEnvironment::default();
        if let Some(n) = flags.network {
            out.network = NetworkMode::parse(n)?;
        }
        for h in flags.add_hosts {
            out.extra_hosts.extend(parse_add_host(h)?);
        }
        if let Some(s) = flags.shm_size {
            out.shm_size = parse_shm_size(s)?;
        }
        for u in flags.ulimits {
            let u = Ulimit::parse(u)?;
            out.ulimits.retain(|o| o.resource != u.resource);
            out.ulimits.push(u);
        }
        for s in flags.secrets {
            let (id, source) = parse_secret(s, env)?;
            out.secrets.insert(id, source);
        }
        for s in flags.ssh {
            match parse_ssh(s, env) {
                Ok(Some((id, socket))) => {
                    out.ssh.insert(id, socket);
                }
                Ok(None) => {}
                // Key files: served by kiln's own agent (buildx serves them from its own too).
                Err(RunEnvError::SshKeyFiles { id, paths }) => {
                    let list: Vec<&str> = paths.split(',').collect();
                    let agent = crate::ssh_keys::KeyAgent::start(&id, &list)?;
                    out.ssh.insert(id, agent.socket().to_path_buf());
                    out.key_agents.push(KeyAgentHandle(std::sync::Arc::new(agent)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The ulimits as the sandbox takes them.
    pub fn rlimits(&self) -> Vec<kiln_sandbox::Rlimit> {
        self.ulimits.iter().map(|u| kiln_sandbox::Rlimit { resource: u.resource, soft: u.soft, hard: u.hard }).collect()
    }
}

/// The flags as given on the command line, for [`RunEnvironment::from_flags`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags<'a> {
    pub network: Option<&'a str>,
    pub add_hosts: &'a [String],
    pub shm_size: Option<&'a str>,
    pub ulimits: &'a [String],
    pub secrets: &'a [String],
    pub ssh: &'a [String],
}

/// `--network`: the build-wide network mode of `RUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// BuildKit's default, a network with outside access; in kiln, the host's network (kiln has
    /// no network namespace with outside access of its own).
    #[default]
    Default,
    /// A network namespace with only `lo`.
    None,
    /// The host's network.
    Host,
}

impl NetworkMode {
    pub fn parse(s: &str) -> Result<NetworkMode, RunEnvError> {
        match s {
            "default" => Ok(NetworkMode::Default),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            _ => Err(RunEnvError::Network { value: s.to_string() }),
        }
    }

    /// The sandbox's network for a `RUN` whose own `--network` is `step` (`None`: not given).
    pub(crate) fn for_step(self, step: Option<kiln_dockerfile::instructions::Network>) -> kiln_sandbox::Network {
        use kiln_dockerfile::instructions::Network as Step;
        let mode = match step {
            Some(Step::None) => NetworkMode::None,
            Some(Step::Host) => NetworkMode::Host,
            // BuildKit: `RUN --network=default` is "the network the build was given".
            Some(Step::Default) | None => self,
        };
        match mode {
            NetworkMode::None => kiln_sandbox::Network::None,
            NetworkMode::Default | NetworkMode::Host => kiln_sandbox::Network::Host,
        }
    }
}

/// The special address Docker replaces with the host's address as seen from a bridge network.
const HOST_GATEWAY: &str = "host-gateway";

/// One `--add-host` value, as buildx reads it: `HOST=IP` (split at the first `=`), else
/// `HOST:IP` (split at the first `:`, so `host:::1` is `host` at `::1`); the IP may be in
/// brackets (`[::1]`), and may be several, comma-separated (one entry each).
pub fn parse_add_host(value: &str) -> Result<Vec<HostEntry>, RunEnvError> {
    let (host, ips) = value.split_once('=').or_else(|| value.split_once(':')).unwrap_or((value, ""));
    if host.is_empty() || ips.is_empty() {
        return Err(RunEnvError::AddHostSyntax { value: value.to_string() });
    }
    // A blank or a `#` in the name would write something else into /etc/hosts.
    if host.contains(|c: char| c.is_whitespace() || c == '#') {
        return Err(RunEnvError::AddHostName { value: value.to_string(), name: host.to_string() });
    }
    if ips == HOST_GATEWAY {
        return Err(RunEnvError::AddHostGateway { value: value.to_string(), host: host.to_string() });
    }
    let mut out = Vec::new();
    for ip in ips.split(',') {
        let bare = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).filter(|i| !i.is_empty()).unwrap_or(ip);
        let addr: IpAddr =
            bare.parse().map_err(|source| RunEnvError::AddHostIp { value: value.to_string(), ip: ip.to_string(), source })?;
        out.push(HostEntry { name: host.to_string(), ip: addr.to_string() });
    }
    Ok(out)
}

/// `--shm-size`: Docker's `RAMInBytes` (a number, optionally with a fraction, then an optional
/// binary unit `b`, `k`, `m`, `g`, `t`, `p`, each optionally followed by `b` or `ib`, any case).
/// `0` means "the default" (64 MiB), as in Docker.
pub fn parse_shm_size(value: &str) -> Result<Option<u64>, RunEnvError> {
    let bad = || RunEnvError::ShmSize { value: value.to_string() };
    let lower = value.to_ascii_lowercase();
    let split = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return Err(bad()),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Some(bytes as u64).filter(|&b| b > 0))
}

/// One `--ulimit TYPE=SOFT[:HARD]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    pub resource: Resource,
    /// [`kiln_sandbox::Rlimit::INFINITY`] for `-1` or `infinity`.
    pub soft: u64,
    pub hard: u64,
}

impl Ulimit {
    /// Docker's syntax: `TYPE=SOFT[:HARD]` with a type Docker knows (plus `as`, which Docker turns
    /// down because of its own init; kiln sets it like the others), values in the resource's
    /// unit, `-1` or `infinity` for unlimited; the hard limit defaults to the soft one and may not
    /// be below it.
    pub fn parse(value: &str) -> Result<Ulimit, RunEnvError> {
        let Some((name, limits)) = value.split_once('=') else {
            return Err(RunEnvError::UlimitSyntax { value: value.to_string() });
        };
        let resource =
            Resource::from_name(name).ok_or_else(|| RunEnvError::UlimitType { value: value.to_string(), name: name.to_string() })?;
        let parts: Vec<&str> = limits.split(':').collect();
        if parts.len() > 2 {
            return Err(RunEnvError::UlimitSyntax { value: value.to_string() });
        }
        let limit = |s: &str| -> Result<u64, RunEnvError> {
            if s == "-1" || s == "infinity" {
                return Ok(kiln_sandbox::Rlimit::INFINITY);
            }
            s.parse::<u64>().map_err(|source| RunEnvError::UlimitValue { value: value.to_string(), limit: s.to_string(), source })
        };
        let soft = limit(parts[0])?;
        let hard = match parts.get(1) {
            Some(h) => limit(h)?,
            None => soft,
        };
        if soft > hard {
            return Err(RunEnvError::UlimitOrder { value: value.to_string() });
        }
        Ok(Ulimit { resource, soft, hard })
    }
}

/// Where a `--secret`'s value is read from, when a step uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file of the machine kiln runs on.
    File(PathBuf),
    /// An environment variable of kiln's process (its name; never its value).
    Env(String),
}

/// One `--secret` value, as buildx's `parseSecret` reads it: comma-separated `key=value` fields
/// (CSV, so a field may be quoted), keys `id`, `src`/`source`, `env`, `type` (`file` or `env`).
/// Without `type=`: `src` makes a file secret, `env` an environment one (and both given, the
/// variable wins, as in BuildKit's store). `type=env,src=NAME` names the variable with `src`.
/// With neither `src` nor `env`, the id names the source: the environment variable `ID` when kiln
/// has one, else the file `ID`. The file must exist and the variable must be set (BuildKit would
/// hand the step an empty value for an unset one; kiln refuses, naming the secret).
pub fn parse_secret(value: &str, env: &dyn Fn(&str) -> Option<OsString>) -> Result<(String, SecretSource), RunEnvError> {
    let fields = csv_fields(value).ok_or_else(|| RunEnvError::SecretCsv { value: value.to_string() })?;
    let (mut id, mut src, mut var, mut typ) = (None, None, None, None);
    for field in &fields {
        let Some((key, v)) = field.split_once('=') else {
            return Err(RunEnvError::SecretField { value: value.to_string(), field: field.clone() });
        };
        match key.to_ascii_lowercase().as_str() {
            "type" if v == "file" || v == "env" => typ = Some(v.to_string()),
            "type" => return Err(RunEnvError::SecretType { value: value.to_string(), kind: v.to_string() }),
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => var = Some(v.to_string()),
            _ => return Err(RunEnvError::SecretKey { value: value.to_string(), key: key.to_string() }),
        }
    }
    if typ.as_deref() == Some("env") && var.as_deref().unwrap_or("").is_empty() {
        var = src.take();
    }
    let id = id.filter(|i| !i.is_empty()).ok_or_else(|| RunEnvError::SecretId { value: value.to_string() })?;
    let var = var.filter(|v| !v.is_empty());
    let src = src.filter(|s| !s.is_empty());
    let source = match (var, src) {
        (Some(v), _) => SecretSource::Env(v),
        (None, Some(p)) => SecretSource::File(PathBuf::from(p)),
        (None, None) if env(&id).is_some() => SecretSource::Env(id.clone()),
        (None, None) => SecretSource::File(PathBuf::from(&id)),
    };
    match &source {
        SecretSource::Env(v) if env(v).is_none() => return Err(RunEnvError::SecretEnvUnset { id, var: v.clone() }),
        SecretSource::File(p) => match std::fs::metadata(p) {
            Ok(md) if md.is_file() => {}
            Ok(_) => return Err(RunEnvError::SecretNotAFile { id, path: p.clone() }),
            Err(source) => return Err(RunEnvError::SecretFile { id, path: p.clone(), source }),
        },
        SecretSource::Env(_) => {}
    }
    Ok((id, source))
}

/// The id an `--ssh` value without one names, and that `RUN --mount=type=ssh` uses without `id=`.
pub const DEFAULT_SSH_ID: &str = "default";

/// One `--ssh` value, as buildx reads it: `ID[=PATH[,PATH…]]`, split at the first `=`, the paths
/// at commas. Without paths (or with an empty one) the agent is `$SSH_AUTH_SOCK`. One path that
/// is a socket is the agent; otherwise the paths are private key files: [`RunEnvironment::from_flags`]
/// serves them from an agent of kiln's own ([`crate::ssh_keys`]), and this returns
/// [`RunEnvError::SshKeyFiles`] to say so. An empty value is skipped (`None`), as buildx skips it. `env`
/// looks up kiln's environment, for `SSH_AUTH_SOCK`.
pub fn parse_ssh(value: &str, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Option<(String, PathBuf)>, RunEnvError> {
    if value.is_empty() {
        return Ok(None);
    }
    let (id, paths) = match value.split_once('=') {
        Some((id, paths)) => (id, paths),
        None => (value, ""),
    };
    if id.is_empty() {
        return Err(RunEnvError::SshId { value: value.to_string() });
    }
    if paths.is_empty() {
        let sock = env("SSH_AUTH_SOCK").filter(|s| !s.is_empty()).ok_or_else(|| RunEnvError::SshAuthSockUnset { id: id.to_string() })?;
        let socket = PathBuf::from(sock);
        check_socket(id, &socket, true)?;
        return Ok(Some((id.to_string(), socket)));
    }
    let paths: Vec<&str> = paths.split(',').collect();
    if let [one] = paths.as_slice() {
        let socket = PathBuf::from(one);
        check_socket(id, &socket, false)?;
        return Ok(Some((id.to_string(), socket)));
    }
    for p in &paths {
        if p.is_empty() {
            return Err(RunEnvError::SshEmptyPath { value: value.to_string() });
        }
        if is_socket(Path::new(p)) {
            return Err(RunEnvError::SshSocketAmongKeys { id: id.to_string(), path: PathBuf::from(p) });
        }
    }
    Err(RunEnvError::SshKeyFiles { id: id.to_string(), paths: paths.join(",") })
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// `path` must be a socket kiln can reach; a file that is not one is what buildx would read as a
/// private key (`from_env`: the path came from `$SSH_AUTH_SOCK`, which names no key).
fn check_socket(id: &str, path: &Path, from_env: bool) -> Result<(), RunEnvError> {
    match std::fs::metadata(path) {
        Err(source) => Err(RunEnvError::SshSocket { id: id.to_string(), path: path.to_path_buf(), from_env, source }),
        Ok(_) if is_socket(path) => Ok(()),
        Ok(_) if from_env => Err(RunEnvError::SshNotASocket { id: id.to_string(), path: path.to_path_buf() }),
        Ok(_) => Err(RunEnvError::SshKeyFiles { id: id.to_string(), paths: path.display().to_string() }),
    }
}

/// One CSV record as Go's `encoding/csv` reads a line (what buildx splits `--secret` with):
/// `,` separates, a field that starts with `"` is quoted and `""` in it is one `"`. `None` for
/// a record that is not valid CSV.
fn csv_fields(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
            out.push(field);
            match chars.next() {
                None => return Some(out),
                Some(',') => continue,
                Some(_) => return None,
            }
        }
        loop {
            match chars.next() {
                None => {
                    out.push(field);
                    return Some(out);
                }
                Some(',') => break,
                Some('"') => return None,
                Some(c) => field.push(c),
            }
        }
        out.push(field);
    }
}

/// A `kiln build` flag of the RUN environment that cannot be used; each message names the flag
/// and the value, and says what is expected.
#[derive(Debug, thiserror::Error)]
pub enum RunEnvError {
    #[error("--network {value:?}: expected default, none or host")]
    Network { value: String },
    #[error("--add-host {value:?}: expected HOST:IP or HOST=IP, e.g. db:10.0.0.5")]
    AddHostSyntax { value: String },
    #[error("--add-host {value:?}: the host name {name:?} may not hold a blank or '#'")]
    AddHostName { value: String, name: String },
    #[error("--add-host {value:?}: {ip:?} is not an IP address")]
    AddHostIp {
        value: String,
        ip: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error(
        "--add-host {value:?}: kiln has no host-gateway: its RUN steps use the host's network, where the host is 127.0.0.1 \
         (pass --add-host {host}:127.0.0.1, or the host's address)"
    )]
    AddHostGateway { value: String, host: String },
    #[error("--shm-size {value:?}: expected a size such as 64m, 2g or a number of bytes")]
    ShmSize { value: String },
    #[error("--ulimit {value:?}: expected TYPE=SOFT[:HARD], e.g. nofile=1024:4096")]
    UlimitSyntax { value: String },
    #[error("--ulimit {value:?}: unknown ulimit type {name:?}; expected one of {}", ulimit_names())]
    UlimitType { value: String, name: String },
    #[error("--ulimit {value:?}: limit {limit:?} is not a number (or -1 / infinity for unlimited)")]
    UlimitValue {
        value: String,
        limit: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("--ulimit {value:?}: the soft limit is above the hard limit")]
    UlimitOrder { value: String },
    #[error("--secret {value:?}: not valid CSV (quote a field that holds a comma, e.g. \"src=a,b\")")]
    SecretCsv { value: String },
    #[error("--secret {value:?}: invalid field {field:?}: it must be a key=value pair")]
    SecretField { value: String, field: String },
    #[error("--secret {value:?}: unsupported secret type {kind:?}: expected file or env")]
    SecretType { value: String, kind: String },
    #[error("--secret {value:?}: unexpected key {key:?}: expected id, src (or source), env or type")]
    SecretKey { value: String, key: String },
    #[error("--secret {value:?}: the secret has no id: pass id=ID")]
    SecretId { value: String },
    #[error("--secret id={id}: environment variable {var} is not set")]
    SecretEnvUnset { id: String, var: String },
    #[error("--secret id={id}: {} is not a regular file", path.display())]
    SecretNotAFile { id: String, path: PathBuf },
    #[error("--secret id={id}: cannot read {}", path.display())]
    SecretFile {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ssh {value:?}: the agent has no id: pass ID=SOCKET, e.g. default=$SSH_AUTH_SOCK")]
    SshId { value: String },
    #[error(
        "--ssh {id}: SSH_AUTH_SOCK is not set, so there is no agent to forward: start one (eval \"$(ssh-agent)\" && ssh-add KEY) or pass --ssh {id}=SOCKET"
    )]
    SshAuthSockUnset { id: String },
    #[error("--ssh {id}: cannot reach the agent socket {}{}", path.display(), if *from_env { " (from SSH_AUTH_SOCK)" } else { "" })]
    SshSocket {
        id: String,
        path: PathBuf,
        from_env: bool,
        #[source]
        source: std::io::Error,
    },
    #[error("--ssh {id}: SSH_AUTH_SOCK names {}, which is not a socket", path.display())]
    SshNotASocket { id: String, path: PathBuf },
    #[error("--ssh {value:?}: a path in the list is empty")]
    SshEmptyPath { value: String },
    #[error("--ssh {id}: {} is an agent socket, which must be the only path (--ssh {id}=SOCKET)", path.display())]
    SshSocketAmongKeys { id: String, path: PathBuf },
    /// Not an error for a build: the paths are key files, which [`RunEnvironment::from_flags`]
    /// serves from kiln's own agent; [`parse_ssh`] alone only says so.
    #[error("--ssh {id}={paths}: these are private key files, served by kiln's own agent (RunEnvironment::from_flags)")]
    SshKeyFiles { id: String, paths: String },
    /// A key file kiln's own agent cannot serve.
    #[error(transparent)]
    SshKey(#[from] crate::ssh_keys::SshKeyError),
}

fn ulimit_names() -> String {
    Resource::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dockerfile::instructions::Network as Step;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn network_modes_and_the_steps_own_flag() {
        assert_eq!(NetworkMode::parse("none").unwrap(), NetworkMode::None);
        assert_eq!(NetworkMode::parse("host").unwrap(), NetworkMode::Host);
        assert_eq!(NetworkMode::parse("default").unwrap(), NetworkMode::Default);
        for bad in ["bridge", "None", ""] {
            let e = NetworkMode::parse(bad).unwrap_err();
            assert_eq!(e.to_string(), format!("--network {bad:?}: expected default, none or host"));
        }
        // The build-wide mode applies to a RUN without --network and to RUN --network=default.
        assert_eq!(NetworkMode::None.for_step(None), kiln_sandbox::Network::None);
        assert_eq!(NetworkMode::None.for_step(Some(Step::Default)), kiln_sandbox::Network::None);
        assert_eq!(NetworkMode::None.for_step(Some(Step::Host)), kiln_sandbox::Network::Host);
        assert_eq!(NetworkMode::Default.for_step(None), kiln_sandbox::Network::Host);
        assert_eq!(NetworkMode::Host.for_step(Some(Step::None)), kiln_sandbox::Network::None);
    }

    fn hosts(v: &str) -> Vec<(String, String)> {
        parse_add_host(v).unwrap().into_iter().map(|h| (h.name, h.ip)).collect()
    }

    #[test]
    fn add_host_splits_as_buildx_does() {
        let one = |n: &str, ip: &str| vec![(n.to_string(), ip.to_string())];
        assert_eq!(hosts("db:10.0.0.5"), one("db", "10.0.0.5"));
        assert_eq!(hosts("db=10.0.0.5"), one("db", "10.0.0.5"));
        // HOST:IP splits at the first colon, so an IPv6 address needs nothing special.
        assert_eq!(hosts("host:::1"), one("host", "::1"));
        assert_eq!(hosts("v6=fe80::1"), one("v6", "fe80::1"));
        assert_eq!(hosts("v6=[2001:db8::1]"), one("v6", "2001:db8::1"));
        assert_eq!(hosts("v6:[::1]"), one("v6", "::1"));
        assert_eq!(hosts("multi=10.0.0.1,::1"), vec![("multi".into(), "10.0.0.1".into()), ("multi".into(), "::1".into())]);

        let err = |v: &str| parse_add_host(v).unwrap_err().to_string();
        assert_eq!(err("nohost"), "--add-host \"nohost\": expected HOST:IP or HOST=IP, e.g. db:10.0.0.5");
        assert_eq!(err(":10.0.0.1"), "--add-host \":10.0.0.1\": expected HOST:IP or HOST=IP, e.g. db:10.0.0.5");
        assert_eq!(err("db:"), "--add-host \"db:\": expected HOST:IP or HOST=IP, e.g. db:10.0.0.5");
        assert_eq!(err("db:10.0.0.256"), "--add-host \"db:10.0.0.256\": \"10.0.0.256\" is not an IP address");
        assert_eq!(err("db=example.com"), "--add-host \"db=example.com\": \"example.com\" is not an IP address");
        assert_eq!(err("a b:10.0.0.1"), "--add-host \"a b:10.0.0.1\": the host name \"a b\" may not hold a blank or '#'");
        assert!(err("gw:host-gateway").contains("kiln has no host-gateway"), "{}", err("gw:host-gateway"));
        assert!(err("gw:host-gateway").contains("--add-host gw:127.0.0.1"));
        // The parse error is kept as the source.
        let e = parse_add_host("db:x").unwrap_err();
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn shm_sizes_in_docker_units() {
        assert_eq!(parse_shm_size("64m").unwrap(), Some(64 << 20));
        assert_eq!(parse_shm_size("2g").unwrap(), Some(2 << 30));
        assert_eq!(parse_shm_size("2GiB").unwrap(), Some(2 << 30));
        assert_eq!(parse_shm_size("1048576").unwrap(), Some(1 << 20));
        assert_eq!(parse_shm_size("512k").unwrap(), Some(512 << 10));
        assert_eq!(parse_shm_size("1.5m").unwrap(), Some(3 << 19));
        assert_eq!(parse_shm_size("10 MB").unwrap(), Some(10 << 20));
        assert_eq!(parse_shm_size("0").unwrap(), None, "0 is Docker's default");
        for bad in ["", "m", "64x", "-1", "1..5m", "64mm", "1e3", ".5m"] {
            let e = parse_shm_size(bad).unwrap_err();
            assert_eq!(e.to_string(), format!("--shm-size {bad:?}: expected a size such as 64m, 2g or a number of bytes"));
        }
    }

    #[test]
    fn ulimits_as_docker_reads_them() {
        let u = Ulimit::parse("nofile=1024:4096").unwrap();
        assert_eq!((u.resource, u.soft, u.hard), (Resource::Nofile, 1024, 4096));
        let u = Ulimit::parse("nproc=64").unwrap();
        assert_eq!((u.soft, u.hard), (64, 64), "the hard limit defaults to the soft one");
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (u64::MAX, u64::MAX));
        let u = Ulimit::parse("memlock=1024:infinity").unwrap();
        assert_eq!((u.soft, u.hard), (1024, u64::MAX));
        for name in [
            "as",
            "core",
            "cpu",
            "data",
            "fsize",
            "locks",
            "memlock",
            "msgqueue",
            "nice",
            "nproc",
            "rss",
            "rtprio",
            "rttime",
            "sigpending",
            "stack",
        ] {
            assert!(Ulimit::parse(&format!("{name}=1")).is_ok(), "{name}");
        }
        let err = |v: &str| Ulimit::parse(v).unwrap_err().to_string();
        assert_eq!(err("nofile"), "--ulimit \"nofile\": expected TYPE=SOFT[:HARD], e.g. nofile=1024:4096");
        assert_eq!(err("nofile=1:2:3"), "--ulimit \"nofile=1:2:3\": expected TYPE=SOFT[:HARD], e.g. nofile=1024:4096");
        assert_eq!(
            err("files=10"),
            "--ulimit \"files=10\": unknown ulimit type \"files\"; expected one of as, core, cpu, data, fsize, locks, memlock, \
             msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack"
        );
        assert_eq!(err("nofile=lots"), "--ulimit \"nofile=lots\": limit \"lots\" is not a number (or -1 / infinity for unlimited)");
        assert_eq!(err("nofile=-5"), "--ulimit \"nofile=-5\": limit \"-5\" is not a number (or -1 / infinity for unlimited)");
        assert_eq!(err("nofile=10:5"), "--ulimit \"nofile=10:5\": the soft limit is above the hard limit");
        assert_eq!(err("nofile=-1:5"), "--ulimit \"nofile=-1:5\": the soft limit is above the hard limit");
        assert!(std::error::Error::source(&Ulimit::parse("nofile=x").unwrap_err()).is_some());
    }

    #[test]
    fn secrets_follow_buildx_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "v").unwrap();
        let f = file.display().to_string();
        let env = |name: &str| (name == "GH_TOKEN" || name == "tok").then(|| OsString::from("x"));
        let p = |v: &str| parse_secret(v, &env).unwrap();

        assert_eq!(p(&format!("id=a,src={f}")), ("a".into(), SecretSource::File(file.clone())));
        assert_eq!(p(&format!("id=a,source={f},type=file")), ("a".into(), SecretSource::File(file.clone())));
        assert_eq!(p("id=a,env=GH_TOKEN"), ("a".into(), SecretSource::Env("GH_TOKEN".into())));
        assert_eq!(p("id=a,type=env,src=GH_TOKEN"), ("a".into(), SecretSource::Env("GH_TOKEN".into())), "type=env: src names the variable");
        assert_eq!(p(&format!("id=a,src={f},env=GH_TOKEN")), ("a".into(), SecretSource::Env("GH_TOKEN".into())), "env wins");
        assert_eq!(p(&format!("\"id=a\",\"src={f}\"")), ("a".into(), SecretSource::File(file.clone())));
        // Neither src nor env: the variable named like the id, else the file named like it.
        assert_eq!(p("id=tok"), ("tok".into(), SecretSource::Env("tok".into())));
        let no = |v: &str| parse_secret(v, &no_env);
        let cwd_file = format!("id={f}");
        assert_eq!(no(&cwd_file).unwrap(), (f.clone(), SecretSource::File(file.clone())));

        let err = |v: &str| no(v).unwrap_err().to_string();
        assert_eq!(err("id=tok"), "--secret id=tok: cannot read tok");
        assert_eq!(err("id=a,src=/nonexistent/x"), "--secret id=a: cannot read /nonexistent/x");
        assert_eq!(
            err(&format!("id=a,src={}", dir.path().display())),
            format!("--secret id=a: {} is not a regular file", dir.path().display())
        );
        assert_eq!(err("id=a,env=NOPE"), "--secret id=a: environment variable NOPE is not set");
        assert_eq!(err("src=x"), "--secret \"src=x\": the secret has no id: pass id=ID");
        assert_eq!(err("id=a,src"), "--secret \"id=a,src\": invalid field \"src\": it must be a key=value pair");
        assert_eq!(err("id=a,type=ssh"), "--secret \"id=a,type=ssh\": unsupported secret type \"ssh\": expected file or env");
        assert_eq!(
            err("id=a,mode=0400"),
            "--secret \"id=a,mode=0400\": unexpected key \"mode\": expected id, src (or source), env or type"
        );
        assert_eq!(err("id=a,\"src=x"), "--secret \"id=a,\\\"src=x\": not valid CSV (quote a field that holds a comma, e.g. \"src=a,b\")");
        assert!(std::error::Error::source(&no("id=a,src=/nonexistent/x").unwrap_err()).is_some());
    }

    #[test]
    fn ssh_as_buildx_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let (s, k) = (sock.display().to_string(), key.display().to_string());
        let agent_env = |name: &str| (name == "SSH_AUTH_SOCK").then(|| OsString::from(&sock));
        let p = |v: &str| parse_ssh(v, &agent_env).unwrap();

        assert_eq!(p("default"), Some(("default".into(), sock.clone())), "no path: $SSH_AUTH_SOCK");
        assert_eq!(p("gh="), Some(("gh".into(), sock.clone())), "an empty path: $SSH_AUTH_SOCK too");
        assert_eq!(p(&format!("gh={s}")), Some(("gh".into(), sock.clone())));
        assert_eq!(p(""), None, "an empty value is skipped, as buildx skips it");

        let err = |v: &str, env: &dyn Fn(&str) -> Option<OsString>| parse_ssh(v, env).unwrap_err().to_string();
        assert_eq!(
            err("default", &no_env),
            "--ssh default: SSH_AUTH_SOCK is not set, so there is no agent to forward: start one \
             (eval \"$(ssh-agent)\" && ssh-add KEY) or pass --ssh default=SOCKET"
        );
        let empty = |_: &str| Some(OsString::new());
        assert!(err("default", &empty).contains("SSH_AUTH_SOCK is not set"));
        assert_eq!(err("=x", &agent_env), "--ssh \"=x\": the agent has no id: pass ID=SOCKET, e.g. default=$SSH_AUTH_SOCK");
        assert_eq!(err("a=/nonexistent/agent", &agent_env), "--ssh a: cannot reach the agent socket /nonexistent/agent");
        let gone = |_: &str| Some(OsString::from("/nonexistent/agent"));
        assert_eq!(err("a", &gone), "--ssh a: cannot reach the agent socket /nonexistent/agent (from SSH_AUTH_SOCK)");
        assert!(std::error::Error::source(&parse_ssh("a", &gone).unwrap_err()).is_some());
        let not_sock = |_: &str| Some(OsString::from(&key));
        assert_eq!(err("a", &not_sock), format!("--ssh a: SSH_AUTH_SOCK names {k}, which is not a socket"));
        // Key files (one or several) are told apart, for from_flags to serve.
        assert!(matches!(parse_ssh(&format!("a={k}"), &agent_env), Err(RunEnvError::SshKeyFiles { id, paths }) if id == "a" && paths == k));
        assert!(
            matches!(parse_ssh(&format!("a={k},{k}"), &agent_env), Err(RunEnvError::SshKeyFiles { paths, .. }) if paths == format!("{k},{k}"))
        );
        assert_eq!(err(&format!("a={k},"), &agent_env), format!("--ssh \"a={k},\": a path in the list is empty"));
        assert_eq!(
            err(&format!("a={k},{s}"), &agent_env),
            format!("--ssh a: {s} is an agent socket, which must be the only path (--ssh a=SOCKET)")
        );

        // Repeatable; a later flag for the same id wins.
        let other = dir.path().join("other.sock");
        let _other = std::os::unix::net::UnixListener::bind(&other).unwrap();
        let flags = vec![format!("a={s}"), String::new(), format!("a={}", other.display()), "default".into()];
        let env = RunEnvironment::from_flags(&RunFlags { ssh: &flags, ..RunFlags::default() }, &agent_env).unwrap();
        assert_eq!(env.ssh, BTreeMap::from([("a".to_string(), other.clone()), ("default".to_string(), sock.clone())]));
    }

    #[test]
    fn from_flags_collects_every_flag_and_later_ones_win() {
        let hosts = vec!["a:10.0.0.1".to_string(), "b=::1".to_string()];
        let ulimits = vec!["nofile=10".to_string(), "nproc=5".to_string(), "nofile=20:30".to_string()];
        let flags = RunFlags { network: Some("none"), add_hosts: &hosts, shm_size: Some("1g"), ulimits: &ulimits, secrets: &[], ssh: &[] };
        let env = RunEnvironment::from_flags(&flags, &no_env).unwrap();
        assert_eq!(env.network, NetworkMode::None);
        assert_eq!(env.extra_hosts.len(), 2);
        assert_eq!(env.shm_size, Some(1 << 30));
        let r = env.rlimits();
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].resource, r[1].soft, r[1].hard), (Resource::Nofile, 20, 30));
        assert_eq!(RunEnvironment::from_flags(&RunFlags::default(), &no_env).unwrap(), RunEnvironment::default());
        let bad = RunFlags { network: Some("bridge"), ..RunFlags::default() };
        assert!(matches!(RunEnvironment::from_flags(&bad, &no_env), Err(RunEnvError::Network { .. })));
    }

    #[test]
    fn csv_like_go() {
        assert_eq!(csv_fields("a,b").unwrap(), ["a", "b"]);
        assert_eq!(csv_fields(r#""a,b",c"#).unwrap(), ["a,b", "c"]);
        assert_eq!(csv_fields(r#""x""y""#).unwrap(), [r#"x"y"#]);
        assert_eq!(csv_fields("").unwrap(), [""]);
        assert!(csv_fields(r#""open"#).is_none());
        assert!(csv_fields(r#"a"b"#).is_none());
        assert!(csv_fields(r#""a"b"#).is_none());
    }
}
