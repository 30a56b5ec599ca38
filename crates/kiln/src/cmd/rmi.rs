//! `kiln rmi`: remove tags from the local store. Blobs are freed by `kiln prune`.

use anyhow::Context;
use kiln_oci::{Reference, Store};

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Images to remove, e.g. busybox:latest.
    #[arg(required = true)]
    pub references: Vec<String>,
    /// Also delete the blobs nothing refers to any more (as `kiln prune`).
    #[arg(long)]
    pub prune: bool,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let store = Store::open(&g.root()).with_context(|| format!("opening the store under {}", g.root().display()))?;
    let mut missing = Vec::new();
    for r in &a.references {
        let reference = Reference::parse(r).with_context(|| format!("kiln rmi {r}"))?;
        match store.untag(&reference)? {
            Some(d) => println!("Untagged: {} ({})", reference.familiar(), d.digest),
            None => missing.push(r.clone()),
        }
    }
    if a.prune {
        super::prune::print_report(&store.gc()?);
    }
    if !missing.is_empty() {
        anyhow::bail!("no such image in the store at {}: {}; `kiln images` lists what is there", store.dir().display(), missing.join(", "));
    }
    Ok(())
}
