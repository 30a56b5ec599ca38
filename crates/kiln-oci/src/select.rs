//! Which image of a tag serves a platform, and which platforms a tag has in the store.
//!
//! A tag names an image manifest or an index whose children may be absent (see the store's doc):
//! everything that runs or sends an image (FROM, `kiln run`, `kiln push`, `kiln copy`) goes through
//! here, so a platform that is not in the store is an error that says how to fetch it, and an image
//! for another platform is never used in its place.

use crate::manifest::{Descriptor, Manifest};
use crate::media;
use crate::platform::Platform;
use crate::store::{PlatformMiss, Store, StoreError};

/// Indexes nest rarely and never deeply; a bound keeps a hostile layout from looping.
const MAX_DEPTH: usize = 4;

/// One image a stored manifest stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformImage {
    /// The image manifest (for an index entry: the entry, with its platform).
    pub descriptor: Descriptor,
    /// From the index entry, or from the config of a lone image manifest; `None` when neither says.
    pub platform: Option<Platform>,
    /// Whether its manifest (and so its config and layers) is in the store.
    pub present: bool,
    /// A BuildKit attestation entry (platform `unknown/unknown`): it describes an image, it is not one.
    pub attestation: bool,
}

impl PlatformImage {
    /// `linux/arm64`, or the digest for an entry that names no platform.
    pub fn label(&self) -> String {
        match &self.platform {
            Some(p) if !self.attestation => p.to_string(),
            _ if self.attestation => format!("attestation {}", self.descriptor.digest.short()),
            _ => format!("unknown platform {}", self.descriptor.digest.short()),
        }
    }
}

fn is_attestation(p: Option<&Platform>) -> bool {
    p.is_some_and(|p| p.os == "unknown" || p.architecture == "unknown")
}

/// What to tell a user whose tag lacks `wanted`: pull it, unless the name is kiln's own namespace,
/// which no registry serves.
fn hint(name: &str, wanted: &str) -> String {
    if name.starts_with("kiln.local/") {
        format!("build or import it for {wanted}")
    } else {
        format!("kiln pull --platform {wanted} {name}")
    }
}

impl Store {
    /// The images `root` (a manifest in the store) stands for: itself, for an image manifest (its
    /// platform read from its config), or every image entry of an index, present or not.
    pub fn platform_images(&self, root: &Descriptor) -> Result<Vec<PlatformImage>, StoreError> {
        let raw = self.read_manifest(root)?;
        Ok(match raw.value {
            Manifest::Image(m) => {
                let platform = match self.read_config(&m.config.digest) {
                    Ok(c) if !c.value.os.is_empty() && !c.value.architecture.is_empty() => Some(c.value.platform()),
                    _ => None,
                };
                vec![PlatformImage { descriptor: root.clone(), platform, present: true, attestation: false }]
            }
            Manifest::Index(ix) => ix
                .manifests
                .into_iter()
                .filter(|d| media::is_image_manifest(&d.media_type) || media::is_index(&d.media_type))
                .map(|d| PlatformImage {
                    present: self.has_blob(&d.digest),
                    attestation: is_attestation(d.platform.as_ref()),
                    platform: d.platform.clone(),
                    descriptor: d,
                })
                .collect(),
        })
    }

    /// The image manifest of `root` (what the tag `name` names) for `platform`: `root` itself when it
    /// is an image for that platform (or one whose config names none), else the index's entry for it.
    /// Fails when the index lists the platform but its image was not fetched, when it does not list
    /// it, and when a lone image is for another platform, each time naming what the store has.
    pub fn select_platform(&self, name: &str, root: &Descriptor, platform: &Platform) -> Result<Descriptor, StoreError> {
        let mut desc = root.clone();
        for _ in 0..MAX_DEPTH {
            let raw = self.read_manifest(&desc)?;
            match raw.value {
                Manifest::Image(m) => {
                    let config = self.read_config(&m.config.digest)?.value;
                    let actual = config.platform();
                    if !config.os.is_empty() && !config.architecture.is_empty() && !platform.matches(&actual) {
                        let wanted = platform.to_string();
                        return Err(StoreError::PlatformAbsent(Box::new(PlatformMiss {
                            reference: name.to_string(),
                            hint: hint(name, &wanted),
                            wanted: vec![wanted],
                            have: vec![actual.to_string()],
                        })));
                    }
                    if desc.media_type.is_empty() {
                        desc.media_type = media::OCI_MANIFEST.to_string();
                    }
                    if desc.platform.is_none() && !config.os.is_empty() {
                        desc.platform = Some(actual);
                    }
                    return Ok(desc);
                }
                Manifest::Index(ix) => {
                    let matching: Vec<&Descriptor> =
                        ix.manifests.iter().filter(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p))).collect();
                    // Of two entries for one platform, one that is here beats one that is not.
                    let pick = matching.iter().find(|d| self.has_blob(&d.digest)).or(matching.first());
                    let Some(child) = pick else {
                        let listed = self.platform_images(&desc)?;
                        return Err(StoreError::PlatformUnlisted(Box::new(PlatformMiss {
                            reference: name.to_string(),
                            wanted: vec![platform.to_string()],
                            have: listed.iter().filter(|i| !i.attestation).map(PlatformImage::label).collect(),
                            hint: "build or pull it for one of those platforms".to_string(),
                        })));
                    };
                    if !self.has_blob(&child.digest) {
                        let images = self.platform_images(&desc)?;
                        let wanted = platform.to_string();
                        return Err(StoreError::PlatformAbsent(Box::new(PlatformMiss {
                            reference: name.to_string(),
                            hint: hint(name, &wanted),
                            wanted: vec![wanted],
                            have: images.iter().filter(|i| i.present && !i.attestation).map(PlatformImage::label).collect(),
                        })));
                    }
                    desc = (*child).clone();
                }
            }
        }
        Err(StoreError::Manifest {
            digest: root.digest.clone(),
            source: crate::manifest::ManifestError::Unsupported(format!("indexes nested more than {MAX_DEPTH} deep")),
        })
    }

    /// Checks that every image of `root` (the tag `name`) is in the store, as sending the whole of it
    /// (`kiln push`, `kiln copy` without `--platform`) needs; returns them.
    pub fn require_all_platforms(&self, name: &str, root: &Descriptor) -> Result<Vec<PlatformImage>, StoreError> {
        let images = self.platform_images(root)?;
        let missing: Vec<&PlatformImage> = images.iter().filter(|i| !i.present).collect();
        if missing.is_empty() {
            return Ok(images);
        }
        // Attestations come along with the platform they describe; name the platforms when any are
        // missing, and the attestations only when nothing else is.
        let mut wanted: Vec<String> = missing.iter().filter(|i| !i.attestation).map(|i| i.label()).collect();
        let hint = if wanted.is_empty() {
            wanted = missing.iter().map(|i| i.label()).collect();
            if name.starts_with("kiln.local/") {
                "build it again".to_string()
            } else {
                format!("kiln pull --all-platforms {name}")
            }
        } else {
            hint(name, &wanted.join(","))
        };
        Err(StoreError::PlatformAbsent(Box::new(PlatformMiss {
            reference: name.to_string(),
            wanted,
            have: images.iter().filter(|i| i.present && !i.attestation).map(PlatformImage::label).collect(),
            hint,
        })))
    }
}
