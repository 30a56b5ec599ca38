//! Export as you go: a step's layer leaves the machine while the later steps run.
//!
//! The model. A cold CI build used to run every step, then compress every layer, then upload it:
//! the tail after the last command was all export. Here a layer is *offered* (`Eager::offer`) the
//! moment its step is committed (snapshot in the store, record in the local cache): that layer will
//! never change, so its export form can be made and sent now. A few workers ([`WORKERS`]) take the
//! offers in order; for each layer a worker
//!
//! 1. decides where it goes, from what the build was asked to do: every registry `--cache-to` in
//!    `mode=max`, only those in `mode=min` when the layer's stage is in the final image, and every
//!    repository a `--push` sends to ([`PushTarget`]) when its stage is in the final image (layers of
//!    stages the image does not contain are never pushed to its repository);
//! 2. makes its export form through the codec functions the end of the build uses
//!    (`kiln_oci::layer::compress_layer`), so the form is remembered in the store and the cache
//!    export and push that follow name the same blob without compressing again;
//! 3. sends it once per registry: a repository of that registry that has the blob already is the
//!    source, else the first one (a cache ref before an image repository) gets the upload, and every
//!    other repository of the registry gets a cross-repo mount. A blob a repository has already (a
//!    HEAD by digest) is not sent again.
//!
//! Nothing here writes a manifest or a cache record: the end of the build does that as it always
//! did ([`crate::build`]'s `export_caches`, the push exporter), and finds each blob present, so a
//! failed build never leaves a manifest that names a missing blob. This is an accelerator: a failed
//! upload here is only remembered ([`Report::failed`]), and the end of the build, which uploads
//! whatever the registry lacks, says what went wrong if it happens again.
//!
//! Memory stays flat: the queue holds descriptors, and each upload streams from the store. The
//! build waits for the last upload (`Eager::finish`) before it writes manifests. Cancelled
//! ([`crate::cancel`]), the workers skip what only the image needed (a cancelled build pushes no
//! image) and finish what the cache export of the finished steps needs. A build that fails drops
//! the exporter, which stops the workers at once: queued layers are skipped and uploads under way
//! are cut off.
//!
//! Only registry caches and image pushes go ahead. `type=local`, `type=gha` and `type=inline`
//! caches keep the end-of-build path: a directory cache or the GitHub cache service has no use for
//! a blob without its index, and an inline cache is part of the image's config.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Seek};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use kiln_cache::{CacheMode, RegistryExport};
use kiln_dockerfile::instructions::{Resolved, Source};
use kiln_oci::layer::Codec;
use kiln_oci::{Descriptor, Digest, Reference, Store};
use kiln_registry::auth::Scopes;
use kiln_registry::{Client, PushOutcome, Repo};

use crate::base::{Transfer, Transfers};
use crate::cancel::Cancel;
use crate::BuildOptions;

/// How many layers are compressed and uploaded at once: enough to keep an upload going while the
/// next layer compresses, few enough to leave the cores to the build's own steps.
pub const WORKERS: usize = 2;

/// A repository a `--push` will send the image to, and the codec its layers take there: the
/// build sends the final image's layers ahead of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub reference: Reference,
    pub codec: Codec,
    /// `force-compression=true`: recompress layers that came compressed another way.
    pub force: bool,
}

/// Where a layer being offered came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A step's layer: a cache record's, and the image's when its stage is in the image.
    Step,
    /// A base image's layer: only ever the image's.
    Base,
}

/// What the exporter did, for the build's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Layers offered and sent somewhere.
    pub layers: usize,
    pub uploaded: usize,
    pub mounted: usize,
    /// Blobs a repository had already.
    pub present: usize,
    pub bytes_uploaded: u64,
    /// Uploads that failed here (the end of the build tries them again): `repo@digest: error`.
    pub failed: Vec<String>,
}

impl Report {
    /// One line for the build's output, `None` when nothing went ahead.
    pub fn line(&self) -> Option<String> {
        if self.layers == 0 {
            return None;
        }
        let mut s = format!(
            "exported ahead while building: {} layers ({} uploaded, {:.1} MB; {} mounted; {} present)",
            self.layers,
            self.uploaded,
            self.bytes_uploaded as f64 / 1e6,
            self.mounted,
            self.present
        );
        if !self.failed.is_empty() {
            s.push_str(&format!("; {} failed and were retried at the end", self.failed.len()));
        }
        Some(s)
    }
}

/// Where a build's layers go ahead.
#[derive(Debug, Default)]
struct Targets {
    /// Each registry `--cache-to`'s repository and mode.
    cache: Vec<(Reference, CacheMode)>,
    /// Each push repository.
    image: Vec<PushTarget>,
    /// The stages whose layers the final image holds: the target and the stages it is `FROM`.
    final_stages: HashSet<usize>,
}

impl Targets {
    fn of(opts: &BuildOptions, resolved: &Resolved) -> Targets {
        let cache = if opts.policy.policy.allows_export() {
            opts.cache_to.iter().filter_map(|c| c.get::<RegistryExport>()).map(|r| (r.reference.clone(), r.mode)).collect()
        } else {
            Vec::new()
        };
        Targets { cache, image: opts.push_ahead.clone(), final_stages: final_stages(resolved) }
    }

    fn is_empty(&self) -> bool {
        self.cache.is_empty() && self.image.is_empty()
    }

    /// The job for `layer` of `stage`, `None` when it goes nowhere.
    fn job(&self, stage: usize, kind: Kind, layer: &Descriptor) -> Option<Job> {
        let in_image = self.final_stages.contains(&stage);
        let cache: Vec<Reference> = match kind {
            Kind::Base => Vec::new(),
            Kind::Step => self.cache.iter().filter(|(_, mode)| *mode == CacheMode::Max || in_image).map(|(r, _)| r.clone()).collect(),
        };
        let image: Vec<PushTarget> = if in_image { self.image.clone() } else { Vec::new() };
        (!cache.is_empty() || !image.is_empty()).then(|| Job { layer: layer.clone(), cache, image })
    }
}

/// The stages whose layers the final image holds: the target, the stage it is `FROM`, and so on.
fn final_stages(resolved: &Resolved) -> HashSet<usize> {
    let mut out = HashSet::new();
    let mut at = Some(resolved.target);
    while let Some(i) = at.filter(|i| out.insert(*i)) {
        at = resolved.stages.iter().find(|s| s.index == i).and_then(|s| match s.base {
            Source::Stage(b) => Some(b),
            _ => None,
        });
    }
    out
}

/// One layer and where it goes.
struct Job {
    layer: Descriptor,
    cache: Vec<Reference>,
    image: Vec<PushTarget>,
}

/// One repository a layer goes to.
struct Dest {
    repo: Repo,
    /// How its transfer is named in the progress (`push REF`, `cache-export REF`).
    what: String,
    is_cache: bool,
}

/// What the workers share.
struct Worker {
    store: Store,
    client: Arc<Client>,
    transfers: Transfers,
    cancel: Cancel,
    /// Set when the build failed: skip everything, cut uploads off.
    stop: Arc<AtomicBool>,
    report: Mutex<Report>,
}

/// The background exporter of one build (one platform). See the module doc.
pub(crate) struct Eager {
    targets: Targets,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    seen: Mutex<HashSet<Digest>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shared: Option<Arc<Worker>>,
}

impl Eager {
    /// An exporter for the build of `resolved` with `opts`; idle (offers are dropped) when the
    /// build exports to no registry cache and pushes nowhere, or has no registry client.
    pub fn start(opts: &BuildOptions, store: &Store, resolved: &Resolved, transfers: Transfers) -> Eager {
        let targets = Targets::of(opts, resolved);
        let idle =
            Eager { targets: Targets::default(), tx: Mutex::new(None), seen: Mutex::default(), workers: Mutex::default(), shared: None };
        let Some(client) = opts.registry.clone() else { return idle };
        if targets.is_empty() {
            return idle;
        }
        let shared = Arc::new(Worker {
            store: store.clone(),
            client,
            transfers,
            cancel: opts.cancel.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            report: Mutex::default(),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..WORKERS)
            .map(|_| {
                let (w, rx) = (shared.clone(), rx.clone());
                std::thread::spawn(move || loop {
                    // The lock is held only to take the next job, not while working on it.
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        Ok(job) => w.run(job),
                        Err(_) => return,
                    }
                })
            })
            .collect();
        Eager { targets, tx: Mutex::new(Some(tx)), seen: Mutex::default(), workers: Mutex::new(workers), shared: Some(shared) }
    }

    /// A layer of `stage` is final: send it where it goes (each digest once per build).
    pub fn offer(&self, stage: usize, kind: Kind, layer: &Descriptor) {
        let Some(job) = self.targets.job(stage, kind, layer) else { return };
        if !self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(layer.digest.clone()) {
            return;
        }
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(job);
        }
    }

    /// Waits for every offered layer to be sent (cancelled: for what the cache needs), and says
    /// what went ahead. Later offers are dropped.
    pub fn finish(&self) -> Report {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        for h in std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = h.join();
        }
        self.shared.as_ref().map(|w| w.report.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default()
    }
}

impl Drop for Eager {
    /// A build that ends without [`Eager::finish`] failed: stop now, leave nothing running.
    fn drop(&mut self) {
        if let Some(w) = &self.shared {
            if !self.workers.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                w.stop.store(true, Ordering::SeqCst);
            }
        }
        self.finish();
    }
}

impl Worker {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn run(&self, job: Job) {
        if self.stopped() {
            return;
        }
        // Cancelled, the image will not be pushed: only the cache export still wants layers.
        let image = if self.cancel.is_cancelled() { Vec::new() } else { job.image };
        // Each export form and the repositories that take it; the cache's form is the default codec.
        let mut forms: Vec<((Codec, bool), Vec<Dest>)> = Vec::new();
        let mut add = |form: (Codec, bool), r: &Reference, what: String, is_cache: bool| {
            let repo = Repo::new(r.registry(), r.repository());
            let i = forms.iter().position(|(f, _)| *f == form).unwrap_or_else(|| {
                forms.push((form, Vec::new()));
                forms.len() - 1
            });
            if !forms[i].1.iter().any(|d| d.repo == repo) {
                forms[i].1.push(Dest { repo, what, is_cache });
            }
        };
        for r in &job.cache {
            add((Codec::DEFAULT, false), r, format!("cache-export {r}"), true);
        }
        for t in &image {
            add((t.codec, t.force), &t.reference, format!("push {}", t.reference), false);
        }
        if forms.is_empty() {
            return;
        }
        // A layer known only from a registry cache is not here: the end of the build mounts it.
        if !self.store.has_blob(&job.layer.digest) {
            return;
        }
        let mut sent = false;
        for ((codec, force), repos) in forms {
            if self.stopped() {
                return;
            }
            let d = match kiln_oci::layer::compress_layer(&self.store, &job.layer, codec, force) {
                Ok(d) => d,
                Err(e) => {
                    self.failed(format!("{}: compressing: {e}", job.layer.digest));
                    continue;
                }
            };
            if !self.store.has_blob(&d.digest) {
                continue;
            }
            let mut by_registry: BTreeMap<&str, Vec<&Dest>> = BTreeMap::new();
            for r in &repos {
                by_registry.entry(r.repo.registry.as_str()).or_default().push(r);
            }
            for (_, mut group) in by_registry {
                // Cache refs first: a cancel cuts the image's uploads, never the cache's.
                group.sort_by_key(|d| !d.is_cache);
                self.send(&d, &group);
                sent = true;
            }
        }
        if sent {
            self.report.lock().unwrap_or_else(|p| p.into_inner()).layers += 1;
        }
    }

    /// `d` to every repository of `group` (one registry): uploaded at most once, mounted for the rest.
    fn send(&self, d: &Descriptor, group: &[&Dest]) {
        // A repository that has the blob already is where the others mount it from.
        let mut source: Option<&Repo> = None;
        // The repositories that answered 404 just now: their upload need not ask again.
        let mut missing: Vec<&Repo> = Vec::new();
        for Dest { repo, what, .. } in group.iter().copied() {
            match self.client.blob_exists(repo, &d.digest, &Scopes::push(&repo.name)) {
                Ok(Some(_)) => {
                    self.count(PushOutcome::Exists, 0);
                    self.progress(what, &d.digest, d.size, d.size);
                    source.get_or_insert(repo);
                }
                Ok(None) => missing.push(repo),
                Err(_) => {}
            }
        }
        for Dest { repo, what, is_cache } in group.iter().copied() {
            if self.stopped() || (!is_cache && self.cancel.is_cancelled()) {
                return;
            }
            if source == Some(repo) {
                continue;
            }
            let mount_from = source.map(|s| s.name.as_str());
            let open = |offset: u64| -> io::Result<Box<dyn Read + Send + '_>> {
                let mut f = self.store.open_blob(&d.digest).map_err(io::Error::other)?;
                f.seek(io::SeekFrom::Start(offset))?;
                let inner = io::BufReader::with_capacity(1 << 20, f);
                Ok(Box::new(Stoppable {
                    inner,
                    worker: self,
                    image_only: !is_cache,
                    what,
                    digest: &d.digest,
                    pos: offset,
                    reported: offset,
                    total: d.size,
                }))
            };
            let pushed = if missing.contains(&repo) {
                self.client.upload_missing_blob(repo, &d.digest, d.size, mount_from, &open)
            } else {
                self.client.push_blob(repo, &d.digest, d.size, mount_from, &open)
            };
            match pushed {
                Ok(outcome) => {
                    self.count(outcome, d.size);
                    self.progress(what, &d.digest, d.size, d.size);
                    source.get_or_insert(repo);
                }
                Err(e) => {
                    tracing::debug!(%repo, digest = %d.digest, error = %e, "upload ahead failed; the end of the build tries again");
                    self.failed(format!("{repo}@{}: {e}", d.digest));
                }
            }
        }
    }

    fn count(&self, outcome: PushOutcome, size: u64) {
        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            PushOutcome::Exists => r.present += 1,
            PushOutcome::Mounted => r.mounted += 1,
            PushOutcome::Uploaded => {
                r.uploaded += 1;
                r.bytes_uploaded += size;
            }
        }
    }

    fn failed(&self, what: String) {
        self.report.lock().unwrap_or_else(|p| p.into_inner()).failed.push(what);
    }

    /// `WHAT sha256:…` as the end-of-build exports name their transfers.
    fn progress(&self, what: &str, digest: &Digest, done: u64, total: u64) {
        let hex = digest.hex();
        let what = format!("{what} sha256:{}", &hex[..hex.len().min(12)]);
        let _ = self.transfers.0.send(Transfer { what, done, total: Some(total) });
    }
}

/// A blob read from the store for an upload: reports its bytes every MiB, and fails (ending the
/// upload) once the build failed, or, for an image-only upload, once it was cancelled.
struct Stoppable<'a, R> {
    inner: R,
    worker: &'a Worker,
    image_only: bool,
    what: &'a str,
    digest: &'a Digest,
    pos: u64,
    reported: u64,
    total: u64,
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.worker.stopped() || (self.image_only && self.worker.cancel.is_cancelled()) {
            return Err(io::Error::other("the build stopped"));
        }
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        if self.pos - self.reported >= 1 << 20 {
            self.reported = self.pos;
            self.worker.progress(self.what, self.digest, self.pos.min(self.total), self.total);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(n: u8) -> Descriptor {
        Descriptor::new(kiln_oci::media::OCI_LAYER_TAR, Digest::sha256_of(&[n]), 1)
    }

    fn targets(modes: &[CacheMode], push: bool) -> Targets {
        let r = |s: &str| Reference::parse(s).unwrap();
        Targets {
            cache: modes.iter().enumerate().map(|(i, m)| (r(&format!("127.0.0.1:5000/cache{i}:main")), *m)).collect(),
            image: if push {
                vec![PushTarget { reference: r("127.0.0.1:5000/app:1"), codec: Codec::DEFAULT, force: false }]
            } else {
                Vec::new()
            },
            // Stage 2 is the target, FROM stage 1; stage 0 is a builder stage copied from.
            final_stages: [1, 2].into_iter().collect(),
        }
    }

    #[test]
    fn mode_min_caches_and_the_push_take_only_the_final_images_layers() {
        let t = targets(&[CacheMode::Min, CacheMode::Max], true);
        let builder = t.job(0, Kind::Step, &desc(0)).expect("mode=max wants a builder stage's layer");
        assert_eq!(builder.cache.len(), 1, "only the mode=max ref");
        assert!(builder.cache[0].to_string().contains("cache1"));
        assert!(builder.image.is_empty(), "a stage the image does not hold is never pushed to its repository");
        let fin = t.job(1, Kind::Step, &desc(1)).expect("the final image's layer goes everywhere");
        assert_eq!((fin.cache.len(), fin.image.len()), (2, 1));
        let base = t.job(2, Kind::Base, &desc(2)).expect("a base layer of the image is pushed");
        assert_eq!((base.cache.len(), base.image.len()), (0, 1), "a base layer is no cache layer");
    }

    #[test]
    fn a_layer_that_goes_nowhere_makes_no_job() {
        let t = targets(&[CacheMode::Min], false);
        assert!(t.job(0, Kind::Step, &desc(0)).is_none());
        assert!(t.job(2, Kind::Base, &desc(0)).is_none());
        assert!(targets(&[], false).is_empty());
    }

    #[test]
    fn the_final_stages_follow_the_from_chain() {
        let df =
            "FROM scratch AS a\nCOPY x /x\nFROM a AS b\nCOPY y /y\nFROM scratch AS c\nCOPY --from=b /y /z\nFROM b\nCOPY --from=c /z /w\n";
        let parsed = kiln_dockerfile::parse_file("Dockerfile", df.as_bytes()).unwrap();
        let build = kiln_dockerfile::instructions::parse_build(&parsed, "Dockerfile").unwrap();
        let resolved = kiln_dockerfile::instructions::resolve(&build, &Default::default()).unwrap();
        let mut f: Vec<usize> = final_stages(&resolved).into_iter().collect();
        f.sort();
        assert_eq!(f, [0, 1, 3], "the target, b and a; not c, which is only copied from");
    }
}
