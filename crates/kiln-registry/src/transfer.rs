//! Moving whole images between places: a registry repository, the local store, an OCI layout.
//!
//! A copy reads the root manifest from an [`ImageSource`]; an index is either narrowed to one
//! platform (`copy --platform`) or copied whole with all its images (copy); [`pull_image`] keeps an
//! index whole but fetches only the images of the platforms asked for. For each image the config and layers
//! go first, in parallel on `parallel` threads, each skipped when the [`ImageDest`] has it already;
//! the manifest goes last, so a destination never holds a manifest whose blobs are missing.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_oci::{media, Descriptor, Digest, Manifest, Platform};

use crate::blob::{OpenAt, PushOutcome};
use crate::client::{Client, Repo};
use crate::error::{RegistryError, Result};
use crate::manifest::FetchedManifest;

/// Live progress of a transfer; the CLI draws bars or prints lines. All methods default to nothing.
pub trait Progress: Send + Sync {
    /// A blob is about to move (`kind` is "config" or "layer").
    fn blob_start(&self, _digest: &Digest, _size: u64, _kind: &str) {}
    /// `done` bytes of it have moved so far (absolute, may go back after a restart).
    fn blob_progress(&self, _digest: &Digest, _done: u64) {}
    /// It is there: "exists", "mounted", "uploaded" or "downloaded".
    fn blob_done(&self, _digest: &Digest, _outcome: &str) {}
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Where images come from.
pub trait ImageSource: Sync {
    /// For messages: `127.0.0.1:5000/x`, `store`, `oci:/path`.
    fn describe(&self) -> String;
    /// The manifest named by a tag or a digest string.
    fn manifest(&self, reference: &str) -> Result<FetchedManifest>;
    /// The blob's content from `offset` on. Destinations verify the digest (the store on commit, a
    /// registry on the final PUT), so sources need not hash what they hand out a second time.
    fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>>;
    /// The registry repository the blobs live in, to mount them instead of uploading.
    fn registry_repo(&self) -> Option<&Repo> {
        None
    }
}

/// Where images go.
pub trait ImageDest: Sync {
    fn describe(&self) -> String;
    fn has_blob(&self, desc: &Descriptor) -> Result<bool>;
    /// Stores a blob read from `src`; `progress` gets absolute byte counts.
    fn put_blob(&self, desc: &Descriptor, src: &dyn ImageSource, progress: &(dyn Fn(u64) + Sync)) -> Result<&'static str>;
    /// Stores a manifest by digest and, when `tag` is given, names it.
    fn put_manifest(&self, m: &FetchedManifest, tag: Option<&str>) -> Result<()>;
}

/// What to copy.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Narrow an index to this platform's image (pull, or copy --platform).
    pub platform: Option<Platform>,
    /// Blobs in flight at once (at least 1).
    pub parallel: usize,
}

/// What was copied: the manifest written under the destination tag.
#[derive(Clone, Debug)]
pub struct CopyResult {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Blobs moved and bytes moved (skipped ones not counted).
    pub blobs_moved: usize,
    pub bytes_moved: u64,
}

/// Copies the image `src_ref` (tag or digest) of `src` to `dst`, naming it `dst_tag` there.
pub fn copy_image(
    src: &dyn ImageSource,
    src_ref: &str,
    dst: &dyn ImageDest,
    dst_tag: Option<&str>,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyResult> {
    let root = src.manifest(src_ref)?;
    let reference = format!("{}:{src_ref}", src.describe());
    let parsed = parse(&root, &reference)?;
    let stats = Stats::default();
    let root = match parsed {
        Manifest::Image(_) => {
            copy_one(src, &root, dst, opts, progress, &stats, &reference)?;
            root
        }
        Manifest::Index(idx) => {
            if let Some(want) = &opts.platform {
                let Some(d) = idx.find_platform(want) else {
                    let available: Vec<String> = idx.manifests.iter().filter_map(|d| d.platform.as_ref().map(|p| p.to_string())).collect();
                    return Err(RegistryError::NoPlatform { reference, platform: want.to_string(), available: available.join(", ") });
                };
                let child = src.manifest(&d.digest.to_string())?;
                check_child(&child, d, &reference)?;
                copy_one(src, &child, dst, opts, progress, &stats, &reference)?;
                child
            } else {
                for d in &idx.manifests {
                    if !(media::is_image_manifest(&d.media_type) || media::is_index(&d.media_type)) {
                        continue;
                    }
                    let child = src.manifest(&d.digest.to_string())?;
                    check_child(&child, d, &reference)?;
                    if matches!(parse(&child, &reference)?, Manifest::Index(_)) {
                        // Nested indexes are rare; copying them would need recursion without bound.
                        return Err(RegistryError::InvalidManifest { reference, message: "nested indexes are not supported".into() });
                    }
                    copy_one(src, &child, dst, opts, progress, &stats, &reference)?;
                    dst.put_manifest(&child, None)?;
                }
                root
            }
        }
    };
    dst.put_manifest(&root, dst_tag)?;
    let bytes_moved = *stats.bytes.lock().unwrap_or_else(|p| p.into_inner());
    Ok(CopyResult {
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        size: root.bytes.len() as u64,
        blobs_moved: stats.blobs.load(Ordering::Relaxed),
        bytes_moved,
    })
}

/// Which images of an index a pull fetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformSelection {
    /// Every image of the index.
    All,
    /// The images for these platforms: each must be listed in the index, and a lone image manifest
    /// must be for one of them.
    Only(Vec<Platform>),
    /// This machine's platform, from an index; a lone image manifest is taken whatever its platform,
    /// as `docker pull` without `--platform` takes it.
    Host(Platform),
}

impl PlatformSelection {
    /// The platforms asked for by name (none for [`PlatformSelection::All`]).
    pub fn platforms(&self) -> &[Platform] {
        match self {
            PlatformSelection::All => &[],
            PlatformSelection::Only(v) => v,
            PlatformSelection::Host(p) => std::slice::from_ref(p),
        }
    }
}

/// What [`pull_image`] stored.
#[derive(Clone, Debug)]
pub struct PullResult {
    /// The root manifest, stored as fetched (an index stays an index), and the transfer's counts.
    pub root: CopyResult,
    /// The image manifests fetched: index entries (with their platforms), or the lone image.
    pub images: Vec<Descriptor>,
}

/// The annotation by which BuildKit ties an attestation manifest to the image it describes.
const ATTESTATION_OF: &str = "vnd.docker.reference.digest";

/// Pulls `src_ref` of `src` into `dst` keeping its root as it is: an index is stored verbatim (same
/// bytes, same digest) with only the images `selection` asks for (and the attestations that
/// describe them) fetched; the other entries stay listed but absent. Children go first, the root
/// last, named `dst_tag` when given. A platform the index does not list, or a lone image for another
/// platform than the one asked for, is an error before anything is fetched.
pub fn pull_image(
    src: &dyn ImageSource,
    src_ref: &str,
    dst: &dyn ImageDest,
    dst_tag: Option<&str>,
    selection: &PlatformSelection,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<PullResult> {
    let root = src.manifest(src_ref)?;
    let reference = format!("{}:{src_ref}", src.describe());
    let stats = Stats::default();
    let mut images = Vec::new();
    match parse(&root, &reference)? {
        Manifest::Image(img) => {
            if let PlatformSelection::Only(wanted) = selection {
                if let Some(actual) = config_platform(src, &img.config, &reference)? {
                    if !wanted.iter().any(|w| w.matches(&actual)) {
                        return Err(RegistryError::WrongPlatform {
                            reference,
                            wanted: wanted.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
                            actual: actual.to_string(),
                        });
                    }
                }
            }
            copy_one(src, &root, dst, opts, progress, &stats, &reference)?;
            images.push(Descriptor::new(&root.media_type, root.digest.clone(), root.bytes.len() as u64));
        }
        Manifest::Index(idx) => {
            let is_manifest = |d: &Descriptor| media::is_image_manifest(&d.media_type) || media::is_index(&d.media_type);
            let chosen: Vec<&Descriptor> = match selection {
                PlatformSelection::All => idx.manifests.iter().filter(|d| is_manifest(d)).collect(),
                PlatformSelection::Only(_) | PlatformSelection::Host(_) => {
                    let mut v: Vec<&Descriptor> = Vec::new();
                    for want in selection.platforms() {
                        let Some(d) = idx.find_platform(want) else {
                            let available: Vec<String> = idx
                                .manifests
                                .iter()
                                .filter_map(|d| d.platform.as_ref())
                                .filter(|p| p.os != "unknown" && p.architecture != "unknown")
                                .map(|p| p.to_string())
                                .collect();
                            return Err(RegistryError::NoPlatform {
                                reference,
                                platform: want.to_string(),
                                available: available.join(", "),
                            });
                        };
                        if !v.iter().any(|x| x.digest == d.digest) {
                            v.push(d);
                        }
                    }
                    // Attestations ride along with the image they describe: pushing the index later
                    // needs every entry of it that is here.
                    let attestations: Vec<&Descriptor> = idx
                        .manifests
                        .iter()
                        .filter(|a| a.annotation(ATTESTATION_OF).is_some_and(|of| v.iter().any(|x| x.digest.to_string() == of)))
                        .collect();
                    v.extend(attestations);
                    v
                }
            };
            for d in chosen {
                let child = src.manifest(&d.digest.to_string())?;
                check_child(&child, d, &reference)?;
                if matches!(parse(&child, &reference)?, Manifest::Index(_)) {
                    return Err(RegistryError::InvalidManifest { reference, message: "nested indexes are not supported".into() });
                }
                copy_one(src, &child, dst, opts, progress, &stats, &reference)?;
                images.push(d.clone());
            }
        }
    }
    dst.put_manifest(&root, dst_tag)?;
    let bytes_moved = *stats.bytes.lock().unwrap_or_else(|p| p.into_inner());
    Ok(PullResult {
        root: CopyResult {
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
            size: root.bytes.len() as u64,
            blobs_moved: stats.blobs.load(Ordering::Relaxed),
            bytes_moved,
        },
        images,
    })
}

/// The platform an image's config declares (`None` when it names no os or architecture), read
/// from the source and verified before anything is trusted.
fn config_platform(src: &dyn ImageSource, config: &Descriptor, reference: &str) -> Result<Option<Platform>> {
    let limit = crate::manifest::MAX_MANIFEST;
    if config.size > limit {
        return Err(RegistryError::InvalidManifest {
            reference: reference.to_string(),
            message: format!("its config {} is {} bytes, more than the {limit} kiln reads", config.digest, config.size),
        });
    }
    let mut bytes = Vec::new();
    src.open_blob(config, 0)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| crate::error::from_io(e, format!("{reference}: reading the config {}", config.digest)))?;
    let actual = Digest::sha256_of(&bytes);
    if config.digest.algorithm() == actual.algorithm() && actual != config.digest {
        return Err(RegistryError::DigestMismatch {
            reference: reference.to_string(),
            what: "config".into(),
            expected: config.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    let cfg = kiln_oci::ImageConfig::parse(&bytes).map_err(|e| RegistryError::InvalidManifest {
        reference: reference.to_string(),
        message: format!("its config {} is not an image config: {e}", config.digest),
    })?;
    Ok((!cfg.os.is_empty() && !cfg.architecture.is_empty()).then(|| cfg.platform()))
}

#[derive(Default)]
struct Stats {
    blobs: AtomicUsize,
    bytes: Mutex<u64>,
}

fn parse(m: &FetchedManifest, reference: &str) -> Result<Manifest> {
    Manifest::parse(&m.bytes, Some(&m.media_type)).map_err(|e| RegistryError::InvalidManifest {
        reference: reference.to_string(),
        message: format!("cannot use the manifest {}: {e}", m.digest),
    })
}

fn check_child(child: &FetchedManifest, d: &Descriptor, reference: &str) -> Result<()> {
    if child.digest != d.digest {
        return Err(RegistryError::DigestMismatch {
            reference: reference.to_string(),
            what: "manifest in the index".into(),
            expected: d.digest.to_string(),
            actual: child.digest.to_string(),
        });
    }
    Ok(())
}

/// Copies the blobs of one image manifest, then the manifest by digest (the caller tags it).
fn copy_one(
    src: &dyn ImageSource,
    m: &FetchedManifest,
    dst: &dyn ImageDest,
    opts: &CopyOptions,
    progress: &dyn Progress,
    stats: &Stats,
    reference: &str,
) -> Result<()> {
    let Manifest::Image(img) = parse(m, reference)? else {
        return Err(RegistryError::InvalidManifest { reference: reference.to_string(), message: "expected an image manifest".into() });
    };
    let mut blobs: Vec<(&Descriptor, &str)> = vec![(&img.config, "config")];
    for l in &img.layers {
        // Foreign layers live elsewhere (urls) and are not pushed to registries by design.
        if media::is_foreign_layer(&l.media_type) && l.urls.as_ref().is_some_and(|u| !u.is_empty()) {
            continue;
        }
        if !blobs.iter().any(|(b, _)| b.digest == l.digest) {
            blobs.push((l, "layer"));
        }
    }
    run_parallel(&blobs, opts.parallel.max(1), |(desc, kind)| {
        progress.blob_start(&desc.digest, desc.size, kind);
        if dst.has_blob(desc)? {
            progress.blob_progress(&desc.digest, desc.size);
            progress.blob_done(&desc.digest, "exists");
            return Ok(());
        }
        let outcome = dst.put_blob(desc, src, &|n| progress.blob_progress(&desc.digest, n))?;
        progress.blob_progress(&desc.digest, desc.size);
        progress.blob_done(&desc.digest, outcome);
        if outcome != "exists" && outcome != "mounted" {
            stats.blobs.fetch_add(1, Ordering::Relaxed);
            *stats.bytes.lock().unwrap_or_else(|p| p.into_inner()) += desc.size;
        }
        Ok(())
    })?;
    dst.put_manifest(m, None)
}

/// Runs `f` over `items` on up to `n` threads; the first error stops the rest from starting
/// (`kiln_oci::run_parallel`, the pool the layer code shares, with this crate's error type).
pub fn run_parallel<T: Sync>(items: &[T], n: usize, f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    kiln_oci::run_parallel(items, n, f)
}

/// Reports the absolute position of a stream to a progress callback as it is read.
pub struct ProgressReader<'a, R> {
    inner: R,
    pos: u64,
    last: u64,
    cb: &'a (dyn Fn(u64) + Sync),
}

impl<'a, R> ProgressReader<'a, R> {
    pub fn new(inner: R, start: u64, cb: &'a (dyn Fn(u64) + Sync)) -> Self {
        ProgressReader { inner, pos: start, last: start, cb }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        // Report every 256 KiB: often enough for a smooth bar, rare enough to cost nothing.
        if self.pos - self.last >= 256 << 10 || n == 0 {
            self.last = self.pos;
            (self.cb)(self.pos);
        }
        Ok(n)
    }
}

/// A repository of a registry as a source.
pub struct RegistrySource<'c> {
    pub client: &'c Client,
    pub repo: Repo,
}

impl ImageSource for RegistrySource<'_> {
    fn describe(&self) -> String {
        self.repo.to_string()
    }
    fn manifest(&self, reference: &str) -> Result<FetchedManifest> {
        self.client.get_manifest(&self.repo, reference)
    }
    fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(self.client.blob_reader_at(&self.repo, &desc.digest, Some(desc.size), offset).unverified()))
    }
    fn registry_repo(&self) -> Option<&Repo> {
        Some(&self.repo)
    }
}

/// A repository of a registry as a destination.
pub struct RegistryDest<'c> {
    pub client: &'c Client,
    pub repo: Repo,
}

impl ImageDest for RegistryDest<'_> {
    fn describe(&self) -> String {
        self.repo.to_string()
    }
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.client.blob_exists(&self.repo, &desc.digest, &crate::auth::Scopes::push(&self.repo.name))?.is_some())
    }
    fn put_blob(&self, desc: &Descriptor, src: &dyn ImageSource, progress: &(dyn Fn(u64) + Sync)) -> Result<&'static str> {
        let mount_from =
            src.registry_repo().filter(|r| r.registry == self.repo.registry && r.name != self.repo.name).map(|r| r.name.as_str());
        let open: &OpenAt<'_> = &|offset: u64| {
            let r = src.open_blob(desc, offset).map_err(crate::error::into_io)?;
            Ok(Box::new(ProgressReader::new(r, offset, progress)) as Box<dyn Read + Send>)
        };
        let outcome = self.client.push_blob(&self.repo, &desc.digest, desc.size, mount_from, open)?;
        Ok(match outcome {
            PushOutcome::Exists => "exists",
            PushOutcome::Mounted => "mounted",
            PushOutcome::Uploaded => "uploaded",
        })
    }
    fn put_manifest(&self, m: &FetchedManifest, tag: Option<&str>) -> Result<()> {
        let reference = tag.map(str::to_string).unwrap_or_else(|| m.digest.to_string());
        self.client.put_manifest(&self.repo, &reference, &m.media_type, &m.bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_parallel_stops_at_first_error_and_bounds_threads() {
        let items: Vec<u32> = (0..50).collect();
        let active = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        run_parallel(&items, 3, |_| {
            let a = active.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(a, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            active.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert!(peak.load(Ordering::SeqCst) <= 3);
        let r = run_parallel(&items, 2, |i| {
            if *i == 5 {
                Err(RegistryError::Store { context: "x".into(), message: format!("item {i}") })
            } else {
                Ok(())
            }
        });
        assert!(r.unwrap_err().to_string().contains("item 5"));
    }
}
