//! An emulator of the GitHub Actions cache service v2 and of its blob store.
//!
//! # The model
//!
//! A job on GitHub Actions gets two things from the runner: `ACTIONS_RESULTS_URL`
//! (the cache service, ending in `/`) and `ACTIONS_RUNTIME_TOKEN` (a JWT). The
//! cache service is a [Twirp] service, `github.actions.results.api.v1.CacheService`,
//! called as `POST {ACTIONS_RESULTS_URL}twirp/github.actions.results.api.v1.CacheService/{Method}`
//! with `Authorization: Bearer TOKEN` and a JSON body using the proto field
//! names. It never carries cache bytes: it hands out signed Azure Blob URLs
//! (SAS URLs), and the bytes go straight to the blob store.
//!
//! An entry is `(scope, key, version)`. Writing one takes three steps:
//! 1. `CreateCacheEntry {key, version}` reserves it in the token's write scope
//!    and answers `{ok, signed_upload_url}`; a key that exists or is reserved
//!    answers `409 {"code":"already_exists"}`.
//! 2. The bytes are uploaded to the URL: one `PUT` with `x-ms-blob-type:
//!    BlockBlob`, or `PUT ?comp=block&blockid=…` per block and a final
//!    `PUT ?comp=blocklist` naming the blocks in order.
//! 3. `FinalizeCacheEntryUpload {key, version, size_bytes}` commits it and
//!    answers `{ok, entry_id}`.
//!
//! Reading is `GetCacheEntryDownloadURL {key, restore_keys, version}` →
//! `{ok, signed_download_url, matched_key}` (a miss is `200 {"ok":false}`),
//! then `GET` on the URL, whole or by `x-ms-range`/`Range`. A download URL lives
//! about ten minutes and can be asked for again at any time; an upload URL lives
//! about an hour. An expired URL answers `403` with `x-ms-error-code:
//! AuthenticationFailed`.
//!
//! The runtime token's `ac` claim is a JSON *string* holding
//! `[{"Scope":"refs/heads/pr","Permission":3},{"Scope":"refs/heads/main","Permission":1}]`:
//! Permission bit 1 reads, bit 2 writes. A job writes only its own ref's scope
//! and reads its own and its base/default branch's.
//!
//! The legacy service (v1, `ACTIONS_CACHE_URL`, still on GitHub Enterprise Server) is served too,
//! on the same port and over the same entries: see the private module `v1` for its protocol.
//!
//! # What the emulator serves
//!
//! [`GhaService::start`] opens two loopback ports: the Twirp service
//! ([`GhaService::url`]) and the blob store ([`GhaService::blob_url`]). Tokens
//! come from [`GhaService::mint_token`]. [`GhaOptions`] sets URL lifetimes, a
//! bandwidth throttle on blob bodies, injected `429`s (Twirp), `503`s (blob),
//! HTML `502` proxy pages (both), a visibility delay after finalize and an LRU
//! size cap; [`GhaService::evict`] drops an entry on demand. Counters
//! ([`GhaService::calls`], [`GhaService::rejected_429`], …) let tests prove
//! what a client did without timing it.
//!
//! # Where it follows the real service
//!
//! - Paths, method names, JSON field names and shapes: actions/toolkit
//!   `packages/cache/src/generated/results/api/v1/cache.twirp-client.ts`
//!   (`toJson({useProtoFieldName: true})`, so `signed_upload_url`, `size_bytes`,
//!   `restore_keys`, …) and tonistiigi/go-actions-cache `cache_v2.go` (the
//!   client BuildKit's `type=gha` uses). int64 fields are sent as strings
//!   (`entry_id`), as proto JSON does; `size_bytes` is accepted as a string
//!   *or* a number, because go-actions-cache sends a JSON number.
//! - The URL join: toolkit's `cacheTwirpClient.ts` builds `new URL('/twirp/…',
//!   ACTIONS_RESULTS_URL)`, go-actions-cache appends `twirp/…` to the URL, so
//!   the URL ends in `/` and the service answers at `/twirp/…`.
//! - Token: go-actions-cache `cache.go` parses the JWT *unverified* and needs
//!   `ac` (a JSON string of `[{Scope, Permission}]`, `PermissionRead = 1`,
//!   `PermissionWrite = 2`), `exp` and `nbf` as numbers. The emulator's tokens
//!   carry exactly these (plus `iat`, `iss`, `aud`, `scp`), signed HS256.
//! - Errors are Twirp's JSON `{"code","msg"}` with Twirp's code → status
//!   mapping (`already_exists` 409, `permission_denied` 403, `unauthenticated`
//!   401, `not_found` 404, `invalid_argument`/`malformed` 400,
//!   `failed_precondition` 412, `resource_exhausted` 429). go-actions-cache
//!   maps `already_exists` to its "exists" error; toolkit retries 429, 500,
//!   502, 503 and 504 and nothing else, so those are the statuses injected.
//!   (go-actions-cache reads the message from `message`, not Twirp's `msg`;
//!   the emulator sends the spec's `msg`, which toolkit reads.)
//! - Lookup order follows GitHub's documented "cache key matching": in each
//!   readable scope (the job's own first, then the base/default branch) an
//!   exact key, then a prefix match of the key, then each restore key in order
//!   as a prefix, the newest entry winning among prefix matches; `version`
//!   must match exactly. go-actions-cache sends the key itself again as the
//!   first restore key; that is harmless here.
//! - Blob store: Azure's `Put Blob` (`x-ms-blob-type: BlockBlob` required),
//!   `Put Block`, `Put Block List` (`<BlockList><Latest|Uncommitted|Committed>`),
//!   `Get Blob` with `x-ms-range` taking precedence over `Range`, `206` with
//!   `Content-Range: bytes A-B/TOTAL`, `416 InvalidRange`, `HEAD` (Get Blob
//!   Properties), `411 MissingContentLengthHeader` for bodies without a length,
//!   and errors as `<Error><Code>…</Code><Message>…</Message></Error>` with
//!   `x-ms-error-code`. `AuthenticationFailed` (bad or expired signature),
//!   `AuthorizationPermissionMismatch` (`sp` lacks the right), `BlobNotFound`,
//!   `ServerBusy` (503) are Azure's codes. The SAS is checked when a request
//!   arrives, as Azure does, so a transfer that started with a live URL
//!   finishes even if the URL expires meanwhile; the next request fails.
//! - Eviction when over a size cap, and only then (plus [`GhaService::evict`]):
//!   GitHub evicts once a repository passes its cache storage limit and saves
//!   the new entry anyway (the `@actions/cache` README: "GitHub will save your
//!   cache but will begin evicting caches").
//!
//! # Where it guesses
//!
//! - The exact `msg` strings, and which Twirp code the real service uses for:
//!   a finalize without a reservation (`not_found` here), a finalize before any
//!   bytes were uploaded (`failed_precondition`), a size that does not match
//!   the upload (`invalid_argument`), a repeated finalize (idempotent `ok` with
//!   the same `entry_id` here), a token without a write scope (`permission_denied`
//!   here; on github.com a fork PR's token may instead write its own
//!   `refs/pull/N/merge` scope — mint such a token if you want that case).
//! - A miss is sent as `{"ok":false,"signed_download_url":"","matched_key":""}`
//!   (Twirp's Go server emits default values unless told otherwise; the issue
//!   quotes `{"ok":false}`). Clients must accept both.
//! - A reservation never expires by itself (only [`GhaService::evict`] or the
//!   cap frees it); the real service's reservation timeout is unknown.
//! - Eviction order: GitHub's docs say "deleting the oldest caches", its
//!   UI warning says "least recently used caches will be automatically
//!   evicted"; the emulator evicts by last use (reservation, finalize or a
//!   lookup hit), oldest first. Eviction is immediate and exact; GitHub's is
//!   periodic. The 10 GB / 7 days
//!   limits are not modelled, only [`GhaOptions::max_total_bytes`].
//! - Visibility delay is a model of eventual consistency, not a measured value.
//! - SAS URLs: `/{container}/{blob}?sv=…&sr=b&sp=…&se=…&sig=…` with a private
//!   HMAC over `sp, se, sv, sr, path`; `se` is whole seconds, rounded *up*, so a
//!   URL lives at least its lifetime and at most one second more. Real SAS
//!   URLs sign more fields and put the account in the host name (Azure SDKs
//!   parse an IP host as `/{account}/{container}/{blob}`, so they would
//!   misread these URLs; kiln's client treats the URL as opaque).
//! - A finalized entry's blob is sealed: further writes through its upload URL
//!   answer `403 AuthorizationPermissionMismatch`. The real store probably
//!   accepts them until the URL expires; sealing makes a "committed entry
//!   changed under a reader" bug visible instead.
//! - `ListCacheEntries`, `DeleteCacheEntry` and `LookupCacheEntry` (in newer
//!   `cache.twirp.ts`) are not served: no client kiln follows calls them. They
//!   answer Twirp's `404 bad_route`, as an unknown method does.
//! - Injected faults are decided before authentication and before anything is
//!   stored (a front door failing), from a seeded RNG.
//!
//! [Twirp]: https://twitchtv.github.io/twirp/docs/spec_v7.html

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::http::{header_of, parse_header_lines, read_head_lines, reason};
use crate::server::Server;

mod v1;

/// The Twirp service name the real clients call.
pub const GHA_TWIRP_SERVICE: &str = "github.actions.results.api.v1.CacheService";
/// The blob container the signed URLs name.
pub const GHA_CONTAINER: &str = "actions-cache";
/// The `sv` (storage service version) put in signed URLs and `x-ms-version`.
const STORAGE_VERSION: &str = "2024-11-04";
const MAX_CONNECTIONS: usize = 64;
const IDLE: Duration = Duration::from_secs(60);
/// Largest blob body accepted in one request (Azure allows more; tests need less).
const MAX_BLOB_BODY: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;
/// Keys longer than this are refused, as actions/cache documents.
const MAX_KEY: usize = 512;

/// How the emulator behaves. All fields can be changed at run time with
/// [`GhaService::update_options`].
#[derive(Debug, Clone)]
pub struct GhaOptions {
    /// Life of a `signed_download_url` (default 10 minutes, as on github.com).
    pub download_url_lifetime: Duration,
    /// Life of a `signed_upload_url` (default 1 hour).
    pub upload_url_lifetime: Duration,
    /// Blob body bandwidth in bytes per second, each direction, shared by all
    /// connections; `None` (default) is unlimited.
    pub throttle: Option<u64>,
    /// Fraction in `[0, 1]` of Twirp calls answered `429` with `Retry-After`.
    pub twirp_429_rate: f64,
    /// The `Retry-After` sent with an injected 429 (whole seconds, at least 1).
    pub retry_after: Duration,
    /// Fraction of blob requests answered `503 ServerBusy` (nothing stored).
    pub blob_503_rate: f64,
    /// Fraction of all requests (Twirp and blob) answered by a proxy's HTML
    /// `502 Bad Gateway` page instead of the service.
    pub html_error_rate: f64,
    /// A finalized entry is found by `GetCacheEntryDownloadURL` only this long
    /// after it was finalized (default zero).
    pub visibility_delay: Duration,
    /// When the finalized entries' sizes add up to more than this, the least
    /// recently used ones are evicted until they fit (default: no cap).
    pub max_total_bytes: Option<u64>,
    /// Seed of the fault RNG: same seed and request order, same faults.
    pub seed: u64,
}

impl Default for GhaOptions {
    fn default() -> Self {
        GhaOptions {
            download_url_lifetime: Duration::from_secs(600),
            upload_url_lifetime: Duration::from_secs(3600),
            throttle: None,
            twirp_429_rate: 0.0,
            retry_after: Duration::from_secs(1),
            blob_503_rate: 0.0,
            html_error_rate: 0.0,
            visibility_delay: Duration::ZERO,
            max_total_bytes: None,
            seed: 1,
        }
    }
}

/// A snapshot of one cache entry, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GhaEntry {
    /// The `entry_id` (assigned at reservation, returned by finalize).
    pub id: u64,
    /// The cache key.
    pub key: String,
    /// The version string the client sent.
    pub version: String,
    /// The write scope of the token that reserved it, e.g. `refs/heads/main`.
    pub scope: String,
    /// Committed size in bytes (0 until finalized).
    pub size: u64,
    /// False while only reserved.
    pub finalized: bool,
    /// The blob path in the store, `{container}/{blob}`.
    pub blob: String,
}

/// splitmix64, as in the fault proxy: tiny, seedable.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Entry {
    id: u64,
    key: String,
    version: String,
    scope: String,
    blob: String,
    size: u64,
    finalized_at: Option<SystemTime>,
    /// Logical clock of the last create/finalize/lookup hit (LRU order).
    used: u64,
}

#[derive(Default)]
struct Blob {
    committed: Option<Arc<Vec<u8>>>,
    committed_blocks: HashMap<String, Vec<u8>>,
    uncommitted: HashMap<String, Vec<u8>>,
    sealed: bool,
    modified: Option<SystemTime>,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    blobs: HashMap<String, Blob>,
    next_id: u64,
    tick: u64,
}

#[derive(Default)]
struct Counters {
    rejected_429: AtomicU64,
    rejected_503: AtomicU64,
    html_errors: AtomicU64,
    auth_failures: AtomicU64,
    blob_requests: AtomicU64,
    throttled_bytes: AtomicU64,
    throttle_sleeps: AtomicU64,
    evictions: AtomicU64,
    requests: AtomicU64,
}

struct Inner {
    options: Mutex<GhaOptions>,
    rng: Mutex<Rng>,
    state: Mutex<State>,
    calls: Mutex<HashMap<String, u64>>,
    blob_ops: Mutex<HashMap<String, u64>>,
    counters: Counters,
    token_key: ring::hmac::Key,
    sas_key: ring::hmac::Key,
    blob_base: OnceLock<String>,
    /// Virtual clocks of the throttle, one per direction.
    up: Mutex<Instant>,
    down: Mutex<Instant>,
}

/// A running cache service emulator on two loopback ports; stops on drop.
pub struct GhaService {
    inner: Arc<Inner>,
    twirp: Server,
    blob: Server,
}

impl std::fmt::Debug for GhaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GhaService").field("url", &self.url()).field("blob_url", &self.blob_url()).finish_non_exhaustive()
    }
}

impl GhaService {
    /// Starts the Twirp service and the blob store on free ports of `127.0.0.1`.
    pub fn start(options: GhaOptions) -> Result<GhaService> {
        let rng = ring::rand::SystemRandom::new();
        let mut k1 = [0u8; 32];
        let mut k2 = [0u8; 32];
        rng.fill(&mut k1).and_then(|()| rng.fill(&mut k2)).map_err(|_| Error::Crypto("random HMAC keys for the gha emulator".into()))?;
        let inner = Arc::new(Inner {
            rng: Mutex::new(Rng(options.seed)),
            options: Mutex::new(options),
            state: Mutex::new(State { next_id: 1, ..State::default() }),
            calls: Mutex::new(HashMap::new()),
            blob_ops: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            token_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k1),
            sas_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k2),
            blob_base: OnceLock::new(),
            up: Mutex::new(Instant::now()),
            down: Mutex::new(Instant::now()),
        });
        let bi = Arc::clone(&inner);
        let blob = Server::start("gha-blob", MAX_CONNECTIONS, Arc::new(move |s| serve(&bi, s, Kind::Blob)))?;
        let _ = inner.blob_base.set(format!("http://{}/", blob.addr()));
        let ti = Arc::clone(&inner);
        let twirp = Server::start("gha-twirp", MAX_CONNECTIONS, Arc::new(move |s| serve(&ti, s, Kind::Twirp)))?;
        Ok(GhaService { inner, twirp, blob })
    }

    /// `ACTIONS_RESULTS_URL`: `http://127.0.0.1:PORT/`, with the trailing slash the runner sets.
    pub fn url(&self) -> String {
        format!("http://{}/", self.twirp.addr())
    }

    /// `ACTIONS_CACHE_URL` for the legacy service (v1): the same port as [`GhaService::url`].
    pub fn cache_url(&self) -> String {
        self.url()
    }

    /// The blob store's base URL, `http://127.0.0.1:PORT2/`; signed URLs point below it.
    pub fn blob_url(&self) -> String {
        format!("http://{}/", self.blob.addr())
    }

    /// A runtime token (`ACTIONS_RUNTIME_TOKEN`): an HS256 JWT whose `ac`
    /// claim lists `write_scope` first with Permission 3 (read and write), then
    /// each of `read_scopes` with Permission 1. `exp` is now + `lifetime`
    /// (rounded up to a whole second); after it the service answers 401.
    /// `write_scope: None` is a read-only token (a fork PR): creates get 403.
    pub fn mint_token(&self, read_scopes: &[&str], write_scope: Option<&str>, lifetime: Duration) -> String {
        let mut ac = Vec::new();
        if let Some(w) = write_scope {
            ac.push(json!({"Scope": w, "Permission": 3}));
        }
        for r in read_scopes {
            if Some(*r) != write_scope {
                ac.push(json!({"Scope": r, "Permission": 1}));
            }
        }
        let now = unix(SystemTime::now());
        let exp = now.ceil() as u64 + lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
        let claims = json!({
            "nameid": "kiln-testkit",
            "scp": "Actions.Results:kiln-testkit-run:kiln-testkit-job",
            "ac": Value::Array(ac).to_string(),
            "iss": "vstoken.actions.githubusercontent.com",
            "aud": "vso:kiln-testkit",
            "iat": now.floor() as u64,
            "nbf": now.floor() as u64,
            "exp": exp,
        });
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!("{}.{}", b64.encode(r#"{"typ":"JWT","alg":"HS256"}"#), b64.encode(claims.to_string()));
        let sig = ring::hmac::sign(&self.inner.token_key, signing_input.as_bytes());
        format!("{signing_input}.{}", b64.encode(sig.as_ref()))
    }

    /// Removes every entry with this key (any scope, any version, reserved or
    /// finalized) and its blob; returns how many. Downloads already streaming
    /// finish; later requests for the blob get 404 `BlobNotFound`.
    pub fn evict(&self, key: &str) -> usize {
        let mut st = lock(&self.inner.state);
        let before = st.entries.len();
        let gone: Vec<String> = st.entries.iter().filter(|e| e.key == key).map(|e| e.blob.clone()).collect();
        st.entries.retain(|e| e.key != key);
        for b in &gone {
            st.blobs.remove(b);
        }
        let n = before - st.entries.len();
        self.inner.counters.evictions.fetch_add(n as u64, Ordering::SeqCst);
        n
    }

    /// All entries, reserved and finalized, oldest first.
    pub fn entries(&self) -> Vec<GhaEntry> {
        lock(&self.inner.state)
            .entries
            .iter()
            .map(|e| GhaEntry {
                id: e.id,
                key: e.key.clone(),
                version: e.version.clone(),
                scope: e.scope.clone(),
                size: e.size,
                finalized: e.finalized_at.is_some(),
                blob: e.blob.clone(),
            })
            .collect()
    }

    /// Calls received for `method` (Twirp: `"CreateCacheEntry"`, …; v1: `"v1/GetCacheEntry"`,
    /// `"v1/ReserveCache"`, `"v1/UploadCache"`, `"v1/CommitCache"`), injected faults included.
    pub fn calls(&self, method: &str) -> u64 {
        lock(&self.inner.calls).get(method).copied().unwrap_or(0)
    }

    /// Blob requests received per operation: `"PutBlob"`, `"PutBlock"`,
    /// `"PutBlockList"`, `"GetBlob"`, `"HeadBlob"` (faulted ones included).
    pub fn blob_calls(&self, op: &str) -> u64 {
        lock(&self.inner.blob_ops).get(op).copied().unwrap_or(0)
    }

    /// Twirp calls answered 429 by injection.
    pub fn rejected_429(&self) -> u64 {
        self.inner.counters.rejected_429.load(Ordering::SeqCst)
    }

    /// Blob requests answered 503 by injection.
    pub fn rejected_503(&self) -> u64 {
        self.inner.counters.rejected_503.load(Ordering::SeqCst)
    }

    /// Requests (Twirp or blob) answered with the HTML 502 page by injection.
    pub fn html_errors(&self) -> u64 {
        self.inner.counters.html_errors.load(Ordering::SeqCst)
    }

    /// Blob requests refused `403 AuthenticationFailed` (bad or expired signature).
    pub fn auth_failures(&self) -> u64 {
        self.inner.counters.auth_failures.load(Ordering::SeqCst)
    }

    /// Blob requests received, all kinds.
    pub fn blob_requests(&self) -> u64 {
        self.inner.counters.blob_requests.load(Ordering::SeqCst)
    }

    /// All HTTP requests received on both ports.
    pub fn requests(&self) -> u64 {
        self.inner.counters.requests.load(Ordering::SeqCst)
    }

    /// Blob body bytes (both directions) that went through the throttle; 0 without one.
    pub fn throttled_bytes(&self) -> u64 {
        self.inner.counters.throttled_bytes.load(Ordering::SeqCst)
    }

    /// How many times a transfer slept to keep to the throttle.
    pub fn throttle_sleeps(&self) -> u64 {
        self.inner.counters.throttle_sleeps.load(Ordering::SeqCst)
    }

    /// Entries removed by [`GhaService::evict`] or by the size cap.
    pub fn evictions(&self) -> u64 {
        self.inner.counters.evictions.load(Ordering::SeqCst)
    }

    /// Changes options while running (fault rates, lifetimes, delay, throttle,
    /// cap; a new seed restarts the fault sequence). URLs already handed out
    /// keep the expiry they were signed with.
    pub fn update_options(&self, f: impl FnOnce(&mut GhaOptions)) {
        let mut o = lock(&self.inner.options);
        let old_seed = o.seed;
        f(&mut o);
        if o.seed != old_seed {
            *lock(&self.inner.rng) = Rng(o.seed);
        }
    }

    /// The options in force now.
    pub fn options(&self) -> GhaOptions {
        lock(&self.inner.options).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Twirp,
    Blob,
}

/// One request as read from the wire; the body is read by the handler.
struct Head {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    close: bool,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }
    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A response to send.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// A blob slice, throttled on the way out; `len` is sent as Content-Length.
    Blob {
        data: Arc<Vec<u8>>,
        start: usize,
        len: usize,
    },
    /// HEAD: Content-Length `len`, no bytes.
    Empty {
        len: usize,
    },
}

impl Reply {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply { status, headers: vec![("Content-Type".into(), content_type.into())], body: Body::Bytes(body) }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

fn serve(inner: &Inner, stream: TcpStream, kind: Kind) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(IDLE));
    // A reply goes out in two writes (head, body): without this, Nagle holds the body until the
    // client's delayed ACK of the head, 40 ms per request on Linux, which real services do not cost.
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let lines = match read_head_lines(&mut reader) {
            Ok(Some(l)) => l,
            _ => return,
        };
        inner.counters.requests.fetch_add(1, Ordering::SeqCst);
        let mut parts = lines[0].split_whitespace();
        let (Some(method), Some(target), version) = (parts.next(), parts.next(), parts.next()) else { return };
        let headers = parse_header_lines(&lines[1..]);
        let (path, query) = split_target(target);
        let conn = header_of(&headers, "connection").map(str::to_ascii_lowercase).unwrap_or_default();
        let close = conn.contains("close") || (version == Some("HTTP/1.0") && !conn.contains("keep-alive"));
        let head = Head { method: method.to_string(), path, query, headers, close };
        if head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return;
        }
        let (reply, keep) = match kind {
            Kind::Twirp => twirp(inner, &head, &mut reader),
            Kind::Blob => blob(inner, &head, &mut reader),
        };
        let keep = keep && !head.close;
        if send(inner, &mut writer, reply, keep).is_err() || !keep {
            return;
        }
    }
}

fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (p, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect();
    (pct_decode(p), query)
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        // `+` stays `+`: base64 signatures are full of it, and Azure reads it literally.
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pct_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn send(inner: &Inner, w: &mut TcpStream, reply: Reply, keep: bool) -> std::io::Result<()> {
    let len = match &reply.body {
        Body::Bytes(b) => b.len(),
        Body::Blob { len, .. } | Body::Empty { len } => *len,
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Date: {}\r\nContent-Length: {len}\r\n", http_date(SystemTime::now())));
    head.push_str(if keep { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    w.write_all(head.as_bytes())?;
    match reply.body {
        Body::Bytes(b) => w.write_all(&b)?,
        Body::Empty { .. } => {}
        Body::Blob { data, start, len } => {
            let mut off = start;
            let end = start + len;
            while off < end {
                let n = CHUNK.min(end - off);
                throttle(inner, &inner.down, n);
                w.write_all(&data[off..off + n])?;
                off += n;
            }
        }
    }
    w.flush()
}

/// Waits for `n` bytes' slot on a direction's virtual clock, if throttled.
fn throttle(inner: &Inner, clock: &Mutex<Instant>, n: usize) {
    let Some(rate) = lock(&inner.options).throttle.filter(|r| *r > 0) else { return };
    inner.counters.throttled_bytes.fetch_add(n as u64, Ordering::SeqCst);
    let until = {
        let mut next = lock(clock);
        let now = Instant::now();
        let start = if *next > now { *next } else { now };
        *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
        *next
    };
    let now = Instant::now();
    if until > now {
        inner.counters.throttle_sleeps.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(until - now);
    }
}

/// Reads a `Content-Length` body (chunked is refused by the caller), throttled when `throttled`.
fn read_body(inner: &Inner, head: &Head, r: &mut impl BufRead, limit: u64, throttled: bool) -> std::result::Result<Vec<u8>, BodyError> {
    if head.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Err(BodyError::NoLength);
    }
    let len = match head.header("content-length") {
        None => return Ok(Vec::new()),
        Some(v) => v.trim().parse::<u64>().map_err(|_| BodyError::Broken)?,
    };
    if len > limit {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::with_capacity(len as usize);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len as usize;
    while left > 0 {
        let n = CHUNK.min(left);
        if throttled {
            throttle(inner, &inner.up, n);
        }
        r.read_exact(&mut buf[..n]).map_err(|_| BodyError::Broken)?;
        body.extend_from_slice(&buf[..n]);
        left -= n;
    }
    Ok(body)
}

enum BodyError {
    /// Chunked: the connection cannot be reused (body not drained).
    NoLength,
    TooLarge,
    Broken,
}

fn draw(inner: &Inner, rate: f64) -> bool {
    rate > 0.0 && lock(&inner.rng).unit() < rate
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn html_502() -> Reply {
    Reply::new(502, "text/html", HTML_502.as_bytes().to_vec())
}

// ---------------------------------------------------------------- Twirp

fn twirp_error(code: &str, msg: impl Into<String>) -> Reply {
    let status = match code {
        "invalid_argument" | "malformed" | "out_of_range" => 400,
        "unauthenticated" => 401,
        "permission_denied" => 403,
        "not_found" | "bad_route" => 404,
        "already_exists" | "aborted" => 409,
        "failed_precondition" => 412,
        "resource_exhausted" => 429,
        "unimplemented" => 501,
        "unavailable" => 503,
        _ => 500,
    };
    Reply::new(status, "application/json", json!({"code": code, "msg": msg.into()}).to_string().into_bytes())
}

fn ok_json(v: Value) -> Reply {
    Reply::new(200, "application/json", v.to_string().into_bytes())
}

/// A token's scopes, write scope first.
struct Scopes {
    write: Option<String>,
    read: Vec<String>,
}

fn twirp(inner: &Inner, head: &Head, r: &mut impl BufRead) -> (Reply, bool) {
    if head.path.starts_with("/_apis/artifactcache/") {
        return v1::serve(inner, head, r);
    }
    let body = match read_body(inner, head, r, 1 << 20, false) {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return (twirp_error("malformed", "request body too large"), false),
        Err(_) => return (twirp_error("malformed", "the request body could not be read (chunked bodies are not supported)"), false),
    };
    let method = head.path.strip_prefix("/twirp/").and_then(|p| p.strip_prefix(GHA_TWIRP_SERVICE)).and_then(|p| p.strip_prefix('/'));
    let Some(method) = method.filter(|m| !m.is_empty() && !m.contains('/')) else {
        return (twirp_error("bad_route", format!("no handler for path {:?}", head.path)), true);
    };
    *lock(&inner.calls).entry(method.to_string()).or_insert(0) += 1;
    let opts = lock(&inner.options).clone();
    if draw(inner, opts.html_error_rate) {
        inner.counters.html_errors.fetch_add(1, Ordering::SeqCst);
        return (html_502(), true);
    }
    if draw(inner, opts.twirp_429_rate) {
        inner.counters.rejected_429.fetch_add(1, Ordering::SeqCst);
        let secs = (opts.retry_after.as_secs() + u64::from(opts.retry_after.subsec_nanos() > 0)).max(1);
        let reply = twirp_error("resource_exhausted", "Rate limit exceeded, try again later").header("Retry-After", secs.to_string());
        return (reply, true);
    }
    if head.method != "POST" {
        return (twirp_error("bad_route", format!("unsupported method {:?} (only POST is allowed)", head.method)), true);
    }
    let scopes = match authenticate(inner, head) {
        Ok(s) => s,
        Err(reply) => return (reply, true),
    };
    if head.header("content-type").is_some_and(|ct| !ct.to_ascii_lowercase().starts_with("application/json")) {
        return (twirp_error("bad_route", "unexpected Content-Type; this emulator serves application/json only"), true);
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return (twirp_error("malformed", "the request body is not a JSON object"), true),
    };
    let reply = match method {
        "CreateCacheEntry" => create(inner, &opts, &scopes, &req),
        "FinalizeCacheEntryUpload" => finalize(inner, &opts, &scopes, &req),
        "GetCacheEntryDownloadURL" => get(inner, &opts, &scopes, &req),
        other => twirp_error("bad_route", format!("no handler for method {other:?}")),
    };
    (reply, true)
}

fn authenticate(inner: &Inner, head: &Head) -> std::result::Result<Scopes, Reply> {
    let auth = head.header("authorization").unwrap_or("");
    let Some(token) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")).map(str::trim) else {
        return Err(twirp_error("unauthenticated", "missing Authorization: Bearer token"));
    };
    let bad = || twirp_error("unauthenticated", "invalid runtime token");
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let sig = b64.decode(s).map_err(|_| bad())?;
    ring::hmac::verify(&inner.token_key, format!("{h}.{p}").as_bytes(), &sig).map_err(|_| bad())?;
    let claims: Value = b64.decode(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(bad)?;
    let exp = claims.get("exp").and_then(Value::as_f64).ok_or_else(bad)?;
    if unix(SystemTime::now()) >= exp {
        return Err(twirp_error("unauthenticated", "the runtime token has expired"));
    }
    let ac: Value = claims.get("ac").and_then(Value::as_str).and_then(|s| serde_json::from_str(s).ok()).ok_or_else(bad)?;
    let mut scopes = Scopes { write: None, read: Vec::new() };
    for item in ac.as_array().into_iter().flatten() {
        let (Some(scope), Some(perm)) = (item.get("Scope").and_then(Value::as_str), item.get("Permission").and_then(Value::as_u64)) else {
            continue;
        };
        if perm & 2 != 0 && scopes.write.is_none() {
            scopes.write = Some(scope.to_string());
        }
        if perm & 1 != 0 && !scopes.read.iter().any(|r| r == scope) {
            scopes.read.push(scope.to_string());
        }
    }
    // The job's own scope is searched first.
    if let Some(w) = &scopes.write {
        if let Some(i) = scopes.read.iter().position(|r| r == w) {
            let own = scopes.read.remove(i);
            scopes.read.insert(0, own);
        }
    }
    Ok(scopes)
}

fn str_field<'a>(req: &'a Value, name: &str) -> &'a str {
    req.get(name).and_then(Value::as_str).unwrap_or("")
}

fn check_key_version(key: &str, version: &str) -> Option<Reply> {
    if key.is_empty() || version.is_empty() {
        return Some(twirp_error("invalid_argument", "key and version are required"));
    }
    if key.len() > MAX_KEY {
        return Some(twirp_error("invalid_argument", format!("key is longer than {MAX_KEY} characters")));
    }
    if key.contains(',') {
        return Some(twirp_error("invalid_argument", "key must not contain commas"));
    }
    None
}

fn create(inner: &Inner, opts: &GhaOptions, scopes: &Scopes, req: &Value) -> Reply {
    match reserve(inner, scopes, str_field(req, "key"), str_field(req, "version")) {
        Ok((_, blob)) => {
            let url = sign_url(inner, &blob, "cw", opts.upload_url_lifetime);
            ok_json(json!({"ok": true, "signed_upload_url": url}))
        }
        Err(reply) => reply,
    }
}

/// Reserves `(key, version)` in the token's write scope: its entry id and blob path, or the
/// Twirp error to answer.
fn reserve(inner: &Inner, scopes: &Scopes, key: &str, version: &str) -> std::result::Result<(u64, String), Reply> {
    if let Some(e) = check_key_version(key, version) {
        return Err(e);
    }
    let Some(scope) = &scopes.write else {
        return Err(twirp_error("permission_denied", "the runtime token has no write scope (read-only token)"));
    };
    let mut st = lock(&inner.state);
    if st.entries.iter().any(|e| e.key == key && e.version == version && &e.scope == scope) {
        return Err(twirp_error("already_exists", format!("cache entry {key:?} already exists or is being uploaded")));
    }
    let id = st.next_id;
    st.next_id += 1;
    st.tick += 1;
    let used = st.tick;
    let blob = format!("{GHA_CONTAINER}/{id:08}-{}", short_hash(&format!("{scope}\n{key}\n{version}")));
    st.entries.push(Entry {
        id,
        key: key.into(),
        version: version.into(),
        scope: scope.clone(),
        blob: blob.clone(),
        size: 0,
        finalized_at: None,
        used,
    });
    Ok((id, blob))
}

fn finalize(inner: &Inner, opts: &GhaOptions, scopes: &Scopes, req: &Value) -> Reply {
    let (key, version) = (str_field(req, "key"), str_field(req, "version"));
    if let Some(e) = check_key_version(key, version) {
        return e;
    }
    let size = match req.get("size_bytes") {
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        None => Some(0),
        _ => None,
    };
    let Some(size) = size else { return twirp_error("invalid_argument", "size_bytes is not a non-negative integer") };
    match commit(inner, opts, scopes, key, version, size) {
        Ok(id) => ok_json(json!({"ok": true, "entry_id": id.to_string()})),
        Err(reply) => reply,
    }
}

/// Commits the reserved `(key, version)` of the token's write scope at `size` bytes (what was
/// uploaded must be exactly that): its entry id, or the Twirp error to answer.
fn commit(inner: &Inner, opts: &GhaOptions, scopes: &Scopes, key: &str, version: &str, size: u64) -> std::result::Result<u64, Reply> {
    let Some(scope) = &scopes.write else {
        return Err(twirp_error("permission_denied", "the runtime token has no write scope (read-only token)"));
    };
    let mut st = lock(&inner.state);
    st.tick += 1;
    let tick = st.tick;
    let State { entries, blobs, .. } = &mut *st;
    let Some(entry) = entries.iter_mut().find(|e| e.key == key && e.version == version && &e.scope == scope) else {
        return Err(twirp_error("not_found", format!("no reserved cache entry {key:?} for this version in scope {scope:?}")));
    };
    if entry.finalized_at.is_some() {
        if entry.size == size {
            return Ok(entry.id);
        }
        return Err(twirp_error("invalid_argument", format!("cache entry {key:?} is already finalized with {} bytes", entry.size)));
    }
    let Some(uploaded) = blobs.get(&entry.blob).and_then(|b| b.committed.as_ref()).map(|d| d.len() as u64) else {
        return Err(twirp_error("failed_precondition", format!("nothing was uploaded for cache entry {key:?}")));
    };
    if uploaded != size {
        return Err(twirp_error("invalid_argument", format!("size_bytes {size} does not match the {uploaded} bytes uploaded")));
    }
    entry.size = size;
    entry.finalized_at = Some(SystemTime::now());
    entry.used = tick;
    let id = entry.id;
    if let Some(b) = blobs.get_mut(&entry.blob) {
        b.sealed = true;
        b.uncommitted.clear();
    }
    if let Some(cap) = opts.max_total_bytes {
        enforce_cap(inner, &mut st, cap);
    }
    Ok(id)
}

/// Evicts finalized entries, least recently used first, until they fit `cap`.
fn enforce_cap(inner: &Inner, st: &mut State, cap: u64) {
    loop {
        let total: u64 = st.entries.iter().filter(|e| e.finalized_at.is_some()).map(|e| e.size).sum();
        if total <= cap {
            return;
        }
        let Some(i) = st.entries.iter().enumerate().filter(|(_, e)| e.finalized_at.is_some()).min_by_key(|(_, e)| e.used).map(|(i, _)| i)
        else {
            return;
        };
        let e = st.entries.remove(i);
        st.blobs.remove(&e.blob);
        inner.counters.evictions.fetch_add(1, Ordering::SeqCst);
    }
}

fn get(inner: &Inner, opts: &GhaOptions, scopes: &Scopes, req: &Value) -> Reply {
    let (key, version) = (str_field(req, "key"), str_field(req, "version"));
    let restore: Vec<&str> = req.get("restore_keys").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    match lookup(inner, opts, scopes, key, &restore, version) {
        Err(reply) => reply,
        Ok(None) => ok_json(json!({"ok": false, "signed_download_url": "", "matched_key": ""})),
        Ok(Some(hit)) => {
            let url = sign_url(inner, &hit.blob, "r", opts.download_url_lifetime);
            ok_json(json!({"ok": true, "signed_download_url": url, "matched_key": hit.key}))
        }
    }
}

/// What a lookup found.
struct Hit {
    key: String,
    blob: String,
    scope: String,
}

/// GitHub's cache key matching (see the module doc): in each readable scope, the exact key, then
/// the key and each restore key as prefixes, newest first. A hit counts as a use (LRU).
fn lookup(
    inner: &Inner,
    opts: &GhaOptions,
    scopes: &Scopes,
    key: &str,
    restore: &[&str],
    version: &str,
) -> std::result::Result<Option<Hit>, Reply> {
    if let Some(e) = check_key_version(key, version) {
        return Err(e);
    }
    let now = SystemTime::now();
    let mut st = lock(&inner.state);
    let visible = |e: &Entry| e.version == version && e.finalized_at.is_some_and(|t| t + opts.visibility_delay <= now);
    let mut found = None;
    'scopes: for scope in &scopes.read {
        let in_scope = |e: &&Entry| &e.scope == scope && visible(e);
        if let Some(e) = st.entries.iter().filter(in_scope).filter(|e| e.key == key).max_by_key(|e| e.id) {
            found = Some(e.id);
            break;
        }
        for prefix in std::iter::once(key).chain(restore.iter().copied()) {
            if prefix.is_empty() {
                continue;
            }
            let newest = st.entries.iter().filter(in_scope).filter(|e| e.key.starts_with(prefix)).max_by_key(|e| (e.finalized_at, e.id));
            if let Some(e) = newest {
                found = Some(e.id);
                break 'scopes;
            }
        }
    }
    let Some(id) = found else { return Ok(None) };
    st.tick += 1;
    let tick = st.tick;
    let Some(e) = st.entries.iter_mut().find(|e| e.id == id) else { return Err(twirp_error("internal", "entry vanished")) };
    e.used = tick;
    Ok(Some(Hit { key: e.key.clone(), blob: e.blob.clone(), scope: e.scope.clone() }))
}

fn short_hash(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn sas_string(sp: &str, se: &str, sv: &str, sr: &str, path: &str) -> String {
    format!("{sp}\n{se}\n{sv}\n{sr}\n{path}")
}

/// A SAS URL for `blob` (`container/name`) with permissions `sp`, living `lifetime` (rounded up to whole seconds).
fn sign_url(inner: &Inner, blob: &str, sp: &str, lifetime: Duration) -> String {
    let exp = SystemTime::now() + lifetime;
    let secs = exp.duration_since(UNIX_EPOCH).map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(0);
    let se = iso8601(secs);
    let path = format!("/{blob}");
    let sig = ring::hmac::sign(&inner.sas_key, sas_string(sp, &se, STORAGE_VERSION, "b", &path).as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
    let base = inner.blob_base.get().map(String::as_str).unwrap_or("http://127.0.0.1:0/");
    let encoded_path: Vec<String> = blob.split('/').map(pct_encode).collect();
    format!(
        "{base}{}?sv={STORAGE_VERSION}&sr=b&sp={}&se={}&sig={}",
        encoded_path.join("/"),
        pct_encode(sp),
        pct_encode(&se),
        pct_encode(&sig)
    )
}

// ---------------------------------------------------------------- blob store

fn azure_error(status: u16, code: &str, msg: &str, detail: Option<&str>) -> Reply {
    let now = SystemTime::now();
    let rid = request_id();
    let detail = detail.map(|d| format!("<AuthenticationErrorDetail>{}</AuthenticationErrorDetail>", xml_escape(d))).unwrap_or_default();
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{}\nRequestId:{rid}\nTime:{}</Message>{detail}</Error>",
        xml_escape(msg),
        iso8601_fraction(now)
    );
    Reply::new(status, "application/xml", body.into_bytes())
        .header("x-ms-error-code", code)
        .header("x-ms-request-id", rid)
        .header("x-ms-version", STORAGE_VERSION)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    format!("{:08x}-0000-0000-0000-{:012x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn blob_op(head: &Head) -> &'static str {
    match (head.method.as_str(), head.query("comp")) {
        ("PUT", Some("block")) => "PutBlock",
        ("PUT", Some("blocklist")) => "PutBlockList",
        ("PUT", None) => "PutBlob",
        ("GET", None) => "GetBlob",
        ("HEAD", None) => "HeadBlob",
        _ => "Other",
    }
}

fn blob(inner: &Inner, head: &Head, r: &mut impl BufRead) -> (Reply, bool) {
    inner.counters.blob_requests.fetch_add(1, Ordering::SeqCst);
    let op = blob_op(head);
    *lock(&inner.blob_ops).entry(op.to_string()).or_insert(0) += 1;
    let opts = lock(&inner.options).clone();
    // Azure authenticates a request when it arrives: a transfer that started
    // with a valid URL finishes even if the URL expires meanwhile.
    let auth = check_sas(inner, head, op);
    // The body is read first (throttled), so a fault answered afterwards leaves the connection usable.
    let body = match read_body(inner, head, r, MAX_BLOB_BODY, op.starts_with("Put")) {
        Ok(b) => b,
        Err(BodyError::NoLength) => {
            return (azure_error(411, "MissingContentLengthHeader", "Content-Length HTTP header is missing.", None), false);
        }
        Err(BodyError::TooLarge) => {
            return (
                azure_error(413, "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit.", None),
                false,
            )
        }
        Err(BodyError::Broken) => return (azure_error(400, "InvalidInput", "The request body could not be read.", None), false),
    };
    if draw(inner, opts.html_error_rate) {
        inner.counters.html_errors.fetch_add(1, Ordering::SeqCst);
        return (html_502(), true);
    }
    if draw(inner, opts.blob_503_rate) {
        inner.counters.rejected_503.fetch_add(1, Ordering::SeqCst);
        let reply = azure_error(503, "ServerBusy", "The server is currently unable to receive requests. Please retry your request.", None);
        return (reply, true);
    }
    let blob = head.path.trim_start_matches('/').to_string();
    if let Err(reply) = auth {
        if reply.headers.iter().any(|(k, v)| k == "x-ms-error-code" && v == "AuthenticationFailed") {
            inner.counters.auth_failures.fetch_add(1, Ordering::SeqCst);
        }
        return (reply, true);
    }
    let reply = match op {
        "PutBlob" => put_blob(inner, head, &blob, body),
        "PutBlock" => put_block(inner, head, &blob, body),
        "PutBlockList" => put_block_list(inner, &blob, &body),
        "GetBlob" | "HeadBlob" => get_blob(inner, head, &blob, op == "HeadBlob"),
        _ => azure_error(
            400,
            "UnsupportedQueryParameter",
            "One of the query parameters specified in the request URI is not supported.",
            None,
        ),
    };
    (reply, true)
}

fn check_sas(inner: &Inner, head: &Head, op: &str) -> std::result::Result<(), Reply> {
    let fail = |detail: String| {
        azure_error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            Some(&detail),
        )
    };
    let (Some(sv), Some(se), Some(sp), Some(sr), Some(sig)) =
        (head.query("sv"), head.query("se"), head.query("sp"), head.query("sr"), head.query("sig"))
    else {
        return Err(fail("The request is not signed: sv, se, sp, sr and sig are required.".into()));
    };
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
        return Err(fail("Signature fields not well formed.".into()));
    };
    if ring::hmac::verify(&inner.sas_key, sas_string(sp, se, sv, sr, &head.path).as_bytes(), &sig).is_err() {
        return Err(fail("Signature did not match. String to sign used was not the one signed.".into()));
    }
    let Some(expiry) = parse_iso8601(se) else { return Err(fail(format!("se {se:?} is not a valid time."))) };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    if now >= expiry as f64 {
        return Err(fail(format!(
            "Signed expiry time [{}] has to be after current time [{}]",
            http_date_secs(expiry),
            http_date_secs(now as u64)
        )));
    }
    let need = if op.starts_with("Put") { 'w' } else { 'r' };
    if !sp.contains(need) {
        return Err(azure_error(
            403,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
            None,
        ));
    }
    Ok(())
}

fn created(etag_src: usize) -> Reply {
    let now = SystemTime::now();
    Reply::new(201, "application/octet-stream", Vec::new())
        .header("ETag", format!("\"0x{:X}{:04X}\"", unix(now) as u64, etag_src % 0xFFFF))
        .header("Last-Modified", http_date(now))
        .header("x-ms-request-id", request_id())
        .header("x-ms-version", STORAGE_VERSION)
        .header("x-ms-request-server-encrypted", "true")
}

fn sealed() -> Reply {
    azure_error(
        403,
        "AuthorizationPermissionMismatch",
        "This request is not authorized to perform this operation using this permission.",
        None,
    )
}

fn put_blob(inner: &Inner, head: &Head, name: &str, body: Vec<u8>) -> Reply {
    if !head.header("x-ms-blob-type").is_some_and(|v| v.eq_ignore_ascii_case("BlockBlob")) {
        return azure_error(400, "MissingRequiredHeader", "An HTTP header that's mandatory for this request is not specified.", None)
            .header("x-ms-header-name", "x-ms-blob-type");
    }
    let mut st = lock(&inner.state);
    let b = st.blobs.entry(name.to_string()).or_default();
    if b.sealed {
        return sealed();
    }
    let n = body.len();
    b.committed = Some(Arc::new(body));
    b.committed_blocks.clear();
    b.uncommitted.clear();
    b.modified = Some(SystemTime::now());
    created(n)
}

fn put_block(inner: &Inner, head: &Head, name: &str, body: Vec<u8>) -> Reply {
    let Some(id) = head.query("blockid").filter(|id| base64::engine::general_purpose::STANDARD.decode(id).is_ok() && !id.is_empty()) else {
        return azure_error(
            400,
            "InvalidQueryParameterValue",
            "Value for one of the query parameters specified in the request URI is invalid.",
            None,
        );
    };
    let mut st = lock(&inner.state);
    let b = st.blobs.entry(name.to_string()).or_default();
    if b.sealed {
        return sealed();
    }
    let n = body.len();
    b.uncommitted.insert(id.to_string(), body);
    created(n)
}

fn put_block_list(inner: &Inner, name: &str, body: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(body);
    let Some(list) = parse_block_list(&text) else {
        return azure_error(400, "InvalidXmlDocument", "XML specified is not syntactically valid.", None);
    };
    let mut st = lock(&inner.state);
    let b = st.blobs.entry(name.to_string()).or_default();
    if b.sealed {
        return sealed();
    }
    let mut data = Vec::new();
    let mut used = HashMap::new();
    for (kind, id) in &list {
        let block = match kind.as_str() {
            "Committed" => b.committed_blocks.get(id),
            "Uncommitted" => b.uncommitted.get(id),
            _ => b.uncommitted.get(id).or_else(|| b.committed_blocks.get(id)),
        };
        let Some(block) = block else {
            return azure_error(400, "InvalidBlockList", "The specified block list is invalid.", None);
        };
        data.extend_from_slice(block);
        used.insert(id.clone(), block.clone());
    }
    let n = data.len();
    b.committed = Some(Arc::new(data));
    b.committed_blocks = used;
    b.uncommitted.clear();
    b.modified = Some(SystemTime::now());
    created(n)
}

/// `(Latest|Committed|Uncommitted, block id)` in document order.
fn parse_block_list(xml: &str) -> Option<Vec<(String, String)>> {
    let start = xml.find("<BlockList>")? + "<BlockList>".len();
    let end = xml.rfind("</BlockList>")?;
    let mut rest = xml.get(start..end)?;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some(out);
        }
        let open_end = rest.find('>')?;
        let tag = rest.strip_prefix('<')?.get(..open_end - 1)?.trim().to_string();
        if !matches!(tag.as_str(), "Latest" | "Committed" | "Uncommitted") {
            return None;
        }
        let after = &rest[open_end + 1..];
        let close = format!("</{tag}>");
        let close_at = after.find(&close)?;
        out.push((tag, after[..close_at].trim().to_string()));
        rest = &after[close_at + close.len()..];
    }
}

/// `bytes=A-B` or `bytes=A-` → `(A, Some(B) | None)`.
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = if b.trim().is_empty() { None } else { Some(b.trim().parse().ok()?) };
    if b.is_some_and(|b| b < a) {
        return None;
    }
    Some((a, b))
}

fn get_blob(inner: &Inner, head: &Head, name: &str, head_only: bool) -> Reply {
    let (data, modified) = {
        let st = lock(&inner.state);
        match st.blobs.get(name).and_then(|b| b.committed.clone().map(|d| (d, b.modified))) {
            Some(x) => x,
            None => return azure_error(404, "BlobNotFound", "The specified blob does not exist.", None),
        }
    };
    let total = data.len() as u64;
    let range = head.header("x-ms-range").or_else(|| head.header("range")).and_then(parse_range);
    let modified = modified.unwrap_or(UNIX_EPOCH);
    let common = |status: u16| {
        Reply::new(status, "application/octet-stream", Vec::new())
            .header("Accept-Ranges", "bytes")
            .header("ETag", format!("\"0x{:X}{:04X}\"", unix(modified) as u64, total % 0xFFFF))
            .header("Last-Modified", http_date(modified))
            .header("x-ms-blob-type", "BlockBlob")
            .header("x-ms-request-id", request_id())
            .header("x-ms-version", STORAGE_VERSION)
            .header("x-ms-creation-time", http_date(modified))
    };
    let (mut reply, start, len) = match range {
        None => (common(200), 0, total),
        Some((a, _)) if a >= total => {
            return azure_error(416, "InvalidRange", "The range specified is invalid for the current size of the resource.", None)
                .header("Content-Range", format!("bytes */{total}"));
        }
        Some((a, b)) => {
            let last = b.unwrap_or(total - 1).min(total - 1);
            (common(206).header("Content-Range", format!("bytes {a}-{last}/{total}")), a, last - a + 1)
        }
    };
    reply.body = if head_only { Body::Empty { len: len as usize } } else { Body::Blob { data, start: start as usize, len: len as usize } };
    reply
}

// ---------------------------------------------------------------- time formatting

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn iso8601(secs: u64) -> String {
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

fn iso8601_fraction(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let whole = iso8601(d.as_secs());
    format!("{}.{:07}Z", whole.trim_end_matches('Z'), d.subsec_nanos() / 100)
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` to Unix seconds.
fn parse_iso8601(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + se)).ok()
}

fn http_date_secs(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs / 86_400;
    let (y, mo, d) = civil(days as i64);
    let s = secs % 86_400;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(mo - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn http_date(t: SystemTime) -> String {
    http_date_secs(t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(parse_iso8601("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(parse_iso8601("2024-02-29 12:34:56Z"), None);
        assert_eq!(http_date_secs(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn block_list_and_ranges() {
        let xml =
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList>\n  <Latest>QQ==</Latest><Uncommitted>Qg==</Uncommitted>\n</BlockList>";
        assert_eq!(parse_block_list(xml), Some(vec![("Latest".into(), "QQ==".into()), ("Uncommitted".into(), "Qg==".into())]));
        assert_eq!(parse_block_list("<BlockList><Bogus>x</Bogus></BlockList>"), None);
        assert_eq!(parse_range("bytes=5-9"), Some((5, Some(9))));
        assert_eq!(parse_range("bytes=5-"), Some((5, None)));
        assert_eq!(parse_range("bytes=9-5"), None);
    }

    #[test]
    fn percent_coding() {
        assert_eq!(pct_decode(&pct_encode("a+b/c=d:e")), "a+b/c=d:e");
        assert_eq!(pct_decode("%zz%4"), "%zz%4");
    }
}
