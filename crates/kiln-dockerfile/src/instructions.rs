//! Typed instructions and build stages, on top of the parser's node tree.
//!
//! Two steps, as in BuildKit:
//!
//! 1. [`parse_build`] checks every node (which flags each instruction
//!    takes, how many arguments, ONBUILD triggers) and groups the
//!    instructions into [`Stage`]s, one per `FROM`; `ARG`s before the first
//!    `FROM` are the *global* (meta) args. Nothing is expanded yet: values
//!    stay as written.
//! 2. [`resolve`](resolve::resolve) runs the variable scopes for one build
//!    (its `--build-arg`s, platform and `--target`): global ARGs are usable in
//!    `FROM` lines only; inside a stage an ARG must be declared to be seen
//!    (a bare `ARG NAME` picks up the global value), build args override
//!    defaults, ENV applies in order and expands the instructions after it, a
//!    stage built `FROM` another inherits its ENV and ARGs. It also resolves
//!    every `FROM <stage>`, `COPY --from` and `RUN --mount=from=` to a stage
//!    (by case-insensitive name or, for `--from`, index) or else to an image,
//!    and lists the stages the target needs, dependencies first.
//!
//! Every error carries the file and the instruction's line.

pub mod mount;
pub mod resolve;

use std::fmt;
use std::time::Duration;

use crate::ast::{Dockerfile, Heredoc, Node};

pub use mount::{Mount, MountError, MountType, Sharing};
pub use resolve::{resolve, PlatformArgs, ResolveOptions, Resolved, ResolvedStage, Source, Step};

/// Where an instruction is: file name and its 1-based line range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: String,
    pub start_line: usize,
    pub end_line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0 means "the whole file" (e.g. an unknown --target).
        match self.start_line {
            0 => write!(f, "{}", self.file),
            n => write!(f, "{}:{n}", self.file),
        }
    }
}

/// An instruction or stage error, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct InstructionError {
    pub location: Location,
    /// Boxed to keep `Result`s small.
    pub kind: Box<ErrorKind>,
}

impl InstructionError {
    pub fn new(location: Location, kind: ErrorKind) -> Self {
        InstructionError { location, kind: Box::new(kind) }
    }
}

/// What was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("unknown instruction: {0}; expected one of FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, SHELL, ENTRYPOINT, CMD, ONBUILD, MAINTAINER")]
    UnknownInstruction(String),
    #[error("unknown flag: --{flag} for {instruction}")]
    UnknownFlag { instruction: String, flag: String },
    #[error("missing a value on flag --{0}: write --{0}=VALUE")]
    MissingFlagValue(String),
    #[error("duplicate flag specified: --{0}")]
    DuplicateFlag(String),
    #[error("invalid value {value:?} for flag --{flag}: expected {expected}")]
    BadFlagValue { flag: String, value: String, expected: String },
    #[error("{instruction} {expected}")]
    Arguments { instruction: String, expected: String },
    #[error("no build stage in current context: {0} must come after a FROM")]
    NoStage(String),
    #[error("invalid name for build stage: {0:?}, name can't start with a number or contain symbols")]
    BadStageName(String),
    #[error("duplicate stage name {0:?}: each `FROM … AS name` needs its own name")]
    DuplicateStage(String),
    #[error("{0}")]
    Mount(#[from] MountError),
    #[error("{0}")]
    Expand(#[from] crate::shell::ExpandError),
    #[error("target stage {0:?} could not be found: check --target against the `FROM … AS name` lines")]
    UnknownTarget(String),
    #[error("invalid stage index {0}: COPY --from=N counts stages from 0")]
    BadStageIndex(String),
    #[error("circular dependency detected on stage {0:?}")]
    Cycle(String),
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    BadOnbuild(String),
    #[error("the Dockerfile has no FROM: add `FROM image` before the first instruction")]
    NoFrom,
    #[error("base stage {0:?} failed to resolve")]
    BaseFailed(String),
}

/// `CMD`, `ENTRYPOINT` and `RUN` arguments: JSON (exec) form or a shell
/// command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

/// `--network` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Default,
    None,
    Host,
}

/// `--security` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Sandbox,
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// Image reference or stage name, as written.
    pub image: String,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: CommandLine,
    pub heredocs: Vec<Heredoc>,
    /// `--mount` values as written; typed by [`Mount::parse`] after
    /// expansion (see [`Step::mounts`]).
    pub mounts: Vec<String>,
    pub network: Option<Network>,
    pub security: Option<Security>,
}

/// A COPY or ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A path (or URL, for ADD), as written.
    Path(String),
    /// The body of a heredoc named in the source list.
    Heredoc(Heredoc),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// `true` for ADD.
    pub add: bool,
    pub sources: Vec<CopySource>,
    pub dest: String,
    /// COPY only.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// COPY only.
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only.
    pub keep_git_dir: bool,
    /// ADD only: `Some(false)` turns archive unpacking off.
    pub unpack: Option<bool>,
}

/// `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// As written. In a resolved [`Step`], the value the ARG took (build
    /// arg, expanded default or global value), `None` when it is unset.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `None` for `HEALTHCHECK NONE`.
    pub test: Option<CommandLine>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// One typed instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From(From),
    Run(Run),
    Copy(Copy),
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    Maintainer(String),
    Shell(Vec<String>),
    Entrypoint(CommandLine),
    Cmd(CommandLine),
    /// The trigger as written after `ONBUILD`, and its typed form.
    Onbuild(String, Box<Instruction>),
}

impl Instruction {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Copy(c) if c.add => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Shell(_) => "SHELL",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Cmd(_) => "CMD",
            Instruction::Onbuild(..) => "ONBUILD",
        }
    }
}

/// An instruction with its place and source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub location: Location,
    /// The logical line as written (continuations joined).
    pub original: String,
    pub instruction: Instruction,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub from: From,
    pub location: Location,
    pub commands: Vec<Command>,
}

impl Stage {
    /// The `AS` name, lowercased.
    pub fn name(&self) -> Option<&str> {
        self.from.name.as_deref()
    }
}

/// A whole Dockerfile, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// `ARG`s before the first `FROM`.
    pub global_args: Vec<(Location, ArgDecl)>,
    pub stages: Vec<Stage>,
    /// The escape character of the file (for expansion).
    pub escape: char,
}

/// Types every instruction of a parsed Dockerfile and groups them into
/// stages. `file` names the Dockerfile in errors.
pub fn parse_build(df: &Dockerfile, file: &str) -> Result<Build, InstructionError> {
    let mut build = Build { global_args: Vec::new(), stages: Vec::new(), escape: df.escape_char() };
    for node in &df.children {
        let location = Location { file: file.to_string(), start_line: node.start_line, end_line: node.end_line };
        let err = |kind| InstructionError::new(location.clone(), kind);
        let instruction = parse_instruction(node).map_err(err)?;
        match instruction {
            Instruction::From(from) => {
                if let Some(name) = &from.name {
                    if build.stages.iter().any(|s| s.name() == Some(name)) {
                        return Err(err(ErrorKind::DuplicateStage(name.clone())));
                    }
                }
                let index = build.stages.len();
                build.stages.push(Stage { index, from, location, commands: Vec::new() });
            }
            Instruction::Arg(decls) if build.stages.is_empty() => {
                build.global_args.extend(decls.into_iter().map(|d| (location.clone(), d)));
            }
            instruction => match build.stages.last_mut() {
                Some(stage) => stage.commands.push(Command { location, original: node.original.clone(), instruction }),
                None => return Err(err(ErrorKind::NoStage(instruction.keyword().to_string()))),
            },
        }
    }
    if build.stages.is_empty() {
        let location = Location { file: file.to_string(), start_line: df.start_line, end_line: df.end_line };
        return Err(InstructionError::new(location, ErrorKind::NoFrom));
    }
    Ok(build)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    Str,
    List,
}

/// The flags of one instruction, checked against what it accepts
/// (BuildKit's `BFlags`).
struct Flags {
    values: Vec<(&'static str, Vec<String>)>,
}

impl Flags {
    fn parse(node: &Node, keyword: &str, allowed: &[(&'static str, FlagKind)]) -> Result<Flags, ErrorKind> {
        let mut values: Vec<(&'static str, Vec<String>)> = Vec::new();
        for raw in &node.flags {
            let body = raw.strip_prefix("--").unwrap_or(raw);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(canonical, kind)) = allowed.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) else {
                return Err(ErrorKind::UnknownFlag { instruction: keyword.to_string(), flag: name.to_string() });
            };
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "false" => v.to_ascii_lowercase(),
                    _ => {
                        return Err(ErrorKind::BadFlagValue {
                            flag: canonical.to_string(),
                            value: v.to_string(),
                            expected: "true or false".to_string(),
                        })
                    }
                },
                (_, None) => return Err(ErrorKind::MissingFlagValue(canonical.to_string())),
                (_, Some(v)) => v.to_string(),
            };
            match values.iter_mut().find(|(n, _)| *n == canonical) {
                Some(_) if kind != FlagKind::List => return Err(ErrorKind::DuplicateFlag(canonical.to_string())),
                Some((_, list)) => list.push(value),
                None => values.push((canonical, vec![value])),
            }
        }
        Ok(Flags { values })
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    fn string(&self, name: &str) -> Option<String> {
        self.list(name).into_iter().next()
    }

    fn boolean(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

fn args_error(keyword: &str, expected: &str) -> ErrorKind {
    ErrorKind::Arguments { instruction: keyword.to_string(), expected: expected.to_string() }
}

fn command_line(node: &Node) -> CommandLine {
    if node.json {
        CommandLine::Exec(node.arg_values().map(str::to_string).collect())
    } else {
        CommandLine::Shell(node.arg_values().next().unwrap_or_default().to_string())
    }
}

fn single(node: &Node, keyword: &str) -> Result<String, ErrorKind> {
    match node.arg_values().collect::<Vec<_>>().as_slice() {
        [one] if !one.is_empty() => Ok(one.to_string()),
        _ => Err(args_error(keyword, "requires exactly one argument")),
    }
}

fn triples(node: &Node, keyword: &str) -> Result<Vec<(String, String)>, ErrorKind> {
    let values: Vec<&str> = node.arg_values().collect();
    if values.is_empty() || !values.chunks_exact(3).remainder().is_empty() {
        return Err(args_error(keyword, "requires at least one argument: expected name=value"));
    }
    Ok(values.chunks(3).map(|c| (c[0].to_string(), c[1].to_string())).collect())
}

/// Go's `time.ParseDuration`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return if body == "-0" { Some(Duration::ZERO) } else { None };
    }
    if body == "0" {
        return Some(Duration::ZERO);
    }
    if body.is_empty() {
        return None;
    }
    let mut rest = body;
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(n);
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let u = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    (total.is_finite() && total < 1e10).then(|| Duration::from_secs_f64(total))
}

fn parse_instruction(node: &Node) -> Result<Instruction, ErrorKind> {
    use FlagKind::*;
    let keyword = node.value.to_ascii_uppercase();
    let kw = keyword.as_str();
    let no_flags = |node: &Node| Flags::parse(node, kw, &[]).map(|_| ());
    Ok(match node.value.as_str() {
        "from" => {
            let flags = Flags::parse(node, kw, &[("platform", Str)])?;
            let args: Vec<&str> = node.arg_values().collect();
            let name = match args.as_slice() {
                [_] => None,
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    let mut chars = lower.chars();
                    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
                    if !ok {
                        return Err(ErrorKind::BadStageName(name.to_string()));
                    }
                    Some(lower)
                }
                [_, _, _] => return Err(args_error(kw, "requires argument \"AS\" in the form `FROM image AS name`")),
                _ => return Err(args_error(kw, "requires either one or three arguments: `FROM image [AS name]`")),
            };
            Instruction::From(From { image: args[0].to_string(), name, platform: flags.string("platform") })
        }
        "run" => {
            let flags = Flags::parse(node, kw, &[("mount", List), ("network", Str), ("security", Str)])?;
            let network = match flags.string("network").as_deref() {
                None => None,
                Some("default") => Some(Network::Default),
                Some("none") => Some(Network::None),
                Some("host") => Some(Network::Host),
                Some(v) => {
                    return Err(ErrorKind::BadFlagValue {
                        flag: "network".into(),
                        value: v.into(),
                        expected: "default, none or host".into(),
                    })
                }
            };
            let security = match flags.string("security").as_deref() {
                None => None,
                Some("sandbox") => Some(Security::Sandbox),
                Some("insecure") => Some(Security::Insecure),
                Some(v) => {
                    return Err(ErrorKind::BadFlagValue {
                        flag: "security".into(),
                        value: v.into(),
                        expected: "sandbox or insecure".into(),
                    })
                }
            };
            let mounts = flags.list("mount");
            // Values without variables can be checked now; the rest are
            // checked after expansion.
            for (i, m) in mounts.iter().enumerate() {
                Mount::check_unexpanded(m)?;
                if !m.contains('$') {
                    Mount::parse(m, i)?;
                }
            }
            if node.args.is_empty() || (!node.json && node.arg_values().all(str::is_empty)) {
                return Err(args_error(kw, "requires at least one argument: the command to run"));
            }
            Instruction::Run(Run { command: command_line(node), heredocs: node.heredocs.clone(), mounts, network, security })
        }
        "copy" | "add" => {
            let add = node.value == "add";
            let flags = if add {
                Flags::parse(
                    node,
                    kw,
                    &[
                        ("chown", Str),
                        ("chmod", Str),
                        ("link", Bool),
                        ("exclude", List),
                        ("checksum", Str),
                        ("keep-git-dir", Bool),
                        ("unpack", Bool),
                    ],
                )?
            } else {
                Flags::parse(
                    node,
                    kw,
                    &[("from", Str), ("chown", Str), ("chmod", Str), ("link", Bool), ("parents", Bool), ("exclude", List)],
                )?
            };
            let args: Vec<&str> = node.arg_values().collect();
            if args.len() < 2 {
                return Err(args_error(
                    kw,
                    "requires at least two arguments, but only one was provided. Destination could not be determined",
                ));
            }
            let (dest, srcs) = args.split_last().map(|(d, s)| (d.to_string(), s)).unwrap_or_default();
            let sources = srcs
                .iter()
                .map(|s| {
                    let doc = s.strip_prefix("<<").and_then(|name| {
                        let name = name.strip_prefix('-').unwrap_or(name).trim_matches(|c| c == '"' || c == '\'');
                        node.heredocs.iter().find(|h| h.name == name)
                    });
                    match doc {
                        Some(h) => CopySource::Heredoc(h.clone()),
                        None => CopySource::Path(s.to_string()),
                    }
                })
                .collect();
            Instruction::Copy(Copy {
                add,
                sources,
                dest,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.boolean("link").unwrap_or(false),
                parents: flags.boolean("parents").unwrap_or(false),
                exclude: flags.list("exclude"),
                checksum: flags.string("checksum"),
                keep_git_dir: flags.boolean("keep-git-dir").unwrap_or(false),
                unpack: flags.boolean("unpack"),
            })
        }
        "env" => {
            no_flags(node)?;
            Instruction::Env(triples(node, kw)?)
        }
        "label" => {
            no_flags(node)?;
            Instruction::Label(triples(node, kw)?)
        }
        "arg" => {
            no_flags(node)?;
            let decls: Vec<ArgDecl> = node
                .arg_values()
                .map(|w| match w.split_once('=') {
                    Some((n, v)) => ArgDecl { name: n.to_string(), default: Some(v.to_string()) },
                    None => ArgDecl { name: w.to_string(), default: None },
                })
                .collect();
            if decls.is_empty() || decls.iter().any(|d| d.name.is_empty()) {
                return Err(args_error(kw, "requires at least one argument: expected ARG name[=default]"));
            }
            Instruction::Arg(decls)
        }
        "workdir" => {
            no_flags(node)?;
            Instruction::Workdir(single(node, kw)?)
        }
        "user" => {
            no_flags(node)?;
            Instruction::User(single(node, kw)?)
        }
        "stopsignal" => {
            no_flags(node)?;
            Instruction::StopSignal(single(node, kw)?)
        }
        "maintainer" => {
            no_flags(node)?;
            Instruction::Maintainer(single(node, kw)?)
        }
        "expose" | "volume" => {
            no_flags(node)?;
            let list: Vec<String> = node.arg_values().map(str::to_string).collect();
            if list.is_empty() {
                return Err(args_error(kw, "requires at least one argument"));
            }
            if node.value == "expose" {
                Instruction::Expose(list)
            } else {
                Instruction::Volume(list)
            }
        }
        "shell" => {
            no_flags(node)?;
            if !node.json {
                return Err(args_error(kw, "requires the arguments to be in JSON form: SHELL [\"executable\", \"param\"]"));
            }
            let list: Vec<String> = node.arg_values().map(str::to_string).collect();
            if list.is_empty() {
                return Err(args_error(kw, "requires at least one argument"));
            }
            Instruction::Shell(list)
        }
        "cmd" | "entrypoint" => {
            no_flags(node)?;
            if node.value == "cmd" {
                Instruction::Cmd(command_line(node))
            } else {
                Instruction::Entrypoint(command_line(node))
            }
        }
        "healthcheck" => parse_healthcheck(node, kw)?,
        "onbuild" => {
            no_flags(node)?;
            let Some(inner) = node.onbuild_inner() else {
                return Err(args_error(kw, "requires at least one argument: the trigger instruction"));
            };
            match inner.value.as_str() {
                "onbuild" => return Err(ErrorKind::BadOnbuild("Chaining ONBUILD via `ONBUILD ONBUILD`".into())),
                "from" | "maintainer" => return Err(ErrorKind::BadOnbuild(inner.value.to_ascii_uppercase())),
                _ => {}
            }
            let typed = parse_instruction(inner)?;
            Instruction::Onbuild(inner.original.trim().to_string(), Box::new(typed))
        }
        other => return Err(ErrorKind::UnknownInstruction(other.to_ascii_uppercase())),
    })
}

fn parse_healthcheck(node: &Node, kw: &str) -> Result<Instruction, ErrorKind> {
    use FlagKind::Str;
    let values: Vec<&str> = node.arg_values().collect();
    let Some(kind) = values.first() else {
        return Err(args_error(kw, "requires an argument: CMD or NONE"));
    };
    if kind.eq_ignore_ascii_case("none") {
        if values.len() > 1 {
            return Err(args_error(kw, "NONE takes no arguments"));
        }
        if !node.flags.is_empty() {
            return Err(args_error(kw, "NONE takes no flags"));
        }
        return Ok(Instruction::Healthcheck(Healthcheck {
            test: None,
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        }));
    }
    if !kind.eq_ignore_ascii_case("cmd") {
        return Err(args_error(kw, &format!("has an unknown type {kind:?}: expected CMD or NONE")));
    }
    let flags =
        Flags::parse(node, kw, &[("interval", Str), ("timeout", Str), ("start-period", Str), ("start-interval", Str), ("retries", Str)])?;
    let duration = |name: &str| -> Result<Option<Duration>, ErrorKind> {
        let Some(v) = flags.string(name) else { return Ok(None) };
        let bad =
            || ErrorKind::BadFlagValue { flag: name.into(), value: v.clone(), expected: "a duration of at least 1ms, e.g. 30s".into() };
        let d = parse_go_duration(&v).ok_or_else(bad)?;
        if !d.is_zero() && d < Duration::from_millis(1) {
            return Err(bad());
        }
        Ok(Some(d))
    };
    let retries = match flags.string("retries") {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| ErrorKind::BadFlagValue {
            flag: "retries".into(),
            value: v.clone(),
            expected: "a number that is not negative".into(),
        })?),
    };
    let test = if node.json {
        CommandLine::Exec(values[1..].iter().map(|s| s.to_string()).collect())
    } else {
        CommandLine::Shell(values.get(1).copied().unwrap_or_default().to_string())
    };
    if matches!(&test, CommandLine::Shell(s) if s.is_empty()) || matches!(&test, CommandLine::Exec(v) if v.is_empty()) {
        return Err(args_error(kw, "CMD requires a command"));
    }
    Ok(Instruction::Healthcheck(Healthcheck {
        test: Some(test),
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    }))
}
