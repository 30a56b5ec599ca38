//! `kiln inspect`.

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> anyhow::Result<()> {
    anyhow::bail!("`kiln inspect` is being built")
}
