//! The legacy cache service (v1), as GitHub Enterprise Server serves it.
//!
//! Under `{ACTIONS_CACHE_URL}_apis/artifactcache/`, with the runtime token as a bearer and
//! `Accept: application/json;api-version=6.0-preview.1` (actions/toolkit's `cacheHttpClient.ts`
//! before v2; tonistiigi/go-actions-cache `cache.go`):
//! - `GET cache?keys=K1,K2&version=V`: `200 {cacheKey, archiveLocation}`, or `204` for a miss. The
//!   archive location is a signed URL that expires like v2's download URL, so it is asked for right
//!   before each read by the same [`EntryReader`](super::EntryReader).
//! - `POST caches {key, version, cacheSize}`: `{cacheId}`, or `409` when the key exists or is
//!   reserved.
//! - `PATCH caches/{id}` with `Content-Range: bytes A-B/*`: one chunk ([`CHUNK`]), sent to the
//!   service under the runtime token, so no URL can expire under an upload; each chunk is retried
//!   on its own (429, 5xx, dropped connection).
//! - `POST caches/{id} {size}`: commits.

use std::io::{self, Read};

use super::{summarize, Created, GhaError, Retry, Service};

/// Upload chunk size: actions/toolkit's default (32 MiB) would hold that much per upload in memory;
/// 8 MiB keeps an export's memory small at a few more requests.
pub const CHUNK: usize = 8 << 20;
const ACCEPT: &str = "application/json;api-version=6.0-preview.1";

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Found {
    cache_key: Option<String>,
    archive_location: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reserved {
    cache_id: Option<serde_json::Value>,
}

/// A query-string component, percent-encoded.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Service {
    /// One v1 request (built by `send` on a fresh request each attempt), retried on 429, 5xx and
    /// dropped connections within the timeout. `Ok` is the status and body of any other answer
    /// but 401/403, which are errors.
    fn v1_call(
        &self,
        call: &str,
        key: &str,
        send: &dyn Fn(&Service) -> Result<ureq::Response, Box<ureq::Error>>,
    ) -> Result<(u16, String), GhaError> {
        let mut retry = Retry::new(self.ep.timeout);
        loop {
            match send(self).map_err(|e| *e) {
                Ok(resp) => {
                    let status = resp.status();
                    let text =
                        resp.into_string().map_err(|source| GhaError::Io { key: key.to_string(), action: "reading the answer", source })?;
                    return Ok((status, text));
                }
                Err(ureq::Error::Status(status, resp)) => {
                    let hint = kiln_registry::client::retry_after(&resp);
                    let message = summarize_v1(&resp.into_string().unwrap_or_default());
                    match status {
                        429 | 500..=599 => retry.wait(call, hint, format!("HTTP {status}: {message}"))?,
                        401 => return Err(GhaError::Unauthorized { call: call.to_string(), status, message }),
                        403 => return Err(GhaError::Denied { call: call.to_string(), message }),
                        _ => return Ok((status, message)),
                    }
                }
                Err(ureq::Error::Transport(t)) => {
                    let last = t.to_string();
                    if retry.wait(call, None, last).is_err() {
                        return Err(GhaError::Transport { call: call.to_string(), source: Box::new(t) });
                    }
                }
            }
        }
    }

    fn v1_url(&self, path: &str) -> String {
        format!("{}_apis/artifactcache/{path}", self.ep.base)
    }

    fn v1_request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent.request(method, &self.v1_url(path)).set("Authorization", &format!("Bearer {}", self.ep.token)).set("Accept", ACCEPT)
    }

    pub(super) fn v1_download_url(&self, key: &str, restore: &[&str]) -> Result<Option<(String, String)>, GhaError> {
        let keys: Vec<&str> = std::iter::once(key).chain(restore.iter().copied().filter(|r| *r != key)).collect();
        let path = format!("cache?keys={}&version={}", pct(&keys.join(",")), pct(&self.version));
        let (status, text) = self.v1_call("GET cache", key, &|s| s.v1_request("GET", &path).call().map_err(Box::new))?;
        if status == 204 || status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(GhaError::Status { call: "GET cache".into(), status, message: text });
        }
        let found: Found = serde_json::from_str(&text).map_err(|source| GhaError::BadAnswer { call: "GET cache".into(), source })?;
        let (Some(url), matched) = (found.archive_location.filter(|u| !u.is_empty()), found.cache_key) else { return Ok(None) };
        let matched = matched.filter(|k| !k.is_empty()).unwrap_or_else(|| key.to_string());
        // Keys match as prefixes too: an exact lookup that found another entry is a miss.
        if restore.is_empty() && matched != key {
            return Ok(None);
        }
        Ok(Some((url, matched)))
    }

    pub(super) fn v1_create(&self, key: &str, size: u64) -> Result<Created, GhaError> {
        let body = serde_json::json!({"key": key, "version": self.version, "cacheSize": size}).to_string();
        let (status, text) = self.v1_call("POST caches", key, &|s| {
            s.v1_request("POST", "caches").set("Content-Type", "application/json").send_string(&body).map_err(Box::new)
        })?;
        match status {
            200 | 201 => {
                let r: Reserved =
                    serde_json::from_str(&text).map_err(|source| GhaError::BadAnswer { call: "POST caches".into(), source })?;
                match r.cache_id {
                    Some(serde_json::Value::Number(n)) => Ok(Created::Upload(n.to_string())),
                    Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Created::Upload(s)),
                    _ => Ok(Created::Exists),
                }
            }
            409 => Ok(Created::Exists),
            _ => Err(GhaError::Status { call: "POST caches".into(), status, message: format!("{key}: {text}") }),
        }
    }

    /// Uploads `size` bytes in [`CHUNK`]s; each chunk is read once and retried on its own.
    pub(super) fn v1_put(
        &self,
        key: &str,
        id: &str,
        size: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
    ) -> Result<(), GhaError> {
        let mut body = open().map_err(|source| GhaError::Io { key: key.to_string(), action: "reading the layer", source })?;
        let path = format!("caches/{id}");
        let mut buf = vec![0u8; CHUNK.min(size.max(1) as usize)];
        let mut offset = 0u64;
        while offset < size {
            let want = (size - offset).min(buf.len() as u64) as usize;
            body.read_exact(&mut buf[..want]).map_err(|source| GhaError::Io {
                key: key.to_string(),
                action: "reading the layer",
                source,
            })?;
            let chunk = &buf[..want];
            let range = format!("bytes {}-{}/*", offset, offset + want as u64 - 1);
            let (status, text) = self.v1_call("PATCH caches", key, &|s| {
                s.v1_request("PATCH", &path)
                    .set("Content-Type", "application/octet-stream")
                    .set("Content-Range", &range)
                    .send_bytes(chunk)
                    .map_err(Box::new)
            })?;
            if !(200..300).contains(&status) {
                return Err(GhaError::Status { call: format!("upload of {key}"), status, message: text });
            }
            offset += want as u64;
        }
        Ok(())
    }

    pub(super) fn v1_finalize(&self, key: &str, id: &str, size: u64) -> Result<(), GhaError> {
        let body = serde_json::json!({"size": size}).to_string();
        let path = format!("caches/{id}");
        let (status, text) = self.v1_call("POST caches/{id}", key, &|s| {
            s.v1_request("POST", &path).set("Content-Type", "application/json").send_string(&body).map_err(Box::new)
        })?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(GhaError::Status { call: "POST caches/{id}".into(), status, message: format!("{key} not committed: {text}") })
        }
    }
}

/// v1 errors are Azure DevOps JSON (`{"message": …, "typeKey": …}`); else as v2's.
fn summarize_v1(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let kind = v.get("typeKey").and_then(|c| c.as_str()).unwrap_or_default();
        let msg = v.get("message").and_then(|c| c.as_str()).unwrap_or_default();
        if !kind.is_empty() || !msg.is_empty() {
            return format!("{kind}: {msg}").trim_matches(|c| c == ':' || c == ' ').to_string();
        }
    }
    summarize(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_and_errors_summarised() {
        assert_eq!(pct("kiln-index-a-1,kiln-index-a-"), "kiln-index-a-1%2Ckiln-index-a-");
        assert_eq!(
            summarize_v1(r#"{"$id":"1","message":"Cache already exists.","typeKey":"ArtifactCacheEntryAlreadyExistsException"}"#),
            "ArtifactCacheEntryAlreadyExistsException: Cache already exists."
        );
        assert_eq!(summarize_v1("<html><head><title>502 Bad Gateway</title></head></html>"), "an HTML page (502 Bad Gateway)");
    }
}
