//! An in-process token server speaking Docker's token protocol.
//!
//! A registry in `auth: token` mode answers 401 with
//! `WWW-Authenticate: Bearer realm="…/token",service="…",scope="…"`. The client
//! fetches a JWT from the realm (GET with basic auth, or the OAuth2 POST form)
//! and retries with `Authorization: Bearer <jwt>`.
//!
//! The JWT is signed ES256 by a P-256 key made at start. Its header carries
//! the signing certificate in `x5c`; that same self-signed certificate is the
//! registry's `rootcertbundle`, so distribution 2.8 accepts the chain (it tries
//! `x5c`, then `jwk`, then `kid`; `x5c` needs no libtrust key IDs).
//!
//! Expiry: distribution adds 60 s of leeway to `exp` (and `nbf`). To make a
//! token stop working after exactly `lifetime`, all time claims are backdated
//! by that leeway (`exp = now - 60 s + lifetime`), while the response's
//! `expires_in` states the real lifetime. Time claims are whole seconds and
//! `exp` is rounded up, so a token is accepted for at least `lifetime` and at
//! most one second more; lifetimes below one second count as one second.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::error::{Error, Result};
use crate::server::Server;

/// distribution's clock-skew leeway on `exp`/`nbf` (registry/auth/token: `Leeway`).
pub const REGISTRY_LEEWAY: Duration = Duration::from_secs(60);

const MAX_TOKEN_CONNECTIONS: usize = 32;

/// How the token server behaves.
#[derive(Clone)]
pub struct TokenServerOptions {
    /// How long an issued token is accepted by the registry (see the module
    /// doc for the rounding). Also sent as `expires_in`.
    pub lifetime: Duration,
    /// The user granted every action a scope asks for.
    pub user: String,
    /// That user's password.
    pub password: String,
    /// An optional `(user, password)` that only ever gets `pull`.
    pub read_only: Option<(String, String)>,
    /// When true, a request without credentials gets a token with `pull`
    /// access; when false (default) it is answered 401.
    pub anonymous_pull: bool,
    /// Send this as `expires_in` instead of the true lifetime: a token server that overstates its
    /// tokens' life, so a client's refresh-before-expiry cannot help and only its handling of a 401
    /// in the middle of a transfer keeps it going.
    pub claimed_lifetime: Option<Duration>,
}

impl std::fmt::Debug for TokenServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials never reach logs, even test ones: habits leak.
        f.debug_struct("TokenServerOptions")
            .field("lifetime", &self.lifetime)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("read_only", &self.read_only.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("anonymous_pull", &self.anonymous_pull)
            .finish()
    }
}

impl Default for TokenServerOptions {
    fn default() -> Self {
        TokenServerOptions {
            lifetime: Duration::from_secs(300),
            user: "kiln".into(),
            password: "kiln-password".into(),
            read_only: None,
            anonymous_pull: false,
            claimed_lifetime: None,
        }
    }
}

/// One `type:name:actions` grant, as it appears in the JWT `access` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Resource type, e.g. `repository`.
    pub kind: String,
    /// Resource name, e.g. `library/busybox`.
    pub name: String,
    /// Granted actions, e.g. `["pull", "push"]`.
    pub actions: Vec<String>,
}

impl Access {
    /// Parses a scope `type:name:action,action`. The name may itself contain
    /// `:` (not in repository names, but the grammar allows it), so the type
    /// ends at the first colon and the actions start after the last.
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect(),
        })
    }
}

struct Inner {
    options: TokenServerOptions,
    service: String,
    issuer: String,
    key: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    cert_der_b64: String,
    issued: AtomicU64,
    rejected: AtomicU64,
    refresh: Mutex<HashMap<String, Role>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Full,
    ReadOnly,
    Anonymous,
}

/// A running token server on `127.0.0.1:<free port>`; stops on drop.
pub struct TokenServer {
    inner: Arc<Inner>,
    cert_pem: String,
    server: Server,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("realm", &self.realm())
            .field("lifetime", &self.inner.options.lifetime)
            .field("tokens_issued", &self.tokens_issued())
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// Starts a token server issuing tokens for `service` signed as `issuer`.
    ///
    /// Usually reached through [`crate::Registry::start_token`], which also
    /// points a registry at it.
    pub fn start(options: TokenServerOptions, service: &str, issuer: &str) -> Result<TokenServer> {
        let key_pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::Crypto(format!("generate P-256 key: {e}")))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Crypto(format!("certificate parameters: {e}")))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{issuer} token signer"));
        let cert = params.self_signed(&key_pair).map_err(|e| Error::Crypto(format!("self-sign token certificate: {e}")))?;
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key_pair.serialize_der(), &rng)
            .map_err(|e| Error::Crypto(format!("load signing key: {e}")))?;
        let inner = Arc::new(Inner {
            options,
            service: service.to_string(),
            issuer: issuer.to_string(),
            key,
            rng,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            issued: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            refresh: Mutex::new(HashMap::new()),
        });
        let handler_inner = Arc::clone(&inner);
        let server =
            Server::start("token-server", MAX_TOKEN_CONNECTIONS, Arc::new(move |stream| serve_connection(&handler_inner, stream)))?;
        Ok(TokenServer { inner, cert_pem: cert.pem(), server })
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// The PEM certificate whose key signs tokens (the registry's root bundle).
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The options it was started with.
    pub fn options(&self) -> &TokenServerOptions {
        &self.inner.options
    }

    /// The `service` (JWT audience) it issues tokens for.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Access tokens issued so far (GET and POST, including refreshes). Tests
    /// use it to prove a client really renewed its token.
    pub fn tokens_issued(&self) -> u64 {
        self.inner.issued.load(Ordering::SeqCst)
    }

    /// Token requests refused (bad credentials, unknown refresh token, ...).
    pub fn requests_rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::SeqCst)
    }

    /// Mints a token directly, as if the full-access user had asked for
    /// `scopes` — for tests that need a token without an HTTP round trip.
    pub fn issue(&self, scopes: &[&str]) -> Result<String> {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let user = self.inner.options.user.clone();
        self.inner.mint(&user, Role::Full, &scopes)
    }
}

impl Inner {
    fn authenticate(&self, user: &str, password: &str) -> Option<Role> {
        if user == self.options.user && password == self.options.password {
            return Some(Role::Full);
        }
        match &self.options.read_only {
            Some((u, p)) if u == user && p == password => Some(Role::ReadOnly),
            _ => None,
        }
    }

    fn grant(role: Role, scopes: &[String]) -> Vec<Access> {
        scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(Access::parse_scope)
            .map(|mut a| {
                if role != Role::Full {
                    a.actions.retain(|x| x == "pull");
                }
                a
            })
            .filter(|a| !a.actions.is_empty())
            .collect()
    }

    fn random_hex(&self, n: usize) -> Result<String> {
        let mut buf = vec![0u8; n];
        self.rng.fill(&mut buf).map_err(|_| Error::Crypto("system random source failed".into()))?;
        Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn mint(&self, subject: &str, role: Role, scopes: &[String]) -> Result<String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // Rounded up: a client that trusts expires_in must never hold a token
        // the registry already refuses.
        let now = unix_now_ceil();
        let lifetime = self.options.lifetime.as_secs().max(1) as i64;
        let backdated = now - REGISTRY_LEEWAY.as_secs() as i64;
        let access: Vec<serde_json::Value> = Self::grant(role, scopes)
            .into_iter()
            .map(|a| serde_json::json!({"type": a.kind, "name": a.name, "actions": a.actions}))
            .collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": backdated + lifetime,
            "nbf": backdated,
            "iat": backdated,
            "jti": self.random_hex(16)?,
            "access": access,
        });
        let signing_input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
        let sig = self.key.sign(&self.rng, signing_input.as_bytes()).map_err(|_| Error::Crypto("ES256 signing failed".into()))?;
        self.issued.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{signing_input}.{}", b64.encode(sig.as_ref())))
    }
}

fn unix_now_ceil() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0)).unwrap_or(0)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// RFC 3339 UTC timestamp without a date crate (civil-from-days, H. Hinnant).
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Decodes `application/x-www-form-urlencoded` / query-string pairs.
pub(crate) fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_connection(inner: &Inner, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let req = match crate::http::read_request(&mut reader) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "token server: bad request");
            let _ = respond(&mut writer, 400, &[], &error_body("bad request"));
            return;
        }
    };
    let (status, extra, body) = handle(inner, &req);
    if status >= 400 {
        inner.rejected.fetch_add(1, Ordering::SeqCst);
    }
    let _ = respond(&mut writer, status, &extra, &body);
}

type Reply = (u16, Vec<(String, String)>, String);

fn error_body(msg: &str) -> String {
    serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": msg}], "details": msg}).to_string()
}

fn unauthorized(msg: &str) -> Reply {
    (401, vec![("WWW-Authenticate".into(), "Basic realm=\"kiln-testkit token server\"".into())], error_body(msg))
}

fn handle(inner: &Inner, req: &crate::http::Request) -> Reply {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    if path != "/token" {
        return (404, vec![], error_body("no such endpoint; use /token"));
    }
    let mut params = parse_form(query);
    if req.method == "POST" {
        params.extend(parse_form(&String::from_utf8_lossy(&req.body)));
    } else if req.method != "GET" {
        return (405, vec![("Allow".into(), "GET, POST".into())], error_body("use GET or POST"));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(svc) = get("service") {
        if svc != inner.service {
            return (400, vec![], error_body(&format!("unknown service {svc:?}; this server issues tokens for {:?}", inner.service)));
        }
    }
    let scopes: Vec<String> = params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();

    let (subject, role, offline) = if req.method == "POST" {
        match get("grant_type") {
            Some("password") => {
                let user = get("username").unwrap_or("");
                let pass = get("password").unwrap_or("");
                match inner.authenticate(user, pass) {
                    Some(role) => (user.to_string(), role, get("access_type") == Some("offline")),
                    None => return unauthorized("wrong username or password"),
                }
            }
            Some("refresh_token") => {
                let rt = get("refresh_token").unwrap_or("");
                let found = inner.refresh.lock().unwrap_or_else(|e| e.into_inner()).get(rt).copied();
                match found {
                    Some(role) => {
                        let subject = match role {
                            Role::Full => inner.options.user.clone(),
                            Role::ReadOnly => inner.options.read_only.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
                            Role::Anonymous => String::new(),
                        };
                        // Hand the same refresh token back: clients may keep using it.
                        return token_reply(inner, &subject, role, &scopes, Some(rt.to_string()));
                    }
                    None => return unauthorized("unknown refresh token"),
                }
            }
            other => return (400, vec![], error_body(&format!("unsupported grant_type {other:?}; use password or refresh_token"))),
        }
    } else {
        match req.header("authorization").and_then(parse_basic) {
            Some((user, pass)) => match inner.authenticate(&user, &pass) {
                Some(role) => (user, role, get("offline_token") == Some("true")),
                None => return unauthorized("wrong username or password"),
            },
            None if inner.options.anonymous_pull => (String::new(), Role::Anonymous, false),
            None => return unauthorized("credentials required"),
        }
    };
    let refresh = if offline {
        match inner.random_hex(24) {
            Ok(rt) => {
                inner.refresh.lock().unwrap_or_else(|e| e.into_inner()).insert(rt.clone(), role);
                Some(rt)
            }
            Err(e) => return (500, vec![], error_body(&e.to_string())),
        }
    } else {
        None
    };
    token_reply(inner, &subject, role, &scopes, refresh)
}

fn token_reply(inner: &Inner, subject: &str, role: Role, scopes: &[String], refresh: Option<String>) -> Reply {
    let token = match inner.mint(subject, role, scopes) {
        Ok(t) => t,
        Err(e) => return (500, vec![], error_body(&e.to_string())),
    };
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": inner.options.claimed_lifetime.unwrap_or(inner.options.lifetime).as_secs().max(1),
        "issued_at": rfc3339(unix_now()),
    });
    if let (Some(rt), Some(obj)) = (refresh, body.as_object_mut()) {
        obj.insert("refresh_token".into(), serde_json::Value::String(rt));
    }
    (200, vec![], body.to_string())
}

fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn respond(w: &mut impl Write, status: u16, extra: &[(String, String)], body: &str) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        crate::http::reason(status),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parsing_keeps_colons_in_names() {
        let a = Access::parse_scope("repository:library/busybox:pull,push").expect("parse");
        assert_eq!(a.kind, "repository");
        assert_eq!(a.name, "library/busybox");
        assert_eq!(a.actions, vec!["pull", "push"]);
        let c = Access::parse_scope("registry:catalog:*").expect("parse");
        assert_eq!((c.name.as_str(), c.actions[0].as_str()), ("catalog", "*"));
        assert!(Access::parse_scope("nonsense").is_none());
    }

    #[test]
    fn read_only_role_gets_only_pull() {
        let g = Inner::grant(Role::ReadOnly, &["repository:a:pull,push repository:b:push".into()]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name, "a");
        assert_eq!(g[0].actions, vec!["pull"]);
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn debug_redacts_passwords() {
        let o = TokenServerOptions { read_only: Some(("r".into(), "ropass".into())), ..TokenServerOptions::default() };
        let d = format!("{o:?}");
        assert!(!d.contains("kiln-password") && !d.contains("ropass"), "{d}");
        assert!(d.contains("<redacted>"));
    }

    #[test]
    fn form_decoding() {
        let f = parse_form("scope=repository%3Aa%2Fb%3Apull&x=a+b&bad=%zz");
        assert_eq!(f[0], ("scope".into(), "repository:a/b:pull".into()));
        assert_eq!(f[1].1, "a b");
        assert_eq!(f[2].1, "%zz");
    }
}
