//! `kiln cache ls|prune|explain`: look at and trim the build cache.

use anyhow::Context as _;
use kiln_build::metadata::LastBuild;
use kiln_cache::{LocalCache, RegistryExport};
use kiln_oci::{Reference, Store};

use crate::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List cache records: the local cache, or a registry cache ref.
    Ls {
        /// A registry cache ref (type=registry's ref); without it, the local cache.
        reference: Option<String>,
        #[command(flatten)]
        net: super::copy::NetArgs,
    },
    /// Prune a registry cache ref by age (read-merge-write, so other writers' records survive), or
    /// the local cache's records whose layers are gone.
    Prune {
        reference: Option<String>,
        /// Drop records not used for this long (Go duration, e.g. 336h).
        #[arg(long, default_value = "336h")]
        ttl: String,
        /// Keep at most this many bytes of layers (e.g. 2GB).
        #[arg(long)]
        max_size: Option<String>,
        #[command(flatten)]
        net: super::copy::NetArgs,
    },
    /// Say, for each step of the last build that missed the cache, what changed.
    Explain,
}

pub fn run(c: Command, g: &Global) -> anyhow::Result<()> {
    let root = g.root();
    match c {
        Command::Ls { reference: None, .. } => {
            let cache = LocalCache::open(&root);
            let store = Store::open(&root)?;
            let recs = cache.records();
            println!("{:<14} {:<10} {:>10}  INSTRUCTION", "KEY", "LAYER", "SIZE");
            for r in &recs {
                let (layer, size) = match &r.layer {
                    Some(l) if store.has_blob(&l.descriptor.digest) => {
                        (l.descriptor.digest.short().to_string(), l.descriptor.size.to_string())
                    }
                    Some(_) => ("(gone)".to_string(), "-".to_string()),
                    None => ("-".to_string(), "-".to_string()),
                };
                println!("{:<14} {:<10} {:>10}  {}", r.key.short(), layer, size, r.instruction);
            }
            eprintln!("{} records in {}", recs.len(), root.join("cache").display());
        }
        Command::Ls { reference: Some(r), net } => {
            let reference = Reference::parse(&r).with_context(|| r.clone())?;
            let client = net.client();
            let outcome = kiln_cache::RegistryCache::open(&client, &reference);
            if let Some(w) = outcome.warning() {
                anyhow::bail!("{w}");
            }
            let Some(rc) = outcome.cache() else { anyhow::bail!("{r}: not a kiln cache") };
            println!("{:<14} {:<16} {:>10}  INSTRUCTION", "KEY", "PLATFORM", "SIZE");
            for rec in rc.records() {
                let size = rec.layer.as_ref().map(|l| l.descriptor.size.to_string()).unwrap_or_else(|| "-".into());
                println!("{:<14} {:<16} {:>10}  {}", rec.key.short(), rc.platform_of(&rec.key).unwrap_or("-"), size, rec.instruction);
            }
            eprintln!("{} records at {} ({})", rc.len(), reference, rc.manifest_digest());
        }
        Command::Prune { reference: Some(r), ttl, max_size, net } => {
            let reference = Reference::parse(&r).with_context(|| r.clone())?;
            let mut target = RegistryExport::new(reference);
            target.ignore_error = false;
            target.ttl = Some(kiln_cache::parse_go_duration(&ttl).map_err(anyhow::Error::msg)?);
            target.max_size = max_size.as_deref().map(kiln_cache::parse_size).transpose().map_err(anyhow::Error::msg)?;
            let client = net.client();
            let store = Store::open(&root)?;
            let out =
                kiln_cache::export(&client, &target, &[], &store, &kiln_cache::LayerSources::new()).map_err(|e| anyhow::anyhow!("{e}"))?;
            match out {
                kiln_cache::ExportOutcome::Exported(s) => {
                    println!("{}: {} records kept, {} pruned by age, {} by size", s.reference, s.records, s.pruned_ttl, s.pruned_size)
                }
                other => anyhow::bail!("{}", other.warning().unwrap_or("prune failed")),
            }
        }
        Command::Prune { reference: None, .. } => {
            let cache = LocalCache::open(&root);
            let store = Store::open(&root)?;
            let n = cache.prune_missing_layers(&store);
            println!("removed {n} local cache records whose layers are gone");
        }
        Command::Explain => {
            let last = LastBuild::load(&root)?;
            let missed = last.explain();
            if missed.is_empty() {
                println!("every step of the last build was cached");
            }
            for (step, why) in missed {
                println!("{step}\n    {why}");
            }
        }
    }
    Ok(())
}
