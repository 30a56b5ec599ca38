//! Planning a step: what goes into its cache key and what executing it means, decided from the step,
//! the image state and what the context holds. Nothing here mounts, runs or downloads: what needs
//! the outside world (another stage's key, an image's layers, an ADD URL's content) comes in as data
//! in [`PlanContext`], and the context's files through [`ContextFiles`], so that planning is tested
//! without root.

use std::collections::HashMap;

use kiln_cache::inputs::{self, Input, StepInputs};
use kiln_dockerfile::instructions::{CommandLine, Copy, CopySource, Instruction, MountType, Network, Run, Security, Step};
use kiln_oci::Digest;

use super::{at, canon};
use crate::context::{Entry, Kind};
use crate::error::{BuildError, Refusal, SourceMiss, StepFailure};
use crate::state::{set_env, ImageState};

/// What planning reads of the build context: which paths a source names, their entries, and the
/// digest of a file's content.
pub(crate) trait ContextFiles: Sync {
    /// The context paths a COPY source (maybe a glob) matches.
    fn expand_source(&self, pattern: &str) -> Result<Vec<String>, SourceMiss>;
    /// The entries at and under `rel`, the top one first.
    fn walk(&self, rel: &str) -> Result<Vec<Entry>, BuildError>;
    /// The sha256 of the context file `rel`.
    fn file_digest(&self, rel: &str) -> Result<Digest, BuildError>;
}

impl ContextFiles for crate::context::Context {
    fn expand_source(&self, pattern: &str) -> Result<Vec<String>, SourceMiss> {
        crate::context::Context::expand_source(self, pattern)
    }
    fn walk(&self, rel: &str) -> Result<Vec<Entry>, BuildError> {
        crate::context::Context::walk(self, rel)
    }
    fn file_digest(&self, rel: &str) -> Result<Digest, BuildError> {
        crate::context::Context::file_digest(self, rel)
    }
}

/// What a step's plan reads beyond the step and the image state, resolved by the solver first.
pub(crate) struct PlanContext<'c> {
    pub files: &'c dyn ContextFiles,
    /// `COPY --from`: the source's key (the chain id of its layers; empty for none).
    pub copy_from: Option<String>,
    /// `COPY --from` names a `--build-context` directory: its paths are read through `files`, as
    /// the context's are.
    pub from_dir: bool,
    /// `RUN --mount=…,from=`: what each mount's source is keyed by (a stage's key, an image's chain
    /// id), in mount order; `None` for mounts without `from=`.
    pub mount_from: Vec<Option<String>>,
    /// ADD URLs, already downloaded: their content's digest.
    pub urls: HashMap<String, Digest>,
}

/// A planned step: the inputs its key is the hash of (over the parent's key) and what to do on a miss.
pub(crate) struct StepPlan<'s> {
    pub inputs: StepInputs,
    pub action: Action<'s>,
}

pub(crate) enum Action<'s> {
    /// A config-only step: no layer, only the image config changes.
    Meta,
    Run(RunPlan),
    Copy(CopyPlan<'s>),
    /// `COPY --link`: the layer is made on an empty root and keyed by `layer` alone (over
    /// [`inputs::link_root`]); the step's own inputs only name that layer.
    Link {
        layer: StepInputs,
        copy: CopyPlan<'s>,
    },
    /// WORKDIR: the directory to create, owned by `user`.
    Workdir {
        dir: String,
        user: String,
    },
}

/// What a RUN runs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RunPlan {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    /// The step's own `RUN --network` (keyed with the instruction; the build's `--network`,
    /// which applies when this is `None` or `default`, is not: see [`crate::run_env`]).
    pub network: Option<Network>,
}

/// What a COPY reads, resolved before its key is computed.
pub(crate) struct CopyPlan<'s> {
    pub copy: &'s Copy,
    pub items: Vec<CopyItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CopyItem {
    /// A path in the context (one match of a source).
    Context(String),
    /// A path in the `--from` stage or image.
    Stage(String),
    /// A heredoc: its file name and content.
    Heredoc(String, String),
    /// An ADD URL (downloaded before planning).
    Url(String),
}

/// Plans `step` on `state`: its key inputs and its action.
pub(crate) fn plan_step<'s>(step: &'s Step, state: &ImageState, cx: &PlanContext<'_>) -> Result<StepPlan<'s>, BuildError> {
    let mut inputs = StepInputs::new(canon::instruction(&step.instruction), &state.platform);
    let action = match &step.instruction {
        Instruction::Run(run) => Action::Run(plan_run(step, run, state, cx, &mut inputs)?),
        Instruction::Copy(c) => {
            let copy = plan_copy(step, c, state, cx, &mut inputs)?;
            if c.link {
                let mut joined = StepInputs::default();
                joined.set(Input::Link, inputs.key(&inputs::link_root()).to_string());
                return Ok(StepPlan { inputs: joined, action: Action::Link { layer: inputs, copy } });
            }
            Action::Copy(copy)
        }
        Instruction::Workdir(_) => {
            let user = state.user();
            inputs.set(Input::User, user.clone());
            inputs.set(Input::Workdir, step.workdir.clone());
            Action::Workdir { dir: step.workdir.clone(), user }
        }
        _ => Action::Meta,
    };
    Ok(StepPlan { inputs, action })
}

/// RUN's inputs: the argv, every variable the process sees, user, workdir and each mount (its
/// spec, and what it reads: context files or another stage's or image's layers).
fn plan_run(step: &Step, run: &Run, state: &ImageState, cx: &PlanContext<'_>, inputs: &mut StepInputs) -> Result<RunPlan, BuildError> {
    // BuildKit runs `--security=insecure` with every capability and no seccomp (behind `--allow
    // security.insecure`); kiln has no such mode, and running it confined would not be what was asked.
    if matches!(run.security, Some(Security::Insecure)) {
        return Err(BuildError::refused(at(&step.location), Refusal::InsecureSecurity));
    }
    let plan = RunPlan {
        argv: run_argv(run, state),
        env: run_env(step, state),
        user: state.user(),
        workdir: state.workdir(),
        network: run.network,
    };
    inputs.set(Input::Run, inputs::list(&plan.argv));
    let image_env = state.env();
    for e in &plan.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        // A value a build ARG gave (and ENV did not) is a build arg, so that a miss says so.
        let from_arg = step.args.iter().any(|(a, av)| a == k && av == v) && !image_env.contains(e);
        inputs.set(if from_arg { Input::Arg(k.to_string()) } else { Input::Env(k.to_string()) }, v);
    }
    inputs.set(Input::User, plan.user.clone());
    inputs.set(Input::Workdir, plan.workdir.clone());
    for (i, m) in step.mounts.iter().enumerate() {
        inputs.set(Input::Mount(i), canon::mount(m));
        if m.kind == MountType::Bind && m.from.is_none() {
            inputs.set(Input::MountContent(i), context_digest(cx.files, m.source.as_deref().unwrap_or("/"))?.to_string());
        }
    }
    for (i, s) in step.mount_sources.iter().enumerate() {
        if s.is_some() {
            inputs.set(Input::MountFrom(i), cx.mount_from.get(i).cloned().flatten().unwrap_or_default());
        }
    }
    Ok(plan)
}

/// RUN's argv: exec form as is; shell form through SHELL; a heredoc script inline, as BuildKit
/// hands it to the shell.
fn run_argv(run: &Run, state: &ImageState) -> Vec<String> {
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

fn is_bare_heredoc(cmd: &str) -> bool {
    let t = cmd.trim();
    t.starts_with("<<") && !t.contains(char::is_whitespace)
}

/// RUN's environment: the image's ENV with the stage's variables (ENV and ARG in one scope, the
/// later assignment winning, as BuildKit does) laid over it.
fn run_env(step: &Step, state: &ImageState) -> Vec<String> {
    let mut env = state.env();
    for (k, v) in &step.vars {
        // BuildKit's SBOM switches are ARGs for the scanner only, never a RUN's environment
        // (its frontend's `nonEnvArgs`), unless an ENV sets them.
        if NON_ENV_ARGS.contains(&k.as_str()) && !step.env.iter().any(|(e, _)| e == k) {
            continue;
        }
        set_env(&mut env, k, v);
    }
    env
}

/// ARGs that BuildKit keeps out of RUN's environment.
const NON_ENV_ARGS: [&str; 2] = [crate::attest::SCAN_STAGE_ARG, crate::attest::SCAN_CONTEXT_ARG];

/// Resolves COPY's sources and puts their content into the key.
fn plan_copy<'s>(
    step: &Step,
    c: &'s Copy,
    state: &ImageState,
    cx: &PlanContext<'_>,
    inputs: &mut StepInputs,
) -> Result<CopyPlan<'s>, BuildError> {
    let mut plan = CopyPlan { copy: c, items: Vec::new() };
    if step.copy_from.is_some() {
        inputs.set(Input::CopyFrom, cx.copy_from.clone().unwrap_or_default());
    }
    for (i, s) in c.sources.iter().enumerate() {
        match s {
            CopySource::Heredoc(h) => {
                let body = Digest::sha256_of(h.effective_content().as_bytes());
                inputs.set(Input::Heredoc(i), inputs::list(&[h.name.clone(), body.to_string()]));
                plan.items.push(CopyItem::Heredoc(h.name.clone(), h.effective_content()));
            }
            CopySource::Path(p) if c.add && is_url(p) => {
                // The content decides the key, as in BuildKit (fetched before planning).
                let digest =
                    cx.urls.get(p).ok_or_else(|| BuildError::refused(at(&step.location), Refusal::AddNotDownloaded { url: p.clone() }))?;
                if let Some(want) = &c.checksum {
                    if want != &digest.to_string() {
                        let refusal = Refusal::ChecksumMismatch { url: p.clone(), want: want.clone(), got: digest.clone() };
                        return Err(BuildError::refused(at(&step.location), refusal));
                    }
                }
                inputs.set(Input::Source(i, p.clone()), digest.to_string());
                plan.items.push(CopyItem::Url(p.clone()));
            }
            CopySource::Path(p) if step.copy_from.is_none() || cx.from_dir => {
                let matches = cx.files.expand_source(p).map_err(|m| BuildError::failed(at(&step.location), StepFailure::Source(m)))?;
                for rel in matches {
                    let entries = context_entries(cx.files, &rel, c)?;
                    inputs.set(Input::Source(i, rel.clone()), listing_digest(cx.files, &entries)?.to_string());
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

/// An ADD source that is downloaded rather than read from the context.
pub(crate) fn is_url(p: &str) -> bool {
    p.starts_with("http://") || p.starts_with("https://")
}

/// A context source's entries, less what `--exclude` names (patterns in `.dockerignore` syntax,
/// matched against the path inside the source and against the path in the context).
pub(crate) fn context_entries(files: &dyn ContextFiles, rel: &str, c: &Copy) -> Result<Vec<Entry>, BuildError> {
    let entries = files.walk(rel)?;
    if c.exclude.is_empty() {
        return Ok(entries);
    }
    let m = kiln_dockerfile::dockerignore::Matcher::new(&c.exclude).map_err(BuildError::Exclude)?;
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

/// The digest of a context tree (a bind mount's source): its listing, file contents by digest.
fn context_digest(files: &dyn ContextFiles, rel: &str) -> Result<Digest, BuildError> {
    let rel = crate::context::clean_rel(rel).unwrap_or_default();
    listing_digest(files, &files.walk(&rel)?)
}

fn listing_digest(files: &dyn ContextFiles, entries: &[Entry]) -> Result<Digest, BuildError> {
    prefetch_digests(files, entries);
    let mut s = String::new();
    for e in entries {
        let content = match &e.kind {
            Kind::File { .. } => files.file_digest(&e.rel)?.to_string(),
            Kind::Dir => "dir".to_string(),
            Kind::Symlink { target } => format!("-> {target}"),
        };
        s.push_str(&canon::listing_entry(&e.rel, e.mode, &content));
    }
    Ok(Digest::sha256_of(s.as_bytes()))
}

/// Hashes the files among `entries` on as many threads as COPY puts files with
/// ([`crate::copy::copy_threads`]: one per core, one below 64 files) ahead of [`listing_digest`],
/// which then finds each digest remembered ([`ContextFiles::file_digest`] keeps them): a context of
/// thousands of small files is mostly `open`, `read` and `close`, which side by side go faster.
/// Errors are left for the in-order pass to report, so the first one is the one a single thread
/// would have met.
fn prefetch_digests(files: &dyn ContextFiles, entries: &[Entry]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let todo: Vec<&str> = entries.iter().filter(|e| matches!(e.kind, Kind::File { .. })).map(|e| e.rel.as_str()).collect();
    let threads = crate::copy::copy_threads(todo.len());
    if threads <= 1 {
        return;
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(rel) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if files.file_digest(rel).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    //! Planning without root: no sandbox, no mount, no context directory. Steps come from the real
    //! frontend; the context is a map of fake files; `--from` keys and downloads are data.

    use std::collections::{BTreeMap, BTreeSet};

    use kiln_dockerfile::instructions::{parse_build, resolve, ResolveOptions, Resolved};

    use super::*;
    use crate::solve::meta::apply_meta;

    /// A context of fake files: path → (mode, content; `None` for a directory).
    #[derive(Default)]
    struct FakeContext(BTreeMap<String, (u32, Option<String>)>);

    impl FakeContext {
        fn with(mut self, path: &str, mode: u32, content: Option<&str>) -> FakeContext {
            self.0.insert(path.to_string(), (mode, content.map(str::to_string)));
            self
        }
    }

    impl ContextFiles for FakeContext {
        fn expand_source(&self, pattern: &str) -> Result<Vec<String>, SourceMiss> {
            let p = pattern.trim_matches('/');
            if self.0.contains_key(p) {
                Ok(vec![p.to_string()])
            } else {
                Err(SourceMiss::NotFound { src: pattern.to_string() })
            }
        }
        fn walk(&self, rel: &str) -> Result<Vec<Entry>, BuildError> {
            let under = format!("{rel}/");
            Ok(self
                .0
                .iter()
                .filter(|(p, _)| rel.is_empty() || *p == rel || p.starts_with(&under))
                .map(|(p, (mode, content))| Entry {
                    rel: p.clone(),
                    kind: match content {
                        Some(c) => Kind::File { size: c.len() as u64 },
                        None => Kind::Dir,
                    },
                    mode: *mode,
                    uid: 0,
                    gid: 0,
                })
                .collect())
        }
        fn file_digest(&self, rel: &str) -> Result<Digest, BuildError> {
            let (_, content) = &self.0[rel];
            Ok(Digest::sha256_of(content.as_deref().unwrap_or_default().as_bytes()))
        }
    }

    /// A context whose named files cannot be read.
    struct FailingContext {
        bad: [&'static str; 2],
    }

    impl ContextFiles for FailingContext {
        fn expand_source(&self, _: &str) -> Result<Vec<String>, SourceMiss> {
            unreachable!()
        }
        fn walk(&self, _: &str) -> Result<Vec<Entry>, BuildError> {
            unreachable!()
        }
        fn file_digest(&self, rel: &str) -> Result<Digest, BuildError> {
            if self.bad.contains(&rel) {
                return Err(BuildError::Io { action: "read", path: rel.into(), source: std::io::ErrorKind::PermissionDenied.into() });
            }
            Ok(Digest::sha256_of(rel.as_bytes()))
        }
    }

    /// Hashing many files side by side gives the digest one thread gives, and the error of the
    /// first unreadable file in listing order, whichever thread met it first.
    #[test]
    fn many_files_hash_side_by_side_with_the_first_error_in_order() {
        let entries: Vec<Entry> =
            (0..300).map(|i| Entry { rel: format!("d/f{i:03}"), kind: Kind::File { size: 1 }, mode: 0o644, uid: 0, gid: 0 }).collect();
        let ok = FailingContext { bad: ["none", "none"] };
        let parallel = listing_digest(&ok, &entries).unwrap();
        let mut s = String::new();
        for e in &entries {
            s.push_str(&canon::listing_entry(&e.rel, e.mode, &Digest::sha256_of(e.rel.as_bytes()).to_string()));
        }
        assert_eq!(parallel, Digest::sha256_of(s.as_bytes()));
        let failing = FailingContext { bad: ["d/f250", "d/f040"] };
        let e = listing_digest(&failing, &entries).unwrap_err().to_string();
        assert!(e.contains("d/f040") && !e.contains("d/f250"), "{e}");
    }

    /// A context that must not be read (a COPY --from or a RUN without bind mounts).
    struct NoContext;

    impl ContextFiles for NoContext {
        fn expand_source(&self, pattern: &str) -> Result<Vec<String>, SourceMiss> {
            panic!("the context was asked to expand {pattern}")
        }
        fn walk(&self, rel: &str) -> Result<Vec<Entry>, BuildError> {
            panic!("the context was asked to walk {rel}")
        }
        fn file_digest(&self, rel: &str) -> Result<Digest, BuildError> {
            panic!("the context was asked for {rel}")
        }
    }

    fn cx(files: &dyn ContextFiles) -> PlanContext<'_> {
        PlanContext { files, copy_from: None, from_dir: false, mount_from: Vec::new(), urls: HashMap::new() }
    }

    fn resolved(dockerfile: &str) -> Resolved {
        let df = kiln_dockerfile::parse_str(dockerfile).unwrap();
        let build = parse_build(&df, "Dockerfile").unwrap();
        resolve(&build, &ResolveOptions::default()).unwrap()
    }

    fn amd64() -> kiln_oci::Platform {
        kiln_oci::Platform::parse("linux/amd64").unwrap()
    }

    /// The state before the target stage's last step: config-only steps and WORKDIR applied as the
    /// solver applies them, from `state`.
    fn state_before_last(r: &Resolved, mut state: ImageState) -> ImageState {
        let steps = &r.stages.last().unwrap().steps;
        for step in &steps[..steps.len() - 1] {
            let plan = plan_step(step, &state, &cx(&NoContext)).unwrap();
            match plan.action {
                Action::Meta => apply_meta(step, &mut state),
                Action::Workdir { dir, .. } => state.runtime().working_dir = Some(dir),
                _ => panic!("only config-only steps and WORKDIR before the last one"),
            }
            state.key = plan.inputs.key(&state.key);
        }
        state
    }

    fn last_step(r: &Resolved) -> &Step {
        r.stages.last().unwrap().steps.last().unwrap()
    }

    fn get(inputs: &StepInputs, input: Input) -> Option<&str> {
        inputs.as_map().get(&input.name()).map(String::as_str)
    }

    fn names(inputs: &StepInputs) -> BTreeSet<String> {
        inputs.as_map().keys().cloned().collect()
    }

    /// The planner gives the golden keys of `solve/canon.rs` (ENV, then RUN and COPY on it): the
    /// keys are the planned inputs', not hand-built ones.
    #[test]
    fn planned_steps_give_the_golden_keys() {
        let scratch = Digest::sha256_of(b"scratch linux/amd64");
        let mut state = ImageState::scratch(&amd64());
        state.runtime().env = None;
        state.key = scratch.clone();

        let r = resolved("FROM scratch\nENV MODE=dev\n");
        let env = plan_step(last_step(&r), &state, &cx(&NoContext)).unwrap();
        assert!(matches!(env.action, Action::Meta));
        let env_key = env.inputs.key(&scratch);
        assert_eq!(env_key.to_string(), "sha256:f049e50e9036e2aa904f31d5005e48bf7641efc9e8cb0f8a264b1612225a7a22");
        apply_meta(last_step(&r), &mut state);

        let r = resolved("FROM scratch\nARG VERSION=1.2\nRUN make\n");
        let run = plan_step(last_step(&r), &state, &cx(&NoContext)).unwrap();
        assert_eq!(run.inputs.key(&env_key).to_string(), "sha256:70a3c872608d94c4aabe9dfd8eaf938b035732d2a94c1f191965523a6db28203");

        let files = FakeContext::default().with("a.txt", 0o644, Some("a\n"));
        let r = resolved("FROM scratch\nCOPY a.txt /a\n");
        let copy = plan_step(last_step(&r), &state, &cx(&files)).unwrap();
        assert_eq!(copy.inputs.key(&env_key).to_string(), "sha256:76aa8894c3be4e9cf96f15963d0ffa809afe52b5657c9da2b27006b4ed06e9b9");
    }

    /// RUN's argv goes through SHELL; its env is the image's ENV with the stage's variables, a build
    /// ARG's value keyed as `arg:`, an ENV's as `env:`; USER and WORKDIR in force are keyed too.
    #[test]
    fn run_plans_argv_env_user_and_workdir() {
        let r = resolved(
            "FROM scratch\nARG VERSION=1.2\nENV MODE=dev\nUSER app\nWORKDIR /src\nSHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nRUN make $VERSION\n",
        );
        let state = state_before_last(&r, ImageState::scratch(&amd64()));
        let plan = plan_step(last_step(&r), &state, &cx(&NoContext)).unwrap();
        let Action::Run(run) = &plan.action else { panic!("RUN is planned as a run") };
        assert_eq!(run.argv, vec!["/bin/bash", "-eu", "-c", "make $VERSION"]);
        assert!(run.env.contains(&"MODE=dev".to_string()) && run.env.contains(&"VERSION=1.2".to_string()), "{:?}", run.env);
        assert_eq!((run.user.as_str(), run.workdir.as_str(), run.network), ("app", "/src", None));
        let i = &plan.inputs;
        assert_eq!(get(i, Input::Run), Some(inputs::list(&run.argv).as_str()));
        assert_eq!(get(i, Input::Arg("VERSION".into())), Some("1.2"));
        assert_eq!(get(i, Input::Env("VERSION".into())), None);
        assert_eq!(get(i, Input::Env("MODE".into())), Some("dev"));
        assert_eq!(get(i, Input::User), Some("app"));
        assert_eq!(get(i, Input::Workdir), Some("/src"));

        // Exec form as is; a lone heredoc is the script; --network=none reaches the plan.
        let r = resolved("FROM scratch\nRUN [\"echo\", \"hi\"]\n");
        let Action::Run(run) = plan_step(last_step(&r), &ImageState::scratch(&amd64()), &cx(&NoContext)).unwrap().action else { panic!() };
        assert_eq!(run.argv, vec!["echo", "hi"]);
        let r = resolved("FROM scratch\nRUN --network=none <<EOF\necho hi\nEOF\n");
        let Action::Run(run) = plan_step(last_step(&r), &ImageState::scratch(&amd64()), &cx(&NoContext)).unwrap().action else { panic!() };
        assert_eq!(run.argv, vec!["/bin/sh", "-c", "echo hi\n"]);
        assert_eq!(run.network, Some(Network::None));
    }

    /// Each mount is keyed by its spec; a bind of the context also by the content it reads, a mount
    /// `from=` another stage by that stage's key (given as data).
    #[test]
    fn run_mounts_are_keyed_by_spec_context_content_and_source_key() {
        let r = resolved(
            "FROM scratch AS base\nFROM scratch\n\
             RUN --mount=type=bind,source=src,target=/s --mount=type=cache,target=/c --mount=type=bind,from=base,target=/b true\n",
        );
        let step = last_step(&r);
        let state = ImageState::scratch(&amd64());
        let plan_with = |content: &str, base_key: &str| {
            let files = FakeContext::default().with("src", 0o755, None).with("src/a", 0o644, Some(content));
            let mut cx = cx(&files);
            cx.mount_from = vec![None, None, Some(base_key.to_string())];
            plan_step(step, &state, &cx).unwrap().inputs
        };
        let inputs = plan_with("1", "sha256:base");
        for i in 0..3 {
            assert_eq!(get(&inputs, Input::Mount(i)), Some(canon::mount(&step.mounts[i]).as_str()));
        }
        assert!(get(&inputs, Input::MountContent(0)).is_some());
        assert_eq!(get(&inputs, Input::MountContent(1)), None);
        assert_eq!(get(&inputs, Input::MountContent(2)), None);
        assert_eq!(get(&inputs, Input::MountFrom(2)), Some("sha256:base"));
        assert_eq!(get(&inputs, Input::MountFrom(0)), None);
        assert_eq!(plan_with("1", "sha256:base"), inputs, "planning is deterministic");
        let changed = plan_with("2", "sha256:base");
        assert_ne!(get(&changed, Input::MountContent(0)), get(&inputs, Input::MountContent(0)), "a changed context file changes the key");
        assert_ne!(get(&plan_with("1", "sha256:other"), Input::MountFrom(2)), Some("sha256:base"));
    }

    /// COPY from the context: each match keyed by its listing (modes, file digests from the
    /// context), heredocs by name and body; USER and WORKDIR in force are keyed.
    #[test]
    fn copy_sources_are_keyed_by_their_content() {
        let r = resolved("FROM scratch\nWORKDIR /app\nCOPY src/ <<EOF ./\nhello\nEOF\n");
        let state = state_before_last(&r, ImageState::scratch(&amd64()));
        let files =
            |a: &str| FakeContext::default().with("src", 0o755, None).with("src/a.c", 0o644, Some(a)).with("src/b.c", 0o600, Some("b"));
        let (one, two) = (files("a"), files("a2"));
        let plan = plan_step(last_step(&r), &state, &cx(&one)).unwrap();
        let Action::Copy(copy) = &plan.action else { panic!("COPY is planned as a copy") };
        assert_eq!(copy.items, vec![CopyItem::Context("src".into()), CopyItem::Heredoc("EOF".into(), "hello\n".into())]);
        let listing = ["src", "src/a.c", "src/b.c"]
            .iter()
            .map(|p| {
                let (mode, content) = &one.0[*p];
                let c = content.as_deref().map(|c| Digest::sha256_of(c.as_bytes()).to_string()).unwrap_or_else(|| "dir".into());
                canon::listing_entry(p, *mode, &c)
            })
            .collect::<String>();
        assert_eq!(get(&plan.inputs, Input::Source(0, "src".into())), Some(Digest::sha256_of(listing.as_bytes()).to_string().as_str()));
        let heredoc = inputs::list(&["EOF".to_string(), Digest::sha256_of(b"hello\n").to_string()]);
        assert_eq!(get(&plan.inputs, Input::Heredoc(1)), Some(heredoc.as_str()));
        assert_eq!(get(&plan.inputs, Input::Workdir), Some("/app"));
        assert_eq!(get(&plan.inputs, Input::User), Some(""));
        let other = plan_step(last_step(&r), &state, &cx(&two)).unwrap();
        assert_ne!(other.inputs.key(&state.key), plan.inputs.key(&state.key), "a changed file changes the key");
    }

    /// COPY --from never reads the context: its paths are keyed as written, its content by the
    /// source's key (given as data).
    #[test]
    fn copy_from_is_keyed_by_the_source_not_the_context() {
        let r = resolved("FROM scratch AS build\nFROM scratch\nCOPY --from=build /out/app /usr/bin/\n");
        let mut cx = cx(&NoContext);
        cx.copy_from = Some("sha256:chain".into());
        let plan = plan_step(last_step(&r), &ImageState::scratch(&amd64()), &cx).unwrap();
        let Action::Copy(copy) = &plan.action else { panic!() };
        assert_eq!(copy.items, vec![CopyItem::Stage("/out/app".into())]);
        assert_eq!(get(&plan.inputs, Input::CopyFrom), Some("sha256:chain"));
        assert_eq!(get(&plan.inputs, Input::FromPath(0)), Some("/out/app"));
    }

    /// COPY --from a `--build-context` directory reads it as the context is read: each path keyed by
    /// its content, the source by the context's name.
    #[test]
    fn copy_from_a_directory_context_is_keyed_by_the_files_read() {
        let r = resolved("FROM scratch\nCOPY --from=extra a.txt /a\n");
        let plan_with = |content: &str| {
            let files = FakeContext::default().with("a.txt", 0o644, Some(content)).with("b.txt", 0o644, Some("unread"));
            let mut cx = cx(&files);
            cx.copy_from = Some("context:extra".into());
            cx.from_dir = true;
            let plan = plan_step(last_step(&r), &ImageState::scratch(&amd64()), &cx).unwrap();
            let Action::Copy(copy) = &plan.action else { panic!() };
            assert_eq!(copy.items, vec![CopyItem::Context("a.txt".into())]);
            plan.inputs
        };
        let one = plan_with("1");
        assert_eq!(get(&one, Input::CopyFrom), Some("context:extra"));
        assert!(get(&one, Input::Source(0, "a.txt".into())).is_some());
        assert_eq!(get(&one, Input::FromPath(0)), None);
        assert_eq!(plan_with("1"), one);
        assert_ne!(get(&plan_with("2"), Input::Source(0, "a.txt".into())), get(&one, Input::Source(0, "a.txt".into())));
    }

    /// ADD of a URL is keyed by the download's digest, and `--checksum` is checked against it.
    #[test]
    fn add_url_is_keyed_by_its_download_and_checked() {
        let url = "https://example.com/f.tgz";
        let digest = Digest::sha256_of(b"payload");
        let mut cx = cx(&NoContext);
        cx.urls.insert(url.to_string(), digest.clone());
        let r = resolved(&format!("FROM scratch\nADD {url} /f\n"));
        let plan = plan_step(last_step(&r), &ImageState::scratch(&amd64()), &cx).unwrap();
        let Action::Copy(copy) = &plan.action else { panic!() };
        assert_eq!(copy.items, vec![CopyItem::Url(url.into())]);
        assert_eq!(get(&plan.inputs, Input::Source(0, url.into())), Some(digest.to_string().as_str()));
        let r = resolved(&format!("FROM scratch\nADD --checksum=sha256:0000 {url} /f\n"));
        let err = plan_step(last_step(&r), &ImageState::scratch(&amd64()), &cx).err().unwrap().to_string();
        assert!(err.contains(&format!("ADD {url}: --checksum sha256:0000 does not match the download ({digest})")), "{err}");
    }

    /// WORKDIR plans the directory to create and the USER who owns it, both keyed.
    #[test]
    fn workdir_plans_the_dir_and_its_owner() {
        let r = resolved("FROM scratch\nUSER app\nWORKDIR /w\nWORKDIR x\n");
        let state = state_before_last(&r, ImageState::scratch(&amd64()));
        let plan = plan_step(last_step(&r), &state, &cx(&NoContext)).unwrap();
        let Action::Workdir { dir, user } = &plan.action else { panic!("WORKDIR is planned as a workdir") };
        assert_eq!((dir.as_str(), user.as_str()), ("/w/x", "app"));
        assert_eq!(get(&plan.inputs, Input::Workdir), Some("/w/x"));
        assert_eq!(get(&plan.inputs, Input::User), Some("app"));
    }

    /// Config-only steps are keyed by their instruction and platform alone, and their text tells
    /// them apart.
    #[test]
    fn config_only_steps_are_keyed_by_their_text() {
        let state = ImageState::scratch(&amd64());
        let plan = |df: &str| {
            let r = resolved(df);
            let p = plan_step(last_step(&r), &state, &cx(&NoContext)).unwrap();
            assert!(matches!(p.action, Action::Meta), "{df}");
            p.inputs
        };
        let label = plan("FROM scratch\nLABEL a=1\n");
        assert_eq!(names(&label), BTreeSet::from([Input::Instruction.name(), Input::Platform.name()]));
        assert_eq!(get(&label, Input::Platform), Some("linux/amd64"));
        assert_ne!(label.key(&state.key), plan("FROM scratch\nLABEL a=2\n").key(&state.key));
        for df in ["FROM scratch\nENV A=1\n", "FROM scratch\nCMD [\"sh\"]\n", "FROM scratch\nEXPOSE 80\n", "FROM scratch\nUSER app\n"] {
            assert_eq!(names(&plan(df)).len(), 2, "{df}");
        }
    }

    /// `COPY --link`: the step's only input is the layer's key, made over the link root and not the
    /// parent, so the same files on another parent re-use the layer.
    #[test]
    fn link_keys_the_layer_without_the_parent() {
        let files = FakeContext::default().with("a.txt", 0o644, Some("a\n"));
        let r = resolved("FROM scratch\nCOPY --link a.txt /a\n");
        let plain = ImageState::scratch(&amd64());
        let mut other = plain.clone();
        other.key = Digest::sha256_of(b"another parent");
        other.layers.push(crate::state::LayerRef {
            descriptor: kiln_oci::Descriptor::new("application/vnd.oci.image.layer.v1.tar", Digest::sha256_of(b"l"), 1),
            diff_id: Digest::sha256_of(b"l"),
        });
        let a = plan_step(last_step(&r), &plain, &cx(&files)).unwrap();
        let b = plan_step(last_step(&r), &other, &cx(&files)).unwrap();
        let Action::Link { layer, copy } = &a.action else { panic!("COPY --link is planned as a link") };
        assert_eq!(copy.items, vec![CopyItem::Context("a.txt".into())]);
        assert_eq!(names(&a.inputs), BTreeSet::from([Input::Link.name()]));
        assert_eq!(get(&a.inputs, Input::Link), Some(layer.key(&inputs::link_root()).to_string().as_str()));
        assert!(get(layer, Input::Source(0, "a.txt".into())).is_some());
        assert_eq!(a.inputs, b.inputs, "the layer's key does not depend on the parent");
        assert_ne!(a.inputs.key(&plain.key), b.inputs.key(&other.key), "the step's place in its chain does");
    }
}
