//! `kiln prune`: delete blobs that no tag in the local store reaches.

use anyhow::Context;
use kiln_oci::{GcReport, Store};

use super::images::human_size;
use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args, g: &Global) -> anyhow::Result<()> {
    let store = Store::open(&g.root()).with_context(|| format!("opening the store under {}", g.root().display()))?;
    let report = store.gc().with_context(|| format!("collecting garbage in {}", store.dir().display()))?;
    print_report(&report);
    Ok(())
}

pub fn print_report(r: &GcReport) {
    for b in &r.removed {
        println!("deleted: {} ({})", b.digest, human_size(b.size));
    }
    if r.stale_temp_files > 0 {
        println!("deleted {} unfinished download(s)", r.stale_temp_files);
    }
    println!("Total reclaimed space: {} ({} blob(s) deleted, {} kept)", human_size(r.freed_bytes), r.removed.len(), r.kept);
}
