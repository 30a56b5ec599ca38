//! Blobs: existence checks, downloads that resume, uploads (monolithic, chunked, mounted).
//!
//! Downloads are a [`BlobReader`]: an `io::Read` that hashes as it goes, reconnects with
//! `Range: bytes=N-` when the connection drops, and fails at end of stream if the content does not
//! hash to its digest. Whatever consumes it (a store's atomic put, a file) therefore never commits
//! bad content. Uploads read from a source that can be reopened at any offset, so a failed request
//! costs one chunk, not the whole blob.

use std::io::{self, Read};

use kiln_oci::{Digest, Hasher};

use crate::auth::Scopes;
use crate::client::{drain, path_of, pct_encode, resolve_location, Body, Client, Repo, Req};
use crate::error::{into_io, RegistryError, Result};

/// What happened to a blob that was pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The registry had it already.
    Exists,
    /// Mounted from another repository of the same registry, without moving bytes.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// Opens the content to upload at a byte offset. Called again for every retry.
pub type OpenAt<'a> = dyn Fn(u64) -> io::Result<Box<dyn Read + Send + 'a>> + Sync + 'a;

impl Client {
    fn blob_url(&self, repo: &Repo, digest: &Digest) -> String {
        format!("{}/v2/{}/blobs/{}", self.base_url(&repo.registry), repo.name, digest)
    }

    /// The blob's size when the registry has it, `None` when it does not.
    pub fn blob_exists(&self, repo: &Repo, digest: &Digest, scopes: &Scopes) -> Result<Option<u64>> {
        let reference = format!("{repo}@{digest}");
        let resp = self.send_retrying(
            Req {
                method: "HEAD",
                url: self.blob_url(repo, digest),
                headers: vec![],
                body: Body::Empty,
                repo,
                scopes,
                reference: &reference,
            },
            None,
            true,
        )?;
        match resp.status() {
            200..=299 => {
                let len = resp.header("content-length").and_then(|v| v.parse().ok());
                drain(resp);
                Ok(Some(len.unwrap_or(0)))
            }
            404 => {
                drain(resp);
                Ok(None)
            }
            _ => Err(self.status_error(resp, "HEAD", repo, &reference, "blob")),
        }
    }

    /// A verifying, resuming reader over a blob. `size` (from the descriptor) is checked too.
    pub fn blob_reader(&self, repo: &Repo, digest: &Digest, size: Option<u64>) -> BlobReader<'_> {
        BlobReader {
            client: self,
            repo: repo.clone(),
            digest: digest.clone(),
            size,
            offset: 0,
            hasher: digest.hasher(),
            inner: None,
            failures: 0,
            finished: false,
            reference: format!("{repo}@{digest}"),
            scopes: Scopes::pull(&repo.name),
            start: 0,
            verify: true,
        }
    }

    /// A reader over a blob from `offset` on, not verified (used as an upload source, where the
    /// destination verifies the digest).
    pub fn blob_reader_at(&self, repo: &Repo, digest: &Digest, size: Option<u64>, offset: u64) -> BlobReader<'_> {
        let mut r = self.blob_reader(repo, digest, size);
        r.offset = offset;
        r.start = offset;
        r
    }

    /// Downloads a blob into `w`, verified. On error `w` holds partial content: write into something
    /// that is only committed on success.
    pub fn fetch_blob(&self, repo: &Repo, digest: &Digest, size: Option<u64>, w: &mut dyn io::Write) -> Result<u64> {
        let mut r = self.blob_reader(repo, digest, size);
        let n = copy_large(&mut r, w).map_err(|e| crate::error::from_io(e, format!("{repo}@{digest}: writing the blob")))?;
        Ok(n)
    }

    /// Pushes one blob: skips it when the registry has it, tries a cross-repository mount when
    /// `mount_from` names a repository on the same registry, else uploads it (monolithic up to
    /// `monolithic_limit`, chunked above). `open` gives the content from any offset.
    pub fn push_blob(&self, repo: &Repo, digest: &Digest, size: u64, mount_from: Option<&str>, open: &OpenAt<'_>) -> Result<PushOutcome> {
        if self.blob_exists(repo, digest, &upload_scopes(repo, mount_from))?.is_some() {
            return Ok(PushOutcome::Exists);
        }
        self.upload_missing_blob(repo, digest, size, mount_from, open)
    }

    /// [`Client::push_blob`] for a blob the caller has just asked the repository about (a HEAD
    /// that answered 404): the upload starts without asking again. A caller that checks several
    /// repositories first, to mount from the one that has the blob, saves one round trip per
    /// repository and blob.
    pub fn upload_missing_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        mount_from: Option<&str>,
        open: &OpenAt<'_>,
    ) -> Result<PushOutcome> {
        let reference = format!("{repo}@{digest}");
        let scopes = upload_scopes(repo, mount_from);
        let base = self.base_url(&repo.registry);
        let mut attempt = 0;
        // A whole-upload retry loop: a session that broke half-way cannot always be resumed (the
        // registry may have kept part of a failed request), so after one failed resume we start over.
        loop {
            attempt += 1;
            let result = self.upload_once(repo, digest, size, mount_from, open, &scopes, &reference, &base);
            match result {
                Ok(o) => return Ok(o),
                Err(e) if e.is_transient() && attempt < self.opts.max_attempts => {
                    tracing::debug!(error = %e, attempt, "blob upload failed, checking and starting over");
                    // The final PUT may have landed although its answer was lost.
                    if let Ok(Some(_)) = self.blob_exists(repo, digest, &scopes) {
                        return Ok(PushOutcome::Uploaded);
                    }
                    self.backoff(attempt, None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn upload_once(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        mount_from: Option<&str>,
        open: &OpenAt<'_>,
        scopes: &Scopes,
        reference: &str,
        base: &str,
    ) -> Result<PushOutcome> {
        let mut url = format!("{base}/v2/{}/blobs/uploads/", repo.name);
        if let Some(from) = mount_from.filter(|f| *f != repo.name) {
            url.push_str(&format!("?mount={}&from={}", pct_encode(&digest.to_string()), pct_encode(from)));
        }
        let resp = self.send_retrying(
            Req { method: "POST", url, headers: vec![("Content-Length", "0".into())], body: Body::Empty, repo, scopes, reference },
            None,
            true,
        )?;
        let status = resp.status();
        if status == 201 && mount_from.is_some() {
            drain(resp);
            tracing::debug!(%digest, "mounted");
            return Ok(PushOutcome::Mounted);
        }
        if status != 202 {
            return Err(self.status_error(resp, "POST", repo, reference, "upload session"));
        }
        let Some(loc) = resp.header("location").map(|l| resolve_location(base, l)) else {
            return Err(RegistryError::Status {
                registry: repo.registry.clone(),
                reference: reference.to_string(),
                status,
                request: format!("POST /v2/{}/blobs/uploads/", repo.name),
                detail: " (no Location header in the answer)".into(),
            });
        };
        drain(resp);
        let mut location = loc;
        let mut offset = 0u64;
        if size > self.opts.monolithic_limit {
            let mut failures = 0;
            while offset < size {
                let len = (size - offset).min(self.opts.chunk_size.max(1));
                let start = offset;
                let opener = move || open(start).map(|r| Box::new(r.take(len)) as Box<dyn Read + Send>);
                let res = self.send_once(
                    &Req {
                        method: "PATCH",
                        url: location.clone(),
                        headers: vec![
                            ("Content-Type", "application/octet-stream".into()),
                            ("Content-Range", format!("{}-{}", start, start + len - 1)),
                        ],
                        body: Body::Stream { len, open: &opener },
                        repo,
                        scopes,
                        reference,
                    },
                    None,
                );
                let ok = match res {
                    Ok(r) if r.status() == 202 => {
                        if let Some(l) = r.header("location") {
                            location = resolve_location(base, l);
                        }
                        drain(r);
                        true
                    }
                    Ok(r) if r.status() == 429 || r.status() >= 500 => {
                        let after = crate::client::retry_after(&r);
                        drain(r);
                        self.backoff(failures + 1, after);
                        false
                    }
                    Ok(r) => return Err(self.status_error(r, "PATCH", repo, reference, "upload session")),
                    Err(e) if e.is_transient() => false,
                    Err(e) => return Err(e),
                };
                if ok {
                    offset += len;
                    failures = 0;
                    continue;
                }
                failures += 1;
                if failures >= 2 {
                    // Let the outer loop start a fresh session.
                    return Err(RegistryError::Transport {
                        registry: repo.registry.clone(),
                        reference: reference.to_string(),
                        message: format!("chunk at {start} failed twice"),
                    });
                }
                // Ask where the session stands: it is usable only if it is still where we left it.
                match self.upload_status(repo, &location, scopes, reference)? {
                    Some(at) if at == offset => continue,
                    _ => {
                        return Err(RegistryError::Transport {
                            registry: repo.registry.clone(),
                            reference: reference.to_string(),
                            message: format!("upload session broke at {start}"),
                        })
                    }
                }
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={}", pct_encode(&digest.to_string()));
        let rest = size - offset;
        let opener = move || open(offset);
        let res = self.send_once(
            &Req {
                method: "PUT",
                url: put_url,
                headers: vec![("Content-Type", "application/octet-stream".into())],
                body: if rest == 0 { Body::Empty } else { Body::Stream { len: rest, open: &opener } },
                repo,
                scopes,
                reference,
            },
            None,
        )?;
        match res.status() {
            201 | 204 | 200 => {
                drain(res);
                Ok(PushOutcome::Uploaded)
            }
            _ => Err(self.status_error(res, "PUT", repo, reference, "upload session")),
        }
    }

    /// `GET` on an upload session: how many bytes it holds (`Range: 0-N`), or `None` if it is gone.
    fn upload_status(&self, repo: &Repo, location: &str, scopes: &Scopes, reference: &str) -> Result<Option<u64>> {
        let r = self.send_retrying(
            Req { method: "GET", url: location.to_string(), headers: vec![], body: Body::Empty, repo, scopes, reference },
            None,
            true,
        )?;
        if r.status() != 204 {
            drain(r);
            return Ok(None);
        }
        let held =
            r.header("range").and_then(|v| v.rsplit('-').next()).and_then(|e| e.trim().parse::<u64>().ok()).map(|end| end + 1).unwrap_or(0);
        drain(r);
        Ok(Some(held))
    }
}

/// What an upload to `repo` asks the token server for: push, plus pull on `mount_from` for a mount.
fn upload_scopes(repo: &Repo, mount_from: Option<&str>) -> Scopes {
    match mount_from {
        Some(from) if from != repo.name => Scopes::mount(&repo.name, from),
        _ => Scopes::push(&repo.name),
    }
}

/// Copies with a large buffer: fewer syscalls and hash calls per byte than `io::copy`'s 8 KiB.
pub fn copy_large(r: &mut dyn Read, w: &mut dyn io::Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
    Ok(n)
}

/// See the module doc. Errors come out as `io::Error` wrapping a [`RegistryError`].
pub struct BlobReader<'c> {
    client: &'c Client,
    repo: Repo,
    digest: Digest,
    size: Option<u64>,
    offset: u64,
    start: u64,
    hasher: Hasher,
    inner: Option<Box<dyn Read + Send + 'static>>,
    failures: u32,
    finished: bool,
    reference: String,
    scopes: Scopes,
    verify: bool,
}

impl BlobReader<'_> {
    /// Skips the digest check (the size is still checked): for consumers that verify themselves,
    /// so the content is not hashed twice.
    pub fn unverified(mut self) -> Self {
        self.verify = false;
        self
    }

    fn open(&mut self) -> Result<()> {
        let mut headers = vec![];
        if self.offset > 0 {
            headers.push(("Range", format!("bytes={}-", self.offset)));
        }
        let url = format!("{}/v2/{}/blobs/{}", self.client.base_url(&self.repo.registry), self.repo.name, self.digest);
        let resp = self.client.send_retrying(
            Req { method: "GET", url, headers, body: Body::Empty, repo: &self.repo, scopes: &self.scopes, reference: &self.reference },
            None,
            true,
        )?;
        match resp.status() {
            200 => {
                let mut rd = resp.into_reader();
                if self.offset > 0 {
                    // The server ignored Range: skip what we have already.
                    let skipped = io::copy(&mut (&mut rd).take(self.offset), &mut io::sink()).map_err(|e| RegistryError::Transport {
                        registry: self.repo.registry.clone(),
                        reference: self.reference.clone(),
                        message: e.to_string(),
                    })?;
                    if skipped != self.offset {
                        return Err(RegistryError::Transport {
                            registry: self.repo.registry.clone(),
                            reference: self.reference.clone(),
                            message: "connection closed while skipping to the resume point".into(),
                        });
                    }
                }
                self.inner = Some(rd);
                Ok(())
            }
            206 => {
                let start = resp
                    .header("content-range")
                    .and_then(|v| v.trim().strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|s| s.trim().parse::<u64>().ok());
                if start != Some(self.offset) {
                    return Err(RegistryError::Status {
                        registry: self.repo.registry.clone(),
                        reference: self.reference.clone(),
                        status: 206,
                        request: format!("GET {}", path_of(resp.get_url())),
                        detail: format!(" (asked for bytes from {}, got Content-Range {:?})", self.offset, resp.header("content-range")),
                    });
                }
                self.inner = Some(resp.into_reader());
                Ok(())
            }
            _ => Err(self.client.status_error(resp, "GET", &self.repo, &self.reference, "blob")),
        }
    }

    fn lost_connection(&mut self, why: String) -> io::Result<()> {
        self.inner = None;
        self.failures += 1;
        if self.failures >= self.client.opts.max_attempts {
            return Err(into_io(RegistryError::Transport {
                registry: self.repo.registry.clone(),
                reference: self.reference.clone(),
                message: format!("download broke off at byte {} {} times: {why}", self.offset, self.failures),
            }));
        }
        tracing::debug!(reference = %self.reference, offset = self.offset, %why, "resuming download");
        self.client.backoff(self.failures, None);
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished || buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.inner.is_none() {
                if let Err(e) = self.open() {
                    if e.is_transient() {
                        self.lost_connection(e.to_string())?;
                        continue;
                    }
                    return Err(into_io(e));
                }
            }
            let Some(inner) = self.inner.as_mut() else { continue };
            match inner.read(buf) {
                Ok(0) => {
                    if let Some(size) = self.size {
                        if self.offset < size {
                            self.lost_connection(format!("stream ended at {} of {size} bytes", self.offset))?;
                            continue;
                        }
                    }
                    self.finished = true;
                    self.inner = None;
                    if self.start > 0 || !self.verify {
                        // A partial read cannot be verified here; the consumer verifies.
                        return Ok(0);
                    }
                    let actual = std::mem::replace(&mut self.hasher, self.digest.hasher()).finish();
                    if actual != self.digest {
                        return Err(into_io(RegistryError::DigestMismatch {
                            reference: self.reference.clone(),
                            what: "blob".into(),
                            expected: self.digest.to_string(),
                            actual: actual.to_string(),
                        }));
                    }
                    return Ok(0);
                }
                Ok(n) => {
                    if let Some(size) = self.size {
                        if self.offset + n as u64 > size {
                            self.inner = None;
                            return Err(into_io(RegistryError::SizeMismatch {
                                reference: self.reference.clone(),
                                what: "blob".into(),
                                expected: size,
                                actual: self.offset + n as u64,
                            }));
                        }
                    }
                    if self.verify {
                        self.hasher.update(&buf[..n]);
                    }
                    self.offset += n as u64;
                    self.failures = 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.lost_connection(e.to_string())?;
                }
            }
        }
    }
}
