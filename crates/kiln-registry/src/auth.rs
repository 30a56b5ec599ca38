//! Authentication: parsing `WWW-Authenticate` challenges, scopes, and the token cache.
//!
//! A registry says how it wants to be spoken to in the 401 answer to `GET /v2/`: nothing (200),
//! `Basic` (send the user and password on every request) or `Bearer` (ask the token server named by
//! `realm` for a short-lived token for a `service` and a set of `scope`s). Tokens are cached per
//! registry and scope set, and are treated as expired a margin before they really expire, so that a
//! request never leaves with a token that dies on the way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One challenge of a `WWW-Authenticate` header: a scheme and its parameters (names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }
    pub fn is_basic(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("basic")
    }
}

/// Parses a `WWW-Authenticate` value into its challenges (RFC 7235: `scheme k=v, k="v", scheme2 ...`).
/// Quoted strings may contain commas and backslash escapes; unknown junk is skipped rather than
/// failing, since a registry's odd header should not stop a pull that anonymous access would allow.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let is_tok = |c: u8| !matches!(c, b' ' | b'\t' | b',' | b'=' | b'"');
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        // A token: either a new scheme or a parameter name.
        let start = i;
        while i < b.len() && is_tok(b[i]) {
            i += 1;
        }
        let word = &header[start..i];
        if word.is_empty() {
            // Stray quote or '='; skip one byte to guarantee progress.
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            // Parameter of the current challenge.
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Push whole UTF-8 characters, not bytes.
                    let ch_len = utf8_len(b[i]);
                    let end = (i + ch_len).min(b.len());
                    v.push_str(header.get(i..end).unwrap_or(""));
                    i = end;
                }
                i += 1; // closing quote
                v
            } else {
                let s = i;
                while i < b.len() && b[i] != b',' && b[i] != b' ' && b[i] != b'\t' {
                    i += 1;
                }
                header[s..i].to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
        } else if j < b.len() && b[j] == b'=' {
            // A parameter before any scheme: ignore it.
            i = j + 1;
        } else {
            out.push(Challenge { scheme: word.to_string(), params: BTreeMap::new() });
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// What a request needs to be allowed to do: `repository:NAME:ACTIONS` entries, kept sorted so the
/// same set always gives the same cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Scopes(BTreeMap<String, Vec<String>>);

impl Scopes {
    pub fn pull(repo: &str) -> Self {
        let mut s = Scopes::default();
        s.add(repo, "pull");
        s
    }
    pub fn push(repo: &str) -> Self {
        let mut s = Scopes::default();
        s.add(repo, "pull");
        s.add(repo, "push");
        s
    }
    /// Push to `repo` and mount from `from`: `repository:repo:pull,push repository:from:pull`.
    pub fn mount(repo: &str, from: &str) -> Self {
        let mut s = Scopes::push(repo);
        s.add(from, "pull");
        s
    }
    pub fn add(&mut self, repo: &str, action: &str) {
        let a = self.0.entry(repo.to_string()).or_default();
        if !a.iter().any(|x| x == action) {
            a.push(action.to_string());
            a.sort();
        }
    }
    /// Adds the scopes a 401 challenge asks for (`scope="repository:x:pull,push"`, space separated).
    pub fn merge_challenge(&mut self, scope: &str) {
        for one in scope.split(' ').filter(|s| !s.is_empty()) {
            // Repository names may contain ':' only in the host part of other resource types; take
            // the last ':' as the actions separator.
            let Some((res, actions)) = one.rsplit_once(':') else {
                continue;
            };
            let Some(name) = res.strip_prefix("repository:") else {
                continue;
            };
            for a in actions.split(',').filter(|a| !a.is_empty()) {
                self.add(name, a);
            }
        }
    }
    /// The scope strings as the token server wants them, one per repository.
    pub fn strings(&self) -> Vec<String> {
        self.0.iter().map(|(repo, actions)| format!("repository:{repo}:{}", actions.join(","))).collect()
    }
    pub fn key(&self) -> String {
        self.strings().join(" ")
    }
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub obtained: Instant,
    pub lifetime: Duration,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("value", &"<redacted>").field("lifetime", &self.lifetime).finish()
    }
}

impl Token {
    /// The margin before expiry at which the token is fetched again: a third of its life, at most
    /// 30 s. A third leaves room for the request to reach the registry even for 2 s tokens.
    pub fn margin(&self) -> Duration {
        (self.lifetime / 3).min(Duration::from_secs(30))
    }
    pub fn fresh_at(&self, now: Instant) -> bool {
        now + self.margin() < self.obtained + self.lifetime
    }
}

/// The token server's JSON answer.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and its lifetime; 60 s when the server does not say, as the spec prescribes.
    pub fn into_token(self, obtained: Instant) -> Option<Token> {
        let value = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let secs = self.expires_in.filter(|&s| s > 0).unwrap_or(60);
        Some(Token { value, obtained, lifetime: Duration::from_secs(secs) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:samalba/my-app:pull,push"));
    }

    #[test]
    fn parses_multiple_challenges_spaces_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="Registry \"Realm\", v2" , Bearer  realm = "http://127.0.0.1:1/t" , service=reg,error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].is_basic());
        assert_eq!(c[0].param("realm"), Some("Registry \"Realm\", v2"));
        assert!(c[1].is_bearer());
        assert_eq!(c[1].param("realm"), Some("http://127.0.0.1:1/t"));
        assert_eq!(c[1].param("service"), Some("reg"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn junk_headers_do_not_panic() {
        for h in ["", "=", "\"", "Bearer realm=\"unterminated", "=,=,\"\"", "Bearer ,,, x=", "é=\"ü"] {
            let _ = parse_challenges(h);
        }
        assert_eq!(parse_challenges("Bearer realm=\"unterminated")[0].param("realm"), Some("unterminated"));
    }

    #[test]
    fn scopes_merge_and_sort() {
        let mut s = Scopes::mount("a/b", "c");
        assert_eq!(s.key(), "repository:a/b:pull,push repository:c:pull");
        s.merge_challenge("repository:c:pull repository:d/e:push,pull");
        assert_eq!(
            s.strings(),
            vec!["repository:a/b:pull,push".to_string(), "repository:c:pull".to_string(), "repository:d/e:pull,push".to_string()]
        );
    }

    #[test]
    fn token_margin_is_relative_to_lifetime() {
        let t0 = Instant::now();
        let t = Token { value: "x".into(), obtained: t0, lifetime: Duration::from_secs(2) };
        assert!(t.fresh_at(t0));
        assert!(t.fresh_at(t0 + Duration::from_millis(1200)));
        assert!(!t.fresh_at(t0 + Duration::from_millis(1400)));
        let long = Token { lifetime: Duration::from_secs(300), ..t.clone() };
        assert!(long.fresh_at(t0 + Duration::from_secs(260)));
        assert!(!long.fresh_at(t0 + Duration::from_secs(275)));
        assert!(!format!("{t:?}").contains("\"x\""));
    }

    #[test]
    fn token_response_defaults() {
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"abc"}"#).unwrap();
        let t = r.into_token(Instant::now()).unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.lifetime, Duration::from_secs(60));
        let r: TokenResponse = serde_json::from_str(r#"{"token":"","expires_in":5}"#).unwrap();
        assert!(r.into_token(Instant::now()).is_none());
    }
}
