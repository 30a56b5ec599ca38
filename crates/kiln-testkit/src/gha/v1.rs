//! The legacy cache service (v1, `ACTIONS_CACHE_URL`), still served by GitHub Enterprise Server,
//! on the same port as the Twirp service and over the same entries and blob store.
//!
//! # The protocol
//!
//! From actions/toolkit `packages/cache/src/internal/cacheHttpClient.ts` (before v2) and
//! tonistiigi/go-actions-cache `cache.go` (BuildKit's client), both under
//! `{ACTIONS_CACHE_URL}_apis/artifactcache/` with `Authorization: Bearer TOKEN` and
//! `Accept: application/json;api-version=6.0-preview.1`:
//! - `GET cache?keys=K1,K2,…&version=V`: `200 {cacheKey, scope, archiveLocation}` for the first key
//!   that matches (exact, then prefix, newest first), `204` with no body for a miss. The
//!   `archiveLocation` is a signed blob URL, as v2's download URL, with the same lifetime.
//! - `POST caches {key, version, cacheSize}`: reserves the key, `{cacheId}`; `409` when it exists or
//!   is reserved.
//! - `PATCH caches/{cacheId}` with `Content-Type: application/octet-stream` and
//!   `Content-Range: bytes START-END/*`: one chunk of the upload (toolkit sends 32 MiB chunks, in
//!   parallel, in any order). The bytes go to the service itself, under the runtime token: no
//!   signed URL is involved, so an upload cannot outlive one.
//! - `POST caches/{cacheId} {size}`: commits; the chunks must cover `0..size` exactly. `204`.
//!
//! # Where it guesses
//!
//! - Error bodies: Azure DevOps' JSON `{"$id","innerException","message","typeName","typeKey",
//!   "errorCode","eventId"}`, with the Twirp code as `typeKey` (the real type names differ).
//! - Overlapping chunks are refused (`400`); a commit with a hole is `400`; the real service's
//!   answers for these are unknown.
//! - Injected faults (429 with `Retry-After`, HTML 502) follow the Twirp side's options; chunk
//!   bodies are throttled like blob bodies.

use super::*;

/// Routes a request under `/_apis/artifactcache/`.
pub(super) fn serve(inner: &Inner, head: &Head, r: &mut impl BufRead) -> (Reply, bool) {
    let rest = head.path.strip_prefix("/_apis/artifactcache/").unwrap_or("");
    let id = rest.strip_prefix("caches/").and_then(|n| n.parse::<u64>().ok());
    let call = match (head.method.as_str(), rest, id) {
        ("GET", "cache", _) => "v1/GetCacheEntry",
        ("POST", "caches", _) => "v1/ReserveCache",
        ("PATCH", _, Some(_)) => "v1/UploadCache",
        ("POST", _, Some(_)) => "v1/CommitCache",
        _ => "v1/Other",
    };
    *lock(&inner.calls).entry(call.to_string()).or_insert(0) += 1;
    let limit = if call == "v1/UploadCache" { MAX_BLOB_BODY } else { 1 << 20 };
    let body = match read_body(inner, head, r, limit, call == "v1/UploadCache") {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return (error(413, "RequestBodyTooLarge", "request body too large"), false),
        Err(_) => return (error(400, "malformed", "the request body could not be read (chunked bodies are not supported)"), false),
    };
    let opts = lock(&inner.options).clone();
    if draw(inner, opts.html_error_rate) {
        inner.counters.html_errors.fetch_add(1, Ordering::SeqCst);
        return (html_502(), true);
    }
    if draw(inner, opts.twirp_429_rate) {
        inner.counters.rejected_429.fetch_add(1, Ordering::SeqCst);
        let secs = (opts.retry_after.as_secs() + u64::from(opts.retry_after.subsec_nanos() > 0)).max(1);
        return (error(429, "resource_exhausted", "Rate limit exceeded, try again later").header("Retry-After", secs.to_string()), true);
    }
    let scopes = match authenticate(inner, head) {
        Ok(s) => s,
        Err(reply) => return (translate(reply), true),
    };
    let reply = match call {
        "v1/GetCacheEntry" => query(inner, &opts, &scopes, head),
        "v1/ReserveCache" => reserve_cache(inner, &scopes, &body),
        "v1/UploadCache" => upload(inner, &scopes, head, id.unwrap_or(0), body),
        "v1/CommitCache" => commit_cache(inner, &opts, &scopes, id.unwrap_or(0), &body),
        _ => error(404, "not_found", format!("no route for {} {}", head.method, head.path)),
    };
    (reply, true)
}

/// A v1 error body.
fn error(status: u16, kind: &str, message: impl Into<String>) -> Reply {
    let body = json!({"$id": "1", "innerException": null, "message": message.into(), "typeName": kind, "typeKey": kind, "errorCode": 0, "eventId": 3000});
    Reply::new(status, "application/json", body.to_string().into_bytes())
}

/// A Twirp error from the shared code, in v1's shape.
fn translate(reply: Reply) -> Reply {
    let Body::Bytes(b) = &reply.body else { return reply };
    let v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
    let code = v.get("code").and_then(Value::as_str).unwrap_or("internal");
    let msg = v.get("msg").and_then(Value::as_str).unwrap_or("");
    error(reply.status, code, msg)
}

fn query(inner: &Inner, opts: &GhaOptions, scopes: &Scopes, head: &Head) -> Reply {
    let keys: Vec<&str> = head.query("keys").unwrap_or("").split(',').filter(|k| !k.is_empty()).collect();
    let version = head.query("version").unwrap_or("");
    let Some((first, restore)) = keys.split_first() else { return error(400, "invalid_argument", "keys is required") };
    match lookup(inner, opts, scopes, first, restore, version) {
        Err(reply) => translate(reply),
        Ok(None) => Reply::new(204, "application/json", Vec::new()),
        Ok(Some(hit)) => {
            let url = sign_url(inner, &hit.blob, "r", opts.download_url_lifetime);
            ok_json(json!({"cacheKey": hit.key, "scope": hit.scope, "archiveLocation": url}))
        }
    }
}

fn reserve_cache(inner: &Inner, scopes: &Scopes, body: &[u8]) -> Reply {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match reserve(inner, scopes, str_field(&req, "key"), str_field(&req, "version")) {
        Ok((id, _)) => Reply::new(201, "application/json", json!({"cacheId": id}).to_string().into_bytes()),
        Err(reply) => translate(reply),
    }
}

/// The reserved, unfinalized entry `id` of the token's write scope, with its blob path.
fn reserved(inner: &Inner, scopes: &Scopes, id: u64) -> std::result::Result<(String, String, String), Reply> {
    let Some(scope) = &scopes.write else {
        return Err(error(403, "permission_denied", "the runtime token has no write scope (read-only token)"));
    };
    let st = lock(&inner.state);
    match st.entries.iter().find(|e| e.id == id && &e.scope == scope) {
        Some(e) if e.finalized_at.is_none() => Ok((e.key.clone(), e.version.clone(), e.blob.clone())),
        Some(_) => Err(error(400, "failed_precondition", format!("cache {id} is already committed"))),
        None => Err(error(404, "not_found", format!("no reserved cache {id} in scope {scope:?}"))),
    }
}

fn upload(inner: &Inner, scopes: &Scopes, head: &Head, id: u64, body: Vec<u8>) -> Reply {
    let (_, _, blob) = match reserved(inner, scopes, id) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let range = head.header("content-range").unwrap_or("");
    let parsed = range.strip_prefix("bytes ").and_then(|r| r.split_once('/')).and_then(|(span, _)| span.split_once('-'));
    let Some((start, end)) = parsed.and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))) else {
        return error(400, "invalid_argument", format!("Content-Range {range:?} is not `bytes START-END/*`"));
    };
    if end < start || end - start + 1 != body.len() as u64 {
        return error(400, "invalid_argument", format!("Content-Range {range:?} does not match the {} bytes sent", body.len()));
    }
    let mut st = lock(&inner.state);
    let b = st.blobs.entry(blob).or_default();
    let overlaps = b.uncommitted.iter().any(|(k, v)| {
        let s: u64 = k.parse().unwrap_or(0);
        s <= end && start < s + v.len() as u64 && !(s == start && v.len() == body.len())
    });
    if overlaps {
        return error(400, "invalid_argument", format!("chunk {range:?} overlaps a chunk uploaded before"));
    }
    b.uncommitted.insert(format!("{start:020}"), body);
    b.modified = Some(SystemTime::now());
    Reply::new(204, "application/json", Vec::new())
}

fn commit_cache(inner: &Inner, opts: &GhaOptions, scopes: &Scopes, id: u64, body: &[u8]) -> Reply {
    let (key, version, blob) = match reserved(inner, scopes, id) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(size) = req.get("size").and_then(Value::as_u64) else { return error(400, "invalid_argument", "size is required") };
    {
        let mut st = lock(&inner.state);
        let b = st.blobs.entry(blob).or_default();
        let mut chunks: Vec<(u64, Vec<u8>)> = b.uncommitted.drain().map(|(k, v)| (k.parse().unwrap_or(0), v)).collect();
        chunks.sort_by_key(|(s, _)| *s);
        let mut data = Vec::with_capacity(size as usize);
        for (s, v) in chunks {
            if s != data.len() as u64 {
                return error(400, "invalid_argument", format!("the chunks leave a hole at byte {}", data.len()));
            }
            data.extend_from_slice(&v);
        }
        b.committed = Some(Arc::new(data));
    }
    match commit(inner, opts, scopes, &key, &version, size) {
        Ok(_) => Reply::new(204, "application/json", Vec::new()),
        Err(reply) => translate(reply),
    }
}
