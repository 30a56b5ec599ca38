//! A real `docker-registry` (distribution 2.8) process per test.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{io, net, Error, Result};
use crate::token::{TokenServer, TokenServerOptions};

/// How long a registry may take to answer `/v2/`. Generous because CI
/// machines are small and many tests start registries in parallel.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often we retry when another process grabbed the port between our
/// probe bind and the registry's own bind.
const PORT_ATTEMPTS: usize = 5;

/// The `service` name the registry announces in its Bearer challenge and
/// expects as the token audience.
pub const TOKEN_SERVICE: &str = "kiln-test-registry";

/// The `iss` the registry expects in tokens.
pub const TOKEN_ISSUER: &str = "kiln-testkit";

/// Which authentication the registry enforces.
#[derive(Clone)]
enum Auth {
    None,
    Basic { user: String, password: String },
    Token,
}

/// A running `docker-registry serve` on `127.0.0.1:<free port>`.
///
/// The storage root, config, htpasswd file and log live in a private temp
/// directory. Dropping the value kills the process by PID, waits for it, and
/// removes the directory (the token server, if any, stops too).
pub struct Registry {
    child: Child,
    port: u16,
    auth: Auth,
    token_server: Option<TokenServer>,
    log_path: PathBuf,
    // Declared last so the process is dead before its files go away.
    dir: TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host())
            .field("pid", &self.child.id())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry without authentication: anyone may push and pull.
    pub fn start_plain() -> Result<Registry> {
        Self::start(Auth::None, None)
    }

    /// A registry that requires HTTP basic auth for `user` / `password`.
    ///
    /// The htpasswd file is made with `htpasswd -Bbn` (bcrypt), the only hash
    /// distribution accepts.
    pub fn start_basic(user: &str, password: &str) -> Result<Registry> {
        Self::start(Auth::Basic { user: user.to_string(), password: password.to_string() }, None)
    }

    /// A registry with `auth: token`, backed by an in-process [`TokenServer`]
    /// whose tokens really expire after `options.lifetime`.
    pub fn start_token(options: TokenServerOptions) -> Result<Registry> {
        let server = TokenServer::start(options, TOKEN_SERVICE, TOKEN_ISSUER)?;
        Self::start(Auth::Token, Some(server))
    }

    fn start(auth: Auth, token_server: Option<TokenServer>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-testkit-registry-")
            .tempdir()
            .map_err(io("create temp dir for registry", std::env::temp_dir()))?;
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                let path = dir.path().join("htpasswd");
                write_htpasswd(&path, user, password)?;
                format!("auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n", path.display())
            }
            Auth::Token => {
                let server = token_server.as_ref().ok_or_else(|| Error::Crypto("token registry started without a token server".into()))?;
                let bundle = dir.path().join("token-root.crt");
                fs::write(&bundle, server.certificate_pem()).map_err(io("write token root cert bundle", &bundle))?;
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {bundle}\n",
                    realm = server.realm(),
                    bundle = bundle.display()
                )
            }
        };
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).map_err(io("create registry storage dir", &storage))?;

        let mut last_err = None;
        for attempt in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let log_path = dir.path().join(format!("registry-{attempt}.log"));
            match spawn(dir.path(), &storage, port, &auth_yaml, &log_path) {
                Ok(child) => {
                    tracing::debug!(port, pid = child.id(), "docker-registry started");
                    return Ok(Registry { child, port, auth, token_server, log_path, dir });
                }
                Err(SpawnError::PortTaken(e)) => {
                    tracing::debug!(port, "port race lost, retrying");
                    last_err = Some(e);
                }
                Err(SpawnError::Fatal(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Tool { program: "docker-registry".into(), detail: "no attempt made".into() }))
    }

    /// `127.0.0.1:PORT`, the form used in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TCP port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the API base URL (append `/v2/...`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The user and password for basic auth, or for the token server in
    /// token mode (its full-access user). `None` for a plain registry.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some((user, password)),
            Auth::Token => self.token_server.as_ref().map(|t| (t.options().user.as_str(), t.options().password.as_str())),
        }
    }

    /// The token server, in token mode.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// The registry's own log (stdout and stderr) so far; include it in
    /// assertion messages when a registry answer surprises you.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where the registry's log is written.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The registry's filesystem storage root.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this PID only, never to a name.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago. The registry needs the number in its
/// config, so we cannot hand it the bound socket; callers retry on a race.
pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(net("bind 127.0.0.1:0 to find a free port"))?;
    let port = l.local_addr().map_err(net("read the address of a probe socket"))?.port();
    Ok(port)
}

fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool { program: "htpasswd".into(), detail: format!("{e} (install Debian package apache2-utils)") })?;
    if !out.status.success() {
        return Err(Error::Tool {
            program: "htpasswd -Bbn".into(),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    fs::write(path, &out.stdout).map_err(io("write htpasswd file", path))
}

enum SpawnError {
    PortTaken(Error),
    Fatal(Error),
}

fn spawn(dir: &Path, storage: &Path, port: u16, auth_yaml: &str, log_path: &Path) -> Result<Child, SpawnError> {
    let mut config = String::new();
    let _ = write!(
        config,
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: kiln-testkit-not-secret\n\
         {auth_yaml}",
        storage = storage.display()
    );
    let config_path = dir.join("config.yml");
    fs::write(&config_path, &config).map_err(io("write registry config", &config_path)).map_err(SpawnError::Fatal)?;
    let log = fs::File::create(log_path).map_err(io("create registry log", log_path)).map_err(SpawnError::Fatal)?;
    let log2 = log.try_clone().map_err(io("duplicate registry log handle", log_path)).map_err(SpawnError::Fatal)?;
    let mut child =
        Command::new("docker-registry").arg("serve").arg(&config_path).stdin(Stdio::null()).stdout(log).stderr(log2).spawn().map_err(
            |e| {
                SpawnError::Fatal(Error::Tool {
                    program: "docker-registry".into(),
                    detail: format!("{e} (install Debian package docker-registry)"),
                })
            },
        )?;

    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + START_TIMEOUT;
    let fail = |reason: String| Error::RegistryStart {
        addr: addr.clone(),
        reason,
        log: log_path.to_path_buf(),
        log_text: tail(&fs::read_to_string(log_path).unwrap_or_default(), 4000),
    };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = fs::read_to_string(log_path).unwrap_or_default();
            let err = fail(format!("exited early with {status}"));
            if text.contains("address already in use") {
                return Err(SpawnError::PortTaken(err));
            }
            return Err(SpawnError::Fatal(err));
        }
        // Any HTTP answer means it is serving: 401 is the normal answer with auth on.
        if crate::http::request("GET", &format!("http://{addr}/v2/"), &[], b"").is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SpawnError::Fatal(fail(format!("GET /v2/ did not answer within {START_TIMEOUT:?}"))));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_that_cannot_start_reports_its_log() {
        if !crate::require_tool("docker-registry") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).expect("mkdir");
        let port = free_port().expect("port");
        let log = dir.path().join("r.log");
        // An auth provider distribution does not know makes it exit at once.
        let res = spawn(dir.path(), &storage, port, "auth:\n  nosuchprovider: {}\n", &log);
        let err = match res {
            Ok(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("registry started with a bogus auth provider");
            }
            Err(SpawnError::Fatal(e) | SpawnError::PortTaken(e)) => e.to_string(),
        };
        assert!(err.contains("did not start"), "{err}");
        assert!(err.contains("nosuchprovider"), "log text missing from: {err}");
    }
}
