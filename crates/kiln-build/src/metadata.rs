//! What a build leaves behind for people and tools: the `--metadata-file` JSON (buildx's keys plus
//! kiln's own) and `<root>/cache/last-build.json`, which `kiln cache explain` reads back.
//!
//! Both are typed here, once, so the writer (the build) and the reader (`cache explain`) cannot drift
//! apart. Field names are the file formats' and never change: tools and CI steps parse them.

use std::io;
use std::path::{Path, PathBuf};

use kiln_cache::{ExportReport, ResolvedPolicy};
use kiln_oci::Descriptor;
use serde::{Deserialize, Serialize};

use crate::{CacheStatus, StepReport};

/// The `--metadata-file` document. Fields are declared in the order of their names, the order the
/// file has always had.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    /// The config's digest, for a single-platform build (`null` for an index).
    #[serde(rename = "containerimage.config.digest")]
    pub config_digest: Option<String>,
    /// The root manifest (image or index) in the form that leaves the machine.
    #[serde(rename = "containerimage.descriptor")]
    pub descriptor: Descriptor,
    /// `descriptor`'s digest: what buildx reports, and what a push stores.
    #[serde(rename = "containerimage.digest")]
    pub digest: String,
    /// The tags, comma-separated.
    #[serde(rename = "image.name")]
    pub image_name: String,
    /// One entry per `--cache-to`.
    #[serde(rename = "kiln.cache-exports")]
    pub cache_exports: Vec<ExportReport>,
    /// What changed, for each step that missed a cache that had something close.
    #[serde(rename = "kiln.cache-misses")]
    pub cache_misses: Vec<CacheMiss>,
    #[serde(rename = "kiln.cache-policy")]
    pub cache_policy: ResolvedPolicy,
    /// Each platform's image, in the order of `platforms`.
    #[serde(rename = "kiln.images")]
    pub images: Vec<ImageMetadata>,
    #[serde(rename = "kiln.platforms")]
    pub platforms: Vec<String>,
    /// The digest the registry stored, when the image was pushed.
    #[serde(rename = "kiln.pushed")]
    pub pushed: Option<String>,
    #[serde(rename = "kiln.steps")]
    pub steps: Vec<StepReport>,
    /// The root manifest as the local store keeps it (plain-tar layers).
    #[serde(rename = "kiln.store.digest")]
    pub store_digest: String,
}

/// One platform's image in [`Metadata::images`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMetadata {
    #[serde(rename = "config.digest")]
    pub config_digest: String,
    /// The image manifest's digest, in the exported form.
    pub digest: String,
    pub platform: String,
}

/// A step that missed the cache, and what changed since the closest record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMiss {
    pub changed: String,
    pub step: String,
}

impl Metadata {
    /// Writes the file atomically and durably. Through a `serde_json::Value`, whose maps are sorted,
    /// so that nested objects (the descriptor, the steps) keep the key order the file has always had.
    pub fn write(&self, path: &Path) -> Result<(), MetadataError> {
        let err = |source| MetadataError { path: path.to_path_buf(), source };
        let value = serde_json::to_value(self).map_err(|e| err(e.into()))?;
        let bytes = serde_json::to_vec_pretty(&value).map_err(|e| err(e.into()))?;
        kiln_oci::atomic::write(path, &bytes, kiln_oci::atomic::Durability::Synced).map_err(err)
    }
}

/// The metadata file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("--metadata-file {}: {source}", path.display())]
pub struct MetadataError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// `<root>/cache/last-build.json`: the last build's digest, steps and misses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastBuild {
    pub digest: String,
    #[serde(default)]
    pub misses: Vec<CacheMiss>,
    #[serde(default)]
    pub steps: Vec<StepReport>,
}

/// What `cache explain` says of a missed step it has no record close to.
pub const NOTHING_CLOSE: &str = "an earlier step changed, or nothing like it was cached";

impl LastBuild {
    /// Where it lives under a kiln root.
    pub fn path(root: &Path) -> PathBuf {
        root.join("cache").join("last-build.json")
    }

    /// Best effort and unsynced: the file is a convenience, a lost one only means `cache explain` has
    /// less to say (readers still never see a half-written file).
    pub fn save(&self, root: &Path) {
        let path = Self::path(root);
        if let (Ok(()), Ok(bytes)) =
            (std::fs::create_dir_all(root.join("cache")), serde_json::to_value(self).and_then(|v| serde_json::to_vec_pretty(&v)))
        {
            let _ = kiln_oci::atomic::write(&path, &bytes, kiln_oci::atomic::Durability::Unsynced);
        }
    }

    /// Reads the last build's record.
    pub fn load(root: &Path) -> Result<LastBuild, LastBuildError> {
        let path = Self::path(root);
        let text = std::fs::read_to_string(&path).map_err(|source| LastBuildError::Missing { path: path.clone(), source })?;
        serde_json::from_str(&text).map_err(|source| LastBuildError::Invalid { path, source })
    }

    /// Each step that missed, with what changed: the steps that ran, and config-only steps (which
    /// have no cache status) that were explained because they changed first.
    pub fn explain(&self) -> Vec<(&str, &str)> {
        let why = |s: &StepReport| self.misses.iter().find(|m| m.step == s.instruction).map(|m| m.changed.as_str());
        self.steps
            .iter()
            .filter(|s| s.cache == CacheStatus::Miss || (s.cache == CacheStatus::None && why(s).is_some()))
            .map(|s| (s.instruction.as_str(), why(s).unwrap_or(NOTHING_CLOSE)))
            .collect()
    }
}

/// `last-build.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LastBuildError {
    #[error("no build recorded yet ({}): {source}", path.display())]
    Missing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(instruction: &str, cache: CacheStatus) -> StepReport {
        StepReport { stage: "0".into(), platform: "linux/amd64".into(), instruction: instruction.into(), cache, seconds: 0.5 }
    }

    #[test]
    fn last_build_round_trips_and_explains_what_missed() {
        let dir = tempfile::tempdir().unwrap();
        let lb = LastBuild {
            digest: "sha256:00".into(),
            misses: vec![
                CacheMiss { step: "RUN b".into(), changed: "env:X changed".into() },
                CacheMiss { step: "ENV X=2".into(), changed: "value changed".into() },
            ],
            steps: vec![
                step("RUN a", CacheStatus::HitLocal),
                step("ENV X=2", CacheStatus::None),
                step("ENV Y=1", CacheStatus::None),
                step("RUN b", CacheStatus::Miss),
                step("RUN c", CacheStatus::Miss),
            ],
        };
        lb.save(dir.path());
        let text = std::fs::read_to_string(LastBuild::path(dir.path())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["steps"][3]["cache"], "miss");
        assert_eq!(v["misses"][0]["changed"], "env:X changed");
        let back = LastBuild::load(dir.path()).unwrap();
        assert_eq!(back.explain(), vec![("ENV X=2", "value changed"), ("RUN b", "env:X changed"), ("RUN c", NOTHING_CLOSE)]);
    }

    #[test]
    fn metadata_file_keys_are_buildx_and_kiln_names_in_sorted_order() {
        let digest = kiln_oci::Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let md = Metadata {
            config_digest: None,
            descriptor: Descriptor::new(kiln_oci::media::OCI_MANIFEST, digest.clone(), 7),
            digest: digest.to_string(),
            image_name: "a:1,b:2".into(),
            cache_exports: Vec::new(),
            cache_misses: vec![CacheMiss { step: "RUN b".into(), changed: "file:x changed".into() }],
            cache_policy: ResolvedPolicy { policy: kiln_cache::CachePolicy::ReadWrite, provider: None, reason: "given".into() },
            images: vec![ImageMetadata { config_digest: "c".into(), digest: "d".into(), platform: "linux/amd64".into() }],
            platforms: vec!["linux/amd64".into()],
            pushed: None,
            steps: vec![step("RUN b", CacheStatus::Miss)],
            store_digest: digest.to_string(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("md.json");
        md.write(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "containerimage.config.digest",
                "containerimage.descriptor",
                "containerimage.digest",
                "image.name",
                "kiln.cache-exports",
                "kiln.cache-misses",
                "kiln.cache-policy",
                "kiln.images",
                "kiln.platforms",
                "kiln.pushed",
                "kiln.steps",
                "kiln.store.digest",
            ]
        );
        assert!(v["containerimage.config.digest"].is_null() && v["kiln.pushed"].is_null());
        assert_eq!(v["kiln.images"][0]["config.digest"], "c");
        assert_eq!(v["kiln.cache-misses"][0], serde_json::json!({"step": "RUN b", "changed": "file:x changed"}));
        assert_eq!(v["kiln.steps"][0]["cache"], "miss");
        assert_eq!(v["containerimage.descriptor"]["digest"], digest.to_string());
    }

    #[test]
    fn a_missing_last_build_says_no_build_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let e = LastBuild::load(dir.path()).unwrap_err();
        assert!(e.to_string().starts_with("no build recorded yet ("), "{e}");
    }
}
