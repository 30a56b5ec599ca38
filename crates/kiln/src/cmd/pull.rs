//! `kiln pull REF`: fetches an image into the local store and tags it with the reference. An index
//! is kept whole (the registry's bytes and digest) with only the platforms asked for fetched; a
//! later pull of another platform adds it to the same index.

use std::time::Instant;

use anyhow::Context;
use kiln_oci::{media, Platform, Store};
use kiln_registry::{PlatformSelection, Tagging};

use super::copy::{parse_ref, print_digest, repo_of, summary, NetArgs, TermProgress};
use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image to pull, e.g. 127.0.0.1:5000/app:1 or busybox.
    pub reference: String,
    /// Which images of a multi-platform index to fetch, comma-separated or repeated (default: this
    /// machine's). The index is kept whole; the other platforms stay listed but are not fetched.
    #[arg(long, value_delimiter = ',', conflicts_with = "all_platforms")]
    pub platform: Vec<String>,
    /// Fetch every image of a multi-platform index.
    #[arg(long)]
    pub all_platforms: bool,
    /// Write the digest of the pulled manifest to this file: the platform's image when one platform
    /// was fetched, else the index.
    #[arg(long)]
    pub digest_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let r = parse_ref(&a.reference)?;
    let selection = if a.all_platforms {
        PlatformSelection::All
    } else if a.platform.is_empty() {
        PlatformSelection::Host(Platform::host())
    } else {
        let mut v = Vec::new();
        for p in a.platform.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            v.push(Platform::parse(p).with_context(|| format!("--platform {p}"))?);
        }
        PlatformSelection::Only(v)
    };
    let root = g.root();
    let store = Store::open(&root).with_context(|| format!("opening the store under {}", root.display()))?;
    let client = a.net.client();
    let progress = TermProgress::new("pull");
    let started = Instant::now();
    let res = kiln_registry::pull_to_store(&client, &store, &r, &selection, Tagging::Follow, &progress);
    progress.clear();
    let res = res?;
    summary("pull", &repo_of(&r).to_string(), "store", res.blobs_moved, res.bytes_moved, started);
    if media::is_index(&res.root.media_type) {
        let have: Vec<String> =
            store.platform_images(&res.root)?.into_iter().filter(|i| i.present && !i.attestation).map(|i| i.label()).collect();
        eprintln!("pull: {r} is the index {}; in the store: {}", res.root.digest, have.join(", "));
    }
    // One platform asked for: the digest of the image that `kiln run`/FROM will use for it.
    let one = !matches!(selection, PlatformSelection::All) && selection.platforms().len() == 1;
    let images: Vec<_> = res.images.iter().filter(|d| d.platform.as_ref().is_none_or(|p| p.os != "unknown")).collect();
    let digest = match images.as_slice() {
        [image] if one => &image.digest,
        _ => &res.root.digest,
    };
    print_digest(digest, &r.to_string(), a.digest_file.as_ref())
}
