//! The HTTP side: one [`Client`] per process, shared by all transfer threads. It owns the connection
//! pool, the per-registry authentication mode learnt from the ping, the token cache and the retry policy.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufReader, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::auth::{parse_challenges, Scopes, Token, TokenResponse};
use crate::credentials::{self, Credentials};
use crate::error::{RegistryError, Result};

/// Tunables. The defaults suit both loopback tests and real registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host` or `host:port`) spoken to over plain HTTP although they are not loopback.
    pub insecure_registries: Vec<String>,
    /// Attempts per request (and per blob) before giving up on transient failures.
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt, with jitter, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Blobs bigger than this are uploaded in PATCH chunks of `chunk_size`, so a failure only costs a chunk.
    pub monolithic_limit: u64,
    pub chunk_size: u64,
    /// Blobs moved at the same time.
    pub parallel: usize,
    /// Docker's config.json (credentials).
    pub docker_config: PathBuf,
    /// A connection that sends nothing for this long is dropped (and the transfer resumed).
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            max_attempts: 8,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            // One PUT per layer is the least work for the registry (measured ~10% faster than
            // chunks on a 1 GB push); only layers above 512 MiB pay chunking for cheaper retries.
            monolithic_limit: 512 << 20,
            chunk_size: 128 << 20,
            parallel: 4,
            docker_config: credentials::default_config_path(),
            read_timeout: Duration::from_secs(120),
        }
    }
}

/// A repository on a registry: `registry` as written in references (`docker.io`, `127.0.0.1:5000`),
/// `name` the repository path (`library/busybox`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    pub registry: String,
    pub name: String,
}

impl Repo {
    pub fn new(registry: impl Into<String>, name: impl Into<String>) -> Self {
        Repo { registry: registry.into(), name: name.into() }
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

#[derive(Debug, Clone)]
enum AuthMode {
    Anonymous,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// A request body that can be produced again from the start, so that a retry can re-send it.
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Stream { len: u64, open: &'a (dyn Fn() -> io::Result<Box<dyn Read + Send + 'a>> + Sync) },
}

/// One request, with what it is about (for scopes and error messages).
pub(crate) struct Req<'a> {
    pub method: &'a str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body<'a>,
    pub repo: &'a Repo,
    pub scopes: &'a Scopes,
    pub reference: &'a str,
}

/// The distribution client. Cheap to share across threads by reference.
pub struct Client {
    agent: ureq::Agent,
    pub(crate) opts: ClientOptions,
    modes: Mutex<HashMap<String, AuthMode>>,
    tokens: Mutex<HashMap<(String, String), Token>>,
    tokens_fetched: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("opts", &self.opts).finish()
    }
}

const USER_AGENT: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));

impl Client {
    pub fn new(opts: ClientOptions) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(opts.read_timeout)
            .timeout_write(opts.read_timeout)
            .max_idle_connections_per_host(opts.parallel.max(1) * 2)
            .user_agent(USER_AGENT)
            .redirects(5)
            .build();
        Client { agent, opts, modes: Mutex::new(HashMap::new()), tokens: Mutex::new(HashMap::new()), tokens_fetched: AtomicU64::new(0) }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// How many tokens this client fetched from token servers (for diagnostics and tests).
    pub fn tokens_fetched(&self) -> u64 {
        self.tokens_fetched.load(Ordering::Relaxed)
    }

    /// `http://` for loopback and `--insecure-registry` hosts, `https://` otherwise; Docker Hub's
    /// API lives on `registry-1.docker.io`.
    pub fn base_url(&self, registry: &str) -> String {
        let host = match registry {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            h => h,
        };
        let insecure = self.opts.insecure_registries.iter().any(|i| i == registry || i == host_only(registry));
        let scheme = if insecure || is_loopback(registry) { "http" } else { "https" };
        format!("{scheme}://{host}")
    }

    /// Checks that the registry answers and that the configured credentials (or `creds`, when given)
    /// are accepted, by authenticating for a harmless scope. Used by `kiln login`.
    pub fn verify_login(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let repo = Repo::new(registry, "");
        let reference = registry.to_string();
        let url = format!("{}/v2/", self.base_url(registry));
        let resp = self.send_retrying(
            Req {
                method: "GET",
                url: url.clone(),
                headers: vec![],
                body: Body::Empty,
                repo: &repo,
                scopes: &Scopes::default(),
                reference: &reference,
            },
            Some(creds),
            true,
        )?;
        if resp.status() == 401 {
            let ch = resp.header("www-authenticate").map(parse_challenges).unwrap_or_default();
            if let Some(b) = ch.iter().find(|c| c.is_bearer()) {
                let realm = b.param("realm").unwrap_or_default().to_string();
                let service = b.param("service").map(str::to_string);
                if matches!(creds, Credentials::Anonymous) {
                    return Err(self.status_error(resp, "GET", &repo, &reference, "registry"));
                }
                // Success at the token server with the credentials is what docker login checks.
                self.fetch_token(&repo, &realm, service.as_deref(), &Scopes::default(), &reference, Some(creds))?;
                return Ok(());
            }
            return Err(self.status_error(resp, "GET", &repo, &reference, "registry"));
        }
        if !(200..300).contains(&resp.status()) {
            return Err(self.status_error(resp, "GET", &repo, &reference, "registry"));
        }
        Ok(())
    }

    fn mode(&self, repo: &Repo, reference: &str) -> Result<AuthMode> {
        if let Some(m) = lock(&self.modes).get(&repo.registry) {
            return Ok(m.clone());
        }
        let url = format!("{}/v2/", self.base_url(&repo.registry));
        // One attempt: every caller sits inside a retry loop already, and nesting loops would
        // multiply the attempts.
        let resp = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(RegistryError::Transport {
                    registry: repo.registry.clone(),
                    reference: reference.to_string(),
                    message: format!("GET /v2/: {t}"),
                })
            }
        };
        let mode = if resp.status() == 401 {
            let ch = resp.header("www-authenticate").map(parse_challenges).unwrap_or_default();
            if let Some(b) = ch.iter().find(|c| c.is_bearer()) {
                AuthMode::Bearer {
                    realm: b.param("realm").unwrap_or_default().to_string(),
                    service: b.param("service").map(str::to_string),
                }
            } else {
                AuthMode::Basic
            }
        } else if (200..300).contains(&resp.status()) {
            AuthMode::Anonymous
        } else {
            return Err(self.status_error(resp, "GET", repo, reference, "registry API (/v2/)"));
        };
        tracing::debug!(registry = %repo.registry, ?mode, "pinged registry");
        lock(&self.modes).insert(repo.registry.clone(), mode.clone());
        Ok(mode)
    }

    /// The `Authorization` header for a request, fetching a token when the cached one is missing,
    /// about to expire, or `force`d out by a 401.
    fn authorization(
        &self,
        repo: &Repo,
        scopes: &Scopes,
        reference: &str,
        force: bool,
        creds_override: Option<&Credentials>,
    ) -> Result<Option<String>> {
        match self.mode(repo, reference)? {
            AuthMode::Anonymous => Ok(None),
            AuthMode::Basic => {
                let creds = match creds_override {
                    Some(c) => c.clone(),
                    None => credentials::lookup(&self.opts.docker_config, &repo.registry)?,
                };
                Ok(creds.basic_header())
            }
            AuthMode::Bearer { realm, service } => {
                let key = (repo.registry.clone(), scopes.key());
                if !force {
                    if let Some(t) = lock(&self.tokens).get(&key) {
                        if t.fresh_at(Instant::now()) {
                            return Ok(Some(format!("Bearer {}", t.value)));
                        }
                    }
                }
                let t = self.fetch_token(repo, &realm, service.as_deref(), scopes, reference, creds_override)?;
                let header = format!("Bearer {}", t.value);
                lock(&self.tokens).insert(key, t);
                Ok(Some(header))
            }
        }
    }

    /// Asks the token server for a token: the OAuth2 refresh-token POST when we hold an identity
    /// token, else a GET with basic credentials (or none, for anonymous pulls).
    fn fetch_token(
        &self,
        repo: &Repo,
        realm: &str,
        service: Option<&str>,
        scopes: &Scopes,
        reference: &str,
        creds_override: Option<&Credentials>,
    ) -> Result<Token> {
        // Credentials are read anew each time: a refreshed config.json is picked up on the next token.
        let creds = match creds_override {
            Some(c) => c.clone(),
            None => credentials::lookup(&self.opts.docker_config, &repo.registry)?,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = match &creds {
                Credentials::IdentityToken { token, .. } => {
                    let mut form: Vec<(&str, &str)> =
                        vec![("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", "kiln")];
                    if let Some(s) = service {
                        form.push(("service", s));
                    }
                    let sk = scopes.key();
                    if !sk.is_empty() {
                        form.push(("scope", &sk));
                    }
                    self.agent.post(realm).send_form(&form)
                }
                other => {
                    let mut url = realm.to_string();
                    let mut sep = if url.contains('?') { '&' } else { '?' };
                    let mut push = |k: &str, v: &str| {
                        url.push(sep);
                        url.push_str(k);
                        url.push('=');
                        url.push_str(&pct_encode(v));
                        sep = '&';
                    };
                    if let Some(s) = service {
                        push("service", s);
                    }
                    for s in scopes.strings() {
                        push("scope", &s);
                    }
                    if let Credentials::Basic { username, .. } = other {
                        push("account", username);
                    }
                    let mut r = self.agent.get(&url);
                    if let Some(h) = other.basic_header() {
                        r = r.set("Authorization", &h);
                    }
                    r.call()
                }
            };
            let resp = match result {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => {
                    if (code == 429 || code >= 500) && attempt < self.opts.max_attempts {
                        self.backoff(attempt, retry_after(&r));
                        continue;
                    }
                    let detail = error_detail(r);
                    if code == 401 || code == 403 {
                        return Err(RegistryError::Unauthorized {
                            registry: repo.registry.clone(),
                            reference: reference.to_string(),
                            status: code,
                            detail: format!(" (token server {realm}{detail})"),
                        });
                    }
                    return Err(RegistryError::TokenServer {
                        registry: repo.registry.clone(),
                        reference: reference.to_string(),
                        realm: realm.to_string(),
                        status: code,
                        detail,
                    });
                }
                Err(ureq::Error::Transport(t)) => {
                    if attempt < self.opts.max_attempts && is_retryable_transport(&t) {
                        self.backoff(attempt, None);
                        continue;
                    }
                    return Err(RegistryError::Transport {
                        registry: repo.registry.clone(),
                        reference: reference.to_string(),
                        message: format!("token server {realm}: {t}"),
                    });
                }
            };
            let mut body = Vec::new();
            let read = resp.into_reader().take(1 << 20).read_to_end(&mut body);
            let parsed = read.ok().and_then(|_| serde_json::from_slice::<TokenResponse>(&body).ok()).and_then(|t| t.into_token(started));
            match parsed {
                Some(t) => {
                    self.tokens_fetched.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(registry = %repo.registry, scope = %scopes.key(), lifetime = ?t.lifetime, "fetched token");
                    return Ok(t);
                }
                None if attempt < self.opts.max_attempts => {
                    self.backoff(attempt, None);
                }
                None => {
                    return Err(RegistryError::TokenServer {
                        registry: repo.registry.clone(),
                        reference: reference.to_string(),
                        realm: realm.to_string(),
                        status: 200,
                        detail: ": the answer has no token".into(),
                    })
                }
            }
        }
    }

    /// Sends one request, re-authenticating (and re-sending the body from the start) on 401.
    /// Statuses are returned, not turned into errors: callers know which ones they expect.
    pub(crate) fn send_once(&self, req: &Req<'_>, creds_override: Option<&Credentials>) -> Result<ureq::Response> {
        let mut scopes = req.scopes.clone();
        let mut auth_tries = 0;
        loop {
            let authz = if req.repo.name.is_empty() && scopes.key().is_empty() && creds_override.is_none() {
                None
            } else {
                self.authorization(req.repo, &scopes, req.reference, auth_tries > 0, creds_override)?
            };
            let mut r = self.agent.request(req.method, &req.url);
            for (k, v) in &req.headers {
                r = r.set(k, v);
            }
            if let Some(a) = &authz {
                r = r.set("Authorization", a);
            }
            let result = match &req.body {
                Body::Empty => r.call(),
                Body::Bytes(b) => r.send_bytes(b),
                Body::Stream { len, open } => {
                    let rd = open().map_err(|e| crate::error::from_io(e, format!("{}: reading the content to upload", req.reference)))?;
                    r.set("Content-Length", &len.to_string()).send(BufReader::with_capacity(1 << 20, rd))
                }
            };
            let resp = match result {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => {
                    return Err(RegistryError::Transport {
                        registry: req.repo.registry.clone(),
                        reference: req.reference.to_string(),
                        message: format!("{} {}: {t}", req.method, path_of(&req.url)),
                    })
                }
            };
            if resp.status() == 401 && auth_tries < 2 {
                auth_tries += 1;
                if let Some(h) = resp.header("www-authenticate") {
                    let ch = parse_challenges(h);
                    if let Some(b) = ch.iter().find(|c| c.is_bearer()) {
                        if let Some(s) = b.param("scope") {
                            scopes.merge_challenge(s);
                        }
                        lock(&self.modes).insert(
                            req.repo.registry.clone(),
                            AuthMode::Bearer {
                                realm: b.param("realm").unwrap_or_default().to_string(),
                                service: b.param("service").map(str::to_string),
                            },
                        );
                    } else if ch.iter().any(|c| c.is_basic()) {
                        lock(&self.modes).insert(req.repo.registry.clone(), AuthMode::Basic);
                    }
                }
                tracing::debug!(url = %path_of(&req.url), "401: authenticating again");
                drain(resp);
                continue;
            }
            return Ok(resp);
        }
    }

    /// [`send_once`](Self::send_once) with retries on connection failures, 429 and 5xx (honouring
    /// Retry-After), up to `max_attempts`. Only for requests that are safe to repeat.
    pub(crate) fn send_retrying(&self, req: Req<'_>, creds_override: Option<&Credentials>, _idempotent: bool) -> Result<ureq::Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(&req, creds_override) {
                Ok(resp) if (resp.status() == 429 || resp.status() >= 500) && attempt < self.opts.max_attempts => {
                    let after = retry_after(&resp);
                    tracing::debug!(status = resp.status(), url = %path_of(&req.url), attempt, "retrying");
                    drain(resp);
                    self.backoff(attempt, after);
                }
                Err(e) if e.is_transient() && attempt < self.opts.max_attempts => {
                    tracing::debug!(error = %e, attempt, "retrying");
                    self.backoff(attempt, None);
                }
                other => return other,
            }
        }
    }

    /// Exponential backoff with jitter (half to full of the doubled delay); a Retry-After wins.
    pub(crate) fn backoff(&self, attempt: u32, retry_after: Option<Duration>) {
        let d = backoff_delay(self.opts.backoff_base, self.opts.backoff_max, attempt, retry_after);
        std::thread::sleep(d);
    }

    /// Turns an unexpected answer into an error naming the reference and the status.
    pub(crate) fn status_error(&self, resp: ureq::Response, method: &str, repo: &Repo, reference: &str, what: &str) -> RegistryError {
        let status = resp.status();
        let path = path_of(resp.get_url()).to_string();
        let detail = error_detail(resp);
        match status {
            401 => RegistryError::Unauthorized { registry: repo.registry.clone(), reference: reference.to_string(), status, detail },
            403 => RegistryError::Forbidden { registry: repo.registry.clone(), reference: reference.to_string(), detail },
            404 => RegistryError::NotFound {
                registry: repo.registry.clone(),
                reference: reference.to_string(),
                what: what.to_string(),
                detail,
            },
            _ => RegistryError::Status {
                registry: repo.registry.clone(),
                reference: reference.to_string(),
                status,
                request: format!("{method} {path}"),
                detail,
            },
        }
    }
}

pub(crate) fn backoff_delay(base: Duration, max: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(Duration::from_secs(60));
    }
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(max);
    // Jitter from the std hasher's random keys: no RNG crate needed for spreading out retries.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let frac = (h.finish() % 1000) as f64 / 1000.0;
    exp.mul_f64(0.5 + frac / 2.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking transfer thread must not wedge the others; the maps stay consistent per insert.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A response's `Retry-After` (seconds or an HTTP date) as a wait; shared with other HTTP clients
/// of kiln (the GitHub Actions cache).
pub fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    let v = resp.header("retry-after")?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

fn is_retryable_transport(t: &ureq::Transport) -> bool {
    !matches!(t.kind(), ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme | ureq::ErrorKind::InsecureRequestHttpsOnly)
}

/// Reads a small error body and renders the distribution `errors` array (`: CODE: message`).
pub(crate) fn error_detail(resp: ureq::Response) -> String {
    let mut body = Vec::new();
    let _ = resp.into_reader().take(8192).read_to_end(&mut body);
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errs>(&body) {
        let parts: Vec<String> = e.errors.iter().map(|e| format!("{}: {}", e.code, e.message)).collect();
        if !parts.is_empty() {
            return format!(" ({})", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({})", text.chars().take(200).collect::<String>())
    }
}

/// Reads what is left of a small answer so the connection goes back to the pool.
pub(crate) fn drain(resp: ureq::Response) {
    let _ = io::copy(&mut resp.into_reader().take(64 << 10), &mut io::sink());
}

pub(crate) fn path_of(url: &str) -> &str {
    url.find("://").and_then(|i| url[i + 3..].find('/').map(|j| &url[i + 3 + j..])).map(|p| p.split('?').next().unwrap_or(p)).unwrap_or(url)
}

fn host_only(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// Docker's rule: loopback registries speak plain HTTP.
pub fn is_loopback(registry: &str) -> bool {
    let h = host_only(registry);
    h == "localhost" || h.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

pub(crate) fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Resolves a `Location` header (absolute, or relative to the registry) to a full URL.
pub(crate) fn resolve_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        format!("{base}/{loc}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_pick_http() {
        let c = Client::new(ClientOptions { insecure_registries: vec!["reg.lan:5000".into(), "other.lan".into()], ..Default::default() });
        assert_eq!(c.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(c.base_url("localhost:1"), "http://localhost:1");
        assert_eq!(c.base_url("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(c.base_url("reg.lan:5000"), "http://reg.lan:5000");
        assert_eq!(c.base_url("other.lan:443"), "http://other.lan:443");
        assert_eq!(c.base_url("ghcr.io"), "https://ghcr.io");
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(2);
        let d1 = backoff_delay(b, m, 1, None);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
        let d4 = backoff_delay(b, m, 4, None);
        assert!(d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800), "{d4:?}");
        let d30 = backoff_delay(b, m, 30, None);
        assert!(d30 <= m && d30 >= m / 2);
        assert_eq!(backoff_delay(b, m, 1, Some(Duration::from_secs(3))), Duration::from_secs(3));
    }

    #[test]
    fn helpers() {
        assert_eq!(pct_encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(path_of("http://h:1/v2/x/blobs/uploads/?a=b"), "/v2/x/blobs/uploads/");
        assert_eq!(resolve_location("http://h:1", "/v2/x?y"), "http://h:1/v2/x?y");
        assert_eq!(resolve_location("http://h:1", "https://s3/x"), "https://s3/x");
    }
}
