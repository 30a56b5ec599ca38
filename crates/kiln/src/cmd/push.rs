//! `kiln push REF`: uploads an image of the local store to the registry its reference names. An index
//! goes whole, so every platform it lists must have been pulled (the error names the missing ones).

use super::copy::{finish, parse_ref, transfer, Endpoint, NetArgs};
use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image to push, as tagged in the store (see kiln images).
    pub reference: String,
    /// Write the digest of the pushed manifest to this file.
    #[arg(long)]
    pub digest_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let r = parse_ref(&a.reference)?;
    let client = a.net.client();
    let res = transfer(&client, g, &Endpoint::Store(r.clone()), &Endpoint::Registry(r.clone()), None, "push")?;
    finish(&res, &r.to_string(), a.digest_file.as_ref())
}
