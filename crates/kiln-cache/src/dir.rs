//! `type=local` cache directories: the registry format, stored in an OCI image layout.
//!
//! A cache directory is an OCI layout (`oci-layout`, `index.json`, `blobs/sha256/…`) whose
//! `index.json` tags the cache manifest as [`DIR_TAG`]: the same manifest, config and layers a cache
//! ref holds, so a directory can be copied to a registry with any OCI tool (`skopeo copy
//! oci:DIR:kiln-cache docker://…`) and CI systems that cache directories (actions/cache) carry it
//! between runs. Every write is atomic (the layout store writes temp files and renames them).
//! Unlike a registry ref, a directory belongs to one machine, so its export merges without the
//! concurrent-writer checks, and prunes nothing (the CI system's own cache expiry does that).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_oci::{BlobInfo, Digest, Manifest, Store};

use kiln_registry::Client;

use crate::backend::{Backend, CacheSink, CacheSource, ExportReport, ExportTarget, ExportWarning, Opened, SinkSpec, SourceSpec};
use crate::format::{check_manifest, decode, descendants_of, encode, Entry, MAX_CONFIG};
use crate::local::{CacheError, Record};
use crate::merge::{merge, PruneRules};
use crate::registry::{ExportSummary, LayerSources, RegistryCacheError};
use crate::spec::{CacheFrom, CacheMode, CacheTo, Options, SpecError};

/// The `org.opencontainers.image.ref.name` of the cache manifest in a cache directory.
pub const DIR_TAG: &str = "kiln-cache";

/// `type=local`: a cache directory (`--cache-from type=local,src=DIR`,
/// `--cache-to type=local,dest=DIR[,mode=…]`).
#[derive(Debug, Clone, Copy)]
pub struct DirBackend;

impl Backend for DirBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    // src= and dest= differ between the two flags, hence no single example.
    fn usage(&self) -> &'static str {
        "type=local,…"
    }

    fn source(&self, options: &Options<'_>) -> Result<CacheFrom, SpecError> {
        options.accept(&["src"])?;
        Ok(DirImport { src: PathBuf::from(options.require("src", "DIR")?) }.into())
    }

    fn sink(&self, options: &Options<'_>, mode: CacheMode) -> Result<CacheTo, SpecError> {
        options.accept(&["dest", "mode"])?;
        Ok(DirExport { dest: PathBuf::from(options.require("dest", "DIR")?), mode }.into())
    }
}

/// A `--cache-from type=local` source: the directory to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirImport {
    pub src: PathBuf,
}

impl SourceSpec for DirImport {
    fn open<'c>(&self, _client: Option<&'c Client>) -> Opened<Box<dyn CacheSource + 'c>> {
        DirCache::open(&self.src).map(|c| Box::new(c) as Box<dyn CacheSource + 'c>)
    }
}

/// A `--cache-to type=local` destination: the directory to write, and what to export to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirExport {
    pub dest: PathBuf,
    pub mode: CacheMode,
}

impl SinkSpec for DirExport {
    fn open<'c>(&self, _client: Option<&'c Client>) -> Opened<Box<dyn CacheSink + 'c>> {
        Opened::Opened(Box::new(DirSink::new(&self.dest, self.mode)))
    }
}

/// A cache directory opened for import.
#[derive(Debug)]
pub struct DirCache {
    dir: PathBuf,
    layout: Store,
    entries: HashMap<Digest, Entry>,
}

fn store_err(dir: &Path, context: impl Into<String>) -> impl FnOnce(kiln_oci::StoreError) -> RegistryCacheError {
    let reference = dir.display().to_string();
    let context = context.into();
    move |source| RegistryCacheError::Store { reference, context, source }
}

/// A directory's records and the layer digests its manifest lists.
type DirContent = (Vec<Entry>, BTreeSet<Digest>);

/// Reads the cache manifest of the layout, `None` when it has none.
fn read_dir_entries(dir: &Path, layout: &Store) -> Result<Option<DirContent>, RegistryCacheError> {
    let shown = dir.display().to_string();
    let index = layout.read_index().map_err(store_err(dir, "reading index.json"))?;
    let Some(desc) = index.manifests.iter().find(|d| d.annotation("org.opencontainers.image.ref.name") == Some(DIR_TAG)) else {
        return Ok(None);
    };
    let raw = layout.read_manifest(desc).map_err(store_err(dir, "reading the cache manifest"))?;
    let image = check_manifest(&raw.value).map_err(|source| RegistryCacheError::Format { reference: shown.clone(), source })?;
    if image.config.size > MAX_CONFIG {
        return Err(RegistryCacheError::ConfigTooLarge { reference: shown, size: image.config.size });
    }
    let config = layout.read_blob(&image.config.digest).map_err(store_err(dir, "reading the cache config"))?;
    let (entries, dropped) = decode(image, &config).map_err(|source| RegistryCacheError::Format { reference: shown.clone(), source })?;
    if dropped > 0 {
        tracing::warn!(dir = %shown, dropped, "cache records that contradict their manifest were ignored");
    }
    Ok(Some((entries, image.layers.iter().map(|d| d.digest.clone()).collect())))
}

impl DirCache {
    /// Reads the directory's records (never its layers). Creates nothing.
    pub fn open(src: &Path) -> Opened<DirCache> {
        if !src.join("index.json").is_file() {
            return Opened::Missing(format!(
                "cache directory {} has no cache yet: building without it; a --cache-to type=local export will create it",
                src.display()
            ));
        }
        let result = Store::open_layout(src)
            .map_err(store_err(src, "opening the layout"))
            .and_then(|layout| read_dir_entries(src, &layout).map(|e| (layout, e)));
        match result {
            Ok((layout, Some((entries, _)))) => Opened::Opened(DirCache {
                dir: src.to_path_buf(),
                layout,
                entries: entries.into_iter().map(|e| (e.key().clone(), e)).collect(),
            }),
            Ok((_, None)) => Opened::Missing(format!("cache directory {} holds no {DIR_TAG} manifest: building without it", src.display())),
            Err(error) => Opened::Unusable(format!("cache directory {} not used: {error}", src.display())),
        }
    }

    pub fn lookup(&self, key: &Digest) -> Option<Record> {
        self.entries.get(key).map(|e| e.record.clone())
    }

    /// Every record, sorted by key.
    pub fn records(&self) -> Vec<Record> {
        let mut v: Vec<Record> = self.entries.values().map(|e| e.record.clone()).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Copies `record`'s layer into `store` (verified, atomic), unless it is there already.
    pub fn fetch_layer(&self, record: &Record, store: &Store) -> Result<BlobInfo, RegistryCacheError> {
        let Some(layer) = &record.layer else {
            return Err(RegistryCacheError::NoLayer { reference: self.dir.display().to_string(), key: record.key.clone() });
        };
        let d = &layer.descriptor.digest;
        let f = self.layout.open_blob(d).map_err(store_err(&self.dir, format!("opening layer {d}")))?;
        store.put_blob_stream(f, Some(d)).map_err(store_err(&self.dir, format!("copying layer {d}")))
    }
}

impl CacheSource for DirCache {
    fn lookup(&self, key: &Digest) -> Option<Record> {
        DirCache::lookup(self, key)
    }

    fn records(&self) -> Vec<Record> {
        DirCache::records(self)
    }

    fn fetch_layer(&self, record: &Record, store: &Store) -> Result<BlobInfo, CacheError> {
        Ok(DirCache::fetch_layer(self, record, store)?)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

/// A `--cache-to type=local,dest=DIR` destination as a [`CacheSink`]: [`export_dir`]. A directory
/// has no `ignore-error`: a failed export is always a warning.
#[derive(Debug, Clone)]
pub struct DirSink {
    dest: PathBuf,
    mode: CacheMode,
}

impl DirSink {
    pub fn new(dest: &Path, mode: CacheMode) -> DirSink {
        DirSink { dest: dest.to_path_buf(), mode }
    }
}

impl CacheSink for DirSink {
    fn mode(&self) -> CacheMode {
        self.mode
    }

    fn export(&self, records: &[Record], store: &Store, _sources: &LayerSources) -> Result<ExportReport, CacheError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(match export_dir(&self.dest, records, store, now) {
            Ok(summary) => ExportReport::Exported(summary),
            Err(e) => ExportReport::Warned(ExportWarning {
                target: ExportTarget::Dest(self.dest.display().to_string()),
                warning: format!("cache export to {} failed: {e}", self.dest.display()),
            }),
        })
    }

    fn describe(&self) -> String {
        self.dest.display().to_string()
    }
}

/// Exports `records` into the cache directory `dest` (created if needed), merging with what it holds.
/// Layers come from `store`; a record whose layer the store lacks is left out with those built on it.
pub fn export_dir(dest: &Path, records: &[Record], store: &Store, now: u64) -> Result<ExportSummary, RegistryCacheError> {
    let records = &crate::registry::gzip_records(store, records, &dest.display().to_string())?;
    let layout = Store::open_layout(dest).map_err(store_err(dest, "creating the layout"))?;
    let (existing, present) = read_dir_entries(dest, &layout)?.unwrap_or_default();
    let incoming: Vec<Entry> = records.iter().cloned().map(|r| Entry::exported(r, now)).collect();
    let missing: BTreeSet<Digest> = incoming
        .iter()
        .filter(|e| {
            e.record.layer.as_ref().is_some_and(|l| {
                let d = &l.descriptor.digest;
                !present.contains(d) && !layout.has_blob(d) && !store.has_blob(d)
            })
        })
        .map(|e| e.key().clone())
        .collect();
    let mut unusable = descendants_of(&incoming, &missing);
    unusable.extend(missing);
    let usable: Vec<Entry> = incoming.iter().filter(|e| !unusable.contains(e.key())).cloned().collect();
    let merged = merge(existing, usable, &PruneRules::default(), now);
    let encoded = encode(&merged.entries);
    let (mut uploaded, mut existed, mut bytes) = (0, 0, 0);
    for d in &encoded.layers {
        if layout.has_blob(&d.digest) {
            existed += 1;
            continue;
        }
        let f = store.open_blob(&d.digest).map_err(store_err(dest, format!("reading layer {}", d.digest)))?;
        layout.put_blob_stream(f, Some(&d.digest)).map_err(store_err(dest, format!("writing layer {}", d.digest)))?;
        uploaded += 1;
        bytes += d.size;
    }
    layout.put_blob_bytes(&encoded.config).map_err(store_err(dest, "writing the cache config"))?;
    let manifest = Manifest::parse(&encoded.manifest, None)
        .map_err(|e| RegistryCacheError::BadManifest { reference: dest.display().to_string(), message: e.to_string() })?;
    let desc = layout.put_manifest(&manifest).map_err(store_err(dest, "writing the cache manifest"))?;
    layout.tag_name(DIR_TAG, &desc).map_err(store_err(dest, "tagging the cache manifest"))?;
    Ok(ExportSummary {
        reference: dest.display().to_string(),
        digest: Some(desc.digest),
        exported: incoming.len(),
        unavailable: unusable.len(),
        records: merged.entries.len(),
        pruned_ttl: 0,
        pruned_size: 0,
        layers_uploaded: uploaded,
        layers_mounted: 0,
        layers_present: existed,
        bytes_uploaded: bytes,
        layer_bytes: merged.layer_bytes,
        attempts: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::key;
    use crate::local::LayerRecord;
    use kiln_oci::{media, Descriptor};
    use std::collections::BTreeMap;

    fn layered(store: &Store, name: &str, parent: Option<&Record>) -> Record {
        let info = store.put_blob_bytes(format!("layer of {name}").repeat(50).as_bytes()).unwrap();
        let layer = LayerRecord {
            descriptor: Descriptor::new(media::OCI_LAYER_GZIP, info.digest, info.size),
            diff_id: key(&format!("tar {name}")),
        };
        let inputs = BTreeMap::from([("platform".to_string(), "linux/amd64".to_string())]);
        Record::new(key(name), parent.map(|p| p.key.clone()), format!("RUN {name}"), inputs, Some(layer))
    }

    #[test]
    fn export_then_import_through_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let a = layered(&store, "a", None);
        let b = layered(&store, "b", Some(&a));
        let dest = tmp.path().join("cache");
        assert!(matches!(DirCache::open(&dest), Opened::Missing(_)));
        assert!(!dest.exists(), "opening for import must not create the directory");

        let s = export_dir(&dest, &[a.clone(), b.clone()], &store, 100).unwrap();
        assert_eq!((s.records, s.layers_uploaded, s.unavailable), (2, 2, 0));
        // A second build of another branch adds to the directory.
        let c = layered(&store, "c", Some(&a));
        let s = export_dir(&dest, std::slice::from_ref(&c), &store, 200).unwrap();
        assert_eq!((s.records, s.layers_uploaded), (3, 1));

        let cache = DirCache::open(&dest).cache().expect("a cache");
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.lookup(&b.key), Some(b.clone()));
        let fresh = Store::open(&tmp.path().join("fresh")).unwrap();
        let info = cache.fetch_layer(&c, &fresh).unwrap();
        assert_eq!(fresh.read_blob(&info.digest).unwrap(), store.read_blob(&info.digest).unwrap());
        assert!(!fresh.has_blob(&a.layer.as_ref().unwrap().descriptor.digest), "only the asked-for layer");

        // A record whose layer is nowhere is left out, with what is built on it.
        let empty = Store::open(&tmp.path().join("empty")).unwrap();
        let orphan_base = Record::new(
            key("x"),
            None,
            "RUN x".into(),
            BTreeMap::new(),
            c.layer.clone().map(|mut l| {
                l.descriptor.digest = key("nowhere");
                l
            }),
        );
        let orphan_top = Record::new(key("y"), Some(key("x")), "ENV y".into(), BTreeMap::new(), None);
        let s = export_dir(&dest, &[orphan_base, orphan_top], &empty, 300).unwrap();
        assert_eq!((s.unavailable, s.records), (2, 3));
    }

    #[test]
    fn a_directory_that_is_not_a_cache_is_unusable() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("index.json"), b"{not json").unwrap();
        let out = DirCache::open(tmp.path());
        assert!(matches!(out, Opened::Unusable(_)), "{out:?}");
        assert!(out.warning().unwrap_or_default().contains(&tmp.path().display().to_string()));
    }
}
