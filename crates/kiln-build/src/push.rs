//! Pushing a built image (or index) straight from the build: blobs in the local store are uploaded
//! (or skipped, or mounted when the registry has them in another repository), and layers a build only
//! knows from a registry cache are cross-repo mounted from the cache's repository (streamed registry
//! to registry when the mount is refused), so a fully cached build downloads no layer to push.

use std::io::{self, Read};

use kiln_cache::LayerSources;
use kiln_oci::{Digest, Manifest, Reference, Store};
use kiln_registry::{Client, Repo};

use crate::error::{BuildError, PushFailure};
use crate::output::Artifact;

fn err(target: &Reference, e: impl Into<PushFailure>) -> BuildError {
    BuildError::Push { target: target.to_string(), source: Box::new(e.into()) }
}

/// Pushes `art` to `target`'s repository, under its tag (or by digest when `by_digest`).
pub fn push_artifact(
    client: &Client,
    store: &Store,
    art: &Artifact,
    target: &Reference,
    by_digest: bool,
    sources: &LayerSources,
    progress: &dyn crate::Progress,
) -> Result<Digest, BuildError> {
    let repo = Repo::new(target.registry(), target.repository());
    // Blobs first (layers and configs), then child manifests by digest, then the root.
    let mut manifests: Vec<Digest> = Vec::new();
    let is_content = |d: &Digest| art.images.iter().any(|(c, layers)| c == d || layers.contains(d));
    for d in &art.blobs {
        if !is_content(d) {
            manifests.push(d.clone());
            continue;
        }
        push_blob(client, store, &repo, d, sources, target, progress)?;
    }
    // Children before the root (the root is first in `blobs` for an index).
    manifests.retain(|d| d != &art.root.digest);
    for d in &manifests {
        let bytes = store.read_blob(d)?;
        let media = Manifest::parse(&bytes, None).map(|m| m.media_type().to_string()).map_err(|e| err(target, e))?;
        client.put_manifest(&repo, &d.to_string(), &media, &bytes).map_err(|e| err(target, e))?;
    }
    let bytes = store.read_blob(&art.root.digest)?;
    let reference = match (by_digest, target.tag()) {
        (false, Some(t)) => t.to_string(),
        _ => art.root.digest.to_string(),
    };
    client.put_manifest(&repo, &reference, &art.root.media_type, &bytes).map_err(|e| err(target, e))
}

fn push_blob(
    client: &Client,
    store: &Store,
    repo: &Repo,
    d: &Digest,
    sources: &LayerSources,
    target: &Reference,
    progress: &dyn crate::Progress,
) -> Result<(), BuildError> {
    let what = format!("push {target} {}", short(d));
    let source = sources.get(d).filter(|s| s.registry == repo.registry);
    let mount_from = source.map(|s| s.name.as_str());
    if store.has_blob(d) {
        let size = store.blob_size(d)?;
        let path = store.blob_path(d);
        let open = |offset: u64| -> io::Result<Box<dyn Read + Send + '_>> {
            use std::io::Seek;
            let mut f = std::fs::File::open(&path)?;
            f.seek(io::SeekFrom::Start(offset))?;
            Ok(Box::new(Counting::new(io::BufReader::with_capacity(1 << 20, f), offset, size, &what, progress)))
        };
        client.push_blob(repo, d, size, mount_from, &open).map_err(|e| err(target, e))?;
        progress.transfer(&what, size, Some(size));
        return Ok(());
    }
    // Known only from a cache: mount it from there; if the registry refuses the mount, stream it
    // from the cache's repository (never through the local store).
    let Some(src) = sources.get(d).cloned() else {
        return Err(err(target, PushFailure::LayerNowhere(d.clone())));
    };
    let size = client.blob_exists(&src, d, &kiln_registry_scopes(&src)).map_err(|e| err(target, e))?.unwrap_or(0);
    let open = |offset: u64| -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(Counting::new(client.blob_reader_at(&src, d, Some(size), offset), offset, size, &what, progress)))
    };
    client.push_blob(repo, d, size, mount_from, &open).map_err(|e| err(target, e))?;
    progress.transfer(&what, size, Some(size));
    Ok(())
}

/// `sha256:` and the first 12 hex digits, as the progress view names a blob.
fn short(d: &Digest) -> String {
    let s = d.to_string();
    s.chars().take(19).collect()
}

/// Reports the bytes read through it to the build's progress, as absolute positions in the blob,
/// at most once per MiB (a progress call per 8 KiB read would cost more than the bar is worth).
struct Counting<'a, R> {
    inner: R,
    pos: u64,
    reported: u64,
    total: u64,
    what: &'a str,
    progress: &'a dyn crate::Progress,
}

impl<'a, R> Counting<'a, R> {
    fn new(inner: R, offset: u64, total: u64, what: &'a str, progress: &'a dyn crate::Progress) -> Self {
        progress.transfer(what, offset, Some(total));
        Counting { inner, pos: offset, reported: offset, total, what, progress }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        if self.pos - self.reported >= 1 << 20 {
            self.reported = self.pos;
            self.progress.transfer(self.what, self.pos.min(self.total), Some(self.total));
        }
        Ok(n)
    }
}

fn kiln_registry_scopes(r: &Repo) -> kiln_registry::auth::Scopes {
    kiln_registry::auth::Scopes::pull(&r.name)
}
