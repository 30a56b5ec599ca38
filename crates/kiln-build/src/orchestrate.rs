//! A whole `kiln build`: one [`crate::build`] per platform, side by side; the `--test` gate; the
//! exporters in the order the outputs were given; and the metadata the build leaves behind.
//!
//! Nothing is tagged, exported or pushed before every platform's image is built and has passed the
//! test: the first failure ends the build with the store's untagged images as the only trace, and
//! the layer blobs a push sent ahead ([`crate::eager`]), which no manifest names. The cache is
//! another matter: what was built is worth keeping whatever the test says, so the `--cache-to`
//! exports (but inline, which goes into the image) run beside the test gate and the exporters, on
//! a thread of their own, and the build ends when both are done.

use std::path::Path;

use kiln_oci::{Platform, Reference, Store};

use crate::error::BuildError;
use crate::export::{BuildResult, ExportContext, ExportDone, Exporter};
use crate::metadata::{CacheMiss, ImageMetadata, LastBuild, Metadata, MetadataError};
use crate::output::{Artifact, Output};
use crate::{BuildOptions, Built, Progress, StepReport};

/// Everything a `kiln build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// What each platform's build shares. `platform` and `fetch_final` are set per platform by
    /// [`build_all`] (a build fetches remote layers unless it is tested on none and only pushed).
    pub options: BuildOptions,
    /// At least one; the first is the one a single-platform build uses.
    pub platforms: Vec<Platform>,
    pub tags: Vec<Reference>,
    /// The outputs, in order (see [`Output::resolve`] for the defaults).
    pub outputs: Vec<Output>,
    /// `--test 'CMD'`: a shell command run in every platform's image before any output.
    pub test: Option<String>,
    /// `--provenance`, `--sbom`, `--attest` (see [`crate::attest`]).
    pub attest: kiln_attest::Attestations,
}

/// A finished `kiln build`: the result every exporter was fed, what each export did, and the
/// metadata (written with [`BuildOutcome::record`]).
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub result: BuildResult,
    /// One per output, in order.
    pub exports: Vec<ExportDone>,
    pub metadata: Metadata,
}

impl BuildOutcome {
    /// Every step of every platform, in platform order.
    pub fn steps(&self) -> &[StepReport] {
        &self.metadata.steps
    }

    /// Writes the `--metadata-file` (when one was asked for), then `last-build.json` under `root`
    /// (best effort: `kiln cache explain` reads it).
    pub fn record(&self, root: &Path, metadata_file: Option<&Path>) -> Result<(), MetadataError> {
        if let Some(path) = metadata_file {
            self.metadata.write(path)?;
        }
        LastBuild { digest: self.metadata.digest.clone(), misses: self.metadata.cache_misses.clone(), steps: self.metadata.steps.clone() }
            .save(root);
        Ok(())
    }
}

/// Builds every platform, runs the test gate, then the exporters in order.
pub fn build_all(req: &BuildRequest, progress: &dyn Progress) -> Result<BuildOutcome, BuildError> {
    let exporters: Vec<Box<dyn Exporter>> = req.outputs.iter().map(Output::exporter).collect();
    for e in &exporters {
        e.check()?;
    }
    // An SBOM reads every layer of the image.
    let fetch_final = req.test.is_some() || req.attest.sbom.is_some() || exporters.iter().any(|e| e.needs_local_layers());
    let started = crate::time::now();
    // The pushes' layers go ahead while the build runs; their manifests wait for the test, below.
    let push_ahead: Vec<_> = exporters.iter().flat_map(|e| e.push_targets()).collect();
    let per_platform: Vec<BuildOptions> = req
        .platforms
        .iter()
        .map(|p| BuildOptions { platform: p.clone(), fetch_final, push_ahead: push_ahead.clone(), ..req.options.clone() })
        .collect();
    let mut built = build_platforms(&per_platform, progress)?;
    let attester = crate::attest::Attester::new(req.attest.clone(), &req.options, started, crate::time::now());
    let store = Store::open(&req.options.root)?;
    // The cache exports (but inline) run beside the test gate and the exporters: a registry cache
    // export ends with a wait of its own (see `PendingCacheExport`).
    let pending: Vec<(usize, crate::PendingCacheExport, kiln_cache::LayerSources)> =
        built.iter_mut().enumerate().filter_map(|(i, b)| b.pending_cache.take().map(|p| (i, p, b.layer_sources.clone()))).collect();
    let (done, cache_reports) = std::thread::scope(|s| {
        let caches = s.spawn(|| {
            pending
                .iter()
                .map(|(i, p, sources)| crate::export_pending_caches(&per_platform[*i], &store, p, sources, progress).map(|r| (*i, r)))
                .collect::<Result<Vec<_>, BuildError>>()
        });
        let done = test_and_export(req, &exporters, built, &store, &attester, progress);
        let reports = caches.join().unwrap_or_else(|_| Err(BuildError::Panicked { what: "the cache export thread" }));
        (done, reports)
    });
    let (mut result, exports) = done?;
    for (i, reports) in cache_reports? {
        result.images[i].cache_exports.extend(reports);
    }
    // The build reports the form that left the machine first (as BuildKit reports the pushed one),
    // else what it stored.
    let reported = exporters
        .iter()
        .zip(&exports)
        .find_map(|(e, d)| d.wrote.as_ref().filter(|_| e.leaves_machine()))
        .or_else(|| exports.iter().find_map(|d| d.wrote.as_ref()))
        .unwrap_or(&result.local)
        .clone();
    let metadata = metadata(req, &result, &reported, &exports);
    Ok(BuildOutcome { result, exports, metadata })
}

/// The test gate, then every exporter in order, over the images built.
fn test_and_export(
    req: &BuildRequest,
    exporters: &[Box<dyn Exporter>],
    built: Vec<Built>,
    store: &Store,
    attester: &crate::attest::Attester,
    progress: &dyn Progress,
) -> Result<(BuildResult, Vec<ExportDone>), BuildError> {
    if let Some(cmd) = &req.test {
        test_gate(&req.options, &built, cmd, progress)?;
    }
    let local = if built.len() == 1 { Artifact::single(&built[0]) } else { Artifact::index(store, &built)? };
    let result = BuildResult { images: built, local };
    let ctx = ExportContext {
        store,
        registry: req.options.registry.as_deref(),
        progress,
        source_date_epoch: req.options.source_date_epoch,
        attest: attester,
    };
    let exports = exporters.iter().map(|e| e.export(&result, &ctx)).collect::<Result<Vec<_>, _>>()?;
    Ok((result, exports))
}

/// Each platform is its own build; they share the store, the local cache and the snapshots (all
/// safe for concurrent use), and run side by side up to the number of cores.
fn build_platforms(per_platform: &[BuildOptions], progress: &dyn Progress) -> Result<Vec<Built>, BuildError> {
    let width = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let mut built = Vec::new();
    for chunk in per_platform.chunks(width) {
        let results: Vec<Result<Built, BuildError>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|o| s.spawn(|| crate::build(o, progress))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(BuildError::Panicked { what: "a platform's build thread" })))
                .collect()
        });
        // Cancelled, every platform kept something: say it all in the one line.
        let mut kept = Vec::new();
        for (o, r) in chunk.iter().zip(results) {
            match r {
                Ok(b) => built.push(b),
                Err(BuildError::Cancelled { kept: k }) => {
                    kept.push(if per_platform.len() > 1 { format!("{}: {k}", o.platform) } else { k })
                }
                Err(e) => return Err(e),
            }
        }
        if !kept.is_empty() {
            return Err(BuildError::Cancelled { kept: kept.join("; ") });
        }
    }
    Ok(built)
}

/// Runs `cmd` on each platform's image by digest (foreign ones under emulation); the first failure
/// fails the build, before anything is tagged, exported or pushed.
fn test_gate(opts: &BuildOptions, built: &[Built], cmd: &str, progress: &dyn Progress) -> Result<(), BuildError> {
    let store = Store::open(&opts.root)?;
    for b in built {
        let platform = b.config.platform();
        let name = format!("kiln.local/test@{}", b.manifest.digest);
        store.tag_name(&name, &b.manifest)?;
        let req = crate::run::RunRequest {
            root: &opts.root,
            image: &name,
            platform: &platform,
            command: vec![cmd.to_string()],
            shell: true,
            init_binary: opts.init_binary.clone(),
            cancel: opts.cancel.clone(),
        };
        let status = crate::run::run_image(&req, &mut |_s, line| progress.output(cmd, line));
        let _ = store.untag_name(&name);
        let status = status?;
        if status != kiln_sandbox::ExitStatus::Code(0) {
            return Err(BuildError::TestFailed { command: cmd.to_string(), platform: platform.to_string(), status });
        }
        progress.info(&format!("test passed on {platform}: {cmd}"));
    }
    Ok(())
}

/// The `--metadata-file` document (and the source of `last-build.json`).
fn metadata(req: &BuildRequest, result: &BuildResult, art: &Artifact, exports: &[ExportDone]) -> Metadata {
    let built = &result.images;
    let mut names: Vec<String> = Vec::new();
    for n in exports.iter().flat_map(|d| &d.names) {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    if names.is_empty() {
        names = req.tags.iter().map(|t| t.to_string()).collect();
    }
    Metadata {
        digest: art.root.digest.to_string(),
        descriptor: art.root.clone(),
        store_digest: result.local.root.digest.to_string(),
        // The config as written (an inline cache makes a config of its own).
        // The image's config, also when attestations made the artifact an index.
        config_digest: match art.images.first() {
            Some((config, _)) if built.len() == 1 => Some(config.to_string()),
            _ => None,
        },
        image_name: names.join(","),
        platforms: req.platforms.iter().map(|p| p.to_string()).collect(),
        images: built
            .iter()
            .zip(art.manifests.iter().zip(&art.images))
            .map(|(b, (m, (config, _)))| ImageMetadata {
                platform: b.config.platform().to_string(),
                digest: m.digest.to_string(),
                config_digest: config.to_string(),
            })
            .collect(),
        // The last push wins, as the last tag pushed names the digest the registry stored.
        pushed: exports.iter().rev().find_map(|d| d.pushed.as_ref()).map(|d| d.to_string()),
        steps: built.iter().flat_map(|b| b.steps.iter().cloned()).collect(),
        cache_policy: req.options.policy.clone(),
        cache_exports: built.iter().flat_map(|b| b.cache_exports.iter().cloned()).collect(),
        cache_misses: built
            .iter()
            .flat_map(|b| b.explanations.iter())
            .map(|(step, changed)| CacheMiss { step: step.clone(), changed: changed.clone() })
            .collect(),
    }
}
