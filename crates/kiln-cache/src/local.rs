//! The local cache directory, and the crate's error type.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_oci::{BlobInfo, Descriptor, Digest, Store};
use serde::{Deserialize, Serialize};

use crate::backend::CacheSource;
use crate::registry::RegistryCacheError;

/// Cache failures: the local cache's (each names the path involved) and, through
/// [`crate::CacheSource`] and [`crate::CacheSink`], every other store's.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache: cannot encode record {key}: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A registry ref or a cache directory failed; the message names it.
    #[error(transparent)]
    Store(#[from] RegistryCacheError),
    /// The GitHub Actions cache failed; the message names the scope or the entry.
    #[error(transparent)]
    Gha(#[from] crate::gha::GhaError),
    #[error("cache: record {key} has no layer to fetch")]
    NoLayer { key: Digest },
    #[error("cache: layer {digest} of record {key} is no longer in the local store; run the build again to rebuild it")]
    LayerGone { key: Digest, digest: Digest },
    #[error("cache: cannot copy layer {digest} into the store: {source}")]
    CopyLayer {
        digest: Digest,
        #[source]
        source: kiln_oci::StoreError,
    },
}

/// The layer a step added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The compressed blob, as it appears in a manifest.
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar (the image config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
}

/// What one step produced, under its cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: Digest,
    /// The key of the step this one builds on (`None` for a base image).
    pub parent: Option<Digest>,
    /// The instruction as expanded, e.g. `RUN make`.
    pub instruction: String,
    /// Named inputs that went into the key ([`crate::Input`] names: `arg:NAME`, `env:NAME`,
    /// `src:N:PATH`, `platform`, …) with the value or digest used; `kiln cache explain` diffs these
    /// against the closest record.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// The layer the step added; `None` when it only changed the config.
    pub layer: Option<LayerRecord>,
    /// Unix seconds when the record was written (for pruning by age).
    pub created: u64,
}

impl Record {
    /// A record stamped with the current time.
    pub fn new(
        key: Digest,
        parent: Option<Digest>,
        instruction: String,
        inputs: BTreeMap<String, String>,
        layer: Option<LayerRecord>,
    ) -> Record {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Record { key, parent, instruction, inputs, layer, created }
    }
}

/// Records on disk under `<root>/cache/records`.
#[derive(Debug, Clone)]
pub struct LocalCache {
    dir: PathBuf,
}

impl LocalCache {
    /// The local cache of the kiln root `root` (created lazily on first write).
    pub fn open(root: &Path) -> LocalCache {
        LocalCache { dir: root.join("cache").join("records") }
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The record for `key`, if one was written completely. A record that cannot be read or parsed
    /// is treated as a miss (and logged): the cache never fails a build.
    pub fn get(&self, key: &Digest) -> Option<Record> {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable cache record; treated as a miss");
                return None;
            }
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if &r.key == key => Some(r),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "corrupt cache record; treated as a miss");
                None
            }
        }
    }

    /// Writes `record` atomically: a reader sees the old record, the new one, or none. Not fsynced:
    /// after a crash a record may be empty or torn, which reads as a miss (see `get`), and a build of
    /// many cached steps does not wait on the disk once per step.
    pub fn put(&self, record: &Record) -> Result<(), CacheError> {
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { action, path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| CacheError::Encode { key: record.key.to_string(), source })?;
        let path = self.path(&record.key);
        kiln_oci::atomic::write(&path, &bytes, kiln_oci::atomic::Durability::Unsynced).map_err(io_err("write", &path))
    }

    /// Every complete record (unreadable ones are skipped), for `cache ls`, explain and pruning.
    pub fn records(&self) -> Vec<Record> {
        let Ok(rd) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out: Vec<Record> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Removes records whose layer blob is no longer in `store` (after `kiln prune`); returns how many.
    pub fn prune_missing_layers(&self, store: &kiln_oci::Store) -> usize {
        let mut n = 0;
        for r in self.records() {
            if r.layer.as_ref().is_some_and(|l| !store.has_blob(&l.descriptor.digest)) && fs::remove_file(self.path(&r.key)).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// The layer digests the records refer to: roots the store's garbage collector must keep.
    pub fn layer_digests(&self) -> Vec<Digest> {
        self.records().into_iter().filter_map(|r| r.layer.map(|l| l.descriptor.digest)).collect()
    }
}

/// The local cache as a [`CacheSource`]: the first place a build looks. A record is only served
/// while its layer is still in `store` (after `kiln prune` it is a miss, and the next source or
/// the step itself provides it).
#[derive(Debug, Clone)]
pub struct LocalSource {
    cache: LocalCache,
    store: Store,
}

impl LocalCache {
    /// This cache as a source whose layers live in `store`.
    pub fn source(&self, store: &Store) -> LocalSource {
        LocalSource { cache: self.clone(), store: store.clone() }
    }
}

impl CacheSource for LocalSource {
    fn lookup(&self, key: &Digest) -> Option<Record> {
        self.cache.get(key).filter(|r| r.layer.as_ref().is_none_or(|l| self.store.has_blob(&l.descriptor.digest)))
    }

    fn records(&self) -> Vec<Record> {
        self.cache.records()
    }

    fn fetch_layer(&self, record: &Record, store: &Store) -> Result<BlobInfo, CacheError> {
        let Some(layer) = &record.layer else { return Err(CacheError::NoLayer { key: record.key.clone() }) };
        let digest = &layer.descriptor.digest;
        let gone = || CacheError::LayerGone { key: record.key.clone(), digest: digest.clone() };
        if store.has_blob(digest) {
            let size = store.blob_size(digest).map_err(|_| gone())?;
            return Ok(BlobInfo { digest: digest.clone(), size });
        }
        let f = self.store.open_blob(digest).map_err(|_| gone())?;
        store.put_blob_stream(f, Some(digest)).map_err(|source| CacheError::CopyLayer { digest: digest.clone(), source })
    }

    fn layers_in_store(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("the local cache ({})", self.cache.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[test]
    fn put_then_get_round_trips_and_misses_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path());
        assert!(cache.get(&key("a")).is_none());
        let mut inputs = BTreeMap::new();
        inputs.insert("arg:X".to_string(), "1".to_string());
        let layer = LayerRecord { descriptor: Descriptor::new(kiln_oci::media::OCI_LAYER_GZIP, key("blob"), 42), diff_id: key("tar") };
        let rec = Record::new(key("a"), Some(key("p")), "RUN true".into(), inputs, Some(layer));
        cache.put(&rec).unwrap();
        assert_eq!(cache.get(&key("a")), Some(rec.clone()));
        assert_eq!(cache.records(), vec![rec]);
        assert_eq!(cache.layer_digests(), vec![key("blob")]);
    }

    #[test]
    fn a_torn_record_is_a_miss_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::open(dir.path());
        let path = cache.path(&key("b"));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"{\"key\": \"sha256:").unwrap();
        assert!(cache.get(&key("b")).is_none());
        assert!(cache.records().is_empty());
    }
}
