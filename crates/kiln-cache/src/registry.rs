//! The registry cache store: lazy import from a cache ref, and read-merge-write export to one.
//!
//! Import fetches the manifest and the config (the key graph) and nothing else; a layer is
//! downloaded by [`RegistryCache::fetch_layer`] only when the build asks for it. Export reads the ref,
//! merges, pushes what is missing and writes the manifest by tag, retrying the whole cycle when the
//! ref changed underneath it. The distribution API has no conditional PUT, so "changed underneath"
//! is detected twice: just before the PUT (the ref must still be what was read) and shortly after it
//! (this build's records must be in whatever the ref now holds); see `docs/cache.md`.
//!
//! Failures follow the house rule "cache is an accelerator, never a reason to fail": they come back
//! as values carrying a warning ([`Opened`], [`ExportOutcome`]), and are only errors when the
//! user asked for `ignore-error=false`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_oci::{media, BlobInfo, Descriptor, Digest, Manifest, Reference, Store, StoreError};
use kiln_registry::{Client, PushOutcome, RegistryError, Repo};

use crate::backend::{Backend, CacheSink, CacheSource, ExportReport, ExportTarget, ExportWarning, Opened, SinkSpec, SourceSpec};
use crate::format::{check_manifest, decode, descendants_of, encode, Entry, FormatError, MAX_CONFIG};
use crate::local::{CacheError, Record};
use crate::merge::{merge, PruneRules};
use crate::spec::{parse_go_duration, parse_size, CacheFrom, CacheMode, CacheTo, Options, SpecError};

/// How many read-merge-write cycles an export tries before giving up on a contended ref.
pub const MAX_EXPORT_ATTEMPTS: u32 = 16;

/// The default age after which an exported record is pruned: 14 days (`ttl=336h`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(336 * 3600);

/// `type=registry`: a cache ref in an OCI registry (`--cache-from type=registry,ref=REF`, or REF
/// alone; `--cache-to type=registry,ref=REF[,mode=…][,ignore-error=…][,ttl=…][,max-size=…]`).
#[derive(Debug, Clone, Copy)]
pub struct RegistryBackend;

impl Backend for RegistryBackend {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn usage(&self) -> &'static str {
        "type=registry,ref=REF"
    }

    fn source(&self, options: &Options<'_>) -> Result<CacheFrom, SpecError> {
        options.accept(&["ref"])?;
        let reference = parse_ref(options, options.require("ref", "REF")?)?;
        Ok(RegistryImport { reference }.into())
    }

    fn sink(&self, options: &Options<'_>, mode: CacheMode) -> Result<CacheTo, SpecError> {
        options.accept(&["ref", "mode", "ignore-error", "ttl", "max-size"])?;
        let reference = parse_ref(options, options.require("ref", "REF")?)?;
        let ignore_error = options.bool("ignore-error", true)?;
        let ttl = match options.get("ttl") {
            None => Some(DEFAULT_TTL),
            Some(v) => {
                let d = parse_go_duration(v).map_err(|e| options.error(format!("ttl={v:?}: {e}")))?;
                // ttl=0 is buildx's "keep forever".
                (!d.is_zero()).then_some(d)
            }
        };
        let max_size = match options.get("max-size") {
            None => None,
            Some(v) => Some(parse_size(v).map_err(|e| options.error(format!("max-size={v:?}: {e}")))?),
        };
        Ok(RegistryExport { reference, mode, ignore_error, ttl, max_size }.into())
    }
}

/// `ref=` as an image reference. A `--cache-to` ref must be a tag: the export moves it.
fn parse_ref(options: &Options<'_>, r: &str) -> Result<Reference, SpecError> {
    let reference = Reference::parse(r).map_err(|e| options.error(format!("ref={r:?} is not an image reference: {e}")))?;
    if reference.digest().is_some() && options.flag() == "--cache-to" {
        return Err(options.error(format!("ref={r:?} pins a digest; a cache ref is updated in place, so give it a tag (e.g. :buildcache)")));
    }
    Ok(reference)
}

/// A `--cache-from type=registry` source: the cache ref to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryImport {
    pub reference: Reference,
}

impl SourceSpec for RegistryImport {
    fn open<'c>(&self, client: Option<&'c Client>) -> Opened<Box<dyn CacheSource + 'c>> {
        match client {
            Some(client) => RegistryCache::open(client, &self.reference).map(|c| Box::new(c) as Box<dyn CacheSource + 'c>),
            None => Opened::Unusable(format!("cache {} not used: the build has no registry client", self.reference)),
        }
    }
}

/// Export settings of a registry `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryExport {
    pub reference: Reference,
    pub mode: CacheMode,
    /// `true` (default): a failed export is a warning. `false`: it fails the build.
    pub ignore_error: bool,
    /// Records not exported for this long are pruned; `None` (`ttl=0`) keeps them forever.
    pub ttl: Option<Duration>,
    /// Total bytes of layers the ref may hold; oldest records go first. `None`: no budget.
    pub max_size: Option<u64>,
}

impl RegistryExport {
    /// The defaults of `type=registry,ref=R`: `mode=min`, `ignore-error=true`, `ttl=336h`, no size budget.
    pub fn new(reference: Reference) -> RegistryExport {
        RegistryExport { reference, mode: CacheMode::Min, ignore_error: true, ttl: Some(DEFAULT_TTL), max_size: None }
    }
}

impl SinkSpec for RegistryExport {
    fn open<'c>(&self, client: Option<&'c Client>) -> Opened<Box<dyn CacheSink + 'c>> {
        match client {
            Some(client) => Opened::Opened(Box::new(RegistrySink::new(client, self.clone()))),
            None => Opened::Unusable(format!("cache export to {} skipped: the build has no registry client", self.reference)),
        }
    }
}

/// Registry cache failures. Registry errors already name the reference and the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RegistryCacheError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cache {reference}: {source}")]
    Format {
        reference: String,
        #[source]
        source: FormatError,
    },
    #[error(
        "cache {reference}: config blob is {size} bytes, more than the {MAX_CONFIG} a kiln cache config may have; export to a new tag"
    )]
    ConfigTooLarge { reference: String, size: u64 },
    #[error("cache {reference}: manifest does not parse: {message}")]
    BadManifest { reference: String, message: String },
    #[error("cache {reference}: {context}: {source}")]
    Store {
        reference: String,
        context: String,
        #[source]
        source: StoreError,
    },
    #[error("cache {reference}: other builds kept rewriting the ref; gave up after {attempts} read-merge-write attempts (the next build's export will merge again)")]
    Contended { reference: String, attempts: u32 },
    #[error("cache {reference}: record {key} has no layer to fetch")]
    NoLayer { reference: String, key: Digest },
    #[error("cache {reference}: compressing the layers for export: {source}")]
    Compress {
        reference: String,
        #[source]
        source: kiln_oci::layer::LayerError,
    },
}

/// `records` as they leave the machine: each layer the build stored as plain tar replaced by its gzip
/// form (`kiln_oci::layer::gzip_layers`, remembered in the store, so the image push of the same build
/// names the same blobs). The keys and diff ids stay: a cache hit gives the same snapshot either way.
pub fn gzip_records(store: &Store, records: &[Record], reference: &str) -> Result<Vec<Record>, RegistryCacheError> {
    let layers: Vec<kiln_oci::Descriptor> = records.iter().filter_map(|r| r.layer.as_ref().map(|l| l.descriptor.clone())).collect();
    let gz = kiln_oci::layer::gzip_layers(store, &layers)
        .map_err(|source| RegistryCacheError::Compress { reference: reference.to_string(), source })?;
    let mut gz = gz.into_iter();
    Ok(records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(l) = r.layer.as_mut() {
                if let Some(d) = gz.next() {
                    l.descriptor = d;
                }
            }
            r
        })
        .collect())
}

impl RegistryCacheError {
    /// True when the credentials may read but not write (401/403 on push, or a read-only registry).
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            RegistryCacheError::Registry(
                RegistryError::Unauthorized { .. } | RegistryError::Forbidden { .. } | RegistryError::Status { status: 405, .. }
            )
        )
    }
}

/// Where layers that the local store may lack can be found, for exports: a layer the build reused
/// without downloading (a lazy cache hit, a base image layer) is mounted from its repository when that
/// is on the same registry as the cache ref, and streamed registry to registry otherwise.
#[derive(Debug, Clone, Default)]
pub struct LayerSources {
    map: HashMap<Digest, Repo>,
}

impl LayerSources {
    pub fn new() -> Self {
        Self::default()
    }
    /// Records that `digest` can be read from `reference`'s repository (first source wins).
    pub fn add(&mut self, digest: Digest, reference: &Reference) {
        self.map.entry(digest).or_insert_with(|| repo_of(reference));
    }
    pub fn get(&self, digest: &Digest) -> Option<&Repo> {
        self.map.get(digest)
    }
    /// Adds every source of `other` not known yet.
    pub fn extend(&mut self, other: &LayerSources) {
        for (d, r) in &other.map {
            self.map.entry(d.clone()).or_insert_with(|| r.clone());
        }
    }
}

fn repo_of(r: &Reference) -> Repo {
    Repo::new(r.registry(), r.repository())
}

fn manifest_ref(r: &Reference) -> String {
    match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A random delay in `[lo, hi)`; spreads concurrent writers apart without an RNG dependency.
fn jitter(lo: Duration, hi: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_secs());
    let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
    lo + Duration::from_millis(h.finish() % span)
}

/// How long to wait after our manifest PUT before reading the ref again (see `export`): long
/// enough for a writer whose pre-PUT check passed just before our PUT to land its own PUT. That
/// writer's window is one check and one PUT against the same registry, which ours just measured
/// (`check_and_put`): four times that, jittered, at least 60 ms (a busy machine can stall a
/// writer between its check and its PUT) and at most 400 ms. On a loopback registry this is
/// 60-120 ms, not a fixed 150-400 ms on every build's critical path; on a registry 100 ms away
/// it is the 400 ms cap, as before.
fn verification_pause(check_and_put: Duration) -> Duration {
    let lo = (check_and_put * 4).clamp(Duration::from_millis(60), Duration::from_millis(400));
    jitter(lo, (lo * 2).min(Duration::from_millis(400)).max(lo + Duration::from_millis(1)))
}

/// What a cache ref holds right now.
struct Current {
    digest: Digest,
    entries: Vec<Entry>,
    layers: HashSet<Digest>,
    dropped: usize,
}

/// Reads the ref: `None` when it does not exist.
fn read_current(client: &Client, reference: &Reference) -> Result<Option<Current>, RegistryCacheError> {
    let repo = repo_of(reference);
    let shown = reference.to_string();
    let fetched = match client.get_manifest(&repo, &manifest_ref(reference)) {
        Ok(f) => f,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let manifest = Manifest::parse(&fetched.bytes, Some(&fetched.media_type))
        .map_err(|e| RegistryCacheError::BadManifest { reference: shown.clone(), message: e.to_string() })?;
    let image = match check_manifest(&manifest) {
        Ok(image) => image,
        // An image (or an index of images) may carry an inline cache in its config.
        Err(not_a_cache) => return read_inline(client, &repo, &shown, fetched.digest, &manifest, not_a_cache),
    };
    let config = fetch_config(client, &repo, &shown, image)?;
    let (entries, dropped) = match decode(image, &config) {
        Ok(v) => v,
        Err(source) => return Err(RegistryCacheError::Format { reference: shown, source }),
    };
    if dropped > 0 {
        tracing::warn!(reference = %shown, dropped, "cache records that contradict their manifest were ignored");
    }
    Ok(Some(Current { digest: fetched.digest, entries, layers: image.layers.iter().map(|d| d.digest.clone()).collect(), dropped }))
}

fn fetch_config(client: &Client, repo: &Repo, shown: &str, image: &kiln_oci::ImageManifest) -> Result<Vec<u8>, RegistryCacheError> {
    if image.config.size > MAX_CONFIG {
        return Err(RegistryCacheError::ConfigTooLarge { reference: shown.to_string(), size: image.config.size });
    }
    let mut config = Vec::with_capacity(image.config.size as usize);
    client.fetch_blob(repo, &image.config.digest, Some(image.config.size), &mut config)?;
    Ok(config)
}

/// The inline caches ([`crate::inline`]) of an image, or of every image of an index (each
/// platform's records are its own); `not_a_cache` is the error when none of them carries one.
fn read_inline(
    client: &Client,
    repo: &Repo,
    shown: &str,
    digest: Digest,
    manifest: &Manifest,
    not_a_cache: FormatError,
) -> Result<Option<Current>, RegistryCacheError> {
    let images: Vec<kiln_oci::ImageManifest> = match manifest {
        Manifest::Image(m) => vec![m.clone()],
        Manifest::Index(ix) => {
            let mut v = Vec::new();
            for child in ix.manifests.iter().filter(|d| kiln_oci::media::is_image_manifest(&d.media_type)) {
                let f = client.get_manifest(repo, &child.digest.to_string())?;
                if let Ok(Manifest::Image(m)) = Manifest::parse(&f.bytes, Some(&f.media_type)) {
                    v.push(m);
                }
            }
            v
        }
    };
    let (mut entries, mut layers, mut dropped, mut any) = (Vec::new(), HashSet::new(), 0, false);
    for image in &images {
        let config = fetch_config(client, repo, shown, image)?;
        match crate::inline::decode_image_config(image, &config) {
            Ok(Some((e, d))) => {
                any = true;
                entries.extend(e);
                dropped += d;
                layers.extend(image.layers.iter().map(|l| l.digest.clone()));
            }
            Ok(None) => {}
            Err(source) => return Err(RegistryCacheError::Format { reference: shown.to_string(), source }),
        }
    }
    if !any {
        return Err(RegistryCacheError::Format { reference: shown.to_string(), source: not_a_cache });
    }
    Ok(Some(Current { digest, entries, layers, dropped }))
}

/// A cache ref opened for import: its records in memory, its layers still in the registry.
#[derive(Debug)]
pub struct RegistryCache<'c> {
    client: &'c Client,
    reference: Reference,
    repo: Repo,
    digest: Digest,
    entries: HashMap<Digest, Entry>,
    dropped: usize,
}

impl<'c> RegistryCache<'c> {
    /// Fetches the ref's manifest and config, and nothing else. Never fails: a ref that does not
    /// exist is [`Opened::Missing`], one that cannot be read or is not a kiln cache [`Opened::Unusable`].
    pub fn open(client: &'c Client, reference: &Reference) -> Opened<RegistryCache<'c>> {
        match read_current(client, reference) {
            Ok(Some(cur)) => {
                tracing::debug!(reference = %reference, records = cur.entries.len(), digest = %cur.digest, "cache imported");
                Opened::Opened(RegistryCache {
                    client,
                    reference: reference.clone(),
                    repo: repo_of(reference),
                    digest: cur.digest,
                    entries: cur.entries.into_iter().map(|e| (e.key().clone(), e)).collect(),
                    dropped: cur.dropped,
                })
            }
            Ok(None) => {
                Opened::Missing(format!("cache {reference} not found (HTTP 404): building without it; a --cache-to export will create it"))
            }
            Err(error) => Opened::Unusable(format!("cache {reference} not used: {error}")),
        }
    }

    /// The record stored under `key`, with its layer descriptor as the ref lists it.
    pub fn lookup(&self, key: &Digest) -> Option<Record> {
        self.entries.get(key).map(|e| e.record.clone())
    }

    /// The platform a record was built for, as the ref says.
    pub fn platform_of(&self, key: &Digest) -> Option<&str> {
        self.entries.get(key).and_then(|e| e.platform.as_deref())
    }

    /// Every record (sorted by key), for `kiln cache ls` and for explaining misses.
    pub fn records(&self) -> Vec<Record> {
        let mut v: Vec<Record> = self.entries.values().map(|e| e.record.clone()).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records ignored because they contradicted the manifest.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Digest of the manifest that was read.
    pub fn manifest_digest(&self) -> &Digest {
        &self.digest
    }

    /// Every layer of the ref, as a source for mounting (final image push, `--cache-to` elsewhere).
    pub fn layer_sources(&self) -> LayerSources {
        let mut s = LayerSources::new();
        for e in self.entries.values() {
            if let Some(l) = &e.record.layer {
                s.add(l.descriptor.digest.clone(), &self.reference);
            }
        }
        s
    }

    /// Downloads `record`'s layer into `store` (verified, atomic), unless it is there already.
    pub fn fetch_layer(&self, record: &Record, store: &Store) -> Result<BlobInfo, RegistryCacheError> {
        self.fetch_layer_reporting(record, store, &kiln_registry::NoProgress)
    }

    /// [`RegistryCache::fetch_layer`], reporting the bytes to `progress` as they arrive.
    pub fn fetch_layer_reporting(
        &self,
        record: &Record,
        store: &Store,
        progress: &dyn kiln_registry::Progress,
    ) -> Result<BlobInfo, RegistryCacheError> {
        let Some(layer) = &record.layer else {
            return Err(RegistryCacheError::NoLayer { reference: self.reference.to_string(), key: record.key.clone() });
        };
        let d = &layer.descriptor;
        // Unverified reader: the store's writer hashes what it writes and checks the digest on
        // commit, so one sha256 pass covers the download (a verifying reader made it two).
        let reader = self.client.blob_reader(&self.repo, &d.digest, Some(d.size)).unverified();
        progress.blob_start(&d.digest, d.size, "layer");
        let reader = Counting { inner: reader, digest: &d.digest, done: 0, reported: 0, progress };
        let stored = store.put_blob_stream(reader, Some(&d.digest)).map_err(|source| RegistryCacheError::Store {
            reference: self.reference.to_string(),
            context: format!("storing layer {}", d.digest),
            source,
        })?;
        progress.blob_done(&d.digest, "downloaded");
        Ok(stored)
    }
}

/// `r`, reporting the bytes it reads (from `offset`, where an upload resumes).
fn counted<'a>(
    r: Box<dyn Read + Send + 'a>,
    digest: &'a Digest,
    offset: u64,
    progress: &'a dyn kiln_registry::Progress,
) -> Box<dyn Read + Send + 'a> {
    Box::new(Counting { inner: r, digest, done: offset, reported: offset, progress })
}

/// A reader that reports its bytes every MiB.
struct Counting<'a, R> {
    inner: R,
    digest: &'a Digest,
    done: u64,
    reported: u64,
    progress: &'a dyn kiln_registry::Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 1 << 20 {
            self.reported = self.done;
            self.progress.blob_progress(self.digest, self.done);
        }
        Ok(n)
    }
}

impl CacheSource for RegistryCache<'_> {
    fn lookup(&self, key: &Digest) -> Option<Record> {
        RegistryCache::lookup(self, key)
    }

    fn records(&self) -> Vec<Record> {
        RegistryCache::records(self)
    }

    fn fetch_layer(&self, record: &Record, store: &Store) -> Result<BlobInfo, CacheError> {
        Ok(RegistryCache::fetch_layer(self, record, store)?)
    }

    fn fetch_layer_reporting(
        &self,
        record: &Record,
        store: &Store,
        progress: &dyn kiln_registry::Progress,
    ) -> Result<BlobInfo, CacheError> {
        Ok(RegistryCache::fetch_layer_reporting(self, record, store, progress)?)
    }

    fn layer_sources(&self) -> LayerSources {
        RegistryCache::layer_sources(self)
    }

    fn describe(&self) -> String {
        self.reference.to_string()
    }
}

/// A `--cache-to type=registry` destination as a [`CacheSink`]: [`export`] to the target ref.
#[derive(Debug)]
pub struct RegistrySink<'c> {
    client: &'c Client,
    target: RegistryExport,
}

impl<'c> RegistrySink<'c> {
    pub fn new(client: &'c Client, target: RegistryExport) -> RegistrySink<'c> {
        RegistrySink { client, target }
    }
}

impl CacheSink for RegistrySink<'_> {
    fn mode(&self) -> CacheMode {
        self.target.mode
    }

    fn export(&self, records: &[Record], store: &Store, sources: &LayerSources) -> Result<ExportReport, CacheError> {
        self.export_reporting(records, store, sources, &kiln_registry::NoProgress)
    }

    fn export_reporting(
        &self,
        records: &[Record],
        store: &Store,
        sources: &LayerSources,
        progress: &dyn kiln_registry::Progress,
    ) -> Result<ExportReport, CacheError> {
        Ok(match export_reporting(self.client, &self.target, records, store, sources, now_secs(), progress)? {
            ExportOutcome::Exported(summary) => ExportReport::Exported(summary),
            other => ExportReport::Warned(ExportWarning {
                target: ExportTarget::Reference(self.target.reference.to_string()),
                warning: other.warning().unwrap_or("cache export failed").to_string(),
            }),
        })
    }

    fn describe(&self) -> String {
        self.target.reference.to_string()
    }
}

/// What an export did (serialisable for `--metadata-file`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportSummary {
    pub reference: String,
    /// The manifest digest the ref points at afterwards (`None` when there was nothing to write).
    pub digest: Option<Digest>,
    /// Records this build sent.
    pub exported: usize,
    /// Of those, records left out because their layer was neither in the store nor in a known
    /// repository (plus the records built on them).
    pub unavailable: usize,
    /// Records the ref holds afterwards.
    pub records: usize,
    pub pruned_ttl: usize,
    pub pruned_size: usize,
    pub layers_uploaded: usize,
    pub layers_mounted: usize,
    /// Layers the registry had already (skipped after a HEAD, or listed by the ref already).
    pub layers_present: usize,
    pub bytes_uploaded: u64,
    /// Distinct layer bytes the ref references.
    pub layer_bytes: u64,
    /// Read-merge-write cycles it took (1 without contention).
    pub attempts: u32,
}

impl ExportSummary {
    /// What a `type=inline` export reports: the records handed to the image (`reference` is
    /// `inline`; nothing is uploaded by the cache itself).
    pub fn inline(records: usize) -> ExportSummary {
        ExportSummary {
            reference: "inline".to_string(),
            digest: None,
            exported: records,
            unavailable: 0,
            records,
            pruned_ttl: 0,
            pruned_size: 0,
            layers_uploaded: 0,
            layers_mounted: 0,
            layers_present: 0,
            bytes_uploaded: 0,
            layer_bytes: 0,
            attempts: 1,
        }
    }
}

/// The result of a `--cache-to type=registry` export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOutcome {
    Exported(ExportSummary),
    /// The credentials cannot write the ref (401/403/denied): export is off for this build.
    Denied {
        warning: String,
    },
    /// Any other failure, downgraded to a warning (`ignore-error=true`, the default).
    Failed {
        warning: String,
    },
}

impl ExportOutcome {
    pub fn warning(&self) -> Option<&str> {
        match self {
            ExportOutcome::Exported(_) => None,
            ExportOutcome::Denied { warning } | ExportOutcome::Failed { warning } => Some(warning),
        }
    }
}

/// Exports `records` (already chosen with [`crate::select`] for the target's mode) to the target ref
/// by read-merge-write. Layers are read from `store`, or from `sources` when the store lacks them.
///
/// Returns `Err` only when `target.ignore_error` is false; otherwise every failure is an
/// [`ExportOutcome`] with a warning to print.
pub fn export(
    client: &Client,
    target: &RegistryExport,
    records: &[Record],
    store: &Store,
    sources: &LayerSources,
) -> Result<ExportOutcome, RegistryCacheError> {
    export_at(client, target, records, store, sources, now_secs())
}

/// [`export`] with the clock given: `now` stamps the records' last use and is what the TTL is
/// measured against. `kiln cache prune` is an export of no records.
pub fn export_at(
    client: &Client,
    target: &RegistryExport,
    records: &[Record],
    store: &Store,
    sources: &LayerSources,
    now: u64,
) -> Result<ExportOutcome, RegistryCacheError> {
    export_reporting(client, target, records, store, sources, now, &kiln_registry::NoProgress)
}

/// [`export_at`], reporting the bytes of each layer uploaded to `progress`.
pub fn export_reporting(
    client: &Client,
    target: &RegistryExport,
    records: &[Record],
    store: &Store,
    sources: &LayerSources,
    now: u64,
    progress: &dyn kiln_registry::Progress,
) -> Result<ExportOutcome, RegistryCacheError> {
    match export_inner(client, target, records, store, sources, now, progress) {
        Ok(s) => Ok(ExportOutcome::Exported(s)),
        Err(e) if !target.ignore_error => Err(e),
        Err(e) if e.is_denied() => Ok(ExportOutcome::Denied {
            warning: format!("cache export to {} turned off: the credentials cannot write it: {e}", target.reference),
        }),
        Err(e) => Ok(ExportOutcome::Failed {
            warning: format!("cache export to {} failed; the build result is unaffected: {e}", target.reference),
        }),
    }
}

fn open_store_blob<'a>(store: &'a Store, digest: &'a Digest) -> impl Fn(u64) -> io::Result<Box<dyn Read + Send + 'a>> + Sync + 'a {
    move |offset| {
        let mut f = store.open_blob(digest).map_err(io::Error::other)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(f) as Box<dyn Read + Send>)
    }
}

fn export_inner(
    client: &Client,
    target: &RegistryExport,
    records: &[Record],
    store: &Store,
    sources: &LayerSources,
    now: u64,
    progress: &dyn kiln_registry::Progress,
) -> Result<ExportSummary, RegistryCacheError> {
    let reference = &target.reference;
    let shown = reference.to_string();
    let records = &gzip_records(store, records, &shown)?;
    let repo = repo_of(reference);
    let tag = manifest_ref(reference);
    let rules = PruneRules { ttl: target.ttl, max_size: target.max_size };
    let incoming: Vec<Entry> = records.iter().cloned().map(|r| Entry::exported(r, now)).collect();
    let incoming_keys: BTreeSet<Digest> = incoming.iter().map(|e| e.key().clone()).collect();

    let mut attempts = 0;
    let mut verify_layers = false;
    loop {
        attempts += 1;
        let current = read_current(client, reference)?;
        let (base_digest, mut existing, mut present) = match current {
            Some(c) => (Some(c.digest), c.entries, c.layers),
            None => (None, Vec::new(), HashSet::new()),
        };
        if verify_layers {
            // The registry refused a manifest listing these layers: some blob went (a registry-side
            // clean-up). Keep only the layers it still has, and drop the records that relied on a
            // lost layer nobody here can push again, so the ref heals instead of failing forever.
            present = layers_still_there(client, &repo, &present)?;
            let lost: BTreeSet<Digest> = existing
                .iter()
                .filter(|e| {
                    e.record.layer.as_ref().is_some_and(|l| {
                        let d = &l.descriptor.digest;
                        !present.contains(d) && !store.has_blob(d) && sources.get(d).is_none()
                    })
                })
                .map(|e| e.key().clone())
                .collect();
            if !lost.is_empty() {
                let mut gone = descendants_of(&existing, &lost);
                gone.extend(lost);
                tracing::warn!(reference = %shown, records = gone.len(), "cache records dropped: the registry lost their layers");
                existing.retain(|e| !gone.contains(e.key()));
            }
        }

        // A record is exportable when its layer can be found somewhere we can push it from.
        let missing: BTreeSet<Digest> = incoming
            .iter()
            .filter(|e| {
                e.record.layer.as_ref().is_some_and(|l| {
                    let d = &l.descriptor.digest;
                    !present.contains(d) && !store.has_blob(d) && sources.get(d).is_none()
                })
            })
            .map(|e| e.key().clone())
            .collect();
        let mut unusable = descendants_of(&incoming, &missing);
        unusable.extend(missing.iter().cloned());
        if !unusable.is_empty() {
            tracing::warn!(reference = %shown, records = unusable.len(), "cache records left out: their layers are neither in the local store nor in a known repository");
        }
        let usable: Vec<Entry> = incoming.iter().filter(|e| !unusable.contains(e.key())).cloned().collect();
        if base_digest.is_none() && usable.is_empty() {
            return Ok(ExportSummary {
                reference: shown,
                digest: None,
                exported: incoming.len(),
                unavailable: unusable.len(),
                records: 0,
                pruned_ttl: 0,
                pruned_size: 0,
                layers_uploaded: 0,
                layers_mounted: 0,
                layers_present: 0,
                bytes_uploaded: 0,
                layer_bytes: 0,
                attempts,
            });
        }

        let merged = merge(existing, usable, &rules, now);
        let encoded = encode(&merged.entries);

        let to_push: Vec<&Descriptor> = encoded.layers.iter().filter(|d| !present.contains(&d.digest)).collect();
        let uploaded = AtomicUsize::new(0);
        let mounted = AtomicUsize::new(0);
        let existed = AtomicUsize::new(encoded.layers.len() - to_push.len());
        let bytes = AtomicU64::new(0);
        kiln_registry::run_parallel(&to_push, client.options().parallel, |d| {
            progress.blob_start(&d.digest, d.size, "layer");
            let outcome = push_layer(client, &repo, d, store, sources, progress)?;
            progress.blob_done(&d.digest, "uploaded");
            match outcome {
                PushOutcome::Exists => existed.fetch_add(1, Ordering::Relaxed),
                PushOutcome::Mounted => mounted.fetch_add(1, Ordering::Relaxed),
                PushOutcome::Uploaded => {
                    bytes.fetch_add(d.size, Ordering::Relaxed);
                    uploaded.fetch_add(1, Ordering::Relaxed)
                }
            };
            Ok(())
        })?;
        let config = &encoded.config;
        client.push_blob(&repo, &encoded.config_descriptor.digest, encoded.config_descriptor.size, None, &|offset| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(config.len());
            Ok(Box::new(Cursor::new(&config[start..])) as Box<dyn Read + Send>)
        })?;

        let summary = |digest: Digest, attempts: u32| ExportSummary {
            reference: shown.clone(),
            digest: Some(digest),
            exported: incoming.len(),
            unavailable: unusable.len(),
            records: merged.entries.len(),
            pruned_ttl: merged.pruned_ttl,
            pruned_size: merged.pruned_size,
            layers_uploaded: uploaded.load(Ordering::Relaxed),
            layers_mounted: mounted.load(Ordering::Relaxed),
            layers_present: existed.load(Ordering::Relaxed),
            bytes_uploaded: bytes.load(Ordering::Relaxed),
            layer_bytes: merged.layer_bytes,
            attempts,
        };

        // Optimistic concurrency, part one: write only over what was merged.
        let check_started = std::time::Instant::now();
        let now_digest = match client.get_manifest(&repo, &tag) {
            Ok(f) => Some(f.digest),
            Err(RegistryError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if now_digest != base_digest {
            tracing::debug!(reference = %shown, attempts, "cache ref changed since it was read; merging again");
            retry_or_give_up(&shown, attempts)?;
            continue;
        }
        let ours = Digest::sha256_of(&encoded.manifest);
        if base_digest.as_ref() == Some(&ours) {
            return Ok(summary(ours, attempts));
        }
        match client.put_manifest(&repo, &tag, media::OCI_MANIFEST, &encoded.manifest) {
            Ok(_) => {}
            // 400 is MANIFEST_BLOB_UNKNOWN (or another validation failure): check the layers once.
            Err(RegistryError::Status { status: 400, .. }) if !verify_layers => {
                tracing::debug!(reference = %shown, "registry refused the manifest; checking which layers it still has");
                verify_layers = true;
                retry_or_give_up(&shown, attempts)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }

        // Part two: a writer that read before our PUT and wrote after it has dropped our records.
        // Wait long enough for such a write to land, then check that ours survived.
        std::thread::sleep(verification_pause(check_started.elapsed()));
        let after = read_current(client, reference)?;
        let survived: BTreeSet<&Digest> = merged.entries.iter().map(|e| e.key()).filter(|k| incoming_keys.contains(*k)).collect();
        match after {
            Some(a) if a.digest == ours => return Ok(summary(ours, attempts)),
            Some(a) => {
                let there: HashSet<&Digest> = a.entries.iter().map(|e| e.key()).collect();
                if survived.iter().all(|k| there.contains(*k)) {
                    return Ok(summary(a.digest, attempts));
                }
                tracing::debug!(reference = %shown, attempts, "another export overwrote this one's records; merging again");
            }
            None => tracing::debug!(reference = %shown, attempts, "cache ref vanished after the write; writing again"),
        }
        retry_or_give_up(&shown, attempts)?;
    }
}

/// The subset of `layers` the repository still has (HEAD each, in parallel).
fn layers_still_there(client: &Client, repo: &Repo, layers: &HashSet<Digest>) -> Result<HashSet<Digest>, RegistryError> {
    let list: Vec<&Digest> = layers.iter().collect();
    let found = std::sync::Mutex::new(HashSet::new());
    let scopes = kiln_registry::auth::Scopes::pull(&repo.name);
    kiln_registry::run_parallel(&list, client.options().parallel, |d| {
        if client.blob_exists(repo, d, &scopes)?.is_some() {
            found.lock().unwrap_or_else(|p| p.into_inner()).insert((*d).clone());
        }
        Ok(())
    })?;
    Ok(found.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn retry_or_give_up(reference: &str, attempts: u32) -> Result<(), RegistryCacheError> {
    if attempts >= MAX_EXPORT_ATTEMPTS {
        return Err(RegistryCacheError::Contended { reference: reference.to_string(), attempts });
    }
    let cap = Duration::from_millis(50u64.saturating_mul(1 << attempts.min(5)));
    std::thread::sleep(jitter(Duration::from_millis(20), cap.max(Duration::from_millis(40))));
    Ok(())
}

fn push_layer(
    client: &Client,
    repo: &Repo,
    d: &Descriptor,
    store: &Store,
    sources: &LayerSources,
    progress: &dyn kiln_registry::Progress,
) -> Result<PushOutcome, RegistryError> {
    let source = sources.get(&d.digest);
    if store.has_blob(&d.digest) {
        let mount_from = source.filter(|s| s.registry == repo.registry).map(|s| s.name.as_str());
        let open_blob = open_store_blob(store, &d.digest);
        let open = |offset: u64| open_blob(offset).map(|r| counted(r, &d.digest, offset, progress));
        return client.push_blob(repo, &d.digest, d.size, mount_from, &open);
    }
    match source {
        Some(src) => {
            // Same registry: the mount normally succeeds and no byte moves; should the registry
            // refuse it, the upload streams from the source repository instead.
            let mount_from = (src.registry == repo.registry).then_some(src.name.as_str());
            let open = |offset: u64| {
                let r = Box::new(client.blob_reader_at(src, &d.digest, Some(d.size), offset).unverified()) as Box<dyn Read + Send>;
                Ok(counted(r, &d.digest, offset, progress))
            };
            client.push_blob(repo, &d.digest, d.size, mount_from, &open)
        }
        None => Err(RegistryError::Store {
            context: format!("{repo}@{}", d.digest),
            message: "layer is neither in the local store nor in a known repository".into(),
        }),
    }
}
