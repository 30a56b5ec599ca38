//! `type=gha`: the GitHub Actions cache (service v2), made immune to the URLs that expire under it.
//!
//! # Storage layout
//!
//! The cache service stores *entries*: a key, a version string and one blob, in the scope (the git
//! ref) the runtime token writes to. An entry is immutable: a key that exists, or is reserved by an
//! upload in progress, cannot be created again in the same scope (`409 already_exists`).
//!
//! * Every layer is its own content-addressed entry, `kiln-blob-<sha256 hex>`, holding the gzip blob
//!   the registry cache would push. Two builds that make the same layer make the same entry.
//! * The key graph of one `scope=` (default `buildkit`, as buildx) is an *index* entry,
//!   `kiln-index-<scope>-<ref>-<N>`: a JSON document ([`INDEX_MEDIA_TYPE`]) holding the cache
//!   manifest and config of [`mod@crate::format`], exactly what a registry cache ref holds. `<ref>`
//!   is 12 hex digits of the sha256 of the git ref that wrote it (the token's write scope), so that a
//!   reader can name each scope's index by prefix; `<N>` grows by one per export. The newest index of
//!   a ref is found with the restore key `kiln-index-<scope>-<ref>-` (the service answers the newest
//!   entry whose key has that prefix).
//! * Every entry's version is [`entry_version`]: a hash of kiln's cache format version, so a kiln
//!   that writes another format never reads these.
//!
//! Import reads, for every scope the token can read (the JWT's `ac` claim: the own ref first, then
//! the base branch and the default branch), that scope's newest index, and merges them (the own
//! scope's record wins a tie). Layers are fetched lazily, one entry per hit that needs its bytes.
//!
//! Export is read-merge-write, like the registry ref: the own newest index `N` is read and merged
//! with this build's records ([`crate::merge()`]: other branches' records are kept), and written as
//! `N+1`. Because a key can only be created once, the create is the compare-and-swap: a `409` on
//! `N+1` means another build is writing it, so the export waits for that index to become readable,
//! merges it too, and tries `N+2`.
//!
//! # Why it does not break when URLs expire
//!
//! The service hands out Azure Blob SAS URLs: download URLs live about ten minutes, upload URLs
//! about an hour, and a SAS is checked when a request starts. So:
//!
//! * No download URL is kept. One is asked for (`GetCacheEntryDownloadURL`, which can be called any
//!   number of times with the same token) right before each GET; a `401`/`403` asks again and the
//!   read resumes at its offset with a ranged GET (`x-ms-range`), as does a connection that drops.
//! * A blob key is reserved (`CreateCacheEntry`) only when its bytes are ready (the compressed layer
//!   is in the store), and the blob goes up in one `PUT` that starts at once, so the upload URL is
//!   seconds old when it is used, however long the bytes take. BuildKit uploads 1 MiB blocks under
//!   one URL for the whole upload, so a slow layer outlives it. An upload URL cannot be renewed (the
//!   key is reserved), so an upload that still fails leaves that layer, and the records built on it,
//!   out of the index: never a reference to a blob that is not there.
//! * `429` and `5xx` (and dropped connections) back off, honouring `Retry-After`, until `timeout=`
//!   (default 10m); then a read is a miss and an export a warning. An entry that vanished (evicted)
//!   is a miss: a lookup checks that a hit's layer entry is still there.
//! * A token that can only read (a pull request from a fork) turns export off with one line.
//!
//! # Two protocols
//!
//! github.com serves the cache service v2 (Twirp, `ACTIONS_RESULTS_URL`); GitHub Enterprise Server
//! still serves the legacy v1 (`ACTIONS_CACHE_URL`, `_apis/artifactcache`). Both store the same
//! kind of entries, so everything above holds for both; only the calls differ (module `v1`):
//! v1 uploads go to the service itself in chunks under the runtime token (no signed upload URL to
//! outlive), and its downloads are signed URLs like v2's, asked for right before each read.
//! `version=` picks one as buildx does; without it the environment decides ([`GhaSettings::resolve`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use kiln_oci::{BlobInfo, Descriptor, Digest, Manifest, Store};
use kiln_registry::Client;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, CacheSink, CacheSource, ExportReport, ExportTarget, ExportWarning, Opened, SinkSpec, SourceSpec};
use crate::format::{check_manifest, decode, descendants_of, encode, Entry, FormatError, FORMAT_VERSION, MAX_CONFIG};
use crate::local::{CacheError, Record};
use crate::merge::{merge, PruneRules};
use crate::registry::{gzip_records, ExportSummary, LayerSources, RegistryCacheError};
use crate::spec::{parse_go_duration, CacheFrom, CacheMode, CacheTo, Options, SpecError};

/// buildx's default `scope=`.
pub const DEFAULT_SCOPE: &str = "buildkit";
/// buildx's default `timeout=`: how long one operation may keep retrying.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The media type of an index entry's document.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.kiln.cache.gha.index.v1+json";
/// Records not exported for this long are pruned from an index: GitHub evicts entries that were
/// not used for 7 days, so an older record's layer is likely gone.
pub const INDEX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest scope= kept in a key (the service allows keys of 512 characters).
const MAX_SCOPE: usize = 200;
/// How many index generations an export tries before it gives up on a contended scope.
const MAX_INDEX_ATTEMPTS: u32 = 16;
/// How long an export waits for an index another build reserved to become readable.
const INDEX_WAIT: Duration = Duration::from_secs(30);
/// Layers uploaded at once (the service allows about 200 new entries a minute per repository).
const UPLOAD_PARALLEL: usize = 3;
const SERVICE: &str = "twirp/github.actions.results.api.v1.CacheService/";

mod v1;

/// Which cache service protocol an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The legacy service (`ACTIONS_CACHE_URL`, `_apis/artifactcache`): GitHub Enterprise Server.
    V1,
    /// The cache service v2 (`ACTIONS_RESULTS_URL`, Twirp): github.com.
    V2,
}

/// The version string of every entry kiln writes: a hash of its cache format version.
pub fn entry_version() -> String {
    Digest::sha256_of(format!("kiln-cache-gha format {FORMAT_VERSION}").as_bytes()).hex().to_string()
}

/// The entry key of a layer blob.
pub fn blob_key(digest: &Digest) -> String {
    format!("kiln-blob-{}", digest.hex())
}

/// The short name of a git ref in index keys.
pub fn ref_tag(git_ref: &str) -> String {
    Digest::sha256_of(git_ref.as_bytes()).hex()[..12].to_string()
}

/// The restore-key prefix of `scope`'s index entries written from `git_ref`.
pub fn index_prefix(scope: &str, git_ref: &str) -> String {
    format!("kiln-index-{scope}-{}-", ref_tag(git_ref))
}

/// The generation of an index key under `prefix` (`None` when the key is not one).
pub fn index_generation(prefix: &str, key: &str) -> Option<u64> {
    let n = key.strip_prefix(prefix)?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse().ok()).flatten()
}

/// `type=gha`: the GitHub Actions cache (`--cache-from type=gha[,scope=S]`,
/// `--cache-to type=gha[,scope=S][,mode=…][,ignore-error=…]`; `url_v2=`, `token=` default to the
/// runner's `ACTIONS_RESULTS_URL` and `ACTIONS_RUNTIME_TOKEN`).
#[derive(Debug, Clone, Copy)]
pub struct GhaBackend;

const COMMON: &[&str] = &["scope", "url", "url_v2", "token", "version", "timeout"];

impl Backend for GhaBackend {
    fn name(&self) -> &'static str {
        "gha"
    }

    fn usage(&self) -> &'static str {
        "type=gha[,scope=S]"
    }

    fn source(&self, options: &Options<'_>) -> Result<CacheFrom, SpecError> {
        options.accept(COMMON)?;
        Ok(GhaImport { settings: GhaSettings::parse(options)? }.into())
    }

    fn sink(&self, options: &Options<'_>, mode: CacheMode) -> Result<CacheTo, SpecError> {
        let mut accepted = COMMON.to_vec();
        accepted.extend(["mode", "ignore-error"]);
        options.accept(&accepted)?;
        let settings = GhaSettings::parse(options)?;
        let ignore_error = options.bool("ignore-error", true)?;
        Ok(GhaExport { settings, mode, ignore_error }.into())
    }
}

/// The options common to both sides. `url`, `url_v2` and `token` are what was given; the runner's
/// environment fills in the rest when the store is opened.
#[derive(Clone, PartialEq, Eq)]
pub struct GhaSettings {
    pub scope: String,
    /// `url=`: the legacy service (v1) base URL (`ACTIONS_CACHE_URL`).
    pub url: Option<String>,
    /// `url_v2=`: the cache service v2 base URL (`ACTIONS_RESULTS_URL`).
    pub url_v2: Option<String>,
    pub token: Option<String>,
    /// `version=`: `1` (legacy) or `2`; `None` decides from the environment.
    pub version: Option<u8>,
    pub timeout: Duration,
}

impl fmt::Debug for GhaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GhaSettings")
            .field("scope", &self.scope)
            .field("url", &self.url)
            .field("url_v2", &self.url_v2)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("version", &self.version)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl GhaSettings {
    fn parse(options: &Options<'_>) -> Result<GhaSettings, SpecError> {
        let scope = options.get("scope").filter(|s| !s.is_empty()).unwrap_or(DEFAULT_SCOPE).to_string();
        if scope.len() > MAX_SCOPE {
            return Err(options.error(format!("scope= is {} characters; at most {MAX_SCOPE} fit in a cache key", scope.len())));
        }
        let version = match options.get("version") {
            None | Some("") => None,
            Some("2") => Some(2),
            Some("1") => Some(1),
            Some(v) => return Err(options.error(format!("version={v:?} must be 1 or 2"))),
        };
        let timeout = match options.get("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(v) => match parse_go_duration(v) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return Err(options.error("timeout=0 leaves no time to reach the cache; give e.g. timeout=10m")),
                Err(e) => return Err(options.error(format!("timeout={v:?}: {e}"))),
            },
        };
        let given = |k: &str| options.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        Ok(GhaSettings { scope, url: given("url"), url_v2: given("url_v2"), token: given("token"), version, timeout })
    }

    /// Where the service is and what the token may do, from these options and then the
    /// environment (`env("NAME")`). `Err` is the one line saying what is missing.
    ///
    /// The protocol: `version=` when given; else `url_v2=` means v2 and `url=` v1; else, as
    /// actions/toolkit decides, `ACTIONS_CACHE_SERVICE_V2` means v2, a GitHub Enterprise Server
    /// (`GITHUB_SERVER_URL` not on github.com or ghe.com) v1, and then whichever URL the
    /// environment holds, v2's first.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Endpoint, String> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let v2_env = env("ACTIONS_CACHE_SERVICE_V2").is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"));
        let ghes = env("GITHUB_SERVER_URL").is_some_and(|u| is_ghes(&u));
        let protocol = match self.version {
            Some(1) => Protocol::V1,
            Some(_) => Protocol::V2,
            None if self.url_v2.is_some() => Protocol::V2,
            None if self.url.is_some() => Protocol::V1,
            None if v2_env => Protocol::V2,
            None if ghes => Protocol::V1,
            None if env("ACTIONS_RESULTS_URL").is_none() && env("ACTIONS_CACHE_URL").is_some() => Protocol::V1,
            None => Protocol::V2,
        };
        let (url, url_name, option) = match protocol {
            Protocol::V1 => (self.url.clone().or_else(|| env("ACTIONS_CACHE_URL")), "ACTIONS_CACHE_URL", "url="),
            Protocol::V2 => (self.url_v2.clone().or_else(|| env("ACTIONS_RESULTS_URL")), "ACTIONS_RESULTS_URL", "url_v2="),
        };
        let token = self.token.clone().or_else(|| env("ACTIONS_RUNTIME_TOKEN"));
        let missing = match (&url, &token) {
            (None, None) => Some(format!("{url_name} and ACTIONS_RUNTIME_TOKEN are")),
            (None, Some(_)) => Some(format!("{url_name} is")),
            (Some(_), None) => Some("ACTIONS_RUNTIME_TOKEN is".to_string()),
            _ => None,
        };
        if let Some(m) = missing {
            return Err(format!(
                "{m} not set (they exist inside a GitHub Actions job: expose them with crazy-max/ghaction-github-runtime, or give {option} and token=)"
            ));
        }
        let (Some(url), Some(token)) = (url, token) else { unreachable!("checked above") };
        let base = if url.ends_with('/') { url } else { format!("{url}/") };
        let scopes = token_scopes(&token).unwrap_or_default();
        Ok(Endpoint { base, token, scopes, timeout: self.timeout, protocol })
    }

    /// How messages name the store.
    pub fn describe(&self) -> String {
        format!("type=gha,scope={}", self.scope)
    }
}

/// Whether a `GITHUB_SERVER_URL` is a GitHub Enterprise Server (as actions/toolkit's `isGhes`).
fn is_ghes(server: &str) -> bool {
    let host = server.split("://").nth(1).unwrap_or(server).split(['/', ':']).next().unwrap_or("").to_ascii_lowercase();
    !(host == "github.com" || host.ends_with(".ghe.com") || host.ends_with(".ghe.localhost") || host == "localhost")
}

fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// A `--cache-from type=gha` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GhaImport {
    pub settings: GhaSettings,
}

impl SourceSpec for GhaImport {
    fn open<'c>(&self, _client: Option<&'c Client>) -> Opened<Box<dyn CacheSource + 'c>> {
        match self.settings.resolve(&process_env) {
            Ok(ep) => GhaCache::open(Service::new(ep), &self.settings.scope).map(|c| Box::new(c) as Box<dyn CacheSource + 'c>),
            Err(why) => Opened::Unusable(format!("cache {} not used: {why}", self.settings.describe())),
        }
    }
}

/// A `--cache-to type=gha` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GhaExport {
    pub settings: GhaSettings,
    pub mode: CacheMode,
    /// `true` (default): a failed export is a warning. `false`: it fails the build.
    pub ignore_error: bool,
}

impl SinkSpec for GhaExport {
    fn open<'c>(&self, _client: Option<&'c Client>) -> Opened<Box<dyn CacheSink + 'c>> {
        let shown = self.settings.describe();
        match self.settings.resolve(&process_env) {
            Ok(ep) if !ep.scopes.is_empty() && ep.write_scope().is_none() => Opened::Unusable(read_only_line(&shown)),
            Ok(ep) => Opened::Opened(Box::new(GhaSink { service: Service::new(ep), export: self.clone() })),
            Err(why) => Opened::Unusable(format!("cache export to {shown} skipped: {why}")),
        }
    }
}

fn read_only_line(shown: &str) -> String {
    format!(
        "cache export to {shown} turned off: the runtime token may only read the cache (a pull request from a fork, or a \
         workflow without write access); the build still reads it"
    )
}

/// One scope of a runtime token, from its `ac` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    /// The git ref, e.g. `refs/heads/main`.
    pub scope: String,
    pub read: bool,
    pub write: bool,
}

/// The scopes of a runtime token (a JWT whose payload's `ac` claim is a JSON array, or a string
/// holding one, of `{"Scope": REF, "Permission": BITS}`; 1 = read, 2 = write). `None` when the
/// token is not such a JWT. The signature is not checked: the service does that; kiln only wants
/// to know where to look and whether to try writing.
pub fn token_scopes(token: &str) -> Option<Vec<TokenScope>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let ac = claims.get("ac")?;
    let list: serde_json::Value = match ac {
        serde_json::Value::String(s) => serde_json::from_str(s).ok()?,
        other => other.clone(),
    };
    let mut out = Vec::new();
    for item in list.as_array()? {
        let scope = item.get("Scope").or_else(|| item.get("scope")).and_then(|s| s.as_str())?.to_string();
        let bits = item.get("Permission").or_else(|| item.get("permission")).and_then(|p| p.as_u64()).unwrap_or(0);
        out.push(TokenScope { scope, read: bits & 1 != 0, write: bits & 2 != 0 });
    }
    Some(out)
}

/// Where the service is, the token and what it may do.
#[derive(Clone)]
pub struct Endpoint {
    /// `ACTIONS_RESULTS_URL` (v2) or `ACTIONS_CACHE_URL` (v1), ending in `/`.
    pub base: String,
    token: String,
    /// Empty when the token carried no readable `ac` claim.
    pub scopes: Vec<TokenScope>,
    pub timeout: Duration,
    pub protocol: Protocol,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl Endpoint {
    /// The ref the token writes to (`None` for a read-only token, or one without `ac`).
    pub fn write_scope(&self) -> Option<&str> {
        self.scopes.iter().find(|s| s.write).map(|s| s.scope.as_str())
    }

    /// The refs whose indexes a build reads, own first; `[""]` when the token names none.
    pub fn read_order(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.scopes.iter().filter(|s| s.write).chain(self.scopes.iter().filter(|s| s.read && !s.write)) {
            if !out.contains(&s.scope) {
                out.push(s.scope.clone());
            }
        }
        if out.is_empty() {
            out.push(String::new());
        }
        out
    }

    /// The ref this build's index is written under.
    fn own_ref(&self) -> String {
        self.write_scope().map(str::to_string).unwrap_or_default()
    }
}

/// GitHub Actions cache failures. Each names the entry or the call, and the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum GhaError {
    #[error("cache service {call}: HTTP {status}: the runtime token was refused ({message}); it lives about 6 hours, so a longer job has to run without the cache")]
    Unauthorized { call: String, status: u16, message: String },
    #[error("cache service {call}: HTTP 403: the runtime token may not do this ({message})")]
    Denied { call: String, message: String },
    #[error("cache service {call}: HTTP {status}: {message}")]
    Status { call: String, status: u16, message: String },
    #[error("cache service {call}: still failing after {waited:?} (timeout={timeout:?}): {last}")]
    GaveUp { call: String, waited: Duration, timeout: Duration, last: String },
    #[error("cache service {call}: cannot connect: {source}")]
    Transport {
        call: String,
        #[source]
        source: Box<ureq::Transport>,
    },
    #[error("cache service {call}: unexpected answer: {source}")]
    BadAnswer {
        call: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cache entry {key} is gone (evicted or never finished)")]
    Vanished { key: String },
    #[error("cache entry {key}: the upload URL expired or was refused before the upload finished ({message}); the layer is left out of the index")]
    UploadRefused { key: String, message: String },
    #[error("cache entry {key}: {action}: {source}")]
    Io {
        key: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cache {shown}: index {key}: {source}")]
    Format {
        shown: String,
        key: String,
        #[source]
        source: FormatError,
    },
    #[error("cache {shown}: index {key} is not a kiln index ({message})")]
    BadIndex { shown: String, key: String, message: String },
    #[error("cache {shown}: other builds kept writing the index; gave up after {attempts} attempts (the next export will merge again)")]
    Contended { shown: String, attempts: u32 },
    #[error("cache {shown}: the runtime token may only read the cache")]
    ReadOnly { shown: String },
    #[error(transparent)]
    Export(#[from] RegistryCacheError),
    #[error("cache entry {key}: storing layer: {source}")]
    Store {
        key: String,
        #[source]
        source: kiln_oci::StoreError,
    },
}

impl GhaError {
    /// The token cannot write (turns export off rather than retrying).
    fn is_denied(&self) -> bool {
        matches!(self, GhaError::Denied { .. } | GhaError::ReadOnly { .. })
    }
}

/// A short, one-line form of an error body (twirp JSON `msg`, Azure XML `<Code>`, or an HTML page).
fn summarize(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let code = v.get("code").and_then(|c| c.as_str()).unwrap_or_default();
        let msg = v.get("msg").and_then(|c| c.as_str()).unwrap_or_default();
        if !code.is_empty() || !msg.is_empty() {
            return format!("{code}: {msg}").trim_matches(|c| c == ':' || c == ' ').to_string();
        }
    }
    if let Some(start) = body.find("<Code>") {
        if let Some(end) = body[start..].find("</Code>") {
            return body[start + 6..start + end].to_string();
        }
    }
    if body.trim_start().starts_with('<') {
        let title = body.find("<title>").and_then(|s| body[s + 7..].find("</title>").map(|e| body[s + 7..s + 7 + e].trim().to_string()));
        return format!("an HTML page{}", title.map(|t| format!(" ({t})")).unwrap_or_default());
    }
    let line = body.lines().next().unwrap_or_default().trim();
    line.chars().take(200).collect()
}

/// Backoff for attempt `n` (from 0) when the server gave no `Retry-After`, with a little jitter.
fn backoff(n: u32) -> Duration {
    let base = Duration::from_millis(200u64.saturating_mul(1 << n.min(5)));
    let jitter = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos() % 100).unwrap_or(0);
    base.min(Duration::from_secs(5)) + Duration::from_millis(jitter as u64)
}

/// Retries of one operation within `timeout`.
struct Retry {
    start: Instant,
    timeout: Duration,
    attempts: u32,
}

impl Retry {
    fn new(timeout: Duration) -> Retry {
        Retry { start: Instant::now(), timeout, attempts: 0 }
    }

    /// Sleeps before the next attempt, or gives up when that would pass the timeout.
    fn wait(&mut self, call: &str, hint: Option<Duration>, last: String) -> Result<(), GhaError> {
        let wait = hint.unwrap_or_else(|| backoff(self.attempts));
        self.attempts += 1;
        if self.start.elapsed() + wait > self.timeout {
            return Err(GhaError::GaveUp { call: call.to_string(), waited: self.start.elapsed(), timeout: self.timeout, last });
        }
        tracing::debug!(call, ?wait, last, "cache service busy; retrying");
        std::thread::sleep(wait);
        Ok(())
    }
}

#[derive(Serialize)]
struct KeyRequest<'a> {
    key: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_keys: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_bytes: Option<String>,
}

#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default, alias = "signedUploadUrl")]
    signed_upload_url: Option<String>,
    #[serde(default, alias = "signedDownloadUrl")]
    signed_download_url: Option<String>,
    #[serde(default, alias = "matchedKey")]
    matched_key: Option<String>,
}

/// What creating an entry gave.
enum Created {
    /// Reserved: upload now, to this URL (v2) or under this cache id (v1).
    Upload(String),
    /// The key exists or is being uploaded by someone else.
    Exists,
}

/// The cache service v2 and its blob store, as one token sees them.
#[derive(Debug)]
pub struct Service {
    agent: ureq::Agent,
    ep: Endpoint,
    version: String,
}

impl Service {
    pub fn new(ep: Endpoint) -> Service {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .build();
        Service { agent, ep, version: entry_version() }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// One twirp call, retried on 429, 5xx and dropped connections within the timeout.
    fn call(&self, method: &str, body: &KeyRequest<'_>) -> Result<(u16, Answer), GhaError> {
        let url = format!("{}{SERVICE}{method}", self.ep.base);
        let json = serde_json::to_string(body).unwrap_or_default();
        let mut retry = Retry::new(self.ep.timeout);
        loop {
            let sent = self
                .agent
                .post(&url)
                .set("Authorization", &format!("Bearer {}", self.ep.token))
                .set("Content-Type", "application/json")
                .send_string(&json);
            match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.into_string().map_err(|source| GhaError::Io {
                        key: body.key.to_string(),
                        action: "reading the answer",
                        source,
                    })?;
                    let answer = serde_json::from_str(&text).map_err(|source| GhaError::BadAnswer { call: method.to_string(), source })?;
                    return Ok((status, answer));
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let hint = kiln_registry::client::retry_after(&resp);
                    let message = summarize(&resp.into_string().unwrap_or_default());
                    match status {
                        429 | 500..=599 => retry.wait(method, hint, format!("HTTP {status}: {message}"))?,
                        401 => return Err(GhaError::Unauthorized { call: method.to_string(), status, message }),
                        403 => return Err(GhaError::Denied { call: method.to_string(), message }),
                        // A 409 or 404 is an answer; the caller decides.
                        409 | 404 => return Ok((status, Answer::default())),
                        _ => return Err(GhaError::Status { call: method.to_string(), status, message }),
                    }
                }
                Err(ureq::Error::Transport(t)) => {
                    let last = t.to_string();
                    if retry.wait(method, None, last).is_err() {
                        return Err(GhaError::Transport { call: method.to_string(), source: Box::new(t) });
                    }
                }
            }
        }
    }

    /// A fresh download URL for `key` (exact, when `restore` is empty) or the newest entry under
    /// one of `restore`, with the key it matched. `None` is a miss.
    fn download_url(&self, key: &str, restore: &[&str]) -> Result<Option<(String, String)>, GhaError> {
        if self.ep.protocol == Protocol::V1 {
            return self.v1_download_url(key, restore);
        }
        let req =
            KeyRequest { key, version: &self.version, restore_keys: (!restore.is_empty()).then(|| restore.to_vec()), size_bytes: None };
        let (status, a) = self.call("GetCacheEntryDownloadURL", &req)?;
        match (status, a.ok, a.signed_download_url) {
            (200, true, Some(url)) if !url.is_empty() => {
                let matched = a.matched_key.filter(|k| !k.is_empty()).unwrap_or_else(|| key.to_string());
                // The service also matches the key as a prefix (`…-1` finds `…-12`): an exact
                // lookup that found another entry is a miss.
                if restore.is_empty() && matched != key {
                    return Ok(None);
                }
                Ok(Some((url, matched)))
            }
            _ => Ok(None),
        }
    }

    /// Reserves `key` for `size` bytes.
    fn create(&self, key: &str, size: u64) -> Result<Created, GhaError> {
        if self.ep.protocol == Protocol::V1 {
            return self.v1_create(key, size);
        }
        let req = KeyRequest { key, version: &self.version, restore_keys: None, size_bytes: None };
        match self.call("CreateCacheEntry", &req)? {
            (409, _) => Ok(Created::Exists),
            (_, Answer { ok: true, signed_upload_url: Some(url), .. }) if !url.is_empty() => Ok(Created::Upload(url)),
            // `ok: false` is how the service says the key is taken (or reserved) too.
            _ => Ok(Created::Exists),
        }
    }

    /// Commits the upload of `key` under `reservation` (what [`Service::create`] gave).
    fn finalize(&self, key: &str, reservation: &str, size: u64) -> Result<(), GhaError> {
        if self.ep.protocol == Protocol::V1 {
            return self.v1_finalize(key, reservation, size);
        }
        let req = KeyRequest { key, version: &self.version, restore_keys: None, size_bytes: Some(size.to_string()) };
        match self.call("FinalizeCacheEntryUpload", &req)? {
            (200, Answer { ok: true, .. }) => Ok(()),
            (status, _) => {
                Err(GhaError::Status { call: "FinalizeCacheEntryUpload".into(), status, message: format!("{key} not finalized") })
            }
        }
    }

    /// Uploads `size` bytes from `open()` to a just-reserved entry in one PUT. A 5xx, 429 or a
    /// dropped connection tries again under the same URL while it works; a 401/403 (the SAS
    /// expired) cannot be helped: the key stays reserved and the layer is left out.
    fn put(&self, key: &str, url: &str, size: u64, open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>) -> Result<(), GhaError> {
        if self.ep.protocol == Protocol::V1 {
            return self.v1_put(key, url, size, open);
        }
        let mut retry = Retry::new(self.ep.timeout);
        loop {
            let body = open().map_err(|source| GhaError::Io { key: key.to_string(), action: "reading the layer", source })?;
            let sent = self
                .agent
                .put(url)
                .set("x-ms-blob-type", "BlockBlob")
                .set("x-ms-version", "2020-10-02")
                .set("Content-Type", "application/octet-stream")
                .set("Content-Length", &size.to_string())
                .send(body);
            match sent {
                Ok(_) => return Ok(()),
                Err(ureq::Error::Status(status, resp)) => {
                    let hint = kiln_registry::client::retry_after(&resp);
                    let message = summarize(&resp.into_string().unwrap_or_default());
                    match status {
                        401 | 403 => {
                            return Err(GhaError::UploadRefused { key: key.to_string(), message: format!("HTTP {status}: {message}") })
                        }
                        429 | 500..=599 => retry.wait("blob upload", hint, format!("HTTP {status}: {message}"))?,
                        _ => return Err(GhaError::Status { call: format!("blob upload of {key}"), status, message }),
                    }
                }
                Err(ureq::Error::Transport(t)) => {
                    let last = t.to_string();
                    if retry.wait("blob upload", None, last).is_err() {
                        return Err(GhaError::Transport { call: format!("blob upload of {key}"), source: Box::new(t) });
                    }
                }
            }
        }
    }

    /// A reader of entry `key` that asks for a download URL right before each GET.
    fn reader(&self, key: &str, size: Option<u64>) -> EntryReader<'_> {
        EntryReader { service: self, key: key.to_string(), size, offset: 0, body: None, retry: Retry::new(self.ep.timeout), error: None }
    }
}

/// Reads one entry's blob, resuming at its offset under a fresh URL whenever a GET fails.
struct EntryReader<'s> {
    service: &'s Service,
    key: String,
    size: Option<u64>,
    offset: u64,
    body: Option<Box<dyn Read + Send + Sync>>,
    retry: Retry,
    /// The typed error behind an `io::Error` this reader returned.
    error: Option<GhaError>,
}

impl EntryReader<'_> {
    fn fail(&mut self, e: GhaError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.error = Some(e);
        err
    }

    /// A GET from the current offset under a URL asked for now.
    fn open(&mut self) -> Result<Option<Box<dyn Read + Send + Sync>>, GhaError> {
        loop {
            let Some((url, _)) = self.service.download_url(&self.key, &[])? else {
                return Err(GhaError::Vanished { key: self.key.clone() });
            };
            let range = match self.size {
                Some(size) => format!("bytes={}-{}", self.offset, size.saturating_sub(1)),
                None => format!("bytes={}-", self.offset),
            };
            let sent = self.service.agent.get(&url).set("x-ms-range", &range).set("Range", &range).set("x-ms-version", "2020-10-02").call();
            match sent {
                Ok(resp) => {
                    let full = resp.status() == 200;
                    let mut body = resp.into_reader();
                    if full && self.offset > 0 {
                        // The server ignored the range and sent it all: skip what was read already.
                        let skipped = io::copy(&mut (&mut body).take(self.offset), &mut io::sink()).map_err(|source| GhaError::Io {
                            key: self.key.clone(),
                            action: "skipping to the offset",
                            source,
                        })?;
                        if skipped < self.offset {
                            self.retry.wait("blob download", None, format!("body ended at byte {skipped}"))?;
                            continue;
                        }
                    }
                    return Ok(Some(body));
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let hint = kiln_registry::client::retry_after(&resp);
                    let message = summarize(&resp.into_string().unwrap_or_default());
                    match status {
                        // The URL expired (or was refused): ask for another at once.
                        401 | 403 => self.retry.wait("blob download", Some(Duration::ZERO), format!("HTTP {status}: {message}"))?,
                        404 => return Err(GhaError::Vanished { key: self.key.clone() }),
                        416 if !matches!(self.size, Some(s) if self.offset < s) => return Ok(None),
                        429 | 500..=599 => self.retry.wait("blob download", hint, format!("HTTP {status}: {message}"))?,
                        _ => return Err(GhaError::Status { call: format!("blob download of {}", self.key), status, message }),
                    }
                }
                Err(ureq::Error::Transport(t)) => self.retry.wait("blob download", None, t.to_string())?,
            }
        }
    }
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.size.is_some_and(|s| self.offset >= s) {
            return Ok(0);
        }
        loop {
            if self.body.is_none() {
                match self.open() {
                    Ok(Some(b)) => self.body = Some(b),
                    Ok(None) => return Ok(0),
                    Err(e) => return Err(self.fail(e)),
                }
            }
            let Some(body) = self.body.as_mut() else { continue };
            match body.read(buf) {
                Ok(0) if self.size.is_some_and(|s| self.offset < s) => {
                    // Cut short: resume from here.
                    self.body = None;
                    if let Err(e) = self.retry.wait("blob download", None, format!("body ended at byte {}", self.offset)) {
                        return Err(self.fail(e));
                    }
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.body = None;
                    if let Err(e) = self.retry.wait("blob download", None, e.to_string()) {
                        return Err(self.fail(e));
                    }
                }
            }
        }
    }
}

/// The document of an index entry.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexDoc {
    media_type: String,
    manifest: serde_json::Value,
    config: serde_json::Value,
}

fn encode_index(entries: &[Entry]) -> Vec<u8> {
    let enc = encode(entries);
    let doc = IndexDoc {
        media_type: INDEX_MEDIA_TYPE.to_string(),
        manifest: serde_json::from_slice(&enc.manifest).unwrap_or_default(),
        config: serde_json::from_slice(&enc.config).unwrap_or_default(),
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn decode_index(shown: &str, key: &str, bytes: &[u8]) -> Result<Vec<Entry>, GhaError> {
    let bad = |message: String| GhaError::BadIndex { shown: shown.to_string(), key: key.to_string(), message };
    let doc: IndexDoc = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if doc.media_type != INDEX_MEDIA_TYPE {
        return Err(bad(format!("media type {:?}", doc.media_type)));
    }
    let manifest_bytes = serde_json::to_vec(&doc.manifest).unwrap_or_default();
    let manifest = Manifest::parse(&manifest_bytes, None).map_err(|e| bad(e.to_string()))?;
    let format = |source| GhaError::Format { shown: shown.to_string(), key: key.to_string(), source };
    let image = check_manifest(&manifest).map_err(format)?;
    let config = serde_json::to_vec(&doc.config).unwrap_or_default();
    let (entries, dropped) = decode(image, &config).map_err(format)?;
    if dropped > 0 {
        tracing::warn!(index = key, dropped, "cache records that contradict their manifest were ignored");
    }
    Ok(entries)
}

/// Reads a whole entry (an index), at most `MAX_CONFIG * 2` bytes.
fn read_entry(service: &Service, key: &str) -> Result<Vec<u8>, GhaError> {
    let mut r = service.reader(key, None);
    let mut out = Vec::new();
    let res = (&mut r).take(MAX_CONFIG * 2).read_to_end(&mut out);
    match (res, r.error.take()) {
        (Ok(_), _) => Ok(out),
        (Err(_), Some(e)) => Err(e),
        (Err(source), None) => Err(GhaError::Io { key: key.to_string(), action: "reading", source }),
    }
}

/// The newest index of `scope` written from `git_ref`: its generation and records.
fn newest_index(service: &Service, shown: &str, scope: &str, git_ref: &str) -> Result<Option<(u64, Vec<Entry>)>, GhaError> {
    let prefix = index_prefix(scope, git_ref);
    let Some((_, matched)) = service.download_url(&prefix, &[&prefix])? else { return Ok(None) };
    let Some(n) = index_generation(&prefix, &matched) else {
        tracing::debug!(matched, "restore key matched something that is not a kiln index; ignored");
        return Ok(None);
    };
    let bytes = read_entry(service, &matched)?;
    Ok(Some((n, decode_index(shown, &matched, &bytes)?)))
}

/// A GitHub Actions cache opened for import: the records of every readable scope's index.
#[derive(Debug)]
pub struct GhaCache {
    service: Service,
    shown: String,
    entries: HashMap<Digest, Entry>,
    /// Whether each layer's entry was still there when a lookup asked.
    present: Mutex<HashMap<Digest, bool>>,
}

impl GhaCache {
    /// Reads the newest index of `scope` in every scope the token can read (nothing else). Never
    /// fails: no index anywhere is [`Opened::Missing`], a service that cannot be read [`Opened::Unusable`].
    pub fn open(service: Service, scope: &str) -> Opened<GhaCache> {
        let shown = format!("type=gha,scope={scope}");
        let mut entries: HashMap<Digest, Entry> = HashMap::new();
        let mut found = 0;
        for git_ref in service.endpoint().read_order() {
            match newest_index(&service, &shown, scope, &git_ref) {
                Ok(Some((n, list))) => {
                    tracing::debug!(scope, git_ref, generation = n, records = list.len(), "gha cache index read");
                    found += 1;
                    for e in list {
                        entries.entry(e.key().clone()).or_insert(e);
                    }
                }
                Ok(None) => {}
                Err(e) => return Opened::Unusable(format!("cache {shown} not used: {e}")),
            }
        }
        if found == 0 {
            return Opened::Missing(format!(
                "cache {shown} has no index yet in the scopes this token can read: building without it; a --cache-to type=gha export will create it"
            ));
        }
        Opened::Opened(GhaCache { service, shown, entries, present: Mutex::new(HashMap::new()) })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the layer's entry is still there (asked once per layer).
    fn layer_present(&self, digest: &Digest) -> bool {
        if let Some(p) = self.present.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return *p;
        }
        let there = match self.service.download_url(&blob_key(digest), &[]) {
            Ok(found) => found.is_some(),
            Err(e) => {
                tracing::warn!(cache = %self.shown, layer = %digest, error = %e, "cache layer lookup failed; the step is a miss");
                false
            }
        };
        self.present.lock().unwrap_or_else(|p| p.into_inner()).insert(digest.clone(), there);
        there
    }

    pub fn fetch_layer(&self, record: &Record, store: &Store) -> Result<BlobInfo, GhaError> {
        let Some(layer) = &record.layer else { return Err(GhaError::Vanished { key: format!("(no layer for record {})", record.key) }) };
        let d = &layer.descriptor;
        let key = blob_key(&d.digest);
        let mut reader = self.service.reader(&key, Some(d.size));
        let put = store.put_blob_stream(&mut reader, Some(&d.digest));
        match (put, reader.error.take()) {
            (Ok(info), _) => Ok(info),
            (Err(_), Some(e)) => Err(e),
            (Err(source), None) => Err(GhaError::Store { key, source }),
        }
    }
}

impl CacheSource for GhaCache {
    fn lookup(&self, key: &Digest) -> Option<Record> {
        let e = self.entries.get(key)?;
        match &e.record.layer {
            Some(l) if !self.layer_present(&l.descriptor.digest) => None,
            _ => Some(e.record.clone()),
        }
    }

    fn records(&self) -> Vec<Record> {
        let mut v: Vec<Record> = self.entries.values().map(|e| e.record.clone()).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    fn fetch_layer(&self, record: &Record, store: &Store) -> Result<BlobInfo, CacheError> {
        Ok(GhaCache::fetch_layer(self, record, store)?)
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

/// A `--cache-to type=gha` destination, opened.
#[derive(Debug)]
pub struct GhaSink {
    service: Service,
    export: GhaExport,
}

impl GhaSink {
    pub fn new(service: Service, export: GhaExport) -> GhaSink {
        GhaSink { service, export }
    }
}

impl CacheSink for GhaSink {
    fn mode(&self) -> CacheMode {
        self.export.mode
    }

    fn export(&self, records: &[Record], store: &Store, _sources: &LayerSources) -> Result<ExportReport, CacheError> {
        let shown = self.export.settings.describe();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        match export(&self.service, &self.export.settings.scope, records, store, now) {
            Ok(summary) => Ok(ExportReport::Exported(summary)),
            Err(e) if !self.export.ignore_error => Err(CacheError::Gha(e)),
            Err(e) => {
                let warning = if e.is_denied() {
                    format!("{}: {e}", read_only_line(&shown))
                } else {
                    format!("cache export to {shown} failed; the build result is unaffected: {e}")
                };
                Ok(ExportReport::Warned(ExportWarning { target: ExportTarget::Reference(shown), warning }))
            }
        }
    }

    fn describe(&self) -> String {
        self.export.settings.describe()
    }
}

/// What happened to one layer of an export.
enum LayerFate {
    Uploaded(u64),
    Present,
    /// Left out (with the records built on it), for the reason logged.
    Missing,
}

/// Puts one layer into the cache: present already (in any readable scope), or reserved and
/// uploaded now. Errors that mean the token cannot write end the export; others leave it out.
fn put_layer(service: &Service, d: &Descriptor, store: &Store) -> Result<LayerFate, GhaError> {
    let key = blob_key(&d.digest);
    if service.download_url(&key, &[])?.is_some() {
        return Ok(LayerFate::Present);
    }
    if !store.has_blob(&d.digest) {
        tracing::warn!(layer = %d.digest, "cache layer left out: it is not in the local store");
        return Ok(LayerFate::Missing);
    }
    // The bytes are ready: only now is the key reserved, and the upload starts at once.
    let url = match service.create(&key, d.size)? {
        Created::Exists => return Ok(LayerFate::Present),
        Created::Upload(url) => url,
    };
    let open = || -> io::Result<Box<dyn Read + Send>> { Ok(Box::new(store.open_blob(&d.digest).map_err(io::Error::other)?)) };
    match service.put(&key, &url, d.size, &open).and_then(|()| service.finalize(&key, &url, d.size)) {
        Ok(()) => Ok(LayerFate::Uploaded(d.size)),
        Err(e @ (GhaError::Unauthorized { .. } | GhaError::Denied { .. })) => Err(e),
        Err(e) => {
            tracing::warn!(layer = %d.digest, error = %e, "cache layer left out of the index");
            Ok(LayerFate::Missing)
        }
    }
}

/// Exports `records` to `scope`: the layers that are not there yet, then a new index generation
/// merged with the newest one (see the module doc).
pub fn export(service: &Service, scope: &str, records: &[Record], store: &Store, now: u64) -> Result<ExportSummary, GhaError> {
    let shown = format!("type=gha,scope={scope}");
    let ep = service.endpoint();
    if !ep.scopes.is_empty() && ep.write_scope().is_none() {
        return Err(GhaError::ReadOnly { shown });
    }
    let own = ep.own_ref();
    let records = gzip_records(store, records, &shown)?;
    let incoming: Vec<Entry> = records.into_iter().map(|r| Entry::exported(r, now)).collect();

    let mut layers: Vec<Descriptor> = incoming.iter().filter_map(|e| e.record.layer.as_ref().map(|l| l.descriptor.clone())).collect();
    layers.sort_by(|a, b| a.digest.cmp(&b.digest));
    layers.dedup_by(|a, b| a.digest == b.digest);
    let (uploaded, present, bytes) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicU64::new(0));
    let missing_layers: Mutex<BTreeSet<Digest>> = Mutex::new(BTreeSet::new());
    let fatal: Mutex<Option<GhaError>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..UPLOAD_PARALLEL.min(layers.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = layers.get(i) else { break };
                if fatal.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    break;
                }
                match put_layer(service, d, store) {
                    Ok(LayerFate::Uploaded(n)) => {
                        uploaded.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(LayerFate::Present) => {
                        present.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(LayerFate::Missing) => {
                        missing_layers.lock().unwrap_or_else(|p| p.into_inner()).insert(d.digest.clone());
                    }
                    Err(e) => {
                        fatal.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(if e.is_denied() { GhaError::ReadOnly { shown } } else { e });
    }
    let missing_layers = missing_layers.into_inner().unwrap_or_else(|p| p.into_inner());
    let missing: BTreeSet<Digest> = incoming
        .iter()
        .filter(|e| e.record.layer.as_ref().is_some_and(|l| missing_layers.contains(&l.descriptor.digest)))
        .map(|e| e.key().clone())
        .collect();
    let mut unusable = descendants_of(&incoming, &missing);
    unusable.extend(missing);
    let usable: Vec<Entry> = incoming.iter().filter(|e| !unusable.contains(e.key())).cloned().collect();

    let rules = PruneRules { ttl: Some(INDEX_TTL), max_size: None };
    let prefix = index_prefix(scope, &own);
    // A generation another build reserved: wait for it to be readable before merging over it.
    let mut awaited: Option<u64> = None;
    for attempt in 1..=MAX_INDEX_ATTEMPTS {
        let newest = match awaited {
            Some(n) => wait_for_index(service, &shown, &prefix, n)?,
            None => None,
        };
        let (n, existing) = match newest {
            Some(found) => found,
            None => newest_index(service, &shown, scope, &own)?.unwrap_or((0, Vec::new())),
        };
        // The service may still show an older generation than the one reserved.
        let n = n.max(awaited.unwrap_or(0));
        let merged = merge(existing, usable.clone(), &rules, now);
        let doc = encode_index(&merged.entries);
        let key = format!("{prefix}{}", n + 1);
        match service.create(&key, doc.len() as u64)? {
            Created::Exists => {
                tracing::debug!(index = key, attempt, "another build is writing this index generation; merging over it");
                awaited = Some(n + 1);
                continue;
            }
            Created::Upload(url) => {
                let body = doc.clone();
                let open = move || -> io::Result<Box<dyn Read + Send>> { Ok(Box::new(io::Cursor::new(body.clone()))) };
                service.put(&key, &url, doc.len() as u64, &open)?;
                service.finalize(&key, &url, doc.len() as u64)?;
                return Ok(ExportSummary {
                    reference: shown,
                    digest: Some(Digest::sha256_of(&doc)),
                    exported: incoming.len(),
                    unavailable: unusable.len(),
                    records: merged.entries.len(),
                    pruned_ttl: merged.pruned_ttl,
                    pruned_size: merged.pruned_size,
                    layers_uploaded: uploaded.load(Ordering::Relaxed),
                    layers_mounted: 0,
                    layers_present: present.load(Ordering::Relaxed),
                    bytes_uploaded: bytes.load(Ordering::Relaxed),
                    layer_bytes: merged.layer_bytes,
                    attempts: attempt,
                });
            }
        }
    }
    Err(GhaError::Contended { shown, attempts: MAX_INDEX_ATTEMPTS })
}

/// Waits (up to [`INDEX_WAIT`]) for generation `n` under `prefix` to be readable, and reads it.
/// `None` when it never shows (its writer died, or is slow): the export goes on over what it has.
fn wait_for_index(service: &Service, shown: &str, prefix: &str, n: u64) -> Result<Option<(u64, Vec<Entry>)>, GhaError> {
    let key = format!("{prefix}{n}");
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        if service.download_url(&key, &[])?.is_some() {
            let bytes = read_entry(service, &key)?;
            return Ok(Some((n, decode_index(shown, &key, &bytes)?)));
        }
        if start.elapsed() > INDEX_WAIT.min(service.endpoint().timeout) {
            tracing::warn!(index = key, "an index generation another build reserved never became readable; writing over it");
            return Ok(None);
        }
        std::thread::sleep(backoff(attempt));
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(v: &str) -> Result<GhaImport, SpecError> {
        CacheFrom::parse(v).map(|c| c.get::<GhaImport>().expect("a gha source").clone())
    }

    fn to(v: &str) -> Result<GhaExport, SpecError> {
        CacheTo::parse(v).map(|c| c.get::<GhaExport>().expect("a gha sink").clone())
    }

    /// A JWT (unsigned: kiln never checks the signature) with `claims` as its payload.
    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()))
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn options_take_buildx_names_and_defaults() {
        let s = from("type=gha").unwrap().settings;
        assert_eq!(
            (s.scope.as_str(), s.timeout, s.version, s.url_v2.clone(), s.token.clone()),
            ("buildkit", DEFAULT_TIMEOUT, None, None, None)
        );
        let e = to("type=gha,scope=app,mode=max,ignore-error=false,timeout=90s,url_v2=http://h/,token=t,version=2").unwrap();
        assert_eq!((e.mode, e.ignore_error), (CacheMode::Max, false));
        assert_eq!(e.settings.scope, "app");
        assert_eq!(e.settings.timeout, Duration::from_secs(90));
        assert_eq!((e.settings.url_v2.as_deref(), e.settings.version), (Some("http://h/"), Some(2)));
        assert!(to("type=gha").unwrap().ignore_error, "a failed export is a warning by default");
        assert!(!format!("{:?}", e.settings).contains("token: Some(\"t\")"), "the token is redacted: {:?}", e.settings);
        assert!(format!("{:?}", e.settings).contains("<redacted>"));

        let cases = [
            ("type=gha,version=3", "version=\"3\" must be 1 or 2"),
            ("type=gha,timeout=soon", "timeout=\"soon\""),
            ("type=gha,timeout=0", "timeout=0"),
            ("type=gha,ref=x", "unknown option \"ref\" for type=gha; accepted: type, scope, url, url_v2, token, version, timeout"),
        ];
        for (v, want) in cases {
            let e = CacheFrom::parse(v).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
        assert_eq!(from("type=gha,version=1,url=http://ghes/").unwrap().settings.version, Some(1));
        assert!(CacheFrom::parse("type=gha,mode=max").unwrap_err().to_string().contains("unknown option \"mode\""));
        assert!(CacheFrom::parse(&format!("type=gha,scope={}", "s".repeat(201))).is_err());
    }

    #[test]
    fn the_environment_fills_in_url_and_token_and_says_what_is_missing() {
        let s = from("type=gha,scope=x").unwrap().settings;
        let token = jwt(serde_json::json!({"ac": r#"[{"Scope":"refs/heads/main","Permission":3}]"#}));
        let ep = s.resolve(&env_of(&[("ACTIONS_RESULTS_URL", "http://127.0.0.1:9"), ("ACTIONS_RUNTIME_TOKEN", &token)])).unwrap();
        assert_eq!(ep.base, "http://127.0.0.1:9/");
        assert_eq!(ep.write_scope(), Some("refs/heads/main"));
        assert!(!format!("{ep:?}").contains(&token));

        let e = s.resolve(&env_of(&[])).unwrap_err();
        assert!(e.contains("ACTIONS_RESULTS_URL and ACTIONS_RUNTIME_TOKEN are not set"), "{e}");
        assert_eq!(e.lines().count(), 1);
        let e = s.resolve(&env_of(&[("ACTIONS_RUNTIME_TOKEN", "t")])).unwrap_err();
        assert!(e.starts_with("ACTIONS_RESULTS_URL is not set"), "{e}");
        let e = s.resolve(&env_of(&[("ACTIONS_RESULTS_URL", "http://h/")])).unwrap_err();
        assert!(e.starts_with("ACTIONS_RUNTIME_TOKEN is not set"), "{e}");
        // The protocol: only the legacy URL set means v1; both set means v2 unless the server is
        // a GitHub Enterprise Server; version= and the explicit URLs decide first.
        let both = [("ACTIONS_CACHE_URL", "http://old/"), ("ACTIONS_RESULTS_URL", "http://new/"), ("ACTIONS_RUNTIME_TOKEN", "t")];
        let ep = s.resolve(&env_of(&[("ACTIONS_CACHE_URL", "http://old"), ("ACTIONS_RUNTIME_TOKEN", "t")])).unwrap();
        assert_eq!((ep.protocol, ep.base.as_str()), (Protocol::V1, "http://old/"));
        let ep = s.resolve(&env_of(&both)).unwrap();
        assert_eq!((ep.protocol, ep.base.as_str()), (Protocol::V2, "http://new/"));
        let ghes = [both.as_slice(), &[("GITHUB_SERVER_URL", "https://ghe.example.com")]].concat();
        assert_eq!(s.resolve(&env_of(&ghes)).unwrap().protocol, Protocol::V1, "GitHub Enterprise Server speaks v1");
        let dotcom = [both.as_slice(), &[("GITHUB_SERVER_URL", "https://github.com")]].concat();
        assert_eq!(s.resolve(&env_of(&dotcom)).unwrap().protocol, Protocol::V2);
        let flagged = [ghes.as_slice(), &[("ACTIONS_CACHE_SERVICE_V2", "True")]].concat();
        assert_eq!(s.resolve(&env_of(&flagged)).unwrap().protocol, Protocol::V2, "ACTIONS_CACHE_SERVICE_V2 wins, as in actions/toolkit");
        let v1 = from("type=gha,version=1").unwrap().settings;
        assert_eq!(v1.resolve(&env_of(&both)).unwrap().base, "http://old/");
        let e = v1.resolve(&env_of(&[("ACTIONS_RESULTS_URL", "http://new/"), ("ACTIONS_RUNTIME_TOKEN", "t")])).unwrap_err();
        assert!(e.starts_with("ACTIONS_CACHE_URL is not set") && e.contains("give url= and token="), "{e}");
        let given_v1 = from("type=gha,url=http://given-v1").unwrap().settings;
        assert_eq!(given_v1.resolve(&env_of(&both)).unwrap().protocol, Protocol::V1, "url= names the legacy service");
        // Options win over the environment.
        let given = from("type=gha,url_v2=http://given,token=tok").unwrap().settings;
        let ep = given.resolve(&env_of(&[("ACTIONS_RESULTS_URL", "http://env/"), ("ACTIONS_RUNTIME_TOKEN", "envtok")])).unwrap();
        assert_eq!((ep.base.as_str(), ep.token.as_str()), ("http://given/", "tok"));
        assert!(ep.scopes.is_empty(), "an opaque token has no scopes");
        assert_eq!(ep.read_order(), vec![String::new()]);

        // Opening with nothing set is one line, never a failure.
        let opened = CacheFrom::from(GhaImport { settings: GhaSettings { url_v2: None, token: None, ..s.clone() } });
        if std::env::var_os("ACTIONS_RESULTS_URL").is_none() && std::env::var_os("ACTIONS_RUNTIME_TOKEN").is_none() {
            let o = opened.open(None);
            assert!(
                matches!(&o, Opened::Unusable(w) if w.starts_with("cache type=gha,scope=x not used: ") && w.lines().count() == 1),
                "{o:?}"
            );
        }
    }

    #[test]
    fn jwt_scopes_come_from_the_ac_claim_as_string_or_array() {
        let t = jwt(serde_json::json!({"ac": r#"[{"Scope":"refs/heads/pr","Permission":3},{"Scope":"refs/heads/main","Permission":1}]"#}));
        let scopes = token_scopes(&t).unwrap();
        assert_eq!(
            scopes,
            vec![
                TokenScope { scope: "refs/heads/pr".into(), read: true, write: true },
                TokenScope { scope: "refs/heads/main".into(), read: true, write: false }
            ]
        );
        let t2 = jwt(serde_json::json!({"ac": [{"Scope": "refs/heads/main", "Permission": 1}]}));
        let ro = Endpoint {
            base: "http://h/".into(),
            token: t2.clone(),
            scopes: token_scopes(&t2).unwrap(),
            timeout: DEFAULT_TIMEOUT,
            protocol: Protocol::V2,
        };
        assert_eq!(ro.write_scope(), None, "a fork PR's token reads only");
        assert_eq!(ro.read_order(), vec!["refs/heads/main".to_string()]);
        let rw = Endpoint { base: "http://h/".into(), token: t.clone(), scopes, timeout: DEFAULT_TIMEOUT, protocol: Protocol::V2 };
        assert_eq!(rw.read_order(), vec!["refs/heads/pr".to_string(), "refs/heads/main".to_string()], "own scope first");
        for bad in ["", "opaque", "a.!!!.c", &jwt(serde_json::json!({"sub": "x"})), &jwt(serde_json::json!({"ac": "not json"}))] {
            assert_eq!(token_scopes(bad), None, "{bad:?}");
        }
        // Base64 with padding is tolerated.
        let padded = format!("h.{}.s", base64::engine::general_purpose::URL_SAFE.encode(br#"{"ac":[]}"#));
        assert_eq!(token_scopes(&padded), Some(vec![]));
    }

    #[test]
    fn key_names() {
        let d = Digest::sha256_of(b"layer");
        assert_eq!(blob_key(&d), format!("kiln-blob-{}", d.hex()));
        let version = entry_version();
        assert_eq!((version.len(), version == entry_version()), (64, true));
        let p = index_prefix("app", "refs/heads/main");
        assert!(p.starts_with("kiln-index-app-") && p.ends_with('-') && p.len() == "kiln-index-app-".len() + 13, "{p}");
        assert_ne!(p, index_prefix("app", "refs/heads/other"), "each ref has its own index");
        assert_eq!(index_generation(&p, &format!("{p}17")), Some(17));
        for not in [p.clone(), format!("{p}1x"), format!("{p}-1"), "kiln-index-other-1".to_string()] {
            assert_eq!(index_generation(&p, &not), None, "{not}");
        }
    }

    #[test]
    fn error_bodies_are_summarised_on_one_line() {
        assert_eq!(summarize(r#"{"code":"already_exists","msg":"key taken"}"#), "already_exists: key taken");
        assert_eq!(
            summarize("<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>x</Message></Error>"),
            "AuthenticationFailed"
        );
        assert_eq!(summarize("<html><head><title>502 Bad Gateway</title></head><body>…</body></html>"), "an HTML page (502 Bad Gateway)");
        assert_eq!(summarize("plain\nsecond"), "plain");
    }

    #[test]
    fn an_index_round_trips_and_foreign_documents_are_refused() {
        let entries = vec![
            Entry::exported(crate::format::tests::rec("a", None, 10, 5), 100),
            Entry::exported(crate::format::tests::rec("b", Some("a"), 0, 5), 100),
        ];
        let doc = encode_index(&entries);
        let mut back = decode_index("s", "k", &doc).unwrap();
        back.sort_by(|a, b| a.key().cmp(b.key()));
        let mut want = entries.clone();
        want.sort_by(|a, b| a.key().cmp(b.key()));
        assert_eq!(back, want);
        assert!(matches!(decode_index("s", "k", b"{}"), Err(GhaError::BadIndex { .. })));
        let other = serde_json::json!({"mediaType": "x", "manifest": {}, "config": {}}).to_string();
        let e = decode_index("s", "k", other.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("not a kiln index"), "{e}");
    }

    #[test]
    fn retry_gives_up_instead_of_passing_the_timeout() {
        let mut r = Retry::new(Duration::from_millis(50));
        let e = r.wait("X", Some(Duration::from_secs(5)), "HTTP 429".into()).unwrap_err();
        assert!(e.to_string().contains("still failing") && e.to_string().contains("HTTP 429"), "{e}");
        let mut r = Retry::new(Duration::from_secs(5));
        assert!(r.wait("X", Some(Duration::ZERO), "x".into()).is_ok());
    }
}
