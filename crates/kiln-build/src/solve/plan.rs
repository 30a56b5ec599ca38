//! Planning a step: what goes into its cache key and what executing it means, decided from the step,
//! the image state and what the context holds. Nothing here mounts, runs or downloads: what needs
//! the outside world (another stage's key, an image's layers, an ADD URL's content) comes in as data
//! in [`PlanContext`], and the context's files through [`ContextFiles`], so that planning is tested
//! without root.

use std::collections::HashMap;

use kiln_cache::inputs::{self, Input, StepInputs};
use kiln_dockerfile::instructions::{CommandLine, Copy, CopySource, Instruction, MountType, Network, Run, Step};
use kiln_oci::Digest;

use super::{at, canon};
use crate::context::{Entry, Kind};
use crate::error::BuildError;
use crate::state::{set_env, ImageState};

/// What planning reads of the build context: which paths a source names, their entries, and the
/// digest of a file's content.
pub(crate) trait ContextFiles {
    /// The context paths a COPY source (maybe a glob) matches.
    fn expand_source(&self, pattern: &str) -> Result<Vec<String>, String>;
    /// The entries at and under `rel`, the top one first.
    fn walk(&self, rel: &str) -> Result<Vec<Entry>, BuildError>;
    /// The sha256 of the context file `rel`.
    fn file_digest(&self, rel: &str) -> Result<Digest, BuildError>;
}

impl ContextFiles for crate::context::Context {
    fn expand_source(&self, pattern: &str) -> Result<Vec<String>, String> {
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
    pub no_network: bool,
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
    let plan = RunPlan {
        argv: run_argv(run, state),
        env: run_env(step, state),
        user: state.user(),
        workdir: state.workdir(),
        no_network: matches!(run.network, Some(Network::None)),
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
        set_env(&mut env, k, v);
    }
    env
}

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
                let digest = cx.urls.get(p).ok_or_else(|| BuildError::step(at(&step.location), format!("ADD {p}: not downloaded")))?;
                if let Some(want) = &c.checksum {
                    if want != &digest.to_string() {
                        return Err(BuildError::step(
                            at(&step.location),
                            format!("ADD {p}: --checksum {want} does not match the download ({digest})"),
                        ));
                    }
                }
                inputs.set(Input::Source(i, p.clone()), digest.to_string());
                plan.items.push(CopyItem::Url(p.clone()));
            }
            CopySource::Path(p) if step.copy_from.is_none() => {
                let matches = cx.files.expand_source(p).map_err(|m| BuildError::step(at(&step.location), format!("COPY failed: {m}")))?;
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

/// The digest of a context tree (a bind mount's source): its listing, file contents by digest.
fn context_digest(files: &dyn ContextFiles, rel: &str) -> Result<Digest, BuildError> {
    let rel = crate::context::clean_rel(rel).unwrap_or_default();
    listing_digest(files, &files.walk(&rel)?)
}

fn listing_digest(files: &dyn ContextFiles, entries: &[Entry]) -> Result<Digest, BuildError> {
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
