//! The interface every cache store implements, so that a build never needs to know which stores it
//! was given.
//!
//! A build reads records from a list of [`CacheSource`]s, in order: the local cache under the kiln
//! root first ([`crate::LocalSource`]), then each `--cache-from` ([`crate::RegistryCache`],
//! [`crate::DirCache`]). It writes what it used to each `--cache-to`, a [`CacheSink`]
//! ([`crate::RegistrySink`], [`crate::DirSink`]). Opening either side gives one [`Opened`] outcome:
//! the store, or one warning line saying why the build goes on without it (cache is an
//! accelerator, never a reason to fail). An export gives an [`ExportReport`], which is what
//! `--metadata-file` records under `kiln.cache-exports`.
//!
//! Before a build, a `--cache-from`/`--cache-to` value is parsed by the [`Backend`] its `type=`
//! names into a typed spec (a [`SourceSpec`] or a [`SinkSpec`], held by [`crate::CacheFrom`] and
//! [`crate::CacheTo`]); at build time the spec opens the store. Adding a store is one module that
//! implements these traits, plus its line in the list of backends in [`crate::spec`] (see the
//! crate doc for a walk-through).

use std::any::Any;
use std::fmt;

use kiln_oci::{BlobInfo, Digest, Store};
use kiln_registry::Client;
use serde::Serialize;

use crate::local::{CacheError, Record};
use crate::registry::{ExportSummary, LayerSources};
use crate::spec::{CacheFrom, CacheMode, CacheTo, Options, SpecError};

/// One kind of cache store, as the `type=` of `--cache-from`/`--cache-to` names it: it reads its
/// own options and gives the typed spec to open at build time. Parsing does no I/O, so a bad flag
/// fails before anything is built.
pub trait Backend: Sync {
    /// The `type=` value it answers to (`registry`, `local`).
    fn name(&self) -> &'static str;

    /// How it is used, for the message when a value gives no `type=` (`type=registry,ref=REF`).
    fn usage(&self) -> &'static str;

    /// A `--cache-from` of this type. Must refuse every key it does not take
    /// ([`Options::accept`]): a mistyped option that is ignored is a cache that never warms.
    fn source(&self, options: &Options<'_>) -> Result<CacheFrom, SpecError>;

    /// A `--cache-to` of this type; `mode=` (common to every sink) is already read. Refuses
    /// unknown keys as [`Backend::source`] does (list `mode` among the accepted ones).
    fn sink(&self, options: &Options<'_>, mode: CacheMode) -> Result<CacheTo, SpecError>;
}

/// A parsed `--cache-from`: what it takes to open the source when the build starts.
///
/// `Any` lets a caller that knows the backend read its typed options back
/// ([`crate::CacheFrom::get`]).
pub trait SourceSpec: Any + fmt::Debug + Send + Sync {
    /// Opens the source: reads its records (never its layers). Never fails: a store that is not
    /// there or cannot be used is one warning. `client` is what registry-backed stores speak through.
    fn open<'c>(&self, client: Option<&'c Client>) -> Opened<Box<dyn CacheSource + 'c>>;
}

/// A parsed `--cache-to`: what it takes to open the sink when the build exports.
pub trait SinkSpec: Any + fmt::Debug + Send + Sync {
    /// The destination, ready to export to. Nothing is read or written until
    /// [`CacheSink::export`].
    fn open<'c>(&self, client: Option<&'c Client>) -> Opened<Box<dyn CacheSink + 'c>>;
}

/// Where a build looks up records and, for a hit it needs, fetches the layer.
pub trait CacheSource: Send + Sync + fmt::Debug {
    /// The record stored under `key`, if this source can serve it.
    fn lookup(&self, key: &Digest) -> Option<Record>;

    /// Every record (sorted by key), for explaining misses.
    fn records(&self) -> Vec<Record>;

    /// Puts `record`'s layer into `store` (verified, atomic), unless it is there already.
    fn fetch_layer(&self, record: &Record, store: &Store) -> Result<BlobInfo, CacheError>;

    /// [`CacheSource::fetch_layer`], reporting the bytes as they arrive (a source that moves none,
    /// such as the local cache, reports nothing).
    fn fetch_layer_reporting(
        &self,
        record: &Record,
        store: &Store,
        progress: &dyn kiln_registry::Progress,
    ) -> Result<BlobInfo, CacheError> {
        let _ = progress;
        self.fetch_layer(record, store)
    }

    /// Repositories this source's layers can be mounted or streamed from, for exports and pushes
    /// of layers the store never downloaded.
    fn layer_sources(&self) -> LayerSources {
        LayerSources::new()
    }

    /// True when a hit's layer is already in the build's store (the local cache): nothing to fetch
    /// later, nothing to copy into the local cache, and the step is reported as a local hit.
    fn layers_in_store(&self) -> bool {
        false
    }

    /// The source in words (a reference, a directory), for messages.
    fn describe(&self) -> String;
}

/// Where a build exports the records it used.
pub trait CacheSink: Send + Sync + fmt::Debug {
    /// Which records to hand to [`CacheSink::export`] (see [`crate::select`]).
    fn mode(&self) -> CacheMode;

    /// Exports `records`, reading layers from `store` or, when the store lacks one, from `sources`.
    ///
    /// A failure the user did not ask to be fatal comes back as [`ExportReport::Warned`]; `Err` only
    /// when it must fail the build (`ignore-error=false`).
    fn export(&self, records: &[Record], store: &Store, sources: &LayerSources) -> Result<ExportReport, CacheError>;

    /// [`CacheSink::export`], reporting the bytes it uploads (a sink that uploads none reports
    /// nothing).
    fn export_reporting(
        &self,
        records: &[Record],
        store: &Store,
        sources: &LayerSources,
        progress: &dyn kiln_registry::Progress,
    ) -> Result<ExportReport, CacheError> {
        let _ = progress;
        self.export(records, store, sources)
    }

    /// For a sink that rides in the image (`type=inline`): the records [`CacheSink::export`] was
    /// given, for the image exporter to write into the image config ([`crate::inline`]).
    fn inline_records(&self) -> Option<Vec<Record>> {
        None
    }

    /// The destination in words (a reference, a directory), for messages.
    fn describe(&self) -> String;
}

/// What opening a cache store gave.
#[derive(Debug)]
pub enum Opened<T> {
    /// The store is there and usable.
    Opened(T),
    /// Nothing there yet (a cold build): print the warning once and go on without it.
    Missing(String),
    /// Something is there but cannot be used (not a kiln cache, unreadable, unreachable): print the
    /// warning and go on without it.
    Unusable(String),
}

impl<T> Opened<T> {
    /// The one line to print, if any.
    pub fn warning(&self) -> Option<&str> {
        match self {
            Opened::Opened(_) => None,
            Opened::Missing(w) | Opened::Unusable(w) => Some(w),
        }
    }

    /// The store, when there is one.
    pub fn cache(self) -> Option<T> {
        match self {
            Opened::Opened(c) => Some(c),
            _ => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Opened<U> {
        match self {
            Opened::Opened(c) => Opened::Opened(f(c)),
            Opened::Missing(w) => Opened::Missing(w),
            Opened::Unusable(w) => Opened::Unusable(w),
        }
    }
}

/// What one `--cache-to` export did. Serialises as the `kiln.cache-exports` entries of the
/// metadata file: the [`ExportSummary`] fields, or `reference`/`dest` and `warning`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ExportReport {
    Exported(ExportSummary),
    /// The export did not happen or failed, downgraded to a warning.
    Warned(ExportWarning),
}

/// An export that gave a warning instead of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportWarning {
    #[serde(flatten)]
    pub target: ExportTarget,
    pub warning: String,
}

/// Where an export went, under the field name the metadata file has always used for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportTarget {
    /// A registry ref.
    Reference(String),
    /// A cache directory.
    Dest(String),
}

impl ExportReport {
    /// The line to print, for an export that gave a warning.
    pub fn warning(&self) -> Option<&str> {
        match self {
            ExportReport::Exported(_) => None,
            ExportReport::Warned(w) => Some(&w.warning),
        }
    }
}

/// One line, for a cancelled build's "what was kept".
impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportReport::Exported(s) => write!(f, "{} records exported to {}", s.exported, s.reference),
            ExportReport::Warned(w) => f.write_str(&w.warning),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kiln_oci::{media, Descriptor};

    use super::*;
    use crate::dir::{DirExport, DirImport};
    use crate::local::{LayerRecord, LocalCache};
    use crate::registry::{RegistryExport, RegistryImport};

    fn key(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    /// A record whose layer is put into `store`.
    fn layered(store: &Store, name: &str, parent: Option<&Record>) -> Record {
        let info = store.put_blob_bytes(format!("layer of {name}").repeat(40).as_bytes()).unwrap();
        let layer = LayerRecord { descriptor: Descriptor::new(media::OCI_LAYER_GZIP, info.digest, info.size), diff_id: info_diff(name) };
        let inputs = BTreeMap::from([("platform".to_string(), "linux/amd64".to_string())]);
        Record::new(key(name), parent.map(|p| p.key.clone()), format!("RUN {name}"), inputs, Some(layer))
    }

    fn info_diff(name: &str) -> Digest {
        key(&format!("tar {name}"))
    }

    fn opened<T: fmt::Debug>(o: Opened<T>) -> T {
        match o {
            Opened::Opened(t) => t,
            other => panic!("expected an opened store, got {other:?}"),
        }
    }

    #[test]
    fn the_local_cache_is_a_source_that_serves_only_records_whose_layer_is_in_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let cache = LocalCache::open(&tmp.path().join("root"));
        let a = layered(&store, "a", None);
        let config_only = Record::new(key("env"), Some(a.key.clone()), "ENV X=1".into(), BTreeMap::new(), None);
        let gone = Record {
            layer: a.layer.clone().map(|mut l| {
                l.descriptor.digest = key("pruned");
                l
            }),
            ..Record::new(key("gone"), None, "RUN gone".into(), BTreeMap::new(), None)
        };
        for r in [&a, &config_only, &gone] {
            cache.put(r).unwrap();
        }
        let source: Box<dyn CacheSource> = Box::new(cache.source(&store));
        assert!(source.layers_in_store());
        assert_eq!(source.lookup(&a.key), Some(a.clone()));
        assert_eq!(source.lookup(&config_only.key), Some(config_only.clone()), "a config-only record needs no layer");
        assert_eq!(source.lookup(&gone.key), None, "a record whose layer was pruned is a miss");
        assert_eq!(source.lookup(&key("never")), None);
        assert_eq!(source.records().len(), 3, "explaining sees every record");
        assert!(source.layer_sources().get(&a.layer.as_ref().unwrap().descriptor.digest).is_none());
        assert!(source.describe().contains("local cache"), "{}", source.describe());

        // Its layers are in the build's store already; another store gets a verified copy.
        let same = source.fetch_layer(&a, &store).unwrap();
        assert_eq!(same.digest, a.layer.as_ref().unwrap().descriptor.digest);
        let other = Store::open(&tmp.path().join("other")).unwrap();
        let copied = source.fetch_layer(&a, &other).unwrap();
        assert_eq!(other.read_blob(&copied.digest).unwrap(), store.read_blob(&copied.digest).unwrap());
        assert!(matches!(source.fetch_layer(&config_only, &other), Err(CacheError::NoLayer { .. })));
        assert!(matches!(source.fetch_layer(&gone, &other), Err(CacheError::LayerGone { .. })));
    }

    #[test]
    fn a_directory_sink_and_source_round_trip_through_the_traits() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let a = layered(&store, "a", None);
        let b = layered(&store, "b", Some(&a));
        let dest = tmp.path().join("cache");
        let spec = format!("type=local,dest={},mode=max", dest.display());

        let sink: Box<dyn CacheSink> = opened(CacheTo::parse(&spec).unwrap().open(None));
        assert_eq!(sink.mode(), CacheMode::Max);
        assert_eq!(sink.describe(), dest.display().to_string());
        let report = sink.export(&[a.clone(), b.clone()], &store, &LayerSources::new()).unwrap();
        let ExportReport::Exported(summary) = &report else { panic!("expected an export, got {report:?}") };
        assert_eq!((summary.exported, summary.records, summary.layers_uploaded), (2, 2, 2));
        assert_eq!(report.warning(), None);
        assert_eq!(report.to_string(), format!("2 records exported to {}", dest.display()));

        let from = CacheFrom::parse(&format!("type=local,src={}", dest.display())).unwrap();
        let source: Box<dyn CacheSource> = opened(from.open(None));
        assert!(!source.layers_in_store(), "a directory's layers are fetched on demand");
        assert_eq!(source.records().len(), 2);
        // The directory holds the gzip form; the key and the diff id are the build's.
        let got = source.lookup(&b.key).expect("b is cached");
        assert_eq!(
            (got.key.clone(), got.parent.clone(), got.layer.as_ref().map(|l| l.diff_id.clone())),
            (b.key.clone(), b.parent.clone(), Some(info_diff("b")))
        );
        let fresh = Store::open(&tmp.path().join("fresh")).unwrap();
        let info = source.fetch_layer(&got, &fresh).unwrap();
        assert!(fresh.has_blob(&info.digest));
        assert!(source.fetch_layer(&Record::new(key("x"), None, "ENV x".into(), BTreeMap::new(), None), &fresh).is_err());
    }

    #[test]
    fn opening_gives_opened_missing_or_unusable_with_one_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nothing");
        let from = CacheFrom::from(DirImport { src: missing.clone() });
        let out = from.open(None);
        let Opened::Missing(w) = &out else { panic!("expected a miss, got {out:?}") };
        assert!(w.contains(&missing.display().to_string()) && w.contains("has no cache yet"), "{w}");
        assert_eq!(out.warning().map(|w| w.lines().count()), Some(1));
        assert!(out.cache().is_none());
        assert!(!missing.exists(), "opening never creates the directory");

        let junk = tmp.path().join("junk");
        std::fs::create_dir(&junk).unwrap();
        std::fs::write(junk.join("index.json"), b"{not json").unwrap();
        let out = CacheFrom::from(DirImport { src: junk.clone() }).open(None);
        assert!(matches!(&out, Opened::Unusable(w) if w.contains("not used")), "{out:?}");

        let reference = kiln_oci::Reference::parse("127.0.0.1:1/app:cache").unwrap();
        let out = CacheFrom::from(RegistryImport { reference: reference.clone() }).open(None);
        assert!(matches!(&out, Opened::Unusable(w) if w.contains("127.0.0.1:1/app:cache")), "{out:?}");
        let out = CacheTo::from(RegistryExport::new(reference)).open(None);
        assert!(out.warning().is_some_and(|w| w.contains("127.0.0.1:1/app:cache")));

        let opened = Opened::Opened(7).map(|n| n * 6);
        assert_eq!(opened.warning(), None);
        assert_eq!(opened.cache(), Some(42));
        assert_eq!(Opened::<u8>::Missing("m".into()).map(|n| n + 1).warning(), Some("m"));
    }

    #[test]
    fn a_failed_directory_export_is_a_warning_naming_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let a = layered(&store, "a", None);
        let dest = tmp.path().join("a-file");
        std::fs::write(&dest, b"not a directory").unwrap();
        let sink = opened(CacheTo::from(DirExport { dest: dest.clone(), mode: CacheMode::Min }).open(None));
        let report = sink.export(&[a], &store, &LayerSources::new()).expect("a directory export never fails the build");
        let w = report.warning().expect("a warning");
        assert!(w.starts_with(&format!("cache export to {} failed: ", dest.display())), "{w}");
        assert_eq!(report.to_string(), w);
        assert!(
            matches!(&report, ExportReport::Warned(ExportWarning { target: ExportTarget::Dest(d), .. }) if *d == dest.display().to_string())
        );
    }

    #[test]
    fn export_reports_keep_the_metadata_field_names() {
        let warned = |target| ExportReport::Warned(ExportWarning { target, warning: "w".into() });
        assert_eq!(
            serde_json::to_value(warned(ExportTarget::Reference("r:1/a:c".into()))).unwrap(),
            serde_json::json!({"reference": "r:1/a:c", "warning": "w"})
        );
        assert_eq!(
            serde_json::to_value(warned(ExportTarget::Dest("/tmp/c".into()))).unwrap(),
            serde_json::json!({"dest": "/tmp/c", "warning": "w"})
        );
        let summary = ExportSummary {
            reference: "/tmp/c".into(),
            digest: Some(key("m")),
            exported: 3,
            unavailable: 0,
            records: 5,
            pruned_ttl: 1,
            pruned_size: 0,
            layers_uploaded: 2,
            layers_mounted: 0,
            layers_present: 1,
            bytes_uploaded: 10,
            layer_bytes: 20,
            attempts: 1,
        };
        let v = serde_json::to_value(ExportReport::Exported(summary.clone())).unwrap();
        assert_eq!(v, serde_json::to_value(&summary).unwrap(), "an export's entry is its summary, unwrapped");
        for field in ["reference", "digest", "exported", "records", "prunedTtl", "layersUploaded", "attempts"] {
            assert!(v.get(field).is_some(), "{field} in {v}");
        }
        assert!(v.get("warning").is_none());
    }
}
