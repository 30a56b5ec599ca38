//! `kiln inspect REF`: an image's manifest and config as JSON, from the local store, or from the
//! registry with `--remote`. A local index also lists its platforms and which of them were fetched;
//! `--platform` shows one platform's image instead. `--attestations` prints the in-toto statements
//! attached to each platform's image (as `docker buildx imagetools inspect --format '{{json
//! .Provenance}}'` shows provenance), read through the same source.

use std::io::Write;

use anyhow::Context;
use kiln_oci::{media, Manifest, Platform, Store};
use kiln_registry::{ImageSource, LocalImages, RegistrySource};

use super::copy::{parse_ref, repo_of, NetArgs};
use crate::Global;

/// Configs are small JSON documents; a bigger one is refused rather than read into memory.
const MAX_CONFIG: u64 = 32 << 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image, e.g. 127.0.0.1:5000/app:1.
    pub reference: String,
    /// Print the manifest exactly as stored (the bytes its digest is computed over).
    #[arg(long)]
    pub raw: bool,
    /// Ask the registry instead of the local store.
    #[arg(long)]
    pub remote: bool,
    /// Show this platform's image of a multi-platform index instead of the index.
    #[arg(long)]
    pub platform: Option<String>,
    /// Print the attestations (provenance, SBOM) attached to each platform's image.
    #[arg(long, conflicts_with_all = ["raw", "platform"])]
    pub attestations: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let r = parse_ref(&a.reference)?;
    let platform = a.platform.as_deref().map(Platform::parse).transpose().context("--platform")?;
    let client = a.net.client();
    let source: Box<dyn ImageSource + '_>;
    let mut name: String;
    // For a local index: which of its images were fetched (see the store's doc).
    let mut platforms: Option<serde_json::Value> = None;
    if a.remote {
        source = Box::new(RegistrySource { client: &client, repo: repo_of(&r) });
        name = match (r.digest(), r.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".into(),
        };
    } else {
        let root = g.root();
        let store = Store::open(&root).with_context(|| format!("opening the store under {}", root.display()))?;
        let local = LocalImages::new(store, "store", false)?;
        name = match (r.digest(), r.tag()) {
            (Some(d), None) => d.to_string(),
            _ => r.to_string(),
        };
        let Some(desc) = local.find(&name)? else {
            anyhow::bail!("{r} is not in the local store; pull it first (kiln pull {r}) or ask the registry with --remote");
        };
        if let Some(p) = &platform {
            name = local.store.select_platform(&r.to_string(), &desc, p)?.digest.to_string();
        } else if media::is_index(&desc.media_type) {
            let images = local.store.platform_images(&desc)?;
            platforms = Some(serde_json::Value::Array(
                images
                    .iter()
                    .map(|i| serde_json::json!({"platform": i.label(), "digest": i.descriptor.digest.to_string(), "present": i.present}))
                    .collect(),
            ));
        }
        source = Box::new(local);
    }
    let mut m = source.manifest(&name)?;
    if let (true, Some(p)) = (a.remote, &platform) {
        if let Manifest::Index(ix) = Manifest::parse(&m.bytes, Some(&m.media_type)).with_context(|| format!("{r}: unusable manifest"))? {
            let Some(d) = ix.find_platform(p) else {
                let listed: Vec<String> = ix.manifests.iter().filter_map(|d| d.platform.as_ref().map(|p| p.to_string())).collect();
                anyhow::bail!("{r} has no image for {p} (its index lists: {})", listed.join(", "));
            };
            m = source.manifest(&d.digest.to_string())?;
        }
    }
    let mut out = std::io::stdout().lock();
    if a.attestations {
        let doc = attestations(&r.to_string(), &m, source.as_ref())?;
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    if a.raw {
        out.write_all(&m.bytes)?;
        out.flush()?;
        return Ok(());
    }
    let manifest_json: serde_json::Value = serde_json::from_slice(&m.bytes).with_context(|| format!("{r}: the manifest is not JSON"))?;
    let mut doc = serde_json::json!({
        "name": r.to_string(),
        "digest": m.digest.to_string(),
        "mediaType": m.media_type,
        "size": m.bytes.len(),
        "manifest": manifest_json,
    });
    if let Some(p) = platforms {
        doc["platforms"] = p;
    }
    let parsed = Manifest::parse(&m.bytes, Some(&m.media_type)).with_context(|| format!("{r}: unusable manifest"))?;
    if let Manifest::Image(img) = parsed {
        if img.config.size > MAX_CONFIG {
            anyhow::bail!("{r}: config blob is {} bytes, more than kiln reads ({MAX_CONFIG})", img.config.size);
        }
        let mut bytes = Vec::new();
        let mut rd = source.open_blob(&img.config, 0)?;
        std::io::Read::read_to_end(&mut (&mut rd).take_limit(MAX_CONFIG + 1), &mut bytes)
            .with_context(|| format!("{r}: reading the config {}", img.config.digest))?;
        let actual = kiln_oci::Digest::sha256_of(&bytes);
        if actual != img.config.digest {
            anyhow::bail!("{r}: config digest mismatch: expected {}, got {actual}", img.config.digest);
        }
        let config: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{r}: the config is not JSON"))?;
        doc["config"] = config;
    }
    serde_json::to_writer_pretty(&mut out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// Each platform image's attestations under the root `m`: the statements, with the SLSA and SPDX
/// predicates picked out (`provenance`, `sbom`; stage SBOMs under `sbom_stages`).
fn attestations(name: &str, m: &kiln_registry::FetchedManifest, source: &dyn ImageSource) -> anyhow::Result<serde_json::Value> {
    let parsed = Manifest::parse(&m.bytes, Some(&m.media_type)).with_context(|| format!("{name}: unusable manifest"))?;
    let Manifest::Index(ix) = parsed else {
        return Ok(serde_json::json!({ "name": name, "digest": m.digest.to_string(), "attestations": [] }));
    };
    let fetch = |d: &kiln_oci::Descriptor| -> Result<Vec<u8>, String> {
        if media::is_image_manifest(&d.media_type) {
            return source.manifest(&d.digest.to_string()).map(|m| m.bytes).map_err(|e| e.to_string());
        }
        let mut bytes = Vec::new();
        let mut rd = source.open_blob(d, 0).map_err(|e| e.to_string())?;
        std::io::Read::read_to_end(&mut (&mut rd).take_limit(MAX_CONFIG + 1), &mut bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    };
    let found = kiln_attest::read_attestations(&ix, fetch).with_context(|| format!("{name}: reading its attestations"))?;
    let list: Vec<serde_json::Value> = found
        .into_iter()
        .map(|a| {
            let of = |t: &'static str| a.statements.iter().filter(move |s| s["predicateType"].as_str().is_some_and(|p| p == t));
            let slsa = of(kiln_attest::SLSA_V02)
                .chain(of(kiln_attest::SLSA_V1))
                .next()
                .map(|s| serde_json::json!({ "predicateType": s["predicateType"], "SLSA": s["predicate"] }));
            let mut spdx = of(kiln_attest::SPDX).map(|s| s["predicate"].clone());
            let sbom = spdx.next().map(|p| serde_json::json!({ "SPDX": p }));
            let stages: Vec<serde_json::Value> = spdx.collect();
            serde_json::json!({
                "platform": a.platform.map(|p| p.to_string()),
                "image": a.image.to_string(),
                "manifest": a.manifest.to_string(),
                "provenance": slsa,
                "sbom": sbom,
                "sbom_stages": stages,
                "statements": a.statements,
            })
        })
        .collect();
    Ok(serde_json::json!({ "name": name, "digest": m.digest.to_string(), "attestations": list }))
}

/// `Read::take` on a `&mut Box<dyn Read>` without moving it.
trait TakeLimit: std::io::Read + Sized {
    fn take_limit(self, n: u64) -> std::io::Take<Self> {
        self.take(n)
    }
}
impl<R: std::io::Read> TakeLimit for R {}
