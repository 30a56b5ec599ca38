//! `kiln ci-report`.

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, _g: &Global) -> anyhow::Result<()> {
    anyhow::bail!("ci-report is being built")
}
