//! `kiln import`: a root file system tarball becomes a one-layer image in the local store.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use kiln_oci::layer::{write_layer_from_tar, write_layer_to_store, WriteOptions};
use kiln_oci::manifest::{Descriptor, ImageManifest, Manifest};
use kiln_oci::{media, Compression, History, ImageConfig, Platform, Reference, Store};

use super::images::rfc3339;
use crate::Global;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LayerCompression {
    Gzip,
    Zstd,
    None,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Root file system tarball (plain, gzip or zstd; `-` reads standard input).
    pub rootfs: PathBuf,
    /// Name for the image, e.g. `localhost:5000/busybox:1` (repeatable).
    #[arg(short = 't', long = "tag", required = true)]
    pub tags: Vec<String>,
    /// Platform recorded in the config, e.g. linux/arm64 (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: LayerCompression,
    /// Default command of the image, as a JSON array or a plain word list (`--cmd sh`).
    #[arg(long)]
    pub cmd: Option<String>,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let refs = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("-t {t}: use a name like myimage:tag or localhost:5000/repo:tag")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let input: Box<dyn Read> = if a.rootfs.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(&a.rootfs).with_context(|| format!("opening root file system tarball {}", a.rootfs.display()))?)
    };
    let store = Store::open(&g.root()).with_context(|| format!("opening the store under {}", g.root().display()))?;
    // Hold off a concurrent `kiln prune` until the image is tagged.
    let _lease = store.lease()?;

    let mut opts = WriteOptions::from_env();
    opts.compression = match a.compression {
        LayerCompression::Gzip => Compression::Gzip,
        LayerCompression::Zstd => Compression::Zstd,
        LayerCompression::None => Compression::None,
    };
    let layer = write_layer_to_store(&store, |w| Ok(write_layer_from_tar(input, w, &opts)?.1))
        .with_context(|| format!("importing {}", a.rootfs.display()))?;

    let created = rfc3339(opts.source_date_epoch.unwrap_or_else(now));
    let mut config = ImageConfig::new(&platform);
    config.created = Some(created.clone());
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    if let Some(cmd) = &a.cmd {
        let parsed: Vec<String> = serde_json::from_str(cmd).unwrap_or_else(|_| cmd.split_whitespace().map(str::to_string).collect());
        config.config.get_or_insert_with(Default::default).cmd = Some(parsed);
    }
    config.config.get_or_insert_with(Default::default).env =
        Some(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()]);
    let shown = a.rootfs.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "-".into());
    config.history = Some(vec![History { created: Some(created), created_by: Some(format!("kiln import {shown}")), ..History::default() }]);
    let cfg_bytes = config.to_json();
    let cfg = store.put_blob_bytes(&cfg_bytes)?;
    let manifest =
        Manifest::Image(ImageManifest::new_oci(Descriptor::new(media::OCI_CONFIG, cfg.digest, cfg.size), vec![layer.descriptor()]));
    let desc = store.put_manifest(&manifest)?;
    for r in &refs {
        store.tag(r, &desc)?;
        tracing::info!("tagged {r}");
    }
    println!("{}", desc.digest);
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
