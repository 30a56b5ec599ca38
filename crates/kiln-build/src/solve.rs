//! The solver: walks the resolved stages step by step, reusing cached results and running the rest.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_cache::inputs::{self, Input, StepInputs};
use kiln_cache::{CacheSource, LayerRecord, LocalCache, Record};
use kiln_dockerfile::instructions::{
    CommandLine, Copy, CopySource, Healthcheck, Instruction, Location, Mount, MountType, ResolvedStage, Sharing, Source, Step,
};
use kiln_oci::layer::{write_layer_from_overlay_upper, write_layer_to_store, WriteOptions};
use kiln_oci::{Digest, History, Store};
use kiln_sandbox::{Sandbox, Spec, Stream};

use crate::base::{self, BaseImage};
use crate::context::{Context, Entry, Kind};
use crate::copy::{self, Attrs, SourceRoot};
use crate::error::BuildError;
use crate::snapshot::{chain_ids, remove_tree, Mounted, Snapshotter};
use crate::state::{set_env, ImageState, LayerRef};
use crate::{BuildOptions, CacheStatus, Progress, StepReport};

/// Everything one build shares across stages.
pub(crate) struct Solver<'a> {
    pub opts: &'a BuildOptions,
    pub store: &'a Store,
    pub cache: LocalCache,
    pub snaps: Snapshotter,
    pub context: &'a Context,
    pub sandbox: Sandbox,
    pub progress: &'a dyn Progress,
    pub bases: HashMap<String, BaseImage>,
    pub base_lookup: &'a base::Bases,
    /// Final state of each built stage, by stage index.
    pub stages: HashMap<usize, ImageState>,
    pub reports: Vec<StepReport>,
    pub wopts: WriteOptions,
    /// Where records are looked up, in order: the local cache, then each `--cache-from`.
    pub sources: &'a [Box<dyn CacheSource + 'a>],
    /// Every record this build used or made, config-only steps included: what `--cache-to` exports.
    pub used: Vec<Record>,
    /// Layers known only from an imported cache (by index in `sources`): fetched when a step or the
    /// output needs them.
    pub remote_layers: HashMap<Digest, (usize, Record)>,
    /// Records to explain misses against (local + imported), loaded on the first miss.
    pub explain_pool: Option<Vec<Record>>,
    /// (step, why it missed) for the summary and `kiln cache explain`.
    pub explanations: Vec<(String, String)>,
    /// The key each stage has reached so far (its last finished step), by stage index: where a
    /// cancelled build's `mode=min` export ends.
    pub reached: HashMap<usize, Digest>,
}

mod canon;

fn at(loc: &Location) -> String {
    format!("{}:{}", loc.file, loc.start_line)
}

impl<'a> Solver<'a> {
    /// A solver for one stage running beside others: it shares everything read-only and collects
    /// its own reports and records, which [`Solver::join`] folds back in.
    pub fn fork(&self) -> Solver<'a> {
        Solver {
            opts: self.opts,
            store: self.store,
            cache: self.cache.clone(),
            snaps: self.snaps.clone(),
            context: self.context,
            sandbox: self.sandbox.clone(),
            progress: self.progress,
            bases: self.bases.clone(),
            base_lookup: self.base_lookup,
            stages: self.stages.clone(),
            reports: Vec::new(),
            wopts: self.wopts.clone(),
            sources: self.sources,
            used: Vec::new(),
            remote_layers: self.remote_layers.clone(),
            explain_pool: None,
            explanations: Vec::new(),
            reached: HashMap::new(),
        }
    }

    pub fn join(&mut self, sub: Solver<'a>) {
        self.reports.extend(sub.reports);
        self.used.extend(sub.used);
        self.remote_layers.extend(sub.remote_layers);
        self.explanations.extend(sub.explanations);
        self.bases.extend(sub.bases);
        self.reached.extend(sub.reached);
    }

    /// Builds one stage; its deps are already in `self.stages`.
    pub fn stage(&mut self, stage: &ResolvedStage) -> Result<ImageState, BuildError> {
        // `FROM --platform=…` (e.g. $BUILDPLATFORM for a cross-compiling stage) picks the stage's own
        // platform: its base image, its RUN steps (native or emulated) and its cache keys.
        let platform = match stage.platform.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => kiln_oci::Platform::parse(p)
                .map_err(|e| BuildError::step(at(&stage.location), format!("FROM --platform={p}: {e}")))?
                .normalized(),
            None => self.opts.platform.clone(),
        };
        let mut state = match &stage.base {
            Source::Scratch => ImageState::scratch(&platform),
            Source::Stage(i) => self
                .stages
                .get(i)
                .cloned()
                .ok_or_else(|| BuildError::step(at(&stage.location), format!("stage {i} was not built before this one")))?,
            Source::Image(r) => self.base(r, &platform).map_err(|e| BuildError::step(at(&stage.location), e.to_string()))?.state(&platform),
        };
        state.cmd_set = false;
        // The base's ONBUILD triggers ran as this stage's first steps (spliced in before
        // resolution); like Docker, they are not passed on to this image.
        if let Some(rc) = state.config.config.as_mut() {
            rc.on_build = None;
        }
        let name = stage.name.clone().unwrap_or_else(|| format!("stage-{}", stage.index));
        if let Source::Image(r) = &stage.base {
            let p = state.platform.clone();
            self.report(&name, &p, &format!("FROM {r}"), CacheStatus::None, 0.0);
        }
        let first_record = self.used.len();
        for step in &stage.steps {
            self.opts.cancel.check()?;
            let at = at(&step.location);
            let text = step.original.trim().to_string();
            // A step that fails because the build was cancelled (its RUN killed, its sandbox gone)
            // is a cancel, whatever it says.
            self.step(&name, step, &mut state).map_err(|e| {
                if self.opts.cancel.is_cancelled() {
                    BuildError::Cancelled { kept: String::new() }
                } else {
                    e.in_step(&at, &text)
                }
            })?;
            self.reached.insert(stage.index, state.key.clone());
        }
        // Config-only records reach the local cache when their stage is done, not as they are made,
        // so that a stage running beside this one does not explain its misses against them.
        for rec in self.used[first_record..].iter().filter(|r| r.layer.is_none()) {
            if self.cache.get(&rec.key).is_none() {
                if let Err(e) = self.cache.put(rec) {
                    self.progress.warn(&format!("could not write the local cache: {e}"));
                }
            }
        }
        Ok(state)
    }

    fn base(&mut self, image: &str, platform: &kiln_oci::Platform) -> Result<&BaseImage, BuildError> {
        let k = format!("{image} {platform}");
        if !self.bases.contains_key(&k) {
            let b = self.base_lookup.get(image, platform)?;
            self.bases.insert(k.clone(), b);
        }
        Ok(&self.bases[&k])
    }

    fn report(&mut self, stage: &str, platform: &kiln_oci::Platform, instruction: &str, cache: CacheStatus, seconds: f64) {
        let r =
            StepReport { stage: stage.to_string(), platform: platform.to_string(), instruction: instruction.to_string(), cache, seconds };
        self.progress.step_done(&r);
        self.reports.push(r);
    }

    fn step(&mut self, stage: &str, step: &Step, state: &mut ImageState) -> Result<(), BuildError> {
        let started = Instant::now();
        let text = step.original.trim().to_string();
        self.progress.step_started(stage, &text);
        let mut inputs = StepInputs::new(canon::instruction(&step.instruction), &state.platform);
        let status = match &step.instruction {
            Instruction::Run(run) => {
                self.run_inputs(step, run, state, &mut inputs)?;
                self.layer_step(stage, step, state, inputs, |this, mounted, state| this.exec_run(step, run, mounted, state))?
            }
            Instruction::Copy(c) if c.link => {
                let plan = self.copy_inputs(step, c, state, &mut inputs)?;
                self.link_step(stage, step, c, plan, state, inputs)?
            }
            Instruction::Copy(c) => {
                let plan = self.copy_inputs(step, c, state, &mut inputs)?;
                self.layer_step(stage, step, state, inputs, move |this, mounted, state| this.exec_copy(step, c, &plan, mounted, state))?
            }
            Instruction::Workdir(_) => {
                let wd = step.workdir.clone();
                state.runtime().working_dir = Some(wd.clone());
                let user = state.user();
                inputs.set(Input::User, user.clone());
                inputs.set(Input::Workdir, wd.clone());
                // WORKDIR creates the directory, owned by the current USER as BuildKit does; a layer
                // only when something was missing.
                self.layer_step(stage, step, state, inputs, move |_this, mounted, _state| {
                    let e = |m: String| BuildError::step(at(&step.location), m);
                    let root = kiln_oci::fsroot::RootDir::open(&mounted.merged).map_err(|err| e(err.to_string()))?;
                    let mut attrs = Attrs::default();
                    if !user.is_empty() {
                        let passwd = fs::read_to_string(mounted.merged.join("etc/passwd")).ok();
                        let group = fs::read_to_string(mounted.merged.join("etc/group")).ok();
                        let id = kiln_sandbox::user::resolve(&user, passwd.as_deref(), group.as_deref())
                            .map_err(|err| e(format!("USER {user}: {err}")))?;
                        attrs.chown = Some((id.uid, id.gid));
                    }
                    copy::make_dirs(&root, Path::new(&wd), attrs)
                })?
            }
            _ => {
                apply_meta(step, state);
                let key = inputs.key(&state.key);
                // A config-only step can be the first thing that changed (an ENV, a LABEL): it is
                // explained like any miss (and its record kept locally when the stage is done).
                if !self.opts.no_cache && !self.sources.iter().any(|c| c.lookup(&key).is_some()) {
                    self.note_miss(&state.key.clone(), &text, &inputs);
                }
                let mut rec = Record::new(key.clone(), Some(state.key.clone()), text.clone(), inputs.into_map(), None);
                rec.created = state.created;
                self.used.push(rec);
                state.key = key;
                state.history.push(History {
                    created: Some(crate::time::rfc3339(state.created)),
                    created_by: Some(text.clone()),
                    empty_layer: Some(true),
                    ..History::default()
                });
                CacheStatus::None
            }
        };
        let p = state.platform.clone();
        self.report(stage, &p, &text, status, started.elapsed().as_secs_f64());
        Ok(())
    }

    /// A step that may add a layer: look up the cache; on a miss mount the parent's snapshot, let
    /// `exec` change the root, and turn the upper dir into a layer.
    fn layer_step<F>(
        &mut self,
        _stage: &str,
        step: &Step,
        state: &mut ImageState,
        inputs: StepInputs,
        exec: F,
    ) -> Result<CacheStatus, BuildError>
    where
        F: FnOnce(&mut Self, &Mounted, &ImageState) -> Result<(), BuildError>,
    {
        let key = inputs.key(&state.key);
        let text = step.original.trim().to_string();
        if !self.opts.no_cache {
            if let Some(hit) = self.cached(&key, state, &text) {
                return Ok(hit);
            }
            self.note_miss(&state.key.clone(), &text, &inputs);
        }
        self.ensure_local(&state.layers)?;
        let lowers = self.snaps.lowers(self.store, &state.layers)?;
        let mut mounted = match self.snaps.mount(&lowers, true) {
            Ok(m) => m,
            // `--snapshotter auto`: the first step that needs a root finds out whether overlayfs
            // mounts here (a fully cached build never mounts anything).
            Err(e) if self.opts.snapshotter == crate::SnapshotterKind::Auto && !self.snaps.is_native() => {
                self.progress.warn(&format!("{e}; falling back to the copying snapshotter (slower)"));
                self.snaps = Snapshotter::open_native(&self.opts.root);
                let lowers = self.snaps.lowers(self.store, &state.layers)?;
                self.snaps.mount(&lowers, true)?
            }
            Err(e) => return Err(e),
        };
        exec(self, &mounted, state)?;
        let layer = if self.snaps.is_native() { self.native_layer(&mounted, state)? } else { self.overlay_layer(&mut mounted, state)? };
        drop(mounted);
        let rec = Record::new(key.clone(), Some(state.key.clone()), text.clone(), inputs.into_map(), layer);
        if let Err(e) = self.cache.put(&rec) {
            self.progress.warn(&format!("could not write the local cache: {e}"));
        }
        self.apply_record(&rec, state, &text);
        self.used.push(rec);
        state.key = key;
        Ok(CacheStatus::Miss)
    }

    /// A cached record for `key` from the first source that has it (the local cache first, then the
    /// imported ones), applied to `state`.
    fn cached(&mut self, key: &Digest, state: &mut ImageState, text: &str) -> Option<CacheStatus> {
        let (i, rec) = self.sources.iter().enumerate().find_map(|(i, c)| c.lookup(key).map(|r| (i, r)))?;
        let status = if self.sources[i].layers_in_store() {
            CacheStatus::HitLocal
        } else {
            // Lazy: the layer stays in the registry until a step or the output needs it.
            if let Some(l) = &rec.layer {
                if !self.store.has_blob(&l.descriptor.digest) {
                    self.remote_layers.insert(l.descriptor.digest.clone(), (i, rec.clone()));
                }
            }
            if let Err(e) = self.cache.put(&rec) {
                self.progress.warn(&format!("could not write the local cache: {e}"));
            }
            CacheStatus::HitRegistry
        };
        self.apply_record(&rec, state, text);
        self.used.push(rec);
        state.key = key.clone();
        Some(status)
    }

    /// `COPY --link` / `ADD --link`, as BuildKit does it: the files go into a layer of their own,
    /// made on an empty root, so neither its content nor its cache key depends on the layers below.
    /// A change to an earlier step then re-uses the layer instead of copying again (two records:
    /// the layer's own, keyed without the parent, and the step's place in this chain).
    fn link_step(
        &mut self,
        stage: &str,
        step: &Step,
        c: &Copy,
        plan: CopyPlan,
        state: &mut ImageState,
        inputs: StepInputs,
    ) -> Result<CacheStatus, BuildError> {
        let text = step.original.trim().to_string();
        let no_parent = inputs::link_root();
        let layer_key = inputs.key(&no_parent);
        let mut joined_inputs = StepInputs::default();
        joined_inputs.set(Input::Link, layer_key.to_string());
        let key = joined_inputs.key(&state.key);
        if !self.opts.no_cache {
            if let Some(hit) = self.cached(&key, state, &text) {
                return Ok(hit);
            }
        }
        // `--chown=name` is looked up in the image being built, as without --link: the empty root
        // has no /etc/passwd.
        let mut c = c.clone();
        if let Some(ch) = c.chown.clone().filter(|ch| ch.split(':').any(|p| p.parse::<u32>().is_err())) {
            self.ensure_local(&state.layers)?;
            let lowers = self.snaps.lowers(self.store, &state.layers)?;
            let m = self.snaps.mount(&lowers, false)?;
            let passwd = fs::read_to_string(m.merged.join("etc/passwd")).ok();
            let group = fs::read_to_string(m.merged.join("etc/group")).ok();
            drop(m);
            let id = kiln_sandbox::user::resolve(&ch, passwd.as_deref(), group.as_deref())
                .map_err(|err| BuildError::step(at(&step.location), format!("--chown={ch}: {err}")))?;
            c.chown = Some(format!("{}:{}", id.uid, id.gid));
        }
        let mut alone = ImageState { layers: Vec::new(), history: Vec::new(), key: no_parent, ..state.clone() };
        let status =
            self.layer_step(stage, step, &mut alone, inputs, move |this, mounted, st| this.exec_copy(step, &c, &plan, mounted, st))?;
        let layer = alone.layers.first().map(|l| LayerRecord { descriptor: l.descriptor.clone(), diff_id: l.diff_id.clone() });
        let mut rec = Record::new(key.clone(), Some(state.key.clone()), text.clone(), joined_inputs.into_map(), layer);
        if let Some(inner) = self.used.last() {
            rec.created = inner.created;
        }
        if let Err(e) = self.cache.put(&rec) {
            self.progress.warn(&format!("could not write the local cache: {e}"));
        }
        self.apply_record(&rec, state, &text);
        self.used.push(rec);
        state.key = key;
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
        let info = write_layer_to_store(self.store, |w| write_layer_from_overlay_upper(&upper, w, &self.wopts).map(|(_, i)| i))
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
            .map_err(|e| BuildError::Snapshot(format!("comparing {} with its parent: {e}", mounted.merged.display())))?;
        if entries.is_empty() {
            return Ok(None);
        }
        let info = write_layer_to_store(self.store, |w| kiln_oci::layer::write_layer_from_entries(entries, w, &self.wopts).map(|(_, i)| i))
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
            if self.store.has_blob(d) || wanted.iter().any(|(w, _, _)| *w == d) {
                continue;
            }
            let Some((i, rec)) = self.remote_layers.get(d).cloned() else {
                return Err(BuildError::Snapshot(format!("layer {d} is neither in the store nor in an imported cache")));
            };
            wanted.push((d, i, rec));
        }
        let (sources, store) = (self.sources, self.store);
        kiln_oci::run_parallel(&wanted, 4, |(d, i, rec)| {
            sources[*i]
                .fetch_layer(rec, store)
                .map(|_| ())
                .map_err(|e| BuildError::Snapshot(format!("could not fetch cached layer {d}: {e}")))
        })
    }

    /// Says why the step `text` missed (in its output and the build's explanations), if it can.
    fn note_miss(&mut self, parent: &Digest, text: &str, inputs: &StepInputs) {
        if let Some(why) = self.explain(parent, text, inputs) {
            self.progress.output(text, format!("cache miss: {why}").as_bytes());
            self.explanations.push((text.to_string(), why));
        }
    }

    /// What changed against the closest cached record, in words (`None` when nothing is cached).
    fn explain(&mut self, parent: &Digest, text: &str, inputs: &StepInputs) -> Option<String> {
        if self.explain_pool.is_none() {
            self.explain_pool = Some(self.sources.iter().flat_map(|c| c.records()).collect());
        }
        let pool = self.explain_pool.as_deref().unwrap_or(&[]);
        // Records this build made (an earlier stage on the same base) are not what the step
        // missed against: only what was cached before counts.
        let made: std::collections::HashSet<&Digest> = self.used.iter().map(|r| &r.key).collect();
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
        let created = self.opts.source_date_epoch.unwrap_or(rec.created);
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

    /// RUN's argv: exec form as is; shell form through SHELL; a heredoc script inline, as BuildKit
    /// hands it to the shell.
    fn run_argv(&self, run: &kiln_dockerfile::instructions::Run, state: &ImageState) -> Vec<String> {
        match &run.command {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut script = s.clone();
                let only_heredoc = run.heredocs.len() == 1 && is_bare_heredoc(s);
                if only_heredoc {
                    script = run.heredocs[0].effective_content();
                } else {
                    for h in &run.heredocs {
                        script.push('\n');
                        script.push_str(&h.content);
                        script.push_str(&h.name);
                    }
                }
                let mut argv = state.shell.clone();
                argv.push(script);
                argv
            }
        }
    }

    /// RUN's environment: the image's ENV with the stage's variables (ENV and ARG in one scope, the
    /// later assignment winning, as BuildKit does) laid over it.
    fn run_env(&self, step: &Step, state: &ImageState) -> Vec<String> {
        let mut env = state.env();
        for (k, v) in &step.vars {
            set_env(&mut env, k, v);
        }
        env
    }

    /// RUN's inputs: the argv, every variable the process sees, user, workdir and each mount (its
    /// spec, and what it reads: context files or another stage's or image's layers).
    fn run_inputs(
        &mut self,
        step: &Step,
        run: &kiln_dockerfile::instructions::Run,
        state: &ImageState,
        inputs: &mut StepInputs,
    ) -> Result<(), BuildError> {
        inputs.set(Input::Run, inputs::list(&self.run_argv(run, state)));
        let image_env = state.env();
        for e in self.run_env(step, state) {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            // A value a build ARG gave (and ENV did not) is a build arg, so that a miss says so.
            let from_arg = step.args.iter().any(|(a, av)| a == k && av == v) && !image_env.contains(&e);
            inputs.set(if from_arg { Input::Arg(k.to_string()) } else { Input::Env(k.to_string()) }, v);
        }
        inputs.set(Input::User, state.user());
        inputs.set(Input::Workdir, state.workdir());
        for (i, m) in step.mounts.iter().enumerate() {
            inputs.set(Input::Mount(i), canon::mount(m));
            if m.kind == MountType::Bind && m.from.is_none() {
                inputs.set(Input::MountContent(i), self.context_digest(m.source.as_deref().unwrap_or("/"))?.to_string());
            }
        }
        for (i, s) in step.mount_sources.iter().enumerate() {
            let from = match s {
                None => continue,
                Some(Source::Stage(ix)) => self.stages.get(ix).map(|st| st.key.to_string()).unwrap_or_default(),
                // An image is its layers, as for COPY --from: the same tag may name new content.
                Some(src) => {
                    let layers = self.source_layers(step, src)?;
                    let ids: Vec<&Digest> = layers.iter().map(|l| &l.diff_id).collect();
                    chain_ids(&ids).pop().map(|d| d.to_string()).unwrap_or_default()
                }
            };
            inputs.set(Input::MountFrom(i), from);
        }
        Ok(())
    }

    /// A context source's entries, less what `--exclude` names (patterns in `.dockerignore` syntax,
    /// matched against the path inside the source and against the path in the context).
    fn context_entries(&self, rel: &str, c: &Copy) -> Result<Vec<Entry>, BuildError> {
        let entries = self.context.walk(rel)?;
        if c.exclude.is_empty() {
            return Ok(entries);
        }
        let m = kiln_dockerfile::dockerignore::Matcher::new(&c.exclude).map_err(|e| BuildError::Usage(format!("--exclude: {e}")))?;
        Ok(entries
            .into_iter()
            .enumerate()
            .filter(|(i, e)| {
                let inner = e.rel.strip_prefix(rel).unwrap_or(&e.rel).trim_start_matches('/');
                *i == 0 || !(m.matches(&e.rel) || (!inner.is_empty() && m.matches(inner)))
            })
            .map(|(_, e)| e)
            .collect())
    }

    fn context_digest(&self, rel: &str) -> Result<Digest, BuildError> {
        let rel = crate::context::clean_rel(rel).unwrap_or_default();
        let entries = self.context.walk(&rel)?;
        let mut s = String::new();
        for e in &entries {
            s.push_str(&self.entry_line(e, true)?);
        }
        Ok(Digest::sha256_of(s.as_bytes()))
    }

    fn entry_line(&self, e: &Entry, from_context: bool) -> Result<String, BuildError> {
        let content = match &e.kind {
            Kind::File { .. } if from_context => self.context.file_digest(&e.rel)?.to_string(),
            Kind::File { size } => format!("size={size}"),
            Kind::Dir => "dir".to_string(),
            Kind::Symlink { target } => format!("-> {target}"),
        };
        Ok(canon::listing_entry(&e.rel, e.mode, &content))
    }

    fn exec_run(
        &mut self,
        step: &Step,
        run: &kiln_dockerfile::instructions::Run,
        mounted: &Mounted,
        state: &ImageState,
    ) -> Result<(), BuildError> {
        // A foreign platform's binaries run through binfmt_misc (qemu-user-static); say how to get it.
        if let Some(arch) = kiln_sandbox::arch::Arch::from_oci(&state.platform.architecture) {
            if !arch.runs_natively_on(kiln_sandbox::arch::Arch::host()) {
                kiln_sandbox::arch::ensure_runnable(arch, std::path::Path::new(kiln_sandbox::arch::BINFMT_DIR))
                    .map_err(|e| BuildError::step(at(&step.location), format!("cannot run {} binaries: {e}", state.platform)))?;
            }
        }
        let mut spec = Spec::new(&mounted.merged, self.run_argv(run, state));
        spec.env = self.run_env(step, state);
        spec.user = state.user();
        spec.workdir = PathBuf::from(state.workdir());
        if matches!(run.network, Some(kiln_dockerfile::instructions::Network::None)) {
            spec.network = kiln_sandbox::Network::None;
        }
        let mut holds = StepHolds::default();
        for (m, src) in step.mounts.iter().zip(step.mount_sources.iter()) {
            if let Some(sm) = self.sandbox_mount(step, m, src.as_ref(), state, &mut holds)? {
                spec.mounts.push(sm);
            }
        }
        let progress = self.progress;
        let text = step.original.trim().to_string();
        let outcome = self
            .sandbox
            .run(&spec, &mut |_s: Stream, line: &[u8]| progress.output(&text, line))
            .map_err(|e| BuildError::step(at(&step.location), format!("{text}: {e}")))?;
        drop(holds);
        if !outcome.success() {
            let mut msg = format!("`{}` failed: {} ({})", text, outcome.status, outcome.command);
            if !outcome.tail.is_empty() {
                msg.push_str("\nlast lines of output:\n");
                for l in &outcome.tail {
                    msg.push_str("  ");
                    msg.push_str(l);
                    msg.push('\n');
                }
            }
            return Err(BuildError::step(at(&step.location), msg.trim_end().to_string()));
        }
        Ok(())
    }

    fn sandbox_mount(
        &mut self,
        step: &Step,
        m: &Mount,
        src: Option<&Source>,
        state: &ImageState,
        holds: &mut StepHolds,
    ) -> Result<Option<kiln_sandbox::Mount>, BuildError> {
        let StepHolds { mounts: keep, locks, scratch } = holds;
        let wd = state.workdir();
        let target = if m.target.starts_with('/') { PathBuf::from(&m.target) } else { Path::new(&wd).join(&m.target) };
        if m.kind != MountType::Secret && m.kind != MountType::Ssh && (target.as_os_str().is_empty() || target == Path::new("/")) {
            return Err(BuildError::step(at(&step.location), format!("invalid --mount target {:?}: give target=PATH (not /)", m.target)));
        }
        Ok(Some(match m.kind {
            MountType::Tmpfs => kiln_sandbox::Mount::Tmpfs { target, size_bytes: m.size },
            MountType::Cache => {
                let id = m.id.clone().unwrap_or_else(|| m.target.clone());
                let dir = self.opts.root.join("cache").join("mounts").join(Digest::sha256_of(id.as_bytes()).hex());
                fs::create_dir_all(&dir).map_err(|e| BuildError::Io { action: "create cache mount", path: dir.clone(), source: e })?;
                let source = match m.sharing {
                    Sharing::Shared => dir,
                    // locked: one step at a time, across builds (flock on a file beside the dir).
                    Sharing::Locked => {
                        locks.push(lock_file(&dir, true)?.ok_or_else(|| BuildError::Snapshot("cache mount lock".into()))?);
                        dir
                    }
                    // private: the shared dir when it is free, else a fresh one for this step alone.
                    Sharing::Private => match lock_file(&dir, false)? {
                        Some(l) => {
                            locks.push(l);
                            dir
                        }
                        None => {
                            let d = self.snaps.temp_dir("private-cache")?;
                            scratch.push(d.clone());
                            d
                        }
                    },
                };
                if let (Some(u), Some(g)) = (m.uid, m.gid) {
                    let _ = std::os::unix::fs::chown(&source, Some(u), Some(g));
                }
                if let Some(mode) = m.mode {
                    let _ = fs::set_permissions(&source, std::os::unix::fs::PermissionsExt::from_mode(mode));
                }
                kiln_sandbox::Mount::Cache { source, target }
            }
            MountType::Secret => {
                let id =
                    m.id.clone()
                        .unwrap_or_else(|| Path::new(&m.target).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
                let Some(path) = self.opts.secrets.get(&id) else {
                    if m.required {
                        return Err(BuildError::step(
                            at(&step.location),
                            format!("secret {id:?} is required: pass --secret id={id},src=PATH"),
                        ));
                    }
                    return Ok(None);
                };
                let target = if m.target.is_empty() { None } else { Some(target) };
                kiln_sandbox::Mount::Secret {
                    id,
                    source: path.clone(),
                    target,
                    mode: m.mode,
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                }
            }
            MountType::Bind => {
                let source_rel = m.source.clone().unwrap_or_else(|| "/".to_string());
                let host = match src {
                    None => {
                        let rel = crate::context::clean_rel(&source_rel).ok_or_else(|| {
                            BuildError::step(at(&step.location), format!("--mount source {source_rel:?} is outside the build context"))
                        })?;
                        self.context.root().join(rel)
                    }
                    Some(s) => {
                        let layers = self.source_layers(step, s)?;
                        self.ensure_local(&layers)?;
                        let lowers = self.snaps.lowers(self.store, &layers)?;
                        let mnt = self.snaps.mount(&lowers, false)?;
                        let root = mnt.merged.clone();
                        keep.push(mnt);
                        kiln_oci::fsroot::safe_join(&root, Path::new(&source_rel), true)
                            .map_err(|e| BuildError::step(at(&step.location), e.to_string()))?
                    }
                };
                kiln_sandbox::Mount::Bind { source: host, target, readonly: m.readonly }
            }
            MountType::Ssh => {
                return Err(BuildError::step(at(&step.location), "RUN --mount=type=ssh is not supported by kiln yet"));
            }
        }))
    }

    fn source_layers(&mut self, step: &Step, s: &Source) -> Result<Vec<LayerRef>, BuildError> {
        Ok(match s {
            Source::Stage(i) => {
                self.stages.get(i).ok_or_else(|| BuildError::step(at(&step.location), format!("stage {i} is not built")))?.layers.clone()
            }
            Source::Image(r) => self
                .base(r, &self.opts.platform.clone())
                .map_err(|e| BuildError::step(at(&step.location), format!("no stage is named {r:?}, so it was taken as an image: {e}")))?
                .layers
                .clone(),
            Source::Scratch => Vec::new(),
        })
    }

    /// Resolves COPY's sources and puts their content into the key.
    fn copy_inputs(&mut self, step: &Step, c: &Copy, state: &ImageState, inputs: &mut StepInputs) -> Result<CopyPlan, BuildError> {
        let mut plan = CopyPlan { items: Vec::new(), from: None };
        if let Some(src) = &step.copy_from {
            let layers = self.source_layers(step, src)?;
            let ids: Vec<&Digest> = layers.iter().map(|l| &l.diff_id).collect();
            let chain = chain_ids(&ids).pop().map(|d| d.to_string()).unwrap_or_default();
            inputs.set(Input::CopyFrom, chain);
            plan.from = Some(layers);
        }
        for (i, s) in c.sources.iter().enumerate() {
            match s {
                CopySource::Heredoc(h) => {
                    let body = Digest::sha256_of(h.effective_content().as_bytes());
                    inputs.set(Input::Heredoc(i), inputs::list(&[h.name.clone(), body.to_string()]));
                    plan.items.push(CopyItem::Heredoc(h.name.clone(), h.effective_content()));
                }
                CopySource::Path(p) if c.add && (p.starts_with("http://") || p.starts_with("https://")) => {
                    // The content decides the key, as in BuildKit: fetch now, verify --checksum.
                    let dir = self.snaps.temp_dir("add-url")?;
                    let name = url_file_name(p);
                    let file = dir.join(&name);
                    let digest = fetch_url(p, &file).map_err(|m| BuildError::step(at(&step.location), format!("ADD {p}: {m}")))?;
                    if let Some(want) = &c.checksum {
                        if want != &digest.to_string() {
                            remove_tree(&dir);
                            return Err(BuildError::step(
                                at(&step.location),
                                format!("ADD {p}: --checksum {want} does not match the download ({digest})"),
                            ));
                        }
                    }
                    inputs.set(Input::Source(i, p.clone()), digest.to_string());
                    plan.items.push(CopyItem::Url(dir, name));
                }
                CopySource::Path(p) if plan.from.is_none() => {
                    let matches =
                        self.context.expand_source(p).map_err(|m| BuildError::step(at(&step.location), format!("COPY failed: {m}")))?;
                    for rel in matches {
                        let entries = self.context_entries(&rel, c)?;
                        let mut s = String::new();
                        for e in &entries {
                            s.push_str(&self.entry_line(e, true)?);
                        }
                        inputs.set(Input::Source(i, rel.clone()), Digest::sha256_of(s.as_bytes()).to_string());
                        plan.items.push(CopyItem::Context(rel));
                    }
                }
                CopySource::Path(p) => {
                    inputs.set(Input::FromPath(i), p.clone());
                    plan.items.push(CopyItem::Stage(p.clone()));
                }
            }
        }
        inputs.set(Input::User, state.user());
        inputs.set(Input::Workdir, state.workdir());
        Ok(plan)
    }

    fn exec_copy(&mut self, step: &Step, c: &Copy, plan: &CopyPlan, mounted: &Mounted, state: &ImageState) -> Result<(), BuildError> {
        let e = |m: String| BuildError::step(at(&step.location), m);
        let wd = state.workdir();
        let dest = if c.dest.starts_with('/') { c.dest.clone() } else { format!("{}/{}", wd.trim_end_matches('/'), c.dest) };
        let mut attrs = Attrs::default();
        if let Some(ch) = &c.chown {
            let passwd = fs::read_to_string(mounted.merged.join("etc/passwd")).ok();
            let group = fs::read_to_string(mounted.merged.join("etc/group")).ok();
            let id =
                kiln_sandbox::user::resolve(ch, passwd.as_deref(), group.as_deref()).map_err(|err| e(format!("--chown={ch}: {err}")))?;
            attrs.chown = Some((id.uid, id.gid));
        }
        if let Some(m) = &c.chmod {
            attrs.chmod = Some(u32::from_str_radix(m, 8).map_err(|_| e(format!("--chmod={m}: expected an octal mode such as 0755")))?);
        }
        let many = plan.items.len() > 1;
        let dest_is_dir = c.dest.ends_with('/') || many;
        // Sources from another stage or image are read from a read-only overlay of its layers.
        let src_mount = match &plan.from {
            Some(layers) => {
                self.ensure_local(layers)?;
                let lowers = self.snaps.lowers(self.store, layers)?;
                Some(self.snaps.mount(&lowers, false)?)
            }
            None => None,
        };
        let tmp_heredocs = self.snaps.temp_dir("heredoc")?;
        let result = (|| {
            // Heredoc bodies become files in a temp dir first, so the sources below can borrow it.
            for (i, item) in plan.items.iter().enumerate() {
                if let CopyItem::Heredoc(name, content) = item {
                    let d = tmp_heredocs.join(i.to_string());
                    fs::create_dir_all(&d).map_err(|err| e(err.to_string()))?;
                    fs::write(d.join(name), content).map_err(|err| e(err.to_string()))?;
                }
            }
            let heredoc_dirs: Vec<PathBuf> = (0..plan.items.len()).map(|i| tmp_heredocs.join(i.to_string())).collect();
            let mut sources = Vec::new();
            for (i, item) in plan.items.iter().enumerate() {
                match item {
                    CopyItem::Context(rel) => {
                        let entries = self.context_entries(rel, c)?;
                        if c.add && entries.len() == 1 && c.unpack != Some(false) {
                            let host = self.context.host_path(rel);
                            if is_archive(&host) {
                                unpack_into(&mounted.merged, &dest, &host).map_err(|m| e(format!("ADD {rel}: {m}")))?;
                                continue;
                            }
                        }
                        sources.push(copy::Source {
                            root: SourceRoot { dir: self.context.root(), keep_owner: false },
                            rel: rel.clone(),
                            entries,
                            parents: c.parents,
                        });
                    }
                    CopyItem::Stage(p) => {
                        let Some(m) = &src_mount else { continue };
                        let (_, entries) =
                            copy::walk_root(&m.merged, p.trim_start_matches('/')).map_err(|err| e(format!("COPY --from: {err}")))?;
                        let rel = entries.first().map(|x| x.rel.clone()).unwrap_or_default();
                        sources.push(copy::Source { root: SourceRoot { dir: &m.merged, keep_owner: true }, rel, entries, parents: false });
                    }
                    CopyItem::Url(dir, name) => {
                        let meta = fs::metadata(dir.join(name)).map_err(|err| e(err.to_string()))?;
                        let entry = Entry { rel: name.clone(), kind: Kind::File { size: meta.len() }, mode: 0o600, uid: 0, gid: 0 };
                        sources.push(copy::Source {
                            root: SourceRoot { dir, keep_owner: false },
                            rel: name.clone(),
                            entries: vec![entry],
                            parents: false,
                        });
                    }
                    CopyItem::Heredoc(name, content) => {
                        let entry =
                            Entry { rel: name.clone(), kind: Kind::File { size: content.len() as u64 }, mode: 0o644, uid: 0, gid: 0 };
                        sources.push(copy::Source {
                            root: SourceRoot { dir: &heredoc_dirs[i], keep_owner: false },
                            rel: name.clone(),
                            entries: vec![entry],
                            parents: false,
                        });
                    }
                }
            }
            copy::copy_into(&mounted.merged, &sources, &dest, dest_is_dir, attrs)
        })();
        remove_tree(&tmp_heredocs);
        drop(src_mount);
        result
    }
}

/// What a COPY reads, resolved before its key is computed.
pub(crate) struct CopyPlan {
    items: Vec<CopyItem>,
    from: Option<Vec<LayerRef>>,
}

enum CopyItem {
    Context(String),
    Stage(String),
    Heredoc(String, String),
    /// A downloaded ADD URL: the temp dir holding it and the file's name.
    Url(PathBuf, String),
}

impl Drop for CopyPlan {
    fn drop(&mut self) {
        for item in &self.items {
            if let CopyItem::Url(dir, _) = item {
                remove_tree(dir);
            }
        }
    }
}

/// The file name an ADD of `url` gets: the last path segment, or `index.html` for a bare host.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    match after_host.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_string(),
        _ => "index.html".to_string(),
    }
}

/// Streams `url` to `dest`, returning the content's sha256. Redirects are followed; a non-2xx
/// answer is an error naming the status.
fn fetch_url(url: &str, dest: &Path) -> Result<Digest, String> {
    let resp =
        ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(30)).redirects(10).build().get(url).call().map_err(
            |e| match e {
                ureq::Error::Status(code, r) => format!("HTTP {code} {}", r.status_text()),
                other => other.to_string(),
            },
        )?;
    let f = fs::File::create(dest).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    let mut w = kiln_oci::DigestWriter::new(std::io::BufWriter::new(f));
    std::io::copy(&mut resp.into_reader(), &mut w).map_err(|e| format!("download broke off: {e}"))?;
    let (mut inner, digest, _) = w.finish();
    std::io::Write::flush(&mut inner).map_err(|e| e.to_string())?;
    // Docker: files fetched by ADD are 0600.
    fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(|e| e.to_string())?;
    Ok(digest)
}

/// What a RUN step holds while it runs: read-only mounts of other stages, cache-mount locks, and
/// private cache dirs (removed when dropped).
#[derive(Default)]
pub(crate) struct StepHolds {
    mounts: Vec<Mounted>,
    locks: Vec<fs::File>,
    scratch: Vec<PathBuf>,
}

impl Drop for StepHolds {
    fn drop(&mut self) {
        self.mounts.clear();
        self.locks.clear();
        for d in &self.scratch {
            remove_tree(d);
        }
    }
}

/// Takes an exclusive flock on `<dir>.lock`: waiting for it (`wait`), or `None` when it is held.
fn lock_file(dir: &Path, wait: bool) -> Result<Option<fs::File>, BuildError> {
    use std::os::fd::AsRawFd;
    let path = dir.with_extension("lock");
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| BuildError::Io {
        action: "open",
        path: path.clone(),
        source: e,
    })?;
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(Some(f))
    } else {
        let e = std::io::Error::last_os_error();
        if !wait && e.kind() == std::io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(BuildError::Io { action: "lock", path, source: e })
        }
    }
}

fn is_bare_heredoc(cmd: &str) -> bool {
    let t = cmd.trim();
    t.starts_with("<<") && !t.contains(char::is_whitespace)
}

fn dir_is_empty(p: &Path) -> bool {
    fs::read_dir(p).map(|mut r| r.next().is_none()).unwrap_or(true)
}

/// ADD's archive test: a tar, maybe compressed (gzip, zstd), recognised by content, not by name.
fn is_archive(p: &Path) -> bool {
    use std::io::Read;
    let Ok(f) = fs::File::open(p) else { return false };
    let Ok(mut r) = kiln_oci::layer::decompress(std::io::BufReader::new(f)) else { return false };
    let mut head = vec![0u8; 512];
    let mut got = 0;
    while got < 512 {
        match r.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got == 512 && &head[257..262] == b"ustar"
}

fn unpack_into(root: &Path, dest: &str, archive: &Path) -> Result<(), String> {
    let rootdir = kiln_oci::fsroot::RootDir::open(root).map_err(|e| e.to_string())?;
    let r = rootdir.resolve(Path::new(dest), true, kiln_oci::fsroot::Missing::Create).map_err(|e| e.to_string())?;
    if !r.host_path.exists() {
        fs::create_dir(&r.host_path).map_err(|e| e.to_string())?;
    }
    let f = fs::File::open(archive).map_err(|e| e.to_string())?;
    kiln_oci::layer::apply_layer(std::io::BufReader::new(f), &r.host_path, &kiln_oci::layer::ApplyOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Applies an instruction that only changes the image config.
fn apply_meta(step: &Step, state: &mut ImageState) {
    match &step.instruction {
        Instruction::Env(pairs) => {
            let mut env = state.env();
            for (k, v) in pairs {
                set_env(&mut env, k, v);
            }
            state.runtime().env = Some(env);
        }
        Instruction::User(u) => state.runtime().user = Some(u.clone()),
        Instruction::Label(pairs) => {
            let rt = state.runtime();
            let labels = rt.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in pairs {
                labels.insert(k.clone(), v.clone());
            }
        }
        Instruction::Expose(ports) => {
            let rt = state.runtime();
            let map = rt.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in ports {
                let p = if p.contains('/') { p.to_lowercase() } else { format!("{p}/tcp") };
                map.insert(p, serde_json::json!({}));
            }
        }
        Instruction::Volume(vols) => {
            let rt = state.runtime();
            let map = rt.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                map.insert(v.clone(), serde_json::json!({}));
            }
        }
        Instruction::StopSignal(s) => state.runtime().stop_signal = Some(s.clone()),
        Instruction::Healthcheck(h) => state.runtime().healthcheck = Some(healthcheck_json(h, &state.shell)),
        Instruction::Maintainer(m) => state.config.author = Some(m.clone()),
        Instruction::Shell(s) => {
            state.shell = s.clone();
            state.runtime().shell = Some(s.clone());
        }
        Instruction::Entrypoint(cl) => {
            let argv = command_argv(cl, &state.shell);
            let rt = state.runtime();
            rt.entrypoint = Some(argv);
            // Docker: an ENTRYPOINT resets a CMD inherited from the base (not one set in this stage).
            if !state.cmd_set {
                state.runtime().cmd = None;
            }
        }
        Instruction::Cmd(cl) => {
            state.cmd_set = true;
            state.runtime().cmd = Some(command_argv(cl, &state.shell));
        }
        Instruction::Onbuild(text, _) => {
            state.runtime().on_build.get_or_insert_with(Vec::new).push(text.clone());
        }
        Instruction::Arg(_) | Instruction::From(_) | Instruction::Run(_) | Instruction::Copy(_) | Instruction::Workdir(_) => {}
    }
}

fn command_argv(cl: &CommandLine, shell: &[String]) -> Vec<String> {
    match cl {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

fn healthcheck_json(h: &Healthcheck, shell: &[String]) -> serde_json::Value {
    let test: Vec<String> = match &h.test {
        None => vec!["NONE".to_string()],
        Some(CommandLine::Exec(v)) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v.iter().cloned());
            t
        }
        Some(CommandLine::Shell(s)) => {
            let _ = shell;
            vec!["CMD-SHELL".to_string(), s.clone()]
        }
    };
    let mut obj = serde_json::Map::new();
    obj.insert("Test".into(), serde_json::json!(test));
    let ns = |d: &std::time::Duration| serde_json::json!(d.as_nanos() as u64);
    if let Some(d) = &h.interval {
        obj.insert("Interval".into(), ns(d));
    }
    if let Some(d) = &h.timeout {
        obj.insert("Timeout".into(), ns(d));
    }
    if let Some(d) = &h.start_period {
        obj.insert("StartPeriod".into(), ns(d));
    }
    if let Some(d) = &h.start_interval {
        obj.insert("StartInterval".into(), ns(d));
    }
    if let Some(r) = h.retries {
        obj.insert("Retries".into(), serde_json::json!(r));
    }
    serde_json::Value::Object(obj)
}
