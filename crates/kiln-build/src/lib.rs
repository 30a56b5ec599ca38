//! kiln-build: from a Dockerfile and a context to an image, without a daemon.
//!
//! The model, in the order a build runs:
//! 1. **Frontend.** The Dockerfile is parsed and typed by `kiln-dockerfile`, then *resolved* for one
//!    target and platform: ARG/ENV scoping and expansion, stage references, and the set of stages the
//!    target needs (stages it does not need are never looked at).
//! 2. **Plan and keys.** Each step gets a cache key: the hash of its parent's key and the step's
//!    named inputs (the instruction as expanded, the env and ARGs a RUN sees, user, working dir,
//!    platform, and for COPY/ADD the content digest and mode of every file read — never mtimes). A
//!    base image is keyed by its manifest digest. See `docs/cache.md`.
//! 3. **Solve.** Stages run dependencies first. A step whose key has a record in the cache is a hit:
//!    its layer is reused without running anything. A miss runs the step.
//! 4. **Execute and snapshot.** A step that changes files runs over an overlayfs mount of its parent's
//!    layers ([`snapshot`]) with a fresh upper dir: RUN in `kiln-sandbox`, COPY/ADD by writing into the
//!    merged root through the one safe path resolver. The upper dir becomes the step's layer (overlay
//!    whiteouts turn into OCI `.wh.` entries) and is kept as the next step's lower dir.
//! 5. **Export.** The final stage's layers and config become an OCI manifest in the local store, and
//!    optionally an OCI layout or docker-archive tarball ([`output`]).
//!
//! Nothing here prints: progress goes through the [`Progress`] trait, which the CLI renders.

mod base;
mod context;
mod copy;
mod error;
mod glob;
pub mod output;
pub mod run;
pub mod snapshot;
mod solve;
mod state;
pub mod time;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kiln_cache::LocalCache;
use kiln_dockerfile::dockerignore::Matcher;
use kiln_dockerfile::instructions::resolve::BaseConfig;
use kiln_dockerfile::instructions::{parse_build, resolve, PlatformArgs, ResolveOptions};
use kiln_oci::layer::WriteOptions;
use kiln_oci::{media, Descriptor, Digest, ImageConfig, ImageManifest, Manifest, Platform, RootFs, Store};
use serde::Serialize;

pub use context::Context;
pub use error::BuildError;
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
    /// `--secret id=ID,src=PATH`.
    pub secrets: BTreeMap<String, PathBuf>,
    /// The binary the sandbox re-executes (default: the running executable).
    pub init_binary: Option<PathBuf>,
    /// `SOURCE_DATE_EPOCH`: clamps layer mtimes and sets every `created` time.
    pub source_date_epoch: Option<u64>,
}

/// How a step was satisfied (the `cache` field of `kiln.steps` in the metadata file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
}

/// Runs a build. The image lands in the local store; [`output`] exports or tags it.
pub fn build(opts: &BuildOptions, progress: &dyn Progress) -> Result<Built, BuildError> {
    let store = Store::open(&opts.root)?;
    let _lease = store.lease()?;
    let dockerfile = opts.dockerfile.clone().unwrap_or_else(|| opts.context.join("Dockerfile"));
    let source = std::fs::read(&dockerfile).map_err(|source| BuildError::Dockerfile { path: dockerfile.clone(), source })?;
    let file_name = dockerfile.display().to_string();
    let parsed = kiln_dockerfile::parse_file(&file_name, &source)?;
    let typed = parse_build(&parsed, &file_name)?;

    // Base images are read from the store while resolving, so their ENV and WORKDIR take part in
    // expansion; a missing one surfaces later, from the solver, with a message saying how to get it.
    // The resolver wants a 'static callback: it gets its own handle on the store.
    let cfg_store = Store::open(&opts.root)?;
    let cfg_platform = opts.platform.clone();
    let base_cfg = move |image: &str, _platform: Option<&str>| -> BaseConfig {
        match base::load(&cfg_store, image, &cfg_platform) {
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
    for unused in &resolved.unused_build_args {
        progress.warn(&format!("build-arg {unused} is not consumed by any ARG of the stages built"));
    }

    let context = Context::open(&opts.context, read_dockerignore(&opts.context, &dockerfile)?)?;
    let sandbox = match &opts.init_binary {
        Some(b) => kiln_sandbox::Sandbox::with_init_binary(b),
        None => kiln_sandbox::Sandbox::new().map_err(|e| BuildError::Usage(e.to_string()))?,
    };
    let mut solver = solve::Solver {
        opts,
        store: &store,
        cache: LocalCache::open(&opts.root),
        snaps: snapshot::Snapshotter::open(&opts.root),
        context: &context,
        sandbox,
        progress,
        bases: HashMap::new(),
        stages: HashMap::new(),
        reports: Vec::new(),
        wopts: WriteOptions { source_date_epoch: opts.source_date_epoch.map(|s| s as i64), ..WriteOptions::default() },
    };
    for stage in &resolved.stages {
        let st = solver.stage(stage)?;
        solver.stages.insert(stage.index, st);
    }
    let final_state = solver
        .stages
        .remove(&resolved.target)
        .ok_or_else(|| BuildError::Usage("the target stage was not built".to_string()))?;
    let steps = std::mem::take(&mut solver.reports);
    assemble(&store, final_state, steps, opts.source_date_epoch)
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
    Matcher::from_dockerignore(&text).map_err(|e| BuildError::Usage(format!("{}: {e}", path.display())))
}

/// Writes the config and manifest of `state` to the store.
fn assemble(store: &Store, state: ImageState, steps: Vec<StepReport>, sde: Option<u64>) -> Result<Built, BuildError> {
    let mut config = state.config.clone();
    config.rootfs = RootFs { diff_ids: state.layers.iter().map(|l| l.diff_id.clone()).collect(), ..RootFs::default() };
    config.history = Some(state.history.clone());
    config.created = Some(time::rfc3339(sde.unwrap_or(state.created)));
    let config_bytes = config.to_json();
    let cfg = store.put_blob_bytes(&config_bytes)?;
    let config_desc = Descriptor::new(media::OCI_CONFIG, cfg.digest.clone(), cfg.size);
    let manifest = ImageManifest::new_oci(config_desc, state.layers.iter().map(|l| l.descriptor.clone()).collect());
    let m = Manifest::Image(manifest);
    let desc = store.put_manifest(&m)?;
    Ok(Built { manifest: desc, manifest_bytes: m.to_json(), config_digest: cfg.digest, config, layers: state.layers, steps })
}
