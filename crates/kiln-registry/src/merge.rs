//! Multi-platform indexes assembled from images already in registries: the library half of
//! `kiln manifest merge`, which is `docker buildx imagetools create` under kiln's name.
//!
//! The model follows buildx's: every source is a digest, a reference (tag or digest) or a
//! descriptor (JSON); a tag is resolved once, to a digest, and only that digest is read from then
//! on, so the index cannot end up holding half of one push and half of the next. An image source
//! becomes one entry, with the platform from its config; an index source contributes its entries as
//! they are (platform and annotations kept). `--append` is the first tag as one more source.
//! Annotations are typed as buildx types them: `index:` lands on the index, `manifest-descriptor:`
//! (optionally `manifest-descriptor[os/arch]:`) on each entry; `manifest:` and `index-descriptor:`
//! are refused as buildx refuses them, and so is an annotation with no type.
//!
//! Where kiln differs, it is on purpose: entries are sorted by platform and the index is always
//! an OCI index, so the same set of images gives the same bytes and digest whatever the order of
//! the arguments, and the result equals what `kiln build --platform a,b` pushes from one machine;
//! and two different images for one platform are refused instead of both landing in the index,
//! where a puller would get whichever comes first. A single index source with nothing to change
//! (no annotations, no platform filter) is pushed as a carbon copy of its bytes, as buildx does.
//!
//! [`plan`] does everything but write: it resolves, reads, checks and serialises; [`push`] then
//! brings every entry into each target repository (mounted within a registry, copied across
//! registries) before any tag is pointed at the index, so no tag ever names a dangling index.

use std::collections::BTreeMap;

use kiln_oci::{media, Descriptor, Digest, ImageConfig, ImageIndex, Manifest, ManifestError, Platform, Reference, ReferenceError};

use crate::client::{Client, Repo};
use crate::error::RegistryError;
use crate::manifest::{FetchedManifest, MAX_MANIFEST};
use crate::transfer::{copy_image, CopyOptions, Progress, RegistryDest, RegistrySource};

/// The annotation that BuildKit's attestation manifests carry to name the image they describe.
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// Everything that can go wrong while assembling or pushing an index. Each message names the
/// argument or reference it is about and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("-t {tag}: not an image reference (expected [HOST[:PORT]/]NAME[:TAG])")]
    Tag {
        tag: String,
        #[source]
        source: ReferenceError,
    },
    #[error("-t {tag}: the index is pushed under a tag, and its digest is only known once it is assembled; drop the @digest")]
    TagWithDigest { tag: String },
    #[error("no sources: name the images to merge (NAME@sha256:…, NAME:TAG, sha256:…) or pass -f FILE")]
    NoSources,
    #[error("--append needs a -t: it adds the sources to the index at the first tag")]
    AppendWithoutTag,
    #[error("source `{input}`: not a digest, an image reference or a descriptor (JSON): {reason}")]
    Source { input: String, reason: String },
    #[error("source `{input}`: {input} is a bare digest, and the command names several repositories ({repos}), so which one holds it is not known; write REPOSITORY@{input}")]
    AmbiguousRepository { input: String, repos: String },
    #[error("source `{input}`: no repository to read it from: name one with -t or write the source as REPOSITORY@DIGEST")]
    NoRepository { input: String },
    #[error("-f {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--annotation {input}: {reason}")]
    Annotation { input: String, reason: String },
    #[error("--append: the first -t {tag} does not exist yet, so there is no index to append to; drop --append to create it")]
    AppendTargetMissing {
        tag: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("{}", with_input(input, source))]
    Fetch {
        input: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("source {input}: {reference} is not a usable manifest: {source}")]
    NotManifest {
        input: String,
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("source {input}: {reason}")]
    Unusable { input: String, reason: String },
    #[error("source {input}: its config {digest} is not an image config: {source}")]
    Config {
        input: String,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("{first} and {second} are both for {platform}; an index holds one image per platform, so pass only one of them")]
    SamePlatform { first: String, second: String, platform: String },
    #[error("--platform {platforms}: none of the images is for these platforms (there are: {available})")]
    NoPlatformMatch { platforms: String, available: String },
    #[error("copying {entry} from {from} into {target}: {source}")]
    Copy {
        entry: String,
        from: String,
        target: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("pushing the index to {tag}: {source}")]
    Push {
        tag: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("pushing the index to {tag}: the registry stored {got}, expected {expected}; try again")]
    DigestChanged { tag: String, got: Digest, expected: Digest },
}

/// `source INPUT: ERROR`, without saying the reference twice when the error starts with it.
fn with_input(input: &str, e: &RegistryError) -> String {
    let text = e.to_string();
    if text.starts_with(&format!("{input}:")) {
        format!("source {text}")
    } else {
        format!("source {input}: {text}")
    }
}

/// Where an annotation goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnnotationTarget {
    /// `index:` the index's own `annotations`.
    Index,
    /// `manifest-descriptor[:PLATFORM]:` each entry's descriptor (only the entries for that
    /// platform when one is given).
    ManifestDescriptor(Option<Platform>),
}

/// One `--annotation` value, parsed: it may name several targets (`index,manifest-descriptor:k=v`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    pub targets: Vec<AnnotationTarget>,
    pub key: String,
    pub value: String,
}

impl Annotation {
    /// Parses `TYPE[,TYPE…]:KEY=VALUE` with buildx's grammar and buildx's refusals for
    /// `imagetools create`: the types are `index` and `manifest-descriptor` (each optionally with a
    /// `[os/arch[/variant]]`); `manifest` and an untyped `KEY=VALUE` are "not supported yet" there,
    /// and `index-descriptor` is "invalid while creating an image".
    pub fn parse(input: &str) -> Result<Annotation, MergeError> {
        let bad = |reason: String| MergeError::Annotation { input: input.to_string(), reason };
        let Some((k, value)) = input.split_once('=') else {
            return Err(bad("expected TYPE:KEY=VALUE (no `=`)".into()));
        };
        let Some((types, key)) = k.split_once(':') else {
            return Err(bad(format!(
                "an annotation without a type is not supported by imagetools create (buildx refuses it too); \
                 write index:{k}={value} for the index, or manifest-descriptor:{k}={value} for each of its entries"
            )));
        };
        if key.is_empty() {
            return Err(bad("the key is empty".into()));
        }
        let mut targets = Vec::new();
        for t in types.split(',') {
            let (name, platform) = match t.split_once('[') {
                Some((name, rest)) => {
                    let Some(p) = rest.strip_suffix(']') else {
                        return Err(bad(format!("annotation type {t:?}: expected TYPE[os/arch] with a closing `]`")));
                    };
                    let platform = Platform::parse(p).map_err(|e| bad(format!("annotation type {t:?}: {e}")))?;
                    (name, Some(platform))
                }
                None => (t, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                return Err(bad(format!("invalid annotation type {t:?}, expected a type and an optional platform in square brackets")));
            }
            targets.push(match name {
                "index" => AnnotationTarget::Index,
                "manifest-descriptor" => AnnotationTarget::ManifestDescriptor(platform),
                "manifest" => {
                    return Err(bad("\"manifest\" annotations are not supported by imagetools create (it does not rewrite the images); \
                         set them at build time (kiln build --annotation) or use manifest-descriptor:"
                        .into()))
                }
                "index-descriptor" => {
                    return Err(
                        bad("\"index-descriptor\" annotations are invalid while creating an image (there is no outer index)".into()),
                    )
                }
                other => {
                    return Err(bad(format!("unknown annotation type {other:?}; imagetools create takes index: and manifest-descriptor:")))
                }
            });
        }
        Ok(Annotation { targets, key: key.to_string(), value: value.to_string() })
    }
}

/// A source as written: what to read, before anything is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `sha256:…`: in the one repository the command names.
    Digest(Digest),
    /// `NAME:TAG` or `NAME@sha256:…`.
    Reference(Reference),
    /// A descriptor (JSON, as `-f` files hold): its digest is read from the one repository the
    /// command names; its media type, platform and annotations, when given, win over the registry's.
    Descriptor(SourceDescriptor),
}

/// A descriptor as buildx reads one from a source argument or `-f` file: only `digest` is needed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDescriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: Digest,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl SourceSpec {
    /// Parses a source as buildx does: a digest, else a reference, else (starting with `{`) a
    /// descriptor.
    pub fn parse(input: &str) -> Result<SourceSpec, MergeError> {
        let bad = |reason: String| MergeError::Source { input: input.to_string(), reason };
        let trimmed = input.trim();
        if trimmed.starts_with("sha256") {
            return Digest::parse(trimmed).map(SourceSpec::Digest).map_err(|e| bad(e.to_string()));
        }
        if trimmed.starts_with('{') {
            return serde_json::from_str::<SourceDescriptor>(trimmed).map(SourceSpec::Descriptor).map_err(|e| bad(e.to_string()));
        }
        Reference::parse_without_default_tag(trimmed).map(SourceSpec::Reference).map_err(|e| bad(e.to_string()))
    }
}

/// What to assemble.
#[derive(Clone, Debug, Default)]
pub struct MergeRequest {
    /// The tags the index is pushed under (may be empty for a dry run).
    pub tags: Vec<String>,
    /// The sources, each as written (digest, reference or descriptor JSON); `-f` files' contents
    /// come first, as in buildx.
    pub sources: Vec<String>,
    /// `--annotation` values.
    pub annotations: Vec<String>,
    /// Add the sources to the index at the first tag.
    pub append: bool,
    /// Keep only these platforms (empty: all).
    pub platforms: Vec<Platform>,
}

/// A tag source, resolved once to the digest everything else reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub input: String,
    pub reference: String,
    pub digest: Digest,
}

/// One entry of the index and where its content can be read from.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The source it came from, for messages.
    pub source: String,
    pub repo: Repo,
    pub descriptor: Descriptor,
}

/// An index ready to push.
#[derive(Clone, Debug)]
pub struct Plan {
    pub tags: Vec<Reference>,
    /// The index's bytes, exactly as they will be pushed.
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
    pub entries: Vec<Entry>,
    /// The tag sources and the digest each was resolved to.
    pub resolved: Vec<Resolved>,
}

impl Plan {
    /// The entries' platforms, for a one-line summary.
    pub fn platforms(&self) -> String {
        self.entries
            .iter()
            .map(|e| e.descriptor.platform.as_ref().map_or_else(|| "(no platform)".to_string(), |p| p.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn parse_tags(tags: &[String]) -> Result<Vec<Reference>, MergeError> {
    let mut out: Vec<Reference> = Vec::new();
    for t in tags {
        let r = Reference::parse(t).map_err(|source| MergeError::Tag { tag: t.clone(), source })?;
        if r.digest().is_some() {
            return Err(MergeError::TagWithDigest { tag: t.clone() });
        }
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The contents of a `-f` file: one source (a descriptor, as buildx writes them), whitespace
/// around it dropped.
pub fn read_source_file(path: &std::path::Path) -> Result<String, MergeError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| MergeError::File { path: path.display().to_string(), source })
}

/// The repository a reference lives in.
pub fn repo_of(r: &Reference) -> Repo {
    Repo::new(r.registry(), r.repository())
}

/// Resolves, reads and checks every source and serialises the index; writes nothing.
pub fn plan(client: &Client, req: &MergeRequest) -> Result<Plan, MergeError> {
    let tags = parse_tags(&req.tags)?;
    let mut inputs: Vec<String> = Vec::new();
    // `--append` is the first tag as the first source, as in buildx.
    let append_input = if req.append {
        let Some(first) = tags.first() else { return Err(MergeError::AppendWithoutTag) };
        inputs.push(first.to_string());
        Some(first.to_string())
    } else {
        None
    };
    inputs.extend(req.sources.iter().cloned());
    if inputs.is_empty() {
        return Err(MergeError::NoSources);
    }
    let specs: Vec<(String, SourceSpec)> = inputs.iter().map(|s| SourceSpec::parse(s).map(|p| (s.clone(), p))).collect::<Result<_, _>>()?;

    // buildx's rule for sources without a repository: the command must name exactly one.
    let mut repos: Vec<Repo> = tags.iter().map(repo_of).collect();
    for (_, s) in &specs {
        if let SourceSpec::Reference(r) = s {
            repos.push(repo_of(r));
        }
    }
    repos.sort_by_key(|r| r.to_string());
    repos.dedup();

    let mut resolved = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    // The raw bytes of a lone index source, for the carbon copy.
    let mut lone_index: Option<FetchedManifest> = None;
    for (input, spec) in &specs {
        let (repo, reference, given) = match spec {
            SourceSpec::Reference(r) => (repo_of(r), r.clone(), None),
            SourceSpec::Digest(d) | SourceSpec::Descriptor(SourceDescriptor { digest: d, .. }) => {
                let repo = match repos.as_slice() {
                    [one] => one.clone(),
                    [] => return Err(MergeError::NoRepository { input: input.clone() }),
                    many => {
                        return Err(MergeError::AmbiguousRepository {
                            input: input.clone(),
                            repos: many.iter().map(Repo::to_string).collect::<Vec<_>>().join(", "),
                        })
                    }
                };
                let reference = Reference::parse(&format!("{repo}@{d}"))
                    .map_err(|e| MergeError::Source { input: input.clone(), reason: e.to_string() })?;
                let given = match spec {
                    SourceSpec::Descriptor(sd) => Some(sd.clone()),
                    _ => None,
                };
                (repo, reference, given)
            }
        };
        let fetched = match fetch_source(client, input, &repo, &reference, &mut resolved) {
            // A missing first tag is an error of its own: "not found" on a source would puzzle.
            Err(MergeError::Fetch { source, .. })
                if matches!(*source, RegistryError::NotFound { .. }) && append_input.as_ref() == Some(input) =>
            {
                return Err(MergeError::AppendTargetMissing { tag: input.clone(), source })
            }
            other => other?,
        };
        let display = format!("{repo}@{}", fetched.digest);
        if let Some(g) = &given {
            if let Some(size) = g.size.filter(|s| *s != fetched.bytes.len() as u64) {
                return Err(MergeError::Unusable {
                    input: input.clone(),
                    reason: format!("the descriptor says {size} bytes, the registry serves {} for {display}", fetched.bytes.len()),
                });
            }
        }
        let media_type = given.as_ref().and_then(|g| g.media_type.clone()).unwrap_or_else(|| fetched.media_type.clone());
        let parsed = Manifest::parse(&fetched.bytes, Some(&media_type)).map_err(|source| MergeError::NotManifest {
            input: input.clone(),
            reference: display.clone(),
            source,
        })?;
        match parsed {
            Manifest::Image(m) => {
                let mut platform = given.as_ref().and_then(|g| g.platform.clone()).unwrap_or_default();
                if platform.os.is_empty() || platform.architecture.is_empty() {
                    let cfg = config_platform(client, input, &repo, &m.config)?;
                    if platform.architecture.is_empty() {
                        platform.architecture = cfg.architecture;
                        if platform.variant.is_none() {
                            platform.variant = cfg.variant;
                        }
                    }
                    if platform.os.is_empty() {
                        platform.os = cfg.os;
                    }
                    if platform.os_version.is_none() {
                        platform.os_version = cfg.os_version;
                    }
                }
                let mut d = Descriptor::new(&media_type, fetched.digest.clone(), fetched.bytes.len() as u64);
                d.platform = Some(platform);
                d.annotations = given.and_then(|g| g.annotations).filter(|a| !a.is_empty());
                add_entry(&mut entries, Entry { source: input.clone(), repo: repo.clone(), descriptor: d })?;
            }
            Manifest::Index(idx) => {
                if idx.manifests.is_empty() {
                    return Err(MergeError::Unusable { input: input.clone(), reason: format!("the index {display} holds no images") });
                }
                for d in &idx.manifests {
                    if media::is_index(&d.media_type) {
                        return Err(MergeError::Unusable {
                            input: input.clone(),
                            reason: format!(
                                "the index {display} holds another index ({}); merge its images by their own digests instead",
                                d.digest
                            ),
                        });
                    }
                    let mut d = d.clone();
                    if d.platform.is_none() && media::is_image_manifest(&d.media_type) {
                        d.platform = Some(child_platform(client, input, &repo, &d)?);
                    }
                    add_entry(&mut entries, Entry { source: format!("{input} ({})", describe(&d)), repo: repo.clone(), descriptor: d })?;
                }
                if specs.len() == 1 {
                    lone_index = Some(FetchedManifest { media_type, ..fetched });
                }
            }
        }
    }

    let before = entries.len();
    if !req.platforms.is_empty() {
        filter_platforms(&mut entries, &req.platforms)?;
    }
    let annotations: Vec<Annotation> =
        req.annotations.iter().filter(|a| !a.is_empty()).map(|a| Annotation::parse(a)).collect::<Result<_, _>>()?;

    // buildx pushes a lone index source as it is, unless something is to change in it.
    if let Some(raw) = lone_index.filter(|_| annotations.is_empty() && entries.len() == before) {
        return Ok(Plan { tags, digest: raw.digest, media_type: raw.media_type, bytes: raw.bytes, entries, resolved });
    }

    // Sorting makes the index independent of argument order (a CI job lists digests from a
    // directory, in whatever order the files come), which is what makes re-runs idempotent.
    entries.sort_by(|x, y| {
        platform_key(&x.descriptor).cmp(&platform_key(&y.descriptor)).then_with(|| x.descriptor.digest.cmp(&y.descriptor.digest))
    });
    let mut index = ImageIndex::new_oci();
    index.manifests = entries.iter().map(|e| e.descriptor.clone()).collect();
    apply_annotations(&mut index, &annotations);
    for (e, d) in entries.iter_mut().zip(&index.manifests) {
        e.descriptor = d.clone();
    }
    let bytes = Manifest::Index(index).to_json();
    let digest = Digest::sha256_of(&bytes);
    Ok(Plan { tags, bytes, media_type: media::OCI_INDEX.to_string(), digest, entries, resolved })
}

/// Reads a source's manifest. A tag is read once, by tag, and recorded with the digest it named;
/// a digest is read by digest.
fn fetch_source(
    client: &Client,
    input: &str,
    repo: &Repo,
    r: &Reference,
    resolved: &mut Vec<Resolved>,
) -> Result<FetchedManifest, MergeError> {
    let fetch_err = |source| MergeError::Fetch { input: input.to_string(), source: Box::new(source) };
    if let Some(d) = r.digest() {
        return client.get_manifest(repo, &d.to_string()).map_err(fetch_err);
    }
    let tag = r.tag().unwrap_or("latest");
    let fetched = client.get_manifest(repo, tag).map_err(fetch_err)?;
    resolved.push(Resolved { input: input.to_string(), reference: format!("{repo}:{tag}"), digest: fetched.digest.clone() });
    Ok(fetched)
}

/// The platform recorded in an image's config.
fn config_platform(client: &Client, input: &str, repo: &Repo, config: &Descriptor) -> Result<Platform, MergeError> {
    if config.size > MAX_MANIFEST {
        return Err(MergeError::Unusable {
            input: input.to_string(),
            reason: format!("its config {} is {} bytes, more than the {MAX_MANIFEST} kiln reads", config.digest, config.size),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(config.size).unwrap_or(0));
    client
        .fetch_blob(repo, &config.digest, Some(config.size), &mut bytes)
        .map_err(|source| MergeError::Fetch { input: input.to_string(), source: Box::new(source) })?;
    let cfg = ImageConfig::parse(&bytes).map_err(|source| MergeError::Config {
        input: input.to_string(),
        digest: config.digest.clone(),
        source,
    })?;
    if cfg.os.is_empty() || cfg.architecture.is_empty() {
        return Err(MergeError::Unusable {
            input: input.to_string(),
            reason: "its config does not say which os and architecture it is for, so it cannot be placed in an index".into(),
        });
    }
    Ok(cfg.platform().normalized())
}

/// The platform of an index entry that does not state one, from its image's config.
fn child_platform(client: &Client, input: &str, repo: &Repo, d: &Descriptor) -> Result<Platform, MergeError> {
    let child = client
        .get_manifest(repo, &d.digest.to_string())
        .map_err(|source| MergeError::Fetch { input: input.to_string(), source: Box::new(source) })?;
    let reference = format!("{repo}@{}", d.digest);
    match Manifest::parse(&child.bytes, Some(&child.media_type)) {
        Ok(Manifest::Image(m)) => config_platform(client, input, repo, &m.config),
        Ok(Manifest::Index(_)) => {
            Err(MergeError::Unusable { input: input.to_string(), reason: format!("the index entry {reference} is not an image manifest") })
        }
        Err(source) => Err(MergeError::NotManifest { input: input.to_string(), reference, source }),
    }
}

/// BuildKit's attestation manifests are listed as unknown/unknown and name their image in an
/// annotation; they are carried along, never counted as an image for a platform.
fn is_attestation(d: &Descriptor) -> bool {
    d.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown") || d.annotation(REFERENCE_DIGEST).is_some()
}

fn describe(d: &Descriptor) -> String {
    match &d.platform {
        Some(p) if !is_attestation(d) => p.to_string(),
        _ => d.digest.to_string(),
    }
}

/// Adds `e`; the same image again merges its annotations into the first (as buildx does); two
/// different images for one platform would make the index ambiguous, so that is an error naming both.
fn add_entry(entries: &mut Vec<Entry>, e: Entry) -> Result<(), MergeError> {
    if let Some(x) = entries.iter_mut().find(|x| x.descriptor.digest == e.descriptor.digest) {
        if let Some(p) = e.descriptor.platform {
            x.descriptor.platform = Some(p);
        }
        if let Some(a) = e.descriptor.annotations {
            x.descriptor.annotations.get_or_insert_with(BTreeMap::new).extend(a);
        }
        return Ok(());
    }
    if !is_attestation(&e.descriptor) {
        if let Some(p) = &e.descriptor.platform {
            if let Some(x) =
                entries.iter().find(|x| !is_attestation(&x.descriptor) && x.descriptor.platform.as_ref().is_some_and(|q| q.matches(p)))
            {
                return Err(MergeError::SamePlatform { first: x.source.clone(), second: e.source, platform: p.to_string() });
            }
        }
    }
    entries.push(e);
    Ok(())
}

/// Keeps the entries for one of `want` (entries without a platform stay, as in buildx), and the
/// attestations of the images kept.
fn filter_platforms(entries: &mut Vec<Entry>, want: &[Platform]) -> Result<(), MergeError> {
    let available =
        entries.iter().filter(|e| !is_attestation(&e.descriptor)).map(|e| describe(&e.descriptor)).collect::<Vec<_>>().join(", ");
    let keep_image = |d: &Descriptor| d.platform.as_ref().is_none_or(|p| want.iter().any(|w| w.matches(p)));
    let kept: Vec<Digest> = entries
        .iter()
        .filter(|e| !is_attestation(&e.descriptor) && keep_image(&e.descriptor))
        .map(|e| e.descriptor.digest.clone())
        .collect();
    if kept.is_empty() {
        return Err(MergeError::NoPlatformMatch {
            platforms: want.iter().map(Platform::to_string).collect::<Vec<_>>().join(","),
            available,
        });
    }
    entries.retain(|e| {
        if is_attestation(&e.descriptor) {
            e.descriptor.annotation(REFERENCE_DIGEST).is_some_and(|s| kept.iter().any(|k| k.to_string() == s))
        } else {
            kept.contains(&e.descriptor.digest)
        }
    });
    Ok(())
}

fn platform_key(d: &Descriptor) -> (bool, String, String, String, String) {
    let p = d.platform.clone().unwrap_or_default();
    (is_attestation(d), p.os, p.architecture, p.variant.unwrap_or_default(), p.os_version.unwrap_or_default())
}

fn apply_annotations(index: &mut ImageIndex, annotations: &[Annotation]) {
    for a in annotations {
        for t in &a.targets {
            match t {
                AnnotationTarget::Index => {
                    index.annotations.get_or_insert_with(BTreeMap::new).insert(a.key.clone(), a.value.clone());
                }
                AnnotationTarget::ManifestDescriptor(platform) => {
                    for d in &mut index.manifests {
                        let fits = match (platform, &d.platform) {
                            (None, _) => true,
                            (Some(want), Some(p)) => want.matches(p),
                            (Some(_), None) => false,
                        };
                        if fits {
                            d.annotations.get_or_insert_with(BTreeMap::new).insert(a.key.clone(), a.value.clone());
                        }
                    }
                }
            }
        }
    }
}

/// One tag the index was pushed under.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub tag: Reference,
    pub digest: Digest,
}

/// Brings every entry into each target repository, then points every tag at the index.
pub fn push(client: &Client, plan: &Plan, progress: &dyn Progress) -> Result<Vec<Pushed>, MergeError> {
    let mut repos: Vec<Repo> = Vec::new();
    for t in &plan.tags {
        let r = repo_of(t);
        if !repos.contains(&r) {
            repos.push(r);
        }
    }
    // Children first, into every target repository, so that no tag ever names an index whose
    // manifests its repository lacks.
    for target in &repos {
        for e in &plan.entries {
            bring_into(client, e, target, progress)?;
        }
    }
    let mut out = Vec::new();
    for t in &plan.tags {
        let repo = repo_of(t);
        let tag = t.tag().unwrap_or("latest");
        let got = client
            .put_manifest(&repo, tag, &plan.media_type, &plan.bytes)
            .map_err(|source| MergeError::Push { tag: t.to_string(), source: Box::new(source) })?;
        if got != plan.digest {
            return Err(MergeError::DigestChanged { tag: t.to_string(), got, expected: plan.digest.clone() });
        }
        out.push(Pushed { tag: t.clone(), digest: got });
    }
    Ok(out)
}

/// Makes sure `target` holds the entry's manifest (and so its blobs).
fn bring_into(client: &Client, e: &Entry, target: &Repo, progress: &dyn Progress) -> Result<(), MergeError> {
    if &e.repo == target {
        return Ok(()); // read from there a moment ago
    }
    let digest = e.descriptor.digest.to_string();
    let copy_err = |source| MergeError::Copy {
        entry: e.source.clone(),
        from: e.repo.to_string(),
        target: target.to_string(),
        source: Box::new(source),
    };
    if client.manifest_exists(target, &digest).map_err(copy_err)? {
        return Ok(());
    }
    let src = RegistrySource { client, repo: e.repo.clone() };
    let dst = RegistryDest { client, repo: target.clone() };
    let opts = CopyOptions { platform: None, parallel: client.options().parallel };
    // copy_image mounts each blob when both repositories share a registry and uploads it otherwise
    // (also when the registry declines the mount), then pushes the manifest by digest.
    copy_image(&src, &digest, &dst, None, &opts, progress).map_err(copy_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, platform: &str) -> Entry {
        let mut d = Descriptor::new(media::OCI_MANIFEST, Digest::sha256_of(name.as_bytes()), 10);
        d.platform = Some(Platform::parse(platform).unwrap());
        Entry { source: format!("src-{name}"), repo: Repo::new("127.0.0.1:5000", "x"), descriptor: d }
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
        // Attestations are unknown/unknown: several of them are no conflict.
        add_entry(&mut v, entry("att1", "unknown/unknown")).unwrap();
        add_entry(&mut v, entry("att2", "unknown/unknown")).unwrap();
        assert_eq!(v.len(), 5);
    }

    #[test]
    fn annotations_parse_as_buildx_parses_them_and_refuse_what_imagetools_create_refuses() {
        let a = Annotation::parse("index:org.opencontainers.image.title=a=b").unwrap();
        assert_eq!((a.targets, a.key.as_str(), a.value.as_str()), (vec![AnnotationTarget::Index], "org.opencontainers.image.title", "a=b"));
        let a = Annotation::parse("index,manifest-descriptor[linux/arm64]:k=v").unwrap();
        assert_eq!(
            a.targets,
            vec![AnnotationTarget::Index, AnnotationTarget::ManifestDescriptor(Some(Platform::parse("linux/arm64").unwrap()))]
        );
        for (input, says) in [
            ("k=v", "without a type"),
            ("manifest:k=v", "\"manifest\" annotations are not supported"),
            ("index-descriptor:k=v", "\"index-descriptor\" annotations are invalid while creating an image"),
            ("layer:k=v", "unknown annotation type \"layer\""),
            ("Index:k=v", "invalid annotation type \"Index\""),
            ("index:k", "no `=`"),
            ("manifest-descriptor[linux/]:k=v", "invalid platform"),
        ] {
            let e = Annotation::parse(input).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--annotation {input}: ")) && e.contains(says), "{input}: {e}");
        }
    }

    #[test]
    fn sources_are_digests_references_or_descriptors() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(SourceSpec::parse(&d.to_string()).unwrap(), SourceSpec::Digest(d.clone()));
        assert!(matches!(SourceSpec::parse("127.0.0.1:5000/app:1").unwrap(), SourceSpec::Reference(r) if r.tag() == Some("1")));
        let json = format!(
            "{{\"mediaType\":\"{}\",\"digest\":\"{d}\",\"size\":3,\"platform\":{{\"os\":\"linux\",\"architecture\":\"arm64\"}}}}\n",
            media::OCI_MANIFEST
        );
        let SourceSpec::Descriptor(sd) = SourceSpec::parse(&json).unwrap() else { panic!("descriptor expected") };
        assert_eq!((sd.digest, sd.size, sd.platform.unwrap().architecture), (d, Some(3), "arm64".to_string()));
        let e = SourceSpec::parse("sha256:abc").unwrap_err().to_string();
        assert!(e.starts_with("source `sha256:abc`: not a digest"), "{e}");
        let e = SourceSpec::parse("{\"digest\": 1}").unwrap_err().to_string();
        assert!(e.contains("descriptor"), "{e}");
    }

    #[test]
    fn manifest_descriptor_annotations_go_to_the_entries_of_their_platform() {
        let mut idx = ImageIndex::new_oci();
        idx.manifests = vec![entry("a", "linux/amd64").descriptor, entry("b", "linux/arm64").descriptor];
        let anns =
            ["index:i=1", "manifest-descriptor:all=2", "manifest-descriptor[linux/arm64]:arm=3"].map(|a| Annotation::parse(a).unwrap());
        apply_annotations(&mut idx, &anns);
        assert_eq!(idx.annotations.as_ref().unwrap()["i"], "1");
        assert_eq!(idx.manifests[0].annotations.as_ref().unwrap().len(), 1);
        assert_eq!(idx.manifests[1].annotation("all"), Some("2"));
        assert_eq!(idx.manifests[1].annotation("arm"), Some("3"));
    }

    #[test]
    fn a_platform_filter_keeps_matching_images_and_their_attestations() {
        let mut att = entry("att", "unknown/unknown");
        att.descriptor.annotations = Some(BTreeMap::from([(REFERENCE_DIGEST.to_string(), Digest::sha256_of(b"b").to_string())]));
        let mut v = vec![entry("a", "linux/amd64"), entry("b", "linux/arm64"), att];
        filter_platforms(&mut v, &[Platform::parse("linux/arm64").unwrap()]).unwrap();
        assert_eq!(v.iter().map(|e| e.source.as_str()).collect::<Vec<_>>(), ["src-b", "src-att"]);
        let e = filter_platforms(&mut v, &[Platform::parse("linux/s390x").unwrap()]).unwrap_err().to_string();
        assert!(e.contains("linux/s390x") && e.contains("linux/arm64"), "{e}");
    }

    #[test]
    fn targets_are_tags_and_deduplicated() {
        let t = parse_tags(&["127.0.0.1:5000/app".into(), "127.0.0.1:5000/app:latest".into(), "127.0.0.1:5000/app:1".into()]).unwrap();
        assert_eq!(t.len(), 2);
        let d = Digest::sha256_of(b"x");
        let err = parse_tags(&[format!("127.0.0.1:5000/app@{d}")]).unwrap_err().to_string();
        assert!(err.contains("drop the @digest"), "{err}");
    }
}
