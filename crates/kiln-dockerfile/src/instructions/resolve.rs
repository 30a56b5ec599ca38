//! Stage resolution for one build: variable scopes, expansion of the
//! instructions that BuildKit expands, stage references, and the stages a
//! target needs. See the parent module for the rules.

use std::collections::{BTreeMap, BTreeSet};

use super::{ArgDecl, Build, Command, Copy, CopySource, ErrorKind, Instruction, InstructionError, Location, Mount};
use crate::shell::{Env, ExpandError, Lexer};

/// The predefined platform ARGs, as plain strings (`linux/arm64/v8`,
/// `linux`, `arm64`, `v8`, …). They are set in the global scope, so `FROM`
/// lines can use them; a stage sees them after `ARG TARGETARCH` etc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformArgs {
    pub target_platform: String,
    pub target_os: String,
    pub target_arch: String,
    pub target_variant: String,
    pub build_platform: String,
    pub build_os: String,
    pub build_arch: String,
    pub build_variant: String,
}

impl PlatformArgs {
    fn pairs(&self) -> Vec<(String, String)> {
        [
            ("TARGETPLATFORM", &self.target_platform),
            ("TARGETOS", &self.target_os),
            ("TARGETARCH", &self.target_arch),
            ("TARGETVARIANT", &self.target_variant),
            ("BUILDPLATFORM", &self.build_platform),
            ("BUILDOS", &self.build_os),
            ("BUILDARCH", &self.build_arch),
            ("BUILDVARIANT", &self.build_variant),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }
}

/// What an external base image contributes to a stage's scope. The
/// build engine reads it from the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseConfig {
    pub env: Vec<(String, String)>,
    pub workdir: String,
}

/// Looks up an external base image's config: (reference, platform).
pub type BaseConfigFn = dyn Fn(&str, Option<&str>) -> BaseConfig;

/// The inputs of one build.
#[derive(Default)]
pub struct ResolveOptions<'a> {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`; the last stage when `None`.
    pub target: Option<String>,
    pub platform: PlatformArgs,
    /// The config of an external base image (reference and `--platform`
    /// as expanded), so that its ENV and WORKDIR take part in expansion.
    /// Without it an image contributes nothing.
    pub base_config: Option<&'a BaseConfigFn>,
}

/// Where something comes from: a stage, an image, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stage(usize),
    Image(String),
    Scratch,
}

/// One instruction of a stage, expanded, with the scope it ran in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub location: Location,
    pub original: String,
    /// The instruction with every field BuildKit expands expanded (RUN,
    /// CMD, ENTRYPOINT, SHELL, HEALTHCHECK and ONBUILD keep their text).
    pub instruction: Instruction,
    /// RUN: the typed `--mount`s.
    pub mounts: Vec<Mount>,
    /// RUN: what each mount's `from=` names, in mount order (`None` for
    /// mounts without `from=`).
    pub mount_sources: Vec<Option<Source>>,
    /// COPY: what `--from` names.
    pub copy_from: Option<Source>,
    /// ENV in force after this step (the image config's ENV).
    pub env: Vec<(String, String)>,
    /// ARGs in scope with a value after this step; they belong in a RUN's
    /// cache key.
    pub args: Vec<(String, String)>,
    /// Every variable in force after this step, ENV and ARG together, the
    /// later assignment winning: the environment a RUN process gets and
    /// the scope later expansions see.
    pub vars: Vec<(String, String)>,
    /// The working directory in force after this step.
    pub workdir: String,
    /// Variables this step's expansion read (set ones).
    pub used: BTreeSet<String>,
}

/// A stage with everything resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStage {
    pub index: usize,
    pub name: Option<String>,
    pub location: Location,
    pub base: Source,
    /// `--platform` of the FROM, expanded, or the base stage's.
    pub platform: Option<String>,
    pub steps: Vec<Step>,
    /// Stages this one reads (its base, `COPY --from`, mounts).
    pub deps: BTreeSet<usize>,
    pub env: Vec<(String, String)>,
    pub args: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    pub workdir: String,
    /// Names of the ARGs this stage declares.
    pub declared_args: BTreeSet<String>,
}

/// A build, resolved for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Global ARGs with a value (the platform ARGs included).
    pub global_args: Vec<(String, String)>,
    /// The stages the target needs, dependencies first, target last.
    /// Stages it does not need are absent and not even expanded.
    pub stages: Vec<ResolvedStage>,
    /// Index of the target stage.
    pub target: usize,
    /// `--build-arg`s that no ARG in the needed stages (or the global
    /// scope) declares; BuildKit warns about these.
    pub unused_build_args: Vec<String>,
}

impl Resolved {
    /// The resolved stage with this index, if the target needs it.
    pub fn stage(&self, index: usize) -> Option<&ResolvedStage> {
        self.stages.iter().find(|s| s.index == index)
    }
}

fn set(list: &mut Vec<(String, String)>, key: &str, value: String) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => list.push((key.to_string(), value)),
    }
}

fn get<'a>(list: &'a [(String, String)], key: &str) -> Option<&'a str> {
    list.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A stage's expansion scope: ENV wins over ARG of the same name.
struct Scope<'a> {
    env: &'a [(String, String)],
    args: &'a [(String, String)],
}

impl Env for Scope<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        get(self.env, name).or_else(|| get(self.args, name))
    }
}

struct Expander<'a> {
    lexer: &'a Lexer,
    used: BTreeSet<String>,
}

impl Expander<'_> {
    fn word(&mut self, s: &str, env: &dyn Env) -> Result<String, ExpandError> {
        let e = self.lexer.expand(s, env)?;
        self.used.extend(e.used);
        Ok(e.word)
    }
}

/// Go's `strconv.Atoi` acceptance: an optional sign and decimal digits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A WORKDIR or mount target against the current directory: Go's
/// `path.Join("/", base, p)` for a relative path, cleaned either way.
fn join_workdir(base: &str, p: &str) -> String {
    if p.starts_with('/') {
        return crate::dockerignore::clean(p);
    }
    crate::dockerignore::clean(&format!("/{base}/{p}"))
}

struct StageNames<'a>(&'a Build);

impl StageNames<'_> {
    fn by_name(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_lowercase();
        self.0.stages.iter().take(before).position(|s| s.name() == Some(lower.as_str()))
    }
}

/// Resolves `build` for one set of options.
pub fn resolve(build: &Build, opts: &ResolveOptions<'_>) -> Result<Resolved, InstructionError> {
    let lexer = Lexer::new(build.escape);
    let file = build.stages.first().map(|s| s.location.file.clone()).unwrap_or_default();
    let mut declared: BTreeSet<String> = BTreeSet::new();

    // Global scope: the platform ARGs, then the meta ARGs in order.
    let mut global = opts.platform.pairs();
    for (location, decl) in &build.global_args {
        let err = |kind| InstructionError::new(location.clone(), kind);
        declared.insert(decl.name.clone());
        let mut x = Expander { lexer: &lexer, used: BTreeSet::new() };
        let value = match (opts.build_args.get(&decl.name), &decl.default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => Some(x.word(d, &Scope { env: &[], args: &global }).map_err(|e| err(e.into()))?),
            (None, None) => None,
        };
        if let Some(v) = value {
            set(&mut global, &decl.name, v);
        }
    }

    let names = StageNames(build);
    let target = match &opts.target {
        None => build.stages.len().saturating_sub(1),
        Some(t) => names.by_name(t, build.stages.len()).ok_or_else(|| {
            InstructionError::new(Location { file: file.clone(), start_line: 0, end_line: 0 }, ErrorKind::UnknownTarget(t.clone()))
        })?,
    };

    // Stages in order (a FROM only names earlier stages), each kept as a
    // result so that a stage the target does not need cannot fail the build.
    let mut results: Vec<Result<ResolvedStage, InstructionError>> = Vec::new();
    for stage in &build.stages {
        let r = resolve_stage(build, stage.index, &lexer, &global, &results, &names, opts);
        results.push(r);
    }

    // Walk the dependencies from the target: post-order gives
    // dependencies first; a grey node met again is a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        White,
        Grey,
        Black,
    }
    let mut marks = vec![Mark::White; results.len()];
    let mut order = Vec::new();
    let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
    let deps_of = |i: usize| -> Result<Vec<usize>, InstructionError> {
        match results.get(i) {
            Some(Ok(s)) => Ok(s.deps.iter().copied().collect()),
            Some(Err(e)) => Err(e.clone()),
            None => Ok(Vec::new()),
        }
    };
    marks[target] = Mark::Grey;
    stack.push((target, deps_of(target)?));
    while let Some((node, pending)) = stack.last_mut() {
        let node = *node;
        match pending.pop() {
            Some(dep) => match marks.get(dep).copied() {
                Some(Mark::White) => {
                    marks[dep] = Mark::Grey;
                    let d = deps_of(dep)?;
                    stack.push((dep, d));
                }
                Some(Mark::Grey) => {
                    let stage = &build.stages[node];
                    let name = stage.name().map(str::to_string).unwrap_or_else(|| format!("stage-{node}"));
                    return Err(InstructionError::new(stage.location.clone(), ErrorKind::Cycle(name)));
                }
                _ => {}
            },
            None => {
                marks[node] = Mark::Black;
                order.push(node);
                stack.pop();
            }
        }
    }
    let mut stages = Vec::new();
    for i in order {
        if let Some(Ok(s)) = results.get(i) {
            declared.extend(s.declared_args.iter().cloned());
            stages.push(s.clone());
        }
    }
    let unused_build_args = opts.build_args.keys().filter(|k| !declared.contains(*k)).cloned().collect();
    Ok(Resolved { global_args: global, stages, target, unused_build_args })
}

fn resolve_stage(
    build: &Build,
    index: usize,
    lexer: &Lexer,
    global: &[(String, String)],
    earlier: &[Result<ResolvedStage, InstructionError>],
    names: &StageNames<'_>,
    opts: &ResolveOptions<'_>,
) -> Result<ResolvedStage, InstructionError> {
    let mut declared = BTreeSet::new();
    let stage = &build.stages[index];
    let err_at = |location: &Location, kind: ErrorKind| InstructionError::new(location.clone(), kind);
    let mut x = Expander { lexer, used: BTreeSet::new() };
    let global_scope = Scope { env: &[], args: global };
    let image = x.word(&stage.from.image, &global_scope).map_err(|e| err_at(&stage.location, e.into()))?;
    let mut platform = match &stage.from.platform {
        Some(p) => Some(x.word(p, &global_scope).map_err(|e| err_at(&stage.location, e.into()))?),
        None => None,
    };
    let mut deps = BTreeSet::new();
    // `state` is what expansion and RUN see: ENV and ARG values, the last
    // assignment winning (BuildKit adds both to the same LLB env); `env` is
    // only what ENV set (the image config); `args` only what ARG set.
    let (base, mut state, mut env, mut args, mut workdir) = if image.eq_ignore_ascii_case("scratch") {
        (Source::Scratch, Vec::new(), Vec::new(), Vec::new(), "/".to_string())
    } else if let Some(i) = names.by_name(&image, index) {
        deps.insert(i);
        match earlier.get(i) {
            Some(Ok(b)) => {
                platform = platform.or_else(|| b.platform.clone());
                (Source::Stage(i), b.vars.clone(), b.env.clone(), b.args.clone(), b.workdir.clone())
            }
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(err_at(&stage.location, ErrorKind::BaseFailed(image))),
        }
    } else {
        let cfg = opts.base_config.map(|f| f(&image, platform.as_deref())).unwrap_or_default();
        let wd = if cfg.workdir.is_empty() { "/".to_string() } else { cfg.workdir };
        (Source::Image(image), cfg.env.clone(), cfg.env, Vec::new(), wd)
    };

    let resolve_from = |value: &str, allow_index: bool| -> Result<Source, ErrorKind> {
        if allow_index {
            if let Some(n) = go_atoi(value) {
                return match usize::try_from(n) {
                    Ok(i) if i < build.stages.len() => Ok(Source::Stage(i)),
                    _ => Err(ErrorKind::BadStageIndex(value.to_string())),
                };
            }
        }
        Ok(match names.by_name(value, build.stages.len()) {
            Some(i) => Source::Stage(i),
            None => Source::Image(value.to_string()),
        })
    };

    let mut steps = Vec::new();
    for cmd in &stage.commands {
        let Command { location, original, instruction } = cmd;
        let err = |kind: ErrorKind| err_at(location, kind);
        let mut x = Expander { lexer, used: BTreeSet::new() };
        let mut mounts = Vec::new();
        let mut mount_sources = Vec::new();
        let mut copy_from = None;
        let mut expanded = {
            let scope = Scope { env: &state, args: &[] };
            let mut w = |s: &str| x.word(s, &scope).map_err(|e| err(e.into()));
            match instruction {
                Instruction::Env(pairs) => {
                    let mut out = Vec::new();
                    for (k, v) in pairs {
                        out.push((w(k)?, w(v)?));
                    }
                    Instruction::Env(out)
                }
                Instruction::Label(pairs) => {
                    let mut out = Vec::new();
                    for (k, v) in pairs {
                        out.push((w(k)?, w(v)?));
                    }
                    Instruction::Label(out)
                }
                // Declared one by one below: each sees the ones before it.
                Instruction::Arg(decls) => Instruction::Arg(decls.clone()),
                Instruction::Workdir(p) => Instruction::Workdir(w(p)?),
                Instruction::User(u) => Instruction::User(w(u)?),
                Instruction::StopSignal(s) => Instruction::StopSignal(w(s)?),
                Instruction::Expose(list) => Instruction::Expose(list.iter().map(|s| w(s)).collect::<Result<_, _>>()?),
                Instruction::Volume(list) => {
                    let v: Vec<String> = list.iter().map(|s| w(s)).collect::<Result<_, _>>()?;
                    if v.iter().any(String::is_empty) {
                        return Err(err(ErrorKind::Arguments {
                            instruction: "VOLUME".into(),
                            expected: "specified can not be an empty string".into(),
                        }));
                    }
                    Instruction::Volume(v)
                }
                Instruction::Copy(c) => {
                    let mut heredoc_lexer = lexer.clone();
                    heredoc_lexer.skip_process_quotes = true;
                    let mut sources = Vec::new();
                    for s in &c.sources {
                        sources.push(match s {
                            CopySource::Path(p) => CopySource::Path(w(p)?),
                            CopySource::Heredoc(h) if h.expand => {
                                let mut h = h.clone();
                                h.content = heredoc_lexer.process_word(&h.effective_content(), &scope).map_err(|e| err(e.into()))?;
                                h.chomp = false;
                                CopySource::Heredoc(h)
                            }
                            CopySource::Heredoc(h) => CopySource::Heredoc(h.clone()),
                        });
                    }
                    let opt = |v: &Option<String>, w: &mut dyn FnMut(&str) -> Result<String, InstructionError>| match v {
                        Some(s) => w(s).map(Some),
                        None => Ok(None),
                    };
                    let from = opt(&c.from, &mut w)?;
                    if let Some(f) = &from {
                        let src = resolve_from(f, true).map_err(err)?;
                        if let Source::Stage(i) = src {
                            deps.insert(i);
                        }
                        copy_from = Some(src);
                    }
                    Instruction::Copy(Copy {
                        sources,
                        dest: w(&c.dest)?,
                        from,
                        chown: opt(&c.chown, &mut w)?,
                        chmod: opt(&c.chmod, &mut w)?,
                        exclude: c.exclude.iter().map(|s| w(s)).collect::<Result<_, _>>()?,
                        checksum: opt(&c.checksum, &mut w)?,
                        ..c.clone()
                    })
                }
                Instruction::Run(r) => {
                    let mut ssh = 0;
                    for spec in &r.mounts {
                        let mut expand = |v: &str| w(v).map_err(|e| e.kind.to_string());
                        let mut m = Mount::parse_with(spec, ssh, &mut expand).map_err(|e| err(e.into()))?;
                        // A secret with only `env=` has no file, so no target to place.
                        let env_only = m.kind == super::MountType::Secret && m.target.is_empty();
                        if !m.target.starts_with('/') && !env_only {
                            m.target = join_workdir(&workdir, &m.target);
                        }
                        if m.kind == super::MountType::Ssh {
                            ssh += 1;
                        }
                        let src = match &m.from {
                            Some(f) => {
                                let s = resolve_from(f, false).map_err(err)?;
                                if let Source::Stage(i) = s {
                                    deps.insert(i);
                                }
                                Some(s)
                            }
                            None => None,
                        };
                        mount_sources.push(src);
                        mounts.push(m);
                    }
                    Instruction::Run(r.clone())
                }
                other => other.clone(),
            }
        };
        // Apply what the instruction changes in the scope.
        match &expanded {
            Instruction::Env(pairs) => {
                for (k, v) in pairs {
                    set(&mut env, k, v.clone());
                    set(&mut state, k, v.clone());
                }
            }
            Instruction::Arg(decls) => {
                // BuildKit: a build arg wins and its default is then never
                // expanded; a bare ARG takes the global value; a default
                // is expanded in the stage scope with the globals behind it.
                let mut out = Vec::new();
                for d in decls {
                    declared.insert(d.name.clone());
                    let value = match (opts.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(default)) => Some(x.word(default, &Scope { env: &state, args: global }).map_err(|e| err(e.into()))?),
                        (None, None) => get(global, &d.name).map(str::to_string),
                    };
                    if let Some(v) = &value {
                        set(&mut args, &d.name, v.clone());
                        set(&mut state, &d.name, v.clone());
                    }
                    out.push(ArgDecl { name: d.name.clone(), default: value });
                }
                expanded = Instruction::Arg(out);
            }
            Instruction::Workdir(p) => workdir = join_workdir(&workdir, p),
            _ => {}
        }
        steps.push(Step {
            location: location.clone(),
            original: original.clone(),
            instruction: expanded,
            mounts,
            mount_sources,
            copy_from,
            env: env.clone(),
            args: args.clone(),
            vars: state.clone(),
            workdir: workdir.clone(),
            used: x.used,
        });
    }
    Ok(ResolvedStage {
        index,
        name: stage.from.name.clone(),
        location: stage.location.clone(),
        base,
        platform,
        steps,
        deps,
        env,
        args,
        vars: state,
        workdir,
        declared_args: declared,
    })
}
