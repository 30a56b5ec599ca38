//! The solver: walks the resolved stages step by step, reusing cached results and running the rest.
//!
//! Each step is first planned ([`plan::plan_step`], pure: its key inputs and its action), then
//! looked up in the caches, and on a miss executed: RUN in [`run`], COPY/ADD and WORKDIR in
//! [`copy`], config-only steps in [`meta`]. This module owns the walk, the cache lookups, the
//! snapshots and the records.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::Instant;

use kiln_cache::inputs::{self, StepInputs};
use kiln_cache::{CacheSource, LayerRecord, LocalCache, Record};
use kiln_dockerfile::instructions::{Location, ResolvedStage, Source, Step};
use kiln_oci::layer::{write_layer_from_overlay_upper, write_layer_to_store, WriteOptions};
use kiln_oci::{Digest, History, Store};
use kiln_sandbox::Sandbox;

use crate::base::{self, BaseImage};
use crate::context::Context;
use crate::error::{BuildError, Refusal, SnapshotError, StepFailure};
use crate::snapshot::{chain_ids, remove_tree, Mounted, Snapshotter};
use crate::state::{ImageState, LayerRef};
use crate::{BuildOptions, CacheStatus, Progress, StepReport};
use copy::Downloads;
use plan::{Action, CopyPlan, PlanContext};

/// What every stage of one build reads and none changes: borrowed by each fork.
#[derive(Clone, Copy)]
pub(crate) struct Shared<'a> {
    pub opts: &'a BuildOptions,
    pub store: &'a Store,
    pub context: &'a Context,
    /// `--build-context` directories, which `COPY --from=NAME` reads as it reads the context.
    pub local_contexts: &'a crate::named_context::LocalContexts,
    pub progress: &'a dyn Progress,
    pub base_lookup: &'a base::Bases,
    /// Where records are looked up, in order: the local cache, then each `--cache-from`.
    pub sources: &'a [Box<dyn CacheSource + 'a>],
    /// Where each committed layer is offered, to leave the machine while later steps run.
    pub eager: &'a crate::eager::Eager,
}

/// What a solver collects as it builds, which [`Solver::join`] merges from its forks.
#[derive(Default)]
pub(crate) struct Collected {
    pub reports: Vec<StepReport>,
    /// Every record this build used or made, config-only steps included: what `--cache-to` exports.
    pub used: Vec<Record>,
    /// (step, why it missed) for the summary and `kiln cache explain`.
    pub explanations: Vec<(String, String)>,
    /// The key each stage has reached so far (its last finished step), by stage index: where a
    /// cancelled build's `mode=min` export ends.
    pub reached: HashMap<usize, Digest>,
    /// Layers known only from an imported cache (by index in `sources`): fetched when a step or the
    /// output needs them.
    pub remote_layers: HashMap<Digest, (usize, Record)>,
    /// Every URL an ADD downloaded and its content's digest (for the provenance).
    pub urls: Vec<(String, Digest)>,
}

impl Collected {
    fn merge(&mut self, other: Collected) {
        let Collected { reports, used, explanations, reached, remote_layers, urls } = other;
        self.urls.extend(urls);
        self.reports.extend(reports);
        self.used.extend(used);
        self.explanations.extend(explanations);
        self.reached.extend(reached);
        self.remote_layers.extend(remote_layers);
    }
}

/// Builds stages: one for the build, and a fork for each stage that runs beside others.
pub(crate) struct Solver<'a> {
    pub shared: Shared<'a>,
    cache: LocalCache,
    snaps: Snapshotter,
    sandbox: Sandbox,
    wopts: WriteOptions,
    /// Base images looked up so far, by `image platform`.
    pub(crate) bases: HashMap<String, BaseImage>,
    /// Final state of each built stage, by stage index.
    pub stages: HashMap<usize, ImageState>,
    /// Records to explain misses against (local + imported), loaded on the first miss.
    explain_pool: Option<Vec<Record>>,
    pub collected: Collected,
    /// `--isolation none`: the state of `/` ([`host`]).
    host: Option<host::HostRoot>,
}

mod canon;
mod copy;
mod host;
mod meta;
mod plan;
mod run;

fn at(loc: &Location) -> String {
    format!("{}:{}", loc.file, loc.start_line)
}

impl<'a> Solver<'a> {
    pub fn new(shared: Shared<'a>, sandbox: Sandbox) -> Solver<'a> {
        let opts = shared.opts;
        Solver {
            shared,
            cache: LocalCache::open(&opts.root),
            snaps: match opts.snapshotter {
                // `--isolation none` mounts nothing: other stages' roots are flat snapshots.
                _ if opts.isolation != crate::Isolation::Sandbox => Snapshotter::open_native(&opts.root),
                crate::SnapshotterKind::Native => Snapshotter::open_native(&opts.root),
                // Auto starts with overlayfs and falls back at the first mount that fails (`layer_step`).
                crate::SnapshotterKind::Overlay | crate::SnapshotterKind::Auto => Snapshotter::open(&opts.root),
            },
            sandbox,
            // Plain tar: the build never waits on gzip (100 MB of RUN output took 1.7 s to compress);
            // exports compress (`Artifact::for_export`, `export_caches`).
            wopts: WriteOptions { compression: kiln_oci::Compression::None, source_date_epoch: opts.source_date_epoch.map(|s| s as i64) },
            bases: HashMap::new(),
            stages: HashMap::new(),
            explain_pool: None,
            collected: Collected::default(),
            host: host::HostRoot::for_build(shared),
        }
    }

    /// A solver for one stage running beside others: it shares everything read-only and collects
    /// its own reports and records, which [`Solver::join`] folds back in.
    pub fn fork(&self) -> Solver<'a> {
        Solver {
            shared: self.shared,
            cache: self.cache.clone(),
            snaps: self.snaps.clone(),
            sandbox: self.sandbox.clone(),
            wopts: self.wopts.clone(),
            bases: self.bases.clone(),
            stages: self.stages.clone(),
            explain_pool: None,
            collected: Collected { remote_layers: self.collected.remote_layers.clone(), ..Collected::default() },
            // Never forked: `solve_stages` runs its stages one after another.
            host: None,
        }
    }

    pub fn join(&mut self, sub: Solver<'a>) {
        self.collected.merge(sub.collected);
        self.bases.extend(sub.bases);
    }

    /// Builds one stage; its deps are already in `self.stages`.
    pub fn stage(&mut self, stage: &ResolvedStage) -> Result<ImageState, BuildError> {
        // `FROM --platform=…` (e.g. $BUILDPLATFORM for a cross-compiling stage) picks the stage's own
        // platform: its base image, its RUN steps (native or emulated) and its cache keys.
        let platform = match stage.platform.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => kiln_oci::Platform::parse(p)
                .map_err(|source| {
                    BuildError::failed(at(&stage.location), StepFailure::Platform { what: format!("FROM --platform={p}"), source })
                })?
                .normalized(),
            None => self.shared.opts.platform.clone(),
        };
        let mut state = match &stage.base {
            Source::Scratch => ImageState::scratch(&platform),
            Source::Stage(i) => self
                .stages
                .get(i)
                .cloned()
                .ok_or_else(|| BuildError::refused(at(&stage.location), Refusal::BaseStageNotBuilt { stage: *i }))?,
            Source::Image(r) => self
                .base(r, &platform)
                .map_err(|e| BuildError::failed(at(&stage.location), StepFailure::Build { what: String::new(), source: Box::new(e) }))?
                .state(&platform),
        };
        state.cmd_set = false;
        // The base's ONBUILD triggers ran as this stage's first steps (spliced in before
        // resolution); like Docker, they are not passed on to this image.
        if let Some(rc) = state.config.config.as_mut() {
            rc.on_build = None;
        }
        let name = stage.name.clone().unwrap_or_else(|| format!("stage-{}", stage.index));
        if let Source::Image(_) = &stage.base {
            for l in &state.layers {
                self.shared.eager.offer(stage.index, crate::eager::Kind::Base, &l.descriptor);
            }
        }
        if let Source::Image(r) = &stage.base {
            let p = state.platform.clone();
            self.report(&name, &p, &format!("FROM {r}"), CacheStatus::None, 0.0);
        }
        let first_record = self.collected.used.len();
        for step in &stage.steps {
            self.shared.opts.cancel.check()?;
            let at = at(&step.location);
            let text = step.original.trim().to_string();
            // A step that fails because the build was cancelled (its RUN killed, its sandbox gone)
            // is a cancel, whatever it says.
            let before = self.collected.used.len();
            self.step(&name, step, &mut state).map_err(|e| {
                if self.shared.opts.cancel.is_cancelled() {
                    BuildError::Cancelled { kept: String::new() }
                } else {
                    e.in_step(&at, &text)
                }
            })?;
            // The step's layer is committed (store and local cache): it will not change again.
            for l in self.collected.used[before..].iter().filter_map(|r| r.layer.as_ref()) {
                self.shared.eager.offer(stage.index, crate::eager::Kind::Step, &l.descriptor);
            }
            self.collected.reached.insert(stage.index, state.key.clone());
        }
        // Config-only records reach the local cache when their stage is done, not as they are made,
        // so that a stage running beside this one does not explain its misses against them.
        for rec in self.collected.used[first_record..].iter().filter(|r| r.layer.is_none()) {
            if self.cache.get(&rec.key).is_none() {
                self.put_local(rec);
            }
        }
        Ok(state)
    }

    fn base(&mut self, image: &str, platform: &kiln_oci::Platform) -> Result<&BaseImage, BuildError> {
        let k = format!("{image} {platform}");
        if !self.bases.contains_key(&k) {
            let b = self.shared.base_lookup.get(image, platform)?;
            self.bases.insert(k.clone(), b);
        }
        Ok(&self.bases[&k])
    }

    /// The name of the `--build-context` directory a `COPY --from=` reads, if it reads one.
    fn local_from(&self, step: &Step) -> Option<&'a str> {
        let locals = self.shared.local_contexts;
        match &step.copy_from {
            Some(Source::Image(r)) => locals.get(r).map(|(name, _)| name),
            _ => None,
        }
    }

    /// Where a COPY's context paths are read: a `--build-context` directory it names with
    /// `--from`, else the build context.
    pub(super) fn copy_context(&self, step: &Step) -> &'a Context {
        match &step.copy_from {
            Some(Source::Image(r)) => self.shared.local_contexts.get(r).map(|(_, c)| c).unwrap_or(self.shared.context),
            _ => self.shared.context,
        }
    }

    fn report(&mut self, stage: &str, platform: &kiln_oci::Platform, instruction: &str, cache: CacheStatus, seconds: f64) {
        let r =
            StepReport { stage: stage.to_string(), platform: platform.to_string(), instruction: instruction.to_string(), cache, seconds };
        self.shared.progress.step_done(&r);
        self.collected.reports.push(r);
    }

    fn step(&mut self, stage: &str, step: &Step, state: &mut ImageState) -> Result<(), BuildError> {
        let started = Instant::now();
        let text = step.original.trim().to_string();
        self.shared.progress.step_started(stage, &text);
        let local = self.local_from(step);
        let from = match &step.copy_from {
            Some(src) if local.is_none() => Some(self.source_layers(step, src)?),
            _ => None,
        };
        let downloads = self.download(step)?;
        self.collected.urls.extend(downloads.digests());
        let cx = PlanContext {
            files: self.copy_context(step),
            // A directory context is keyed by its name here and by the files read (as the context).
            copy_from: local.map(|name| format!("context:{name}")).or_else(|| from.as_deref().map(chain_key)),
            from_dir: local.is_some(),
            mount_from: self.mount_keys(step)?,
            urls: downloads.digests(),
        };
        let plan = plan::plan_step(step, state, &cx)?;
        let status = match plan.action {
            Action::Run(run) => {
                self.layer_step(step, state, plan.inputs, |this, mounted, state| this.exec_run(step, &run, mounted, state))?
            }
            Action::Copy(copy) => self.layer_step(step, state, plan.inputs, |this, mounted, state| {
                this.exec_copy(step, &copy, from.as_deref(), &downloads, mounted, state)
            })?,
            Action::Link { layer, copy } => self.link_step(step, copy, from.as_deref(), &downloads, state, layer, plan.inputs)?,
            Action::Workdir { dir, user } => {
                state.runtime().working_dir = Some(dir.clone());
                // A layer only when something was missing.
                self.layer_step(step, state, plan.inputs, |this, mounted, _state| this.exec_workdir(step, &dir, &user, mounted))?
            }
            Action::Meta => self.meta_step(step, state, plan.inputs, &text),
        };
        let p = state.platform.clone();
        self.report(stage, &p, &text, status, started.elapsed().as_secs_f64());
        Ok(())
    }

    /// What each `RUN --mount=…,from=` source is keyed by: a stage by its key, an image by its
    /// layers (as for COPY --from: the same tag may name new content).
    fn mount_keys(&mut self, step: &Step) -> Result<Vec<Option<String>>, BuildError> {
        let mut keys = Vec::new();
        for s in &step.mount_sources {
            keys.push(match s {
                None => None,
                Some(Source::Stage(ix)) => Some(self.stages.get(ix).map(|st| st.key.to_string()).unwrap_or_default()),
                Some(src) => Some(chain_key(&self.source_layers(step, src)?)),
            });
        }
        Ok(keys)
    }
    /// A step that may add a layer: look up the cache; on a miss mount the parent's snapshot, let
    /// `exec` change the root, and turn the upper dir into a layer.
    fn layer_step<F>(&mut self, step: &Step, state: &mut ImageState, inputs: StepInputs, exec: F) -> Result<CacheStatus, BuildError>
    where
        F: FnOnce(&mut Self, &Mounted, &ImageState) -> Result<(), BuildError>,
    {
        let key = inputs.key(&state.key);
        let text = step.original.trim().to_string();
        if !self.shared.opts.no_cache {
            if let Some(hit) = self.cached(&key, state, &text) {
                return Ok(hit);
            }
            self.note_miss(&state.key.clone(), &text, &inputs);
        }
        self.ensure_local(&state.layers)?;
        if self.host.is_some() {
            let layer = self.host_step(state, exec)?;
            let rec = Record::new(key, Some(state.key.clone()), text.clone(), inputs.into_map(), layer);
            self.put_local(&rec);
            self.commit_record(rec, state, &text);
            return Ok(CacheStatus::Miss);
        }
        let lowers = self.snaps.lowers(self.shared.store, &state.layers)?;
        let mut mounted = match self.snaps.mount(&lowers, true) {
            Ok(m) => m,
            // `--snapshotter auto`: the first step that needs a root finds out whether overlayfs
            // mounts here (a fully cached build never mounts anything).
            Err(e) if self.shared.opts.snapshotter == crate::SnapshotterKind::Auto && !self.snaps.is_native() => {
                self.shared.progress.warn(&format!("{e}; falling back to the copying snapshotter (slower)"));
                self.snaps = Snapshotter::open_native(&self.shared.opts.root);
                let lowers = self.snaps.lowers(self.shared.store, &state.layers)?;
                self.snaps.mount(&lowers, true)?
            }
            Err(e) => return Err(e),
        };
        exec(self, &mounted, state)?;
        let layer = if self.snaps.is_native() { self.native_layer(&mounted, state)? } else { self.overlay_layer(&mut mounted, state)? };
        drop(mounted);
        let rec = Record::new(key, Some(state.key.clone()), text.clone(), inputs.into_map(), layer);
        self.put_local(&rec);
        self.commit_record(rec, state, &text);
        Ok(CacheStatus::Miss)
    }

    /// A cached record for `key` from the first source that has it (the local cache first, then the
    /// imported ones), applied to `state`.
    fn cached(&mut self, key: &Digest, state: &mut ImageState, text: &str) -> Option<CacheStatus> {
        let (i, rec) = self.shared.sources.iter().enumerate().find_map(|(i, c)| c.lookup(key).map(|r| (i, r)))?;
        let status = if self.shared.sources[i].layers_in_store() {
            CacheStatus::HitLocal
        } else {
            // Lazy: the layer stays in the registry until a step or the output needs it.
            if let Some(l) = &rec.layer {
                if !self.shared.store.has_blob(&l.descriptor.digest) {
                    self.collected.remote_layers.insert(l.descriptor.digest.clone(), (i, rec.clone()));
                }
            }
            self.put_local(&rec);
            CacheStatus::HitRegistry
        };
        self.commit_record(rec, state, text);
        Some(status)
    }

    /// `COPY --link` / `ADD --link`, as BuildKit does it: the files go into a layer of their own,
    /// made on an empty root, so neither its content nor its cache key depends on the layers below.
    /// A change to an earlier step then re-uses the layer instead of copying again (two records:
    /// the layer's own, keyed without the parent, and the step's place in this chain).
    #[allow(clippy::too_many_arguments)]
    fn link_step(
        &mut self,
        step: &Step,
        copy: CopyPlan<'_>,
        from: Option<&[LayerRef]>,
        downloads: &Downloads,
        state: &mut ImageState,
        layer_inputs: StepInputs,
        inputs: StepInputs,
    ) -> Result<CacheStatus, BuildError> {
        let text = step.original.trim().to_string();
        let key = inputs.key(&state.key);
        if !self.shared.opts.no_cache {
            if let Some(hit) = self.cached(&key, state, &text) {
                return Ok(hit);
            }
        }
        // `--chown=name` is looked up in the image being built, as without --link: the empty root
        // has no /etc/passwd.
        let mut c = copy.copy.clone();
        if let Some(ch) = c.chown.clone().filter(|ch| ch.split(':').any(|p| p.parse::<u32>().is_err())) {
            let m = self.mount_layers(&state.layers, false)?;
            let id = lookup_user(&m.merged, &ch);
            drop(m);
            let id =
                id.map_err(|source| BuildError::failed(at(&step.location), StepFailure::User { what: format!("--chown={ch}"), source }))?;
            c.chown = Some(format!("{}:{}", id.uid, id.gid));
        }
        let copy = CopyPlan { copy: &c, items: copy.items };
        let mut alone = ImageState { layers: Vec::new(), history: Vec::new(), key: inputs::link_root(), ..state.clone() };
        let status =
            self.layer_step(step, &mut alone, layer_inputs, |this, mounted, st| this.exec_copy(step, &copy, from, downloads, mounted, st))?;
        let layer = alone.layers.first().map(|l| LayerRecord { descriptor: l.descriptor.clone(), diff_id: l.diff_id.clone() });
        let mut rec = Record::new(key, Some(state.key.clone()), text.clone(), inputs.into_map(), layer);
        if let Some(inner) = self.collected.used.last() {
            rec.created = inner.created;
        }
        self.put_local(&rec);
        self.commit_record(rec, state, &text);
        Ok(status)
    }

    /// The overlay snapshotter's layer: the upper dir, converted; the upper dir itself is kept as the
    /// new chain's snapshot, since it is exactly the next step's lower dir.
    fn overlay_layer(&mut self, mounted: &mut Mounted, state: &ImageState) -> Result<Option<LayerRecord>, BuildError> {
        mounted.unmount()?;
        if dir_is_empty(&mounted.upper) {
            return Ok(None);
        }
        let upper = mounted.upper.clone();
        let info = write_layer_to_store(self.shared.store, |w| write_layer_from_overlay_upper(&upper, w, &self.wopts).map(|(_, i)| i))
            .map_err(|e| BuildError::Layer { digest: "(new)".into(), source: e })?;
        let mut ids: Vec<&Digest> = state.layers.iter().map(|l| &l.diff_id).collect();
        ids.push(&info.diff_id);
        if let Some(chain) = chain_ids(&ids).pop() {
            let keep = self.snaps.temp_dir("upper")?;
            let moved = keep.join("fs");
            fs::rename(&mounted.upper, &moved).map_err(|e| BuildError::Io { action: "keep", path: moved.clone(), source: e })?;
            self.snaps.commit_upper(&moved, &chain)?;
            remove_tree(&keep);
        }
        Ok(Some(LayerRecord { descriptor: info.descriptor(), diff_id: info.diff_id.clone() }))
    }

    /// The native snapshotter's layer: the tree diff of the step's copy against its parent, and the
    /// copy kept as the new chain's flat snapshot.
    fn native_layer(&mut self, mounted: &Mounted, state: &ImageState) -> Result<Option<LayerRecord>, BuildError> {
        let lower = mounted.lower.clone().unwrap_or_default();
        let entries = crate::native::diff(&lower, &mounted.merged)
            .map_err(|source| BuildError::Snapshot(SnapshotError::Diff { merged: mounted.merged.clone(), source }))?;
        if entries.is_empty() {
            return Ok(None);
        }
        let info =
            write_layer_to_store(self.shared.store, |w| kiln_oci::layer::write_layer_from_entries(entries, w, &self.wopts).map(|(_, i)| i))
                .map_err(|e| BuildError::Layer { digest: "(new)".into(), source: e })?;
        let mut ids: Vec<&Digest> = state.layers.iter().map(|l| &l.diff_id).collect();
        ids.push(&info.diff_id);
        if let Some(chain) = chain_ids(&ids).pop() {
            self.snaps.commit_flat(&mounted.merged, &chain)?;
        }
        Ok(Some(LayerRecord { descriptor: info.descriptor(), diff_id: info.diff_id.clone() }))
    }

    /// Downloads the layers among `layers` that are known only from an imported cache, several at
    /// once (as `kiln pull` does: one after another, each small layer paid a full round trip).
    pub fn ensure_local(&mut self, layers: &[LayerRef]) -> Result<(), BuildError> {
        let mut wanted: Vec<(&Digest, usize, Record)> = Vec::new();
        for l in layers {
            let d = &l.descriptor.digest;
            if self.shared.store.has_blob(d) || wanted.iter().any(|(w, _, _)| *w == d) {
                continue;
            }
            let Some((i, rec)) = self.collected.remote_layers.get(d).cloned() else {
                return Err(BuildError::Snapshot(SnapshotError::LayerMissing { digest: d.clone() }));
            };
            wanted.push((d, i, rec));
        }
        let (sources, store, progress) = (self.shared.sources, self.shared.store, self.shared.progress);
        kiln_oci::run_parallel(&wanted, 4, |(d, i, rec)| {
            let report = crate::base::TransferReport::new(progress, format!("cache {}", sources[*i].describe()));
            sources[*i]
                .fetch_layer_reporting(rec, store, &report)
                .map(|_| ())
                .map_err(|source| BuildError::Snapshot(SnapshotError::Fetch { digest: (*d).clone(), source: Box::new(source) }))
        })
    }

    /// Says why the step `text` missed (in its output and the build's explanations), if it can.
    fn note_miss(&mut self, parent: &Digest, text: &str, inputs: &StepInputs) {
        if let Some(why) = self.explain(parent, text, inputs) {
            self.shared.progress.output(text, format!("cache miss: {why}").as_bytes());
            self.collected.explanations.push((text.to_string(), why));
        }
    }

    /// What changed against the closest cached record, in words (`None` when nothing is cached).
    fn explain(&mut self, parent: &Digest, text: &str, inputs: &StepInputs) -> Option<String> {
        if self.explain_pool.is_none() {
            self.explain_pool = Some(self.shared.sources.iter().flat_map(|c| c.records()).collect());
        }
        let pool = self.explain_pool.as_deref().unwrap_or(&[]);
        // Records this build made (an earlier stage on the same base) are not what the step
        // missed against: only what was cached before counts.
        let made: std::collections::HashSet<&Digest> = self.collected.used.iter().map(|r| &r.key).collect();
        let pool: Vec<Record> = pool.iter().filter(|r| r.parent.as_ref() == Some(parent) && !made.contains(&r.key)).cloned().collect();
        if pool.is_empty() {
            return None;
        }
        let ex = kiln_cache::explain_miss(Some(parent), text, inputs, &pool);
        // "An earlier step changed" follows from the first miss; say only what is new here.
        if ex.changes.is_empty() || ex.changes.iter().all(|c| matches!(c, kiln_cache::Change::Parent)) {
            return None;
        }
        // A changed instruction says it all; the inputs it implies would only repeat it.
        if let Some(c) = ex.changes.iter().find(|c| matches!(c, kiln_cache::Change::Instruction { .. })) {
            if let kiln_cache::Change::Instruction { cached, now } = c {
                let word = |t: &str| t.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                if word(cached) != word(now) {
                    return Some(format!("nothing like it is cached after the same step (closest: `{cached}`)"));
                }
            }
            return Some(c.to_string());
        }
        let said: Vec<String> = ex.changes.iter().map(ToString::to_string).collect();
        Some(said.join("; "))
    }

    fn apply_record(&self, rec: &Record, state: &mut ImageState, text: &str) {
        let created = self.shared.opts.source_date_epoch.unwrap_or(rec.created);
        if let Some(l) = &rec.layer {
            state.layers.push(LayerRef { descriptor: l.descriptor.clone(), diff_id: l.diff_id.clone() });
            state.created = state.created.max(created);
        }
        state.history.push(History {
            created: Some(crate::time::rfc3339(created)),
            created_by: Some(format!("{text} # kiln")),
            empty_layer: if rec.layer.is_none() { Some(true) } else { None },
            ..History::default()
        });
    }
    /// Keeps `rec` in the local cache; a failure is a warning (the cache is an accelerator).
    fn put_local(&self, rec: &Record) {
        if let Err(e) = self.cache.put(rec) {
            self.shared.progress.warn(&format!("could not write the local cache: {e}"));
        }
    }

    /// The end of every step that has a record: the record applied to `state` (its layer, its
    /// history), used by this build, and its key the stage's new key.
    fn commit_record(&mut self, rec: Record, state: &mut ImageState, text: &str) {
        self.apply_record(&rec, state, text);
        state.key = rec.key.clone();
        self.collected.used.push(rec);
    }

    /// A read-only (or writable) root of `layers`, fetching the ones only an imported cache has.
    pub(super) fn mount_layers(&mut self, layers: &[LayerRef], writable: bool) -> Result<Mounted, BuildError> {
        self.ensure_local(layers)?;
        let lowers = self.snaps.lowers(self.shared.store, layers)?;
        self.snaps.mount(&lowers, writable)
    }

    pub(super) fn source_layers(&mut self, step: &Step, s: &Source) -> Result<Vec<LayerRef>, BuildError> {
        Ok(match s {
            Source::Stage(i) => self
                .stages
                .get(i)
                .ok_or_else(|| BuildError::refused(at(&step.location), Refusal::SourceStageNotBuilt { stage: *i }))?
                .layers
                .clone(),
            Source::Image(r) => self
                .base(r, &self.shared.opts.platform.clone())
                .map_err(|e| {
                    let what = format!("no stage is named {r:?}, so it was taken as an image");
                    BuildError::failed(at(&step.location), StepFailure::Build { what, source: Box::new(e) })
                })?
                .layers
                .clone(),
            Source::Scratch => Vec::new(),
        })
    }
}

/// A user (`name`, `uid`, `name:group`, …) as ids, from the root's /etc/passwd and /etc/group.
fn lookup_user(root: &Path, user: &str) -> Result<kiln_sandbox::user::Identity, kiln_sandbox::user::UserError> {
    let passwd = fs::read_to_string(root.join("etc/passwd")).ok();
    let group = fs::read_to_string(root.join("etc/group")).ok();
    kiln_sandbox::user::resolve(user, passwd.as_deref(), group.as_deref())
}

/// What a source made of `layers` is keyed by: their chain id (empty for none).
fn chain_key(layers: &[LayerRef]) -> String {
    let ids: Vec<&Digest> = layers.iter().map(|l| &l.diff_id).collect();
    chain_ids(&ids).pop().map(|d| d.to_string()).unwrap_or_default()
}

fn dir_is_empty(p: &Path) -> bool {
    fs::read_dir(p).map(|mut r| r.next().is_none()).unwrap_or(true)
}
