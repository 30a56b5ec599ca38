//! Manifests and indexes: fetched by tag or digest with every media type kiln understands in
//! `Accept`, verified against the digest they were asked by (or that the registry claims), and
//! pushed by tag or by digest.

use std::io::Read;

use kiln_oci::{media, Digest};

use crate::auth::Scopes;
use crate::client::{Body, Client, Repo, Req};
use crate::error::{RegistryError, Result};

/// Manifests bigger than this are refused: they are JSON documents, and reading an unbounded body
/// into memory is how a hostile registry would exhaust it.
pub const MAX_MANIFEST: u64 = 8 << 20;

/// A manifest as the registry served it: exact bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl Client {
    /// GETs a manifest or index by tag or digest (`reference` is the tag or `sha256:...`).
    pub fn get_manifest(&self, repo: &Repo, reference: &str) -> Result<FetchedManifest> {
        // A body cut off mid-read is as transient as a refused connection: ask again, within the
        // same bound on attempts (send_retrying only covers getting the response's head).
        let mut attempt = 1;
        loop {
            let mut body_failed = false;
            match self.get_manifest_once(repo, reference, &mut body_failed) {
                Err(e) if body_failed && attempt < self.options().max_attempts => {
                    tracing::debug!(error = %e, attempt, "manifest body cut off; retrying");
                    self.backoff(attempt, None);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One GET (its head retried by `send_retrying`); `body_failed` says the body was cut off.
    fn get_manifest_once(&self, repo: &Repo, reference: &str, body_failed: &mut bool) -> Result<FetchedManifest> {
        let display = display_ref(repo, reference);
        let url = format!("{}/v2/{}/manifests/{}", self.base_url(&repo.registry), repo.name, reference);
        let resp = self.send_retrying(
            Req {
                method: "GET",
                url,
                headers: vec![("Accept", media::ACCEPTED_MANIFESTS.join(", "))],
                body: Body::Empty,
                repo,
                scopes: &Scopes::pull(&repo.name),
                reference: &display,
            },
            None,
            true,
        )?;
        if resp.status() != 200 {
            return Err(self.status_error(resp, "GET", repo, &display, "manifest"));
        }
        let content_type = resp.header("content-type").map(|c| c.split(';').next().unwrap_or("").trim().to_string());
        let claimed = resp.header("docker-content-digest").and_then(|d| Digest::parse(d).ok());
        let mut bytes = Vec::new();
        resp.into_reader().take(MAX_MANIFEST + 1).read_to_end(&mut bytes).map_err(|e| {
            *body_failed = true;
            RegistryError::Transport {
                registry: repo.registry.clone(),
                reference: display.clone(),
                message: format!("reading the manifest: {e}"),
            }
        })?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(RegistryError::InvalidManifest {
                reference: display,
                message: format!("manifest is larger than {MAX_MANIFEST} bytes; refusing it"),
            });
        }
        let expected = match Digest::parse(reference) {
            Ok(d) => Some(d),
            Err(_) => claimed,
        };
        let actual = match &expected {
            Some(d) => {
                let mut h = d.hasher();
                h.update(&bytes);
                h.finish()
            }
            None => Digest::sha256_of(&bytes),
        };
        if let Some(exp) = expected {
            if exp != actual {
                return Err(RegistryError::DigestMismatch {
                    reference: display,
                    what: "manifest".into(),
                    expected: exp.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let media_type = match content_type.filter(|c| media::is_image_manifest(c) || media::is_index(c)) {
            Some(c) => c,
            None => {
                kiln_oci::Manifest::parse(&bytes, None).map(|m| m.media_type().to_string()).map_err(|e| RegistryError::InvalidManifest {
                    reference: display.clone(),
                    message: format!("the registry served something that is not a usable manifest: {e}"),
                })?
            }
        };
        Ok(FetchedManifest { bytes, media_type, digest: actual })
    }

    /// Whether a manifest exists (HEAD), and its digest when the registry says.
    pub fn manifest_exists(&self, repo: &Repo, reference: &str) -> Result<bool> {
        let display = display_ref(repo, reference);
        let url = format!("{}/v2/{}/manifests/{}", self.base_url(&repo.registry), repo.name, reference);
        let resp = self.send_retrying(
            Req {
                method: "HEAD",
                url,
                headers: vec![("Accept", media::ACCEPTED_MANIFESTS.join(", "))],
                body: Body::Empty,
                repo,
                scopes: &Scopes::pull(&repo.name),
                reference: &display,
            },
            None,
            true,
        )?;
        match resp.status() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(resp, "HEAD", repo, &display, "manifest")),
        }
    }

    /// PUTs a manifest under a tag or its digest. Returns the digest of the bytes.
    pub fn put_manifest(&self, repo: &Repo, reference: &str, media_type: &str, bytes: &[u8]) -> Result<Digest> {
        let display = display_ref(repo, reference);
        let url = format!("{}/v2/{}/manifests/{}", self.base_url(&repo.registry), repo.name, reference);
        let resp = self.send_retrying(
            Req {
                method: "PUT",
                url,
                headers: vec![("Content-Type", media_type.to_string())],
                body: Body::Bytes(bytes),
                repo,
                scopes: &Scopes::push(&repo.name),
                reference: &display,
            },
            None,
            true,
        )?;
        if !(200..300).contains(&resp.status()) {
            return Err(self.status_error(resp, "PUT", repo, &display, "repository"));
        }
        crate::client::drain(resp);
        Ok(Digest::sha256_of(bytes))
    }
}

fn display_ref(repo: &Repo, reference: &str) -> String {
    if reference.contains(':') {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    }
}
