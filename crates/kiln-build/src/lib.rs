//! kiln-build: from a Dockerfile and a context to an image, without a daemon.
//!
//! The model, in the order a build runs:
//! 1. **Frontend.** The Dockerfile is parsed and typed by `kiln-dockerfile`, then *resolved* for one
//!    target and platform: ARG/ENV scoping and expansion, stage references, and the set of stages the
//!    target needs (stages it does not need are never looked at).
//! 2. **Plan and keys.** Each step gets a cache key: the hash of its parent's key and the step's
//!    named inputs (the instruction as expanded, the env and ARGs a RUN sees, user, working dir,
//!    platform, and for COPY/ADD the content digest and mode of every file read — never mtimes). A
//!    base image is keyed by its manifest digest. A `--build-context` ([`named_context`]) stands in
//!    for the image or stage it is named like, keyed the same way (an image by its manifest
//!    digest, a directory by the files read from it). See `docs/cache.md`.
//! 3. **Solve.** Stages run dependencies first. A step whose key has a record in the cache is a hit:
//!    its layer is reused without running anything. A miss runs the step.
//! 4. **Execute and snapshot.** A step that changes files runs over an overlayfs mount of its parent's
//!    layers ([`snapshot`]) with a fresh upper dir: RUN in `kiln-sandbox`, COPY/ADD by writing into the
//!    merged root through the one safe path resolver. The upper dir becomes the step's layer (overlay
//!    whiteouts turn into OCI `.wh.` entries) and is kept as the next step's lower dir.
//! 5. **Export.** The final stage's layers and config become an OCI manifest in the local store.
//!    A whole `kiln build` ([`orchestrate::build_all`]) builds each platform that way, runs the
//!    `--test` gate, then hands the result to one [`export::Exporter`] per output (store tag and/or
//!    registry push, OCI layout, docker archive or the Docker engine ([`engine`]), the root file
//!    system as files or a tar; the formats are in [`output`]) and types what it leaves behind
//!    ([`metadata`]).
//!
//! Nothing here prints: progress goes through the [`Progress`] trait, which the CLI renders.

pub mod attest;
mod base;
pub mod cancel;
mod context;
mod copy;
pub mod eager;
pub mod engine;
mod error;
pub mod export;
mod glob;
pub mod hostroot;
pub mod metadata;
pub mod named_context;
mod native;
pub mod orchestrate;
pub mod output;
pub mod push;
pub mod reclaim;
pub mod run;
pub mod run_env;
pub mod snapshot;
mod solve;
mod ssh;
pub mod ssh_keys;
mod state;
pub mod time;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use kiln_cache::{CacheFrom, CacheSource, CacheTo, ExportReport, LocalCache, ResolvedPolicy};
use kiln_dockerfile::dockerignore::Matcher;
use kiln_dockerfile::instructions::resolve::BaseConfig;
use kiln_dockerfile::instructions::{parse_build, resolve, Build, PlatformArgs, ResolveOptions};
use kiln_oci::{media, Descriptor, Digest, ImageConfig, ImageManifest, Manifest, Platform, RootFs, Store};
use kiln_registry::Client;
use serde::{Deserialize, Serialize};

pub use cancel::Cancel;
pub use context::Context;
pub use error::{
    BaseFailure, BuildError, ContextError, FetchError, PushFailure, Refusal, RunRefusal, SnapshotError, SourceMiss, StepError, StepFailure,
};
pub use named_context::{NamedContext, NamedContextError, NamedContexts};
pub use run_env::RunEnvironment;
pub use state::{ImageState, LayerRef};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The kiln root (store, cache, snapshots).
    pub root: PathBuf,
    pub context: PathBuf,
    /// Default: `<context>/Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    pub no_cache: bool,
    /// The binary the sandbox re-executes (default: the running executable).
    pub init_binary: Option<PathBuf>,
    /// `SOURCE_DATE_EPOCH`: clamps layer mtimes and sets every `created` time.
    pub source_date_epoch: Option<u64>,
    /// `--cache-from` sources, read after the local cache (when the policy allows import).
    pub cache_from: Vec<CacheFrom>,
    /// `--cache-to` destinations (when the policy allows export).
    pub cache_to: Vec<CacheTo>,
    /// What the build may do with `--cache-from`/`--cache-to`, and why.
    pub policy: ResolvedPolicy,
    /// The registry client, for registry caches, base images and pushes.
    pub registry: Option<Arc<Client>>,
    /// How step roots are made: overlayfs, or copies where overlayfs is unavailable.
    pub snapshotter: SnapshotterKind,
    /// Download the final image's layers that came from a registry cache into the store (needed by
    /// every output but a push, which mounts them in the registry instead).
    pub fetch_final: bool,
    /// Stops the build from another thread (see [`cancel`]).
    pub cancel: Cancel,
    // -- options: RUN environment (network, hosts, shm, ulimit, secrets, ssh) --
    /// `--network`, `--add-host`, `--shm-size`, `--ulimit`, `--secret`, `--ssh`: what every RUN runs in
    /// beyond what the Dockerfile says (see [`run_env`]).
    pub run_env: RunEnvironment,
    // -- options: build contexts, --pull, inline cache --
    /// `--build-context NAME=VALUE`: sources that stand in for the stages and images they are named
    /// like, or that `COPY --from=NAME` reads (see [`named_context`]).
    pub build_contexts: named_context::NamedContexts,
    /// `--pull`: resolve base images (and `docker-image://` contexts) at their registry every time,
    /// not from the store's tag.
    pub pull: bool,
    // -- options: image metadata (labels, annotations) --
    /// `--label K=V`: set on the final image's config, over the Dockerfile's `LABEL`s.
    pub labels: BTreeMap<String, String>,
    // -- options: export as you go --
    /// The repositories the build's `--push` outputs send the image to: the final image's layers
    /// are uploaded there while later steps run ([`eager`]). Set by [`orchestrate::build_all`].
    pub push_ahead: Vec<eager::PushTarget>,
    // -- options: attestations --
    /// `None` without an SBOM; with one, whether other stages get theirs by default
    /// (`--attest type=sbom,scan-stage=true`). `BUILDKIT_SBOM_SCAN_STAGE` ARGs decide per stage
    /// over that default, as in BuildKit ([`attest::scans_stage`]); the stages scanned keep their
    /// final layers in the store.
    pub sbom_stages: Option<bool>,
    // -- options: isolation --
    /// `--isolation`: the sandbox (namespaces and overlay mounts), or none (see [`hostroot`]).
    pub isolation: Isolation,
}

/// `--isolation`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Each RUN in kiln's sandbox over a snapshot (needs root or, later, a user namespace).
    #[default]
    Sandbox,
    /// Build in the root kiln runs in (`--isolation none`, inside an unprivileged container).
    None {
        /// `--force`: go on even where `/` does not look like a container's.
        force: bool,
        /// `--ignore-path`: never diffed, removed or written.
        ignore_paths: Vec<PathBuf>,
    },
}

/// `--snapshotter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotterKind {
    /// overlayfs when the kernel allows it here, else the copying fallback (with a warning).
    #[default]
    Auto,
    Overlay,
    Native,
}

/// How a step was satisfied (the `cache` field of `kiln.steps` in the metadata file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStatus {
    HitLocal,
    HitRegistry,
    Miss,
    /// The step changes only the config: there is nothing to cache.
    None,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::HitLocal => "hit-local",
            CacheStatus::HitRegistry => "hit-registry",
            CacheStatus::Miss => "miss",
            CacheStatus::None => "none",
        }
    }
}

/// One step as it went, for the summary and the metadata file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub stage: String,
    pub platform: String,
    pub instruction: String,
    pub cache: CacheStatus,
    pub seconds: f64,
}

/// Receives progress; the CLI renders it. Implementations must be cheap: `output` is called per line.
pub trait Progress: Sync {
    fn step_started(&self, stage: &str, instruction: &str);
    fn output(&self, instruction: &str, line: &[u8]);
    fn step_done(&self, report: &StepReport);
    fn warn(&self, message: &str);
    /// A line saying what the build did besides its steps (a test passed, an image was pushed).
    fn info(&self, _message: &str) {}
    /// Bytes moving: `done` of `total` (when known) bytes of `what` (`push REF sha256:…`), as an
    /// absolute count (it goes back when an upload restarts); the last call for a finished `what`
    /// has `done == total`.
    fn transfer(&self, _what: &str, _done: u64, _total: Option<u64>) {}
}

/// A [`Progress`] that drops everything.
pub struct Silent;

impl Progress for Silent {
    fn step_started(&self, _: &str, _: &str) {}
    fn output(&self, _: &str, _: &[u8]) {}
    fn step_done(&self, _: &StepReport) {}
    fn warn(&self, _: &str) {}
}

/// A finished build: the image is in the store (untagged until an output tags it).
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    pub steps: Vec<StepReport>,
    /// One entry per `--cache-to`: what the export did, or the warning it gave.
    pub cache_exports: Vec<ExportReport>,
    /// (step, what changed) for each step that missed a cache that had something close.
    pub explanations: Vec<(String, String)>,
    /// Where layers the store lacks can be mounted from (imported registry caches).
    pub layer_sources: kiln_cache::LayerSources,
    /// The records a `--cache-to type=inline` keeps, for the image exporters to write into the
    /// image config (`output::Artifact::in_form`).
    pub inline_cache: Option<Vec<kiln_cache::Record>>,
    /// What the build used, for its attestations.
    pub facts: attest::BuildFacts,
    /// The `--cache-to` exports other than inline, left for [`orchestrate::build_all`] to run
    /// beside the image exporters ([`export_pending_caches`]); `None` when the policy forbids
    /// exporting or they ran already.
    pub pending_cache: Option<PendingCacheExport>,
}

/// What a `--cache-to` export needs once the build is over, owned: the records the build used and
/// the keys its images end at. A registry export ends with a wait (the check that no concurrent
/// writer dropped its records, see `kiln_cache::registry`), so it runs beside the image push
/// rather than before it, as BuildKit exports its cache after the image.
#[derive(Debug, Clone, Default)]
pub struct PendingCacheExport {
    pub used: Vec<kiln_cache::Record>,
    pub results: Vec<Digest>,
}

/// Runs the pending `--cache-to` exports of a build made with `opts` (see [`PendingCacheExport`]).
pub fn export_pending_caches(
    opts: &BuildOptions,
    store: &Store,
    pending: &PendingCacheExport,
    sources: &kiln_cache::LayerSources,
    progress: &dyn Progress,
) -> Result<Vec<ExportReport>, BuildError> {
    export_caches(opts, store, &pending.used, &pending.results, sources, progress, Sinks::NotInline).map(|(r, _)| r)
}

/// Runs a build. The image lands in the local store; [`output`] exports or tags it.
pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<Built, BuildError> {
    if let Isolation::None { force, .. } = &opts.isolation {
        hostroot::refuse_on_a_host(*force)?;
    }
    // Pulls of base images happen behind the resolver's 'static callback: they send their bytes
    // down a channel, and this thread, scoped to the build, hands them to `progress`.
    let (tx, rx) = std::sync::mpsc::channel::<base::Transfer>();
    std::thread::scope(|s| {
        s.spawn(move || {
            for t in rx {
                progress.transfer(&t.what, t.done, t.total);
            }
        });
        build_reporting(opts, progress, base::Transfers(tx))
    })
}

fn build_reporting(opts: &BuildOptions, progress: &dyn Progress, transfers: base::Transfers) -> Result<Built, BuildError> {
    opts.cancel.check()?;
    let store = Store::open(&opts.root)?;
    let _lease = store.lease()?;
    reclaim::reclaim(&opts.root);
    let dockerfile = opts.dockerfile.clone().unwrap_or_else(|| opts.context.join("Dockerfile"));
    let source = std::fs::read(&dockerfile).map_err(|source| BuildError::Dockerfile { path: dockerfile.clone(), source })?;
    let file_name = dockerfile.display().to_string();
    let parsed = kiln_dockerfile::parse_file(&file_name, &source)?;
    let mut typed = parse_build(&parsed, &file_name)?;
    replace_named_stages(&mut typed, &opts.build_contexts);
    let eager_transfers = transfers.clone();
    let bases =
        Arc::new(base::Bases::new(store.clone(), opts.registry.clone()).with(opts.build_contexts.clone(), opts.pull).reporting(transfers));
    splice_onbuild(&mut typed, &bases, opts)?;

    // Base images are read from the store while resolving, so their ENV and WORKDIR take part in
    // expansion; a missing one surfaces later, from the solver, with a message saying how to get it.
    // The resolver wants a 'static callback: it shares the build's base lookups through an Arc.
    let cfg_bases = bases.clone();
    let cfg_platform = opts.platform.clone();
    let base_cfg = move |image: &str, platform: Option<&str>| -> BaseConfig {
        let platform = platform.and_then(|p| Platform::parse(p).ok()).map(|p| p.normalized()).unwrap_or_else(|| cfg_platform.clone());
        match cfg_bases.get(image, &platform) {
            Ok(b) => {
                let rc = b.config.config.clone().unwrap_or_default();
                BaseConfig {
                    env: rc
                        .env
                        .unwrap_or_default()
                        .iter()
                        .map(|e| e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap_or((e.clone(), String::new())))
                        .collect(),
                    workdir: rc.working_dir.unwrap_or_default(),
                }
            }
            Err(_) => BaseConfig::default(),
        }
    };
    let ropts = ResolveOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        platform: platform_args(&opts.platform),
        base_config: Some(&base_cfg),
    };
    let resolved = resolve(&typed, &ropts)?;
    if opts.sbom_stages.is_some() {
        // A --build-arg counts even when no ARG declares it (BuildKit reads it from the build args).
        let given: Vec<(String, String)> = opts.build_args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let target_args = resolved.stages.iter().filter(|s| s.index == resolved.target).flat_map(|s| &s.args);
        attest::refuse_scan_context(&given, resolved.global_args.iter().chain(target_args))?;
    }
    for unused in &resolved.unused_build_args {
        progress.warn(&format!("build-arg {unused} is not consumed by any ARG of the stages built"));
    }

    let context = Context::open(&opts.context, read_dockerignore(&opts.context, &dockerfile)?)?;
    let local_contexts = named_context::LocalContexts::open(&opts.build_contexts)?;
    let sandbox = match &opts.init_binary {
        Some(b) => kiln_sandbox::Sandbox::with_init_binary(b),
        None => kiln_sandbox::Sandbox::new().map_err(BuildError::SandboxSetup)?,
    }
    .with_cancel(opts.cancel.sandbox());
    let cache_sources = open_sources(opts, &store, progress);
    // Declared before the solver, so dropped after it: a failed build stops the uploads here.
    let eager = eager::Eager::start(opts, &store, &resolved, eager_transfers);
    let shared = solve::Shared {
        opts,
        store: &store,
        context: &context,
        local_contexts: &local_contexts,
        progress,
        base_lookup: &bases,
        sources: &cache_sources,
        eager: &eager,
    };
    let mut solver = solve::Solver::new(shared, sandbox);
    let final_state = match solve_stages(&mut solver, &resolved) {
        Ok(st) => st,
        Err(e) if opts.cancel.is_cancelled() => {
            let _ = e;
            return Err(cancelled(opts, &store, solver, resolved.target, &eager, progress));
        }
        Err(e) => return Err(e),
    };
    let steps = std::mem::take(&mut solver.collected.reports);
    // The store keeps whole images: layers that came from a remote cache are fetched now, unless the
    // image only goes to a registry (then the push mounts them from the cache's repository).
    let sources = layer_sources(solver.shared.sources);
    if opts.fetch_final {
        solver.ensure_local(&final_state.layers)?;
    } else {
        // A push mounts what a registry cache holds; a layer from a source no registry can mount
        // it from (a cache directory, the GitHub Actions cache) must be here to be pushed.
        let unmountable: Vec<LayerRef> =
            final_state.layers.iter().filter(|l| sources.get(&l.descriptor.digest).is_none()).cloned().collect();
        solver.ensure_local(&unmountable)?;
    }
    let facts = build_facts(&mut solver, &resolved, &context, &dockerfile, &source, opts)?;
    let final_key = final_state.key.clone();
    let used = std::mem::take(&mut solver.collected.used);
    let explanations = std::mem::take(&mut solver.collected.explanations);
    drop(solver);
    let mut built = assemble(&store, final_state, steps, opts)?;
    // The build ends when the last upload ahead ends; the manifests and cache records follow.
    if let Some(line) = eager.finish().line() {
        progress.info(&line);
    }
    built.explanations = explanations;
    built.layer_sources = sources.clone();
    built.facts = facts;
    if opts.policy.policy.allows_export() {
        // Inline records go into the image config, so they are made now; the other sinks export
        // beside the image exporters (see `PendingCacheExport`).
        (built.cache_exports, built.inline_cache) =
            export_caches(opts, &store, &used, std::slice::from_ref(&final_key), &sources, progress, Sinks::Inline)?;
        built.pending_cache = Some(PendingCacheExport { used, results: vec![final_key] });
    } else if !opts.cache_to.is_empty() {
        progress.warn(&format!("--cache-to skipped: {}", opts.policy));
    }
    Ok(built)
}

/// What the build used, for its provenance: the base images resolved (by digest), the URLs ADD
/// downloaded, the context files read, the Dockerfile; and each other stage's final layers (made
/// local when `scan-stage` will read them).
fn build_facts(
    solver: &mut solve::Solver<'_>,
    resolved: &kiln_dockerfile::instructions::Resolved,
    context: &Context,
    dockerfile: &Path,
    source: &[u8],
    opts: &BuildOptions,
) -> Result<attest::BuildFacts, BuildError> {
    let mut bases: Vec<kiln_attest::BaseImage> = solver
        .bases
        .iter()
        .filter_map(|(k, b)| {
            let (image, platform) = k.rsplit_once(' ')?;
            Some(kiln_attest::BaseImage {
                reference: kiln_oci::Reference::parse(image).ok()?,
                platform: Platform::parse(platform).ok()?,
                digest: b.manifest.digest.clone(),
            })
        })
        .collect();
    bases.sort_by_key(|b| (b.reference.to_string(), b.platform.to_string()));
    let mut urls = std::mem::take(&mut solver.collected.urls);
    urls.sort();
    urls.dedup();
    let read = context.read_files();
    let mut stages = Vec::new();
    for st in resolved.stages.iter().filter(|s| s.index != resolved.target) {
        let Some(default) = opts.sbom_stages else { break };
        // BuildKit's name for a stage: its own, or `stage-N` (N counting FROMs from 0).
        let name = st.name.clone().unwrap_or_else(|| format!("stage-{}", st.index));
        if !attest::scans_stage(&name, default, &resolved.global_args, &st.args) {
            continue;
        }
        if let Some(state) = solver.stages.get(&st.index).cloned() {
            solver.ensure_local(&state.layers)?;
            stages.push((name, state.layers.iter().map(|l| l.descriptor.digest.clone()).collect()));
        }
    }
    let dockerfile_path = match dockerfile.strip_prefix(&opts.context) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => dockerfile.display().to_string(),
    };
    Ok(attest::BuildFacts {
        bases,
        urls,
        context_digest: kiln_attest::provenance::context_digest(read.iter().map(|(p, d)| (p.as_str(), d))),
        dockerfile_path,
        dockerfile_digest: Some(Digest::sha256_of(source)),
        stages,
    })
}

/// Every stage, dependencies first; the target stage's final state. Stages in waves: each wave holds
/// the stages whose dependencies are all built, and its stages run side by side (independent stages
/// in parallel), each on a forked solver. Every fork is joined back, failed or not, so the records
/// of what finished are never lost (a cancelled build exports them).
fn solve_stages(solver: &mut solve::Solver<'_>, resolved: &kiln_dockerfile::instructions::Resolved) -> Result<ImageState, BuildError> {
    for wave in waves(&resolved.stages) {
        // `--isolation none` has one root: its stages take turns.
        if wave.len() == 1 || solver.in_host_root() {
            for stage in &wave {
                let st = solver.stage(stage)?;
                solver.stages.insert(stage.index, st);
            }
            continue;
        }
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = wave
                .iter()
                .map(|stage| {
                    let mut sub = solver.fork();
                    s.spawn(move || {
                        let r = sub.stage(stage);
                        (sub, r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut first_err = None;
        for (stage, res) in wave.iter().zip(results) {
            match res {
                Ok((sub, r)) => {
                    solver.join(sub);
                    match r {
                        Ok(st) => {
                            solver.stages.insert(stage.index, st);
                        }
                        // A cancel is what every stage reports once one was cancelled; a real
                        // failure is the more useful message.
                        Err(e) => match &first_err {
                            None | Some(BuildError::Cancelled { .. }) => first_err = Some(e),
                            Some(_) => {}
                        },
                    }
                }
                Err(_) => {
                    first_err.get_or_insert(BuildError::Panicked { what: "a stage's build thread" });
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    solver.stages.remove(&resolved.target).ok_or_else(|| BuildError::TargetNotBuilt { target: resolved.target.to_string() })
}

/// A cancelled build's last act: export what finished to the caches the policy allows (the local
/// cache has it already), and say what was kept.
fn cancelled(
    opts: &BuildOptions,
    store: &Store,
    mut solver: solve::Solver<'_>,
    target: usize,
    eager: &eager::Eager,
    progress: &dyn Progress,
) -> BuildError {
    let used = std::mem::take(&mut solver.collected.used);
    // mode=min exports the chains that end at the images built; cancelled, the target stage's
    // chain ends where it had got to.
    let reached: Vec<Digest> = solver.collected.reached.get(&target).cloned().into_iter().collect();
    let sources = layer_sources(solver.shared.sources);
    drop(solver);
    // What already went ahead to a registry cache is not sent again by the export below.
    if let Some(line) = eager.finish().line() {
        progress.info(&line);
    }
    let finished = used.iter().filter(|r| r.layer.is_some()).count();
    let mut kept = vec![format!("{finished} finished layer steps kept in the local cache")];
    if !opts.cache_to.is_empty() && !used.is_empty() {
        if opts.policy.policy.allows_export() {
            match export_caches(opts, store, &used, &reached, &sources, progress, Sinks::All) {
                Ok((reports, _)) => kept.extend(reports.iter().map(ExportReport::to_string)),
                Err(e) => kept.push(format!("cache export failed: {e}")),
            }
        } else {
            kept.push(format!("--cache-to skipped: {}", opts.policy));
        }
    }
    BuildError::Cancelled { kept: kept.join("; ") }
}

/// Where a build looks records up, in order: the local cache, then each `--cache-from` the policy
/// lets it read (a missing or unusable one is one warning, and the build goes on without it).
fn open_sources<'a>(opts: &'a BuildOptions, store: &Store, progress: &dyn Progress) -> Vec<Box<dyn CacheSource + 'a>> {
    let mut sources: Vec<Box<dyn CacheSource + 'a>> = vec![Box::new(LocalCache::open(&opts.root).source(store))];
    if opts.policy.policy.allows_import() {
        for from in &opts.cache_from {
            let opened = from.open(opts.registry.as_deref());
            if let Some(w) = opened.warning() {
                progress.warn(w);
            }
            sources.extend(opened.cache());
        }
    }
    sources
}

/// Every repository the sources' layers can be mounted or streamed from.
fn layer_sources(sources: &[Box<dyn CacheSource + '_>]) -> kiln_cache::LayerSources {
    let mut out = kiln_cache::LayerSources::new();
    for c in sources {
        out.extend(&c.layer_sources());
    }
    out
}

/// Exports to every `--cache-to` the records its mode selects from `used` (`results`: the keys the
/// images built end at). A failed export is a warning in its report, unless it asked to fail the build.
fn export_caches(
    opts: &BuildOptions,
    store: &Store,
    used: &[kiln_cache::Record],
    results: &[Digest],
    sources: &kiln_cache::LayerSources,
    progress: &dyn Progress,
    which: Sinks,
) -> Result<(Vec<ExportReport>, Option<Vec<kiln_cache::Record>>), BuildError> {
    let mut out = Vec::new();
    let mut inline = None;
    for to in &opts.cache_to {
        let is_inline = to.get::<kiln_cache::inline::InlineExport>().is_some();
        if (which == Sinks::Inline && !is_inline) || (which == Sinks::NotInline && is_inline) {
            continue;
        }
        let opened = to.open(opts.registry.as_deref());
        if let Some(w) = opened.warning() {
            progress.warn(w);
        }
        let Some(sink) = opened.cache() else { continue };
        let records = kiln_cache::select(sink.mode(), used, results);
        let report = base::TransferReport::new(progress, format!("cache-export {}", sink.describe()));
        match sink.export_reporting(&records, store, sources, &report) {
            Ok(report) => {
                if let Some(w) = report.warning() {
                    progress.warn(w);
                }
                out.push(report);
            }
            Err(e) => return Err(BuildError::CacheExport { sink: sink.describe(), source: Box::new(e) }),
        }
        inline = sink.inline_records().or(inline);
    }
    Ok((out, inline))
}

/// Which `--cache-to` sinks an [`export_caches`] call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sinks {
    All,
    Inline,
    NotInline,
}

/// A stage named like a `--build-context` is that context, as in BuildKit: its instructions are
/// dropped and it starts `FROM` its own name, which the base lookup resolves to the context.
fn replace_named_stages(build: &mut Build, contexts: &named_context::NamedContexts) {
    for stage in &mut build.stages {
        let Some(name) = stage.name().filter(|n| contexts.get(n).is_some()).map(str::to_string) else { continue };
        stage.from.image = name;
        stage.commands.clear();
    }
}

/// Runs ONBUILD triggers the Docker way: the triggers of a stage's base (an earlier stage's ONBUILD
/// instructions, or an image's `OnBuild` config) become the first steps of the stage.
fn splice_onbuild(build: &mut Build, bases: &base::Bases, opts: &BuildOptions) -> Result<(), BuildError> {
    use kiln_dockerfile::instructions::{Command, Instruction};
    // Global ARGs (defaults overridden by --build-arg) are what a FROM line can expand.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (_, decl) in &build.global_args {
        if let Some(v) = opts.build_args.get(&decl.name).cloned().or_else(|| decl.default.clone()) {
            env.insert(decl.name.clone(), v);
        }
    }
    let lexer = kiln_dockerfile::shell::Lexer::new(build.escape);
    for i in 0..build.stages.len() {
        let raw = build.stages[i].from.image.clone();
        let image = lexer.process_word(&raw, &env).unwrap_or(raw).to_lowercase();
        let parent = build.stages[..i].iter().position(|s| s.name() == Some(image.as_str()) || s.index.to_string() == image);
        let triggers: Vec<Command> = match parent {
            Some(p) => build.stages[p]
                .commands
                .iter()
                .filter_map(|c| match &c.instruction {
                    Instruction::Onbuild(text, inner) => {
                        Some(Command { location: c.location.clone(), original: text.clone(), instruction: (**inner).clone() })
                    }
                    _ => None,
                })
                .collect(),
            None if image == "scratch" => Vec::new(),
            None => {
                let Ok(base) = bases.get(&image, &opts.platform) else { continue };
                let on_build = base.config.config.and_then(|c| c.on_build).unwrap_or_default();
                let mut out = Vec::new();
                for t in on_build {
                    let text = format!("FROM scratch\n{t}\n");
                    let loc = build.stages[i].location.clone();
                    let bad = |e: BuildError| {
                        let failure = StepFailure::OnBuild { trigger: t.clone(), image: image.clone(), source: Box::new(e) };
                        BuildError::failed(format!("{}:{}", loc.file, loc.start_line), failure)
                    };
                    let df = kiln_dockerfile::parse_str(&text).map_err(|e| bad(e.into()))?;
                    let b = parse_build(&df, &loc.file).map_err(|e| bad(e.into()))?;
                    for mut c in b.stages.into_iter().flat_map(|s| s.commands) {
                        c.location = loc.clone();
                        out.push(c);
                    }
                }
                out
            }
        };
        if !triggers.is_empty() {
            let stage = &mut build.stages[i];
            let rest = std::mem::take(&mut stage.commands);
            stage.commands = triggers.into_iter().chain(rest).collect();
        }
    }
    Ok(())
}

/// Groups stages (given dependencies first) into waves: a stage's wave is one past the latest wave of
/// the stages it reads.
fn waves(stages: &[kiln_dockerfile::instructions::ResolvedStage]) -> Vec<Vec<&kiln_dockerfile::instructions::ResolvedStage>> {
    let mut level: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<Vec<&kiln_dockerfile::instructions::ResolvedStage>> = Vec::new();
    for st in stages {
        let l = st.deps.iter().filter_map(|d| level.get(d)).map(|l| l + 1).max().unwrap_or(0);
        level.insert(st.index, l);
        if out.len() <= l {
            out.resize_with(l + 1, Vec::new);
        }
        out[l].push(st);
    }
    out
}

fn platform_args(p: &Platform) -> PlatformArgs {
    let host = Platform::host();
    let full = |p: &Platform| p.to_string();
    PlatformArgs {
        target_platform: full(p),
        target_os: p.os.clone(),
        target_arch: p.architecture.clone(),
        target_variant: p.variant.clone().unwrap_or_default(),
        build_platform: full(&host),
        build_os: host.os.clone(),
        build_arch: host.architecture.clone(),
        build_variant: host.variant.clone().unwrap_or_default(),
    }
}

/// `<Dockerfile>.dockerignore` beside the Dockerfile wins over `<context>/.dockerignore` (BuildKit).
fn read_dockerignore(context: &Path, dockerfile: &Path) -> Result<Matcher, BuildError> {
    let specific = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    let path = if specific.is_file() { specific } else { context.join(".dockerignore") };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(BuildError::Io { action: "read", path, source }),
    };
    Matcher::from_dockerignore(&text).map_err(|source| BuildError::Dockerignore { path: path.to_path_buf(), source })
}

/// Writes the config and manifest of `state` to the store.
fn assemble(store: &Store, state: ImageState, steps: Vec<StepReport>, opts: &BuildOptions) -> Result<Built, BuildError> {
    let sde = opts.source_date_epoch;
    let mut config = state.config.clone();
    // `--label`: on the image only, over the Dockerfile's LABELs, as BuildKit applies them at export
    // (so they are in no step's cache key, and a changed label rebuilds nothing).
    if !opts.labels.is_empty() {
        let rc = config.config.get_or_insert_with(Default::default);
        rc.labels.get_or_insert_with(Default::default).extend(opts.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    config.rootfs = RootFs { diff_ids: state.layers.iter().map(|l| l.diff_id.clone()).collect(), ..RootFs::default() };
    config.history = Some(state.history.clone());
    config.created = Some(time::rfc3339(sde.unwrap_or(state.created)));
    let config_bytes = config.to_json();
    let cfg = store.put_blob_bytes(&config_bytes)?;
    let config_desc = Descriptor::new(media::OCI_CONFIG, cfg.digest.clone(), cfg.size);
    let manifest = ImageManifest::new_oci(config_desc, state.layers.iter().map(|l| l.descriptor.clone()).collect());
    let m = Manifest::Image(manifest);
    let desc = store.put_manifest(&m)?;
    Ok(Built {
        manifest: desc,
        manifest_bytes: m.to_json(),
        config_digest: cfg.digest,
        config,
        layers: state.layers,
        steps,
        cache_exports: Vec::new(),
        inline_cache: None,
        pending_cache: None,
        facts: attest::BuildFacts::default(),
        explanations: Vec::new(),
        layer_sources: kiln_cache::LayerSources::new(),
    })
}
