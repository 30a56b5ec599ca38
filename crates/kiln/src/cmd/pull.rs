//! `kiln pull REF`: fetches an image (resolving an index to one platform) into the local store and
//! tags it with the reference.

use anyhow::Context;
use kiln_oci::Platform;

use super::copy::{finish, parse_ref, transfer, Endpoint, NetArgs};
use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image to pull, e.g. 127.0.0.1:5000/app:1 or busybox.
    pub reference: String,
    /// Which image of a multi-platform index to take (default: this machine's platform).
    #[arg(long)]
    pub platform: Option<String>,
    /// Write the digest of the pulled manifest to this file.
    #[arg(long)]
    pub digest_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let r = parse_ref(&a.reference)?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p).context("--platform")?,
        None => Platform::host(),
    };
    let client = a.net.client();
    let res = transfer(&client, g, &Endpoint::Registry(r.clone()), &Endpoint::Store(r.clone()), Some(platform), "pull")?;
    finish(&res, &r.to_string(), a.digest_file.as_ref())
}
