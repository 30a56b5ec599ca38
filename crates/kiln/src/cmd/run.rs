//! `kiln run REF [-- CMD…]`: run a command in an image, in kiln's sandbox, pulling the image first
//! when the store lacks it (`--pull missing|always|never`, as `docker run --pull`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use kiln_build::run::PullPolicy;
use kiln_oci::Platform;
use kiln_sandbox::{ExitStatus, Stream};

use super::copy::{summary, NetArgs, TermProgress};
use crate::Global;

/// `--pull`: when to fetch the image from its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pull {
    /// When the store lacks the image (or its image for the platform).
    Missing,
    /// Every time: resolve the tag at its registry again.
    Always,
    /// Never: use the store only.
    Never,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image: a tag or digest reference, pulled when the store lacks it (see --pull).
    pub image: String,
    /// Run this platform's image (of a multi-platform index; foreign ones under emulation).
    #[arg(long)]
    pub platform: Option<String>,
    /// When to pull the image from its registry.
    #[arg(long, value_enum, default_value = "missing")]
    pub pull: Pull,
    #[command(flatten)]
    pub net: NetArgs,
    /// The command (replaces the image's CMD; ENTRYPOINT stays).
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn run(a: Args, g: &Global, cancel: &kiln_build::Cancel) -> anyhow::Result<ExitCode> {
    let root = g.root();
    let platform = match &a.platform {
        Some(p) => Some(Platform::parse(p).with_context(|| format!("--platform {p}"))?.normalized()),
        None => None,
    };
    let policy = match a.pull {
        Pull::Missing => PullPolicy::Missing,
        Pull::Always => PullPolicy::Always,
        Pull::Never => PullPolicy::Never,
    };
    let client = (policy != PullPolicy::Never).then(|| a.net.client());
    let progress = TermProgress::new("pull");
    let started = Instant::now();
    let target = kiln_build::run::ensure_image(&root, client.as_ref(), &a.image, platform.as_ref(), policy, &progress);
    progress.clear();
    let target = target?;
    if let Some(p) = &target.pulled {
        summary("pull", &a.image, "store", p.blobs_moved, p.bytes_moved, started);
    }
    if platform.is_none() && !target.platform.matches(&Platform::host()) {
        eprintln!(
            "warning: {} is an image for {}, not this machine's {}; it runs under emulation",
            a.image,
            target.platform,
            Platform::host()
        );
    }
    let req = kiln_build::run::RunRequest {
        root: &root,
        image: &target.image,
        platform: &target.platform,
        command: a.command.clone(),
        shell: false,
        init_binary: None,
        cancel: cancel.clone(),
    };
    let status = kiln_build::run::run_image(&req, &mut |s, line| {
        // The sandbox hands over whole lines without their newline.
        let _ = match s {
            Stream::Stdout => std::io::stdout().lock().write_all(&[line, b"\n"].concat()),
            Stream::Stderr => std::io::stderr().lock().write_all(&[line, b"\n"].concat()),
        };
    })?;
    drop(target);
    let _ = std::io::stdout().flush();
    Ok(match status {
        ExitStatus::Code(0) => ExitCode::SUCCESS,
        ExitStatus::Code(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        ExitStatus::Signal(s) => ExitCode::from(u8::try_from(128 + s).unwrap_or(1)),
    })
}
