//! `kiln run REF [-- CMD…]`: run a command in an image from the store, in kiln's sandbox.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_oci::Platform;
use kiln_sandbox::{ExitStatus, Stream};

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image (a tag or digest in the local store).
    pub image: String,
    /// Pick this platform from a multi-platform image.
    #[arg(long)]
    pub platform: Option<String>,
    /// The command (replaces the image's CMD; ENTRYPOINT stays).
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let root = g.root();
    let platform = match &a.platform {
        Some(p) => Platform::parse(p).with_context(|| format!("--platform {p}"))?.normalized(),
        None => Platform::host(),
    };
    let req = kiln_build::run::RunRequest {
        root: &root,
        image: &a.image,
        platform: &platform,
        command: a.command.clone(),
        shell: false,
        init_binary: None,
    };
    let status = kiln_build::run::run_image(&req, &mut |s, line| {
        // The sandbox hands over whole lines without their newline.
        let _ = match s {
            Stream::Stdout => std::io::stdout().lock().write_all(&[line, b"\n"].concat()),
            Stream::Stderr => std::io::stderr().lock().write_all(&[line, b"\n"].concat()),
        };
    })?;
    let _ = std::io::stdout().flush();
    Ok(match status {
        ExitStatus::Code(0) => ExitCode::SUCCESS,
        ExitStatus::Code(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        ExitStatus::Signal(s) => ExitCode::from(u8::try_from(128 + s).unwrap_or(1)),
    })
}
