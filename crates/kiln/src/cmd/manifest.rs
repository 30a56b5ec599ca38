//! `kiln manifest merge -t REF… SRC@sha256:…`: the fan-in half of per-architecture builds.
//!
//! Each native runner builds one platform and pushes it by digest (no tag, so runners never race
//! for one). The merge job then reads each pushed manifest and its config (the config is the only
//! trustworthy record of the platform), assembles one OCI index, and pushes it under every tag.
//! Children that live in another repository are copied into each target repository first, by
//! cross-repository mount when the registry is the same (no bytes move) and by copy otherwise,
//! because an index may only point at manifests its own repository holds.
//!
//! The index is a pure function of the set of sources: entries are sorted by platform, carry no
//! timestamps or annotations, and duplicates collapse. So a retried or re-run merge pushes the same
//! bytes and gets the same digest, and `--platform linux/amd64,linux/arm64` in one build gives the
//! same index as two per-platform builds merged.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use kiln_oci::{media, Descriptor, Digest, ImageConfig, ImageIndex, Manifest, Platform, Reference};
use kiln_registry::{Client, CopyOptions, FetchedManifest, RegistryDest, RegistrySource, Repo};

use super::copy::{repo_of, NetArgs, TermProgress};
use crate::Global;

/// `kiln manifest …`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Assemble one multi-platform index from images pushed by digest, and push it under each tag.
    Merge(MergeArgs),
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Tag the index is pushed under, e.g. ghcr.io/owner/app:1.2 (repeatable, at least one).
    #[arg(short = 't', long = "tag", required = true, value_name = "REF")]
    pub tags: Vec<String>,
    /// The images to merge, pinned by digest: REGISTRY/NAME@sha256:… (a bare sha256:… means the
    /// first tag's repository). An index as a source contributes each of its images.
    #[arg(required = true, value_name = "SRC@DIGEST")]
    pub sources: Vec<String>,
    /// Write the digest of the pushed index to this file.
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
    /// Print the index that would be pushed, and push nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(c: Command, g: &Global) -> anyhow::Result<()> {
    match c {
        Command::Merge(a) => merge(a, g),
    }
}

/// One image that goes into the index, and where it can be read from.
struct Entry {
    /// The argument it came from, for messages.
    source: String,
    repo: Repo,
    manifest: FetchedManifest,
    platform: Platform,
}

fn merge(a: MergeArgs, _g: &Global) -> anyhow::Result<()> {
    let targets = parse_targets(&a.tags)?;
    let client = a.net.client();
    let mut entries: Vec<Entry> = Vec::new();
    for s in &a.sources {
        let (repo, digest) = parse_source(s, &targets[0])?;
        for e in resolve(&client, s, &repo, &digest)? {
            add_entry(&mut entries, e)?;
        }
    }
    // Sorting makes the index independent of argument order (a CI job lists digests from a
    // directory, in whatever order the files come), which is what makes re-runs idempotent.
    sort_entries(&mut entries);
    let index = build_index(&entries);
    let bytes = Manifest::Index(index).to_json();
    let digest = Digest::sha256_of(&bytes);
    if a.dry_run {
        println!("{}", String::from_utf8_lossy(&bytes));
        return Ok(());
    }

    // Children first, into every target repository, so that no tag ever names an index whose
    // manifests its repository lacks.
    let mut repos: Vec<Repo> = Vec::new();
    for t in &targets {
        let r = repo_of(t);
        if !repos.contains(&r) {
            repos.push(r);
        }
    }
    for target in &repos {
        for e in &entries {
            bring_into(&client, e, target)?;
        }
    }
    for t in &targets {
        let repo = repo_of(t);
        let tag = t.tag().unwrap_or("latest");
        let got = client.put_manifest(&repo, tag, media::OCI_INDEX, &bytes).with_context(|| format!("pushing the index to {t}"))?;
        if got != digest {
            bail!("pushing the index to {t}: the registry stored {got}, expected {digest}; try again");
        }
        eprintln!("merge: {t} → index {digest} ({})", describe_platforms(&entries));
    }
    if let Some(p) = &a.digest_file {
        crate::atomic_write(p, format!("{digest}\n").as_bytes()).with_context(|| format!("writing the digest to {}", p.display()))?;
    }
    println!("{digest}");
    Ok(())
}

fn parse_targets(tags: &[String]) -> anyhow::Result<Vec<Reference>> {
    let mut out: Vec<Reference> = Vec::new();
    for t in tags {
        let r = Reference::parse(t).with_context(|| format!("-t {t}: not an image reference (expected [HOST[:PORT]/]NAME[:TAG])"))?;
        if r.digest().is_some() {
            bail!("-t {t}: the index is pushed under a tag, and its digest is only known once it is assembled; drop the @digest");
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.is_empty() {
        bail!("name the index with at least one -t REGISTRY/NAME:TAG");
    }
    Ok(out)
}

/// A source's repository and digest. Tags are refused: between the per-platform pushes and the
/// merge, a tag can move, and the index would silently hold someone else's image.
fn parse_source(s: &str, first_target: &Reference) -> anyhow::Result<(Repo, Digest)> {
    if let Ok(d) = Digest::parse(s) {
        return Ok((repo_of(first_target), d));
    }
    let r = Reference::parse_without_default_tag(s)
        .with_context(|| format!("source `{s}`: not an image reference (expected REGISTRY/NAME@sha256:…)"))?;
    match r.digest() {
        Some(d) => Ok((repo_of(&r), d.clone())),
        None => bail!(
            "source `{s}` is not pinned by digest; pass NAME@sha256:… as printed by `kiln build --output type=registry,push-by-digest=true` \
             (a tag can move between the push and the merge)"
        ),
    }
}

/// Fetches a source and turns it into the images it stands for: itself, or an index's children.
fn resolve(client: &Client, source: &str, repo: &Repo, digest: &Digest) -> anyhow::Result<Vec<Entry>> {
    let fetched = client.get_manifest(repo, &digest.to_string()).with_context(|| format!("source {source}"))?;
    let parsed = Manifest::parse(&fetched.bytes, Some(&fetched.media_type))
        .with_context(|| format!("source {source}: {repo}@{digest} is not a usable manifest"))?;
    match parsed {
        Manifest::Image(m) => {
            let platform = platform_of(client, source, repo, &m.config)?;
            Ok(vec![Entry { source: source.to_string(), repo: repo.clone(), manifest: fetched, platform }])
        }
        Manifest::Index(idx) => {
            let mut out = Vec::new();
            for d in &idx.manifests {
                if media::is_index(&d.media_type) {
                    bail!(
                        "source {source}: the index {digest} holds another index ({}); merge its images by their own digests instead",
                        d.digest
                    );
                }
                if !media::is_image_manifest(&d.media_type) {
                    continue;
                }
                // BuildKit's attestation manifests are listed as unknown/unknown; they describe an
                // image rather than being one, and without their annotations they would mislead.
                if d.platform.as_ref().is_some_and(|p| p.os == "unknown" || p.architecture == "unknown") {
                    tracing::debug!(digest = %d.digest, "skipping a non-image entry of {source}");
                    continue;
                }
                let child =
                    client.get_manifest(repo, &d.digest.to_string()).with_context(|| format!("source {source}: its image {}", d.digest))?;
                let Manifest::Image(m) = Manifest::parse(&child.bytes, Some(&child.media_type))
                    .with_context(|| format!("source {source}: its image {} is not a usable manifest", d.digest))?
                else {
                    bail!("source {source}: the index entry {} is not an image manifest", d.digest);
                };
                let platform = match &d.platform {
                    Some(p) => p.clone(),
                    None => platform_of(client, source, repo, &m.config)?,
                };
                out.push(Entry { source: format!("{source} ({platform})"), repo: repo.clone(), manifest: child, platform });
            }
            if out.is_empty() {
                bail!("source {source}: the index {digest} holds no images");
            }
            Ok(out)
        }
    }
}

/// The platform recorded in an image's config.
fn platform_of(client: &Client, source: &str, repo: &Repo, config: &Descriptor) -> anyhow::Result<Platform> {
    let limit = kiln_registry::manifest::MAX_MANIFEST;
    if config.size > limit {
        bail!("source {source}: its config {} is {} bytes, more than the {limit} kiln reads", config.digest, config.size);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(config.size).unwrap_or(0));
    client
        .fetch_blob(repo, &config.digest, Some(config.size), &mut bytes)
        .with_context(|| format!("source {source}: fetching its config"))?;
    let cfg =
        ImageConfig::parse(&bytes).with_context(|| format!("source {source}: its config {} is not an image config", config.digest))?;
    if cfg.os.is_empty() || cfg.architecture.is_empty() {
        bail!("source {source}: its config does not say which os and architecture it is for, so it cannot be placed in an index");
    }
    Ok(cfg.platform())
}

/// Adds `e` unless the same image is there already; two different images for one platform would
/// make the index ambiguous, so that is an error naming both.
fn add_entry(entries: &mut Vec<Entry>, e: Entry) -> anyhow::Result<()> {
    if entries.iter().any(|x| x.manifest.digest == e.manifest.digest) {
        return Ok(());
    }
    if let Some(x) = entries.iter().find(|x| x.platform.matches(&e.platform)) {
        bail!("{} and {} are both for {}; an index holds one image per platform, so pass only one of them", x.source, e.source, e.platform);
    }
    entries.push(e);
    Ok(())
}

fn sort_entries(entries: &mut [Entry]) {
    entries
        .sort_by(|x, y| platform_key(&x.platform).cmp(&platform_key(&y.platform)).then_with(|| x.manifest.digest.cmp(&y.manifest.digest)));
}

fn platform_key(p: &Platform) -> (String, String, String, String) {
    (p.os.clone(), p.architecture.clone(), p.variant.clone().unwrap_or_default(), p.os_version.clone().unwrap_or_default())
}

/// The index: one descriptor per image with the platform from its config, exactly as
/// `kiln build --platform a,b` writes it, so that fan-out and single builds agree.
fn build_index(entries: &[Entry]) -> ImageIndex {
    let mut index = ImageIndex::new_oci();
    for e in entries {
        let mut d = Descriptor::new(&e.manifest.media_type, e.manifest.digest.clone(), e.manifest.bytes.len() as u64);
        d.platform = Some(e.platform.clone());
        index.manifests.push(d);
    }
    index
}

/// Makes sure `target` holds the entry's manifest (and so its blobs).
fn bring_into(client: &Client, e: &Entry, target: &Repo) -> anyhow::Result<()> {
    let digest = e.manifest.digest.to_string();
    if &e.repo == target {
        return Ok(()); // read from there a moment ago
    }
    if client.manifest_exists(target, &digest).with_context(|| format!("checking {target}@{digest}"))? {
        return Ok(());
    }
    let src = RegistrySource { client, repo: e.repo.clone() };
    let dst = RegistryDest { client, repo: target.clone() };
    let opts = CopyOptions { platform: None, parallel: client.options().parallel };
    let progress = TermProgress::new("merge");
    // copy_image mounts each blob when both repositories share a registry and uploads it otherwise
    // (also when the registry declines the mount), then pushes the manifest by digest.
    let res = kiln_registry::copy_image(&src, &digest, &dst, None, &opts, &progress);
    progress.clear();
    res.with_context(|| format!("copying {} ({}) into {target}", e.source, e.repo))?;
    Ok(())
}

fn describe_platforms(entries: &[Entry]) -> String {
    entries.iter().map(|e| e.platform.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest_of: &str, platform: &str) -> Entry {
        Entry {
            source: format!("src-{digest_of}"),
            repo: Repo::new("127.0.0.1:5000", "x"),
            manifest: FetchedManifest {
                bytes: digest_of.as_bytes().to_vec(),
                media_type: media::OCI_MANIFEST.to_string(),
                digest: Digest::sha256_of(digest_of.as_bytes()),
            },
            platform: Platform::parse(platform).unwrap(),
        }
    }

    #[test]
    fn same_image_twice_collapses_and_two_images_for_one_platform_are_refused() {
        let mut v = Vec::new();
        add_entry(&mut v, entry("a", "linux/amd64")).unwrap();
        add_entry(&mut v, entry("a", "linux/amd64")).unwrap();
        assert_eq!(v.len(), 1);
        let err = add_entry(&mut v, entry("b", "linux/x86_64")).unwrap_err().to_string();
        assert!(err.contains("src-a") && err.contains("src-b") && err.contains("linux/amd64"), "{err}");
        add_entry(&mut v, entry("c", "linux/arm64")).unwrap();
        add_entry(&mut v, entry("d", "linux/arm/v7")).unwrap();
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn sources_must_be_pinned_by_digest() {
        let first = Reference::parse("127.0.0.1:5000/app:1").unwrap();
        let err = parse_source("127.0.0.1:5000/app:amd64", &first).unwrap_err().to_string();
        assert!(err.contains("not pinned by digest") && err.contains("127.0.0.1:5000/app:amd64"), "{err}");
        let d = Digest::sha256_of(b"x");
        let (repo, got) = parse_source(&d.to_string(), &first).unwrap();
        assert_eq!((repo.to_string(), got.clone()), ("127.0.0.1:5000/app".to_string(), d.clone()));
        let (repo, _) = parse_source(&format!("127.0.0.1:5000/other/img@{d}"), &first).unwrap();
        assert_eq!(repo.to_string(), "127.0.0.1:5000/other/img");
    }

    #[test]
    fn targets_are_tags_and_deduplicated() {
        let t = parse_targets(&["127.0.0.1:5000/app".into(), "127.0.0.1:5000/app:latest".into(), "127.0.0.1:5000/app:1".into()]).unwrap();
        assert_eq!(t.len(), 2);
        let d = Digest::sha256_of(b"x");
        let err = parse_targets(&[format!("127.0.0.1:5000/app@{d}")]).unwrap_err().to_string();
        assert!(err.contains("drop the @digest"), "{err}");
    }

    #[test]
    fn index_order_does_not_depend_on_argument_order() {
        let mut a = vec![entry("arm", "linux/arm64"), entry("amd", "linux/amd64")];
        let mut b = vec![entry("amd", "linux/amd64"), entry("arm", "linux/arm64")];
        sort_entries(&mut a);
        sort_entries(&mut b);
        let ja = Manifest::Index(build_index(&a)).to_json();
        let jb = Manifest::Index(build_index(&b)).to_json();
        assert_eq!(ja, jb);
        let idx: serde_json::Value = serde_json::from_slice(&ja).unwrap();
        assert_eq!(idx["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(idx["manifests"][1]["platform"]["architecture"], "arm64");
        assert_eq!(idx["mediaType"], media::OCI_INDEX);
    }
}
