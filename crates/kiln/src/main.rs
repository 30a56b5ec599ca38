//! The `kiln` binary: command line, progress display and wiring. Every piece of real work lives in a
//! library crate; each subcommand is a module under `cmd/` that parses its flags and calls into one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod progress;
mod signals;

/// kiln: a daemonless container image builder whose build cache lives in any OCI registry.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Where kiln keeps its store, cache and state (default: $XDG_DATA_HOME/kiln).
    #[arg(long, global = true, env = "KILN_ROOT")]
    pub root: Option<PathBuf>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    /// The root directory, defaulting to the XDG data dir as DESIGN.md says.
    pub fn root(&self) -> PathBuf {
        if let Some(r) = &self.root {
            return r.clone();
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("kiln");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".local/share/kiln")
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<cmd::build::Args>),
    /// Run a command in an image from the local store.
    Run(cmd::run::Args),
    /// Look at and trim the build cache.
    #[command(subcommand)]
    Cache(cmd::cache::Command),
    /// Dockerfile tools (parse and dump).
    #[command(subcommand)]
    Dockerfile(cmd::dockerfile::Command),
    /// Read a CI workflow's run history and tell real failures from cancellation noise.
    CiReport(cmd::ci_report::Args),
    /// Log in to a registry (credentials go to $DOCKER_CONFIG/config.json).
    Login(cmd::login::Args),
    /// Make an image from a root file system tarball.
    Import(cmd::import::Args),
    /// Pull an image from a registry into the local store.
    Pull(cmd::pull::Args),
    /// Push an image from the local store to a registry.
    Push(cmd::push::Args),
    /// Copy an image between registries, the store and oci:PATH layouts.
    Copy(cmd::copy::Args),
    /// Show an image's manifest and config as JSON.
    Inspect(cmd::inspect::Args),
    /// List the images in the local store.
    Images(cmd::images::Args),
    /// Remove images from the local store.
    Rmi(cmd::rmi::Args),
    /// Delete blobs no image in the local store refers to.
    Prune(cmd::prune::Args),
    /// Assemble and push multi-platform indexes.
    #[command(subcommand)]
    Manifest(cmd::manifest::Command),
}

fn main() -> ExitCode {
    // kiln re-executes itself as the sandbox's init process; that mode must win over everything.
    if let Some(code) = kiln_sandbox::init::maybe_run() {
        return code;
    }
    // Before any thread exists, so that every thread inherits the mask (see signals.rs).
    signals::block();
    let cli = Cli::parse();
    // Not root: become root of a user namespace of our own (kiln-rootless), which must happen
    // while this process has one thread (parsing starts none). After parsing, so that --help,
    // --version and the commands that touch no state work for a user rootless mode cannot serve.
    // The sandbox's re-executed init is root in the namespace already and never gets here.
    // `build --isolation none` runs in the root it is given, as the user it is (an unprivileged
    // container, where user namespaces are refused): it never enters one. Commands that only read
    // and write the store go on as this user when no namespace can be had (kiln import in such a
    // container); builds with the sandbox and `kiln run` cannot, so for them it is an error.
    let (wanted, needed) = match &cli.command {
        Command::Dockerfile(_) | Command::CiReport(_) | Command::Login(_) => (false, false),
        Command::Build(a) => (a.isolation != "none", a.isolation != "none"),
        Command::Run(_) => (true, true),
        _ => (true, false),
    };
    if wanted {
        match kiln_rootless::enter() {
            Ok(kiln_rootless::Entered::Namespace { note: Some(note) }) => eprintln!("note: {note}"),
            Ok(_) => {}
            Err(e) if !needed => tracing::debug!(error = %e, "no user namespace: going on as this user"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    init_logging(cli.global.verbose);
    let cancel = kiln_build::Cancel::new();
    let mode = match cli.command {
        Command::Build(_) | Command::Run(_) => signals::Mode::Graceful,
        _ => signals::Mode::Immediate,
    };
    let grace = match kiln_build::cancel::grace() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    signals::watch(cancel.clone(), mode, grace);
    let result = match cli.command {
        Command::Build(a) => cmd::build::run(*a, &cli.global, &cancel),
        Command::Run(a) => match cmd::run::run(a, &cli.global, &cancel) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Cache(c) => cmd::cache::run(c, &cli.global),
        Command::Dockerfile(c) => cmd::dockerfile::run(c, &cli.global),
        Command::CiReport(a) => cmd::ci_report::run(a, &cli.global),
        Command::Login(a) => cmd::login::run(a, &cli.global),
        Command::Import(a) => cmd::import::run(a, &cli.global),
        Command::Pull(a) => cmd::pull::run(a, &cli.global),
        Command::Push(a) => cmd::push::run(a, &cli.global),
        Command::Copy(a) => cmd::copy::run(a, &cli.global),
        Command::Inspect(a) => cmd::inspect::run(a, &cli.global),
        Command::Images(a) => cmd::images::run(a, &cli.global),
        Command::Rmi(a) => cmd::rmi::run(a, &cli.global),
        Command::Prune(a) => cmd::prune::run(a, &cli.global),
        Command::Manifest(c) => cmd::manifest::run(c, &cli.global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(sig) = cancel.signal() {
                // One line that says what the cancelled build kept; the exit code a shell gives a
                // process ended by that signal.
                let kept = e.chain().find_map(|c| match c.downcast_ref::<kiln_build::BuildError>() {
                    Some(kiln_build::BuildError::Cancelled { kept }) => Some(kept.clone()),
                    _ => None,
                });
                match kept {
                    Some(k) => eprintln!("kiln: cancelled by {}: {k}", signals::name(sig)),
                    None => eprintln!("kiln: cancelled by {}: {}", signals::name(sig), render(&e)),
                }
                return ExitCode::from(u8::try_from(128 + sig).unwrap_or(1));
            }
            let text = render(&e);
            eprintln!("error: {text}");
            if let Some(hint) = kiln_rootless::hint_for(&text) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, each cause said once: library errors include their cause
/// in their own message (so a flattened one still says why), which the chain would repeat.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).without_time().init();
}

/// Writes `bytes` to `path` atomically and durably (see [`kiln_oci::atomic`]).
pub fn atomic_write(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    kiln_oci::atomic::write(path, bytes, kiln_oci::atomic::Durability::Synced)
}
