//! The cache ref's wire format: an OCI image manifest whose config blob is kiln's key graph and whose
//! layers are the cached layers (specified in `docs/cache.md`).
//!
//! Why an image manifest and not an index (BuildKit's original layout): ECR and some Quay versions
//! refuse an index that points at non-manifest blobs, while an image manifest with a custom config
//! media type is an ordinary OCI artifact every registry accepts, and its layers are ordinary layer
//! blobs that can be mounted into image repositories of the same registry.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use kiln_oci::{media, Descriptor, Digest, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::local::{LayerRecord, Record};
use crate::spec::CacheMode;

/// Media type of the config blob: the key graph.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.config.v1+json";
/// Manifest annotation naming the format version (so `skopeo inspect` shows what the ref is).
pub const ANNOTATION_FORMAT: &str = "dev.kiln.cache.format";
/// The only format version this kiln reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Configs bigger than this are refused on import (hundreds of thousands of records; anything
/// bigger is not a cache kiln wrote).
pub const MAX_CONFIG: u64 = 64 << 20;

/// One record as the cache ref holds it: a [`Record`] plus where it applies and when it was last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub record: Record,
    /// `os/arch[/variant]` the step was built for (from the record's `platform` input).
    pub platform: Option<String>,
    /// Unix seconds of the last export that carried this record; TTL pruning measures from here, so
    /// a record that keeps being hit stays while one nobody uses ages out.
    pub last_used: u64,
}

impl Entry {
    /// The entry an export at `now` writes for `record`.
    pub fn exported(record: Record, now: u64) -> Entry {
        let platform = record.inputs.get("platform").cloned();
        Entry { record, platform, last_used: now }
    }

    pub fn key(&self) -> &Digest {
        &self.record.key
    }

    /// The layer's size in bytes (0 for config-only steps).
    pub fn layer_size(&self) -> u64 {
        self.record.layer.as_ref().map_or(0, |l| l.descriptor.size)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireConfig {
    schema_version: u32,
    records: Vec<WireRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRecord {
    key: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<Digest>,
    instruction: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    inputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<WireLayer>,
    created: u64,
    #[serde(default)]
    last_used: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireLayer {
    /// Position in the manifest's `layers`.
    index: usize,
    /// Repeated so a reader can check the index points where the writer meant.
    digest: Digest,
    diff_id: Digest,
}

/// Why a ref's content cannot be used as a cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("it is not a kiln cache (its config media type is {0:?}, not {CACHE_CONFIG_MEDIA_TYPE}); point --cache-from/--cache-to at a tag of its own, e.g. :buildcache")]
    NotACache(String),
    #[error("it is an image index, not a kiln cache manifest; point --cache-from/--cache-to at a tag of its own, e.g. :buildcache")]
    IsIndex,
    #[error("its cache config is format version {0}, which this kiln does not read; upgrade kiln, or export to another tag")]
    Version(u32),
    #[error("its cache config is not valid JSON: {0}")]
    Json(String),
}

/// A cache ref ready to push: the config blob, the layers it references, and the manifest.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub config: Vec<u8>,
    pub config_descriptor: Descriptor,
    pub layers: Vec<Descriptor>,
    pub manifest: Vec<u8>,
}

/// Encodes `entries` (any order) into a config and manifest. Output is deterministic: records are
/// sorted by key and layers by digest, so the same record set always gives the same manifest digest.
pub fn encode(entries: &[Entry]) -> Encoded {
    let mut by_digest: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    for e in entries {
        if let Some(l) = &e.record.layer {
            by_digest.entry(l.descriptor.digest.clone()).or_insert_with(|| {
                // Only what a layer descriptor needs: an image's annotations or URLs do not belong to
                // the cache, and `urls` would make registries fetch from elsewhere.
                Descriptor::new(oci_layer_type(&l.descriptor.media_type), l.descriptor.digest.clone(), l.descriptor.size)
            });
        }
    }
    let index: HashMap<&Digest, usize> = by_digest.keys().enumerate().map(|(i, d)| (d, i)).collect();
    let records = wire_records(entries, |d| index.get(d).copied().unwrap_or(0));
    let config = serde_json::to_vec(&WireConfig { schema_version: FORMAT_VERSION, records }).unwrap_or_default();
    let config_descriptor = Descriptor::for_bytes(CACHE_CONFIG_MEDIA_TYPE, &config);
    let layers: Vec<Descriptor> = by_digest.into_values().collect();
    let mut manifest = ImageManifest::new_oci(config_descriptor.clone(), layers.clone());
    manifest.annotations = Some(BTreeMap::from([(ANNOTATION_FORMAT.to_string(), FORMAT_VERSION.to_string())]));
    let manifest = kiln_oci::Manifest::Image(manifest).to_json();
    Encoded { config, config_descriptor, layers, manifest }
}

/// `entries` as a cache config whose layer indexes point into `layers` (an image's own, for an
/// inline cache: see [`crate::inline`]). Every entry's layer must be among `layers`.
pub fn encode_against(entries: &[Entry], layers: &[Descriptor]) -> serde_json::Value {
    let records = wire_records(entries, |d| layers.iter().position(|l| &l.digest == d).unwrap_or(usize::MAX));
    serde_json::to_value(WireConfig { schema_version: FORMAT_VERSION, records }).unwrap_or_default()
}

/// The records of `entries` as the config holds them, sorted by key, one per key; `index_of` says
/// where each layer is in the manifest's `layers`.
fn wire_records(entries: &[Entry], index_of: impl Fn(&Digest) -> usize) -> Vec<WireRecord> {
    let mut records: Vec<WireRecord> = entries
        .iter()
        .map(|e| WireRecord {
            key: e.record.key.clone(),
            parent: e.record.parent.clone(),
            instruction: e.record.instruction.clone(),
            inputs: e.record.inputs.clone(),
            platform: e.platform.clone(),
            layer: e.record.layer.as_ref().map(|l| WireLayer {
                index: index_of(&l.descriptor.digest),
                digest: l.descriptor.digest.clone(),
                diff_id: l.diff_id.clone(),
            }),
            created: e.record.created,
            last_used: e.last_used,
        })
        .collect();
    records.sort_by(|a, b| a.key.cmp(&b.key));
    records.dedup_by(|a, b| a.key == b.key);
    records
}

/// The OCI media type for a layer blob: Docker schema2 layer types (from base images pulled off
/// Docker Hub) name the same bytes, but an OCI manifest that lists them is rejected by strict
/// registries, so the cache manifest always says the OCI name.
fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
        media::DOCKER_LAYER_TAR => media::OCI_LAYER_TAR,
        media::DOCKER_LAYER_ZSTD => media::OCI_LAYER_ZSTD,
        other => other,
    }
}

/// Checks that `manifest` is a kiln cache manifest before its config is fetched.
pub fn check_manifest(manifest: &kiln_oci::Manifest) -> Result<&ImageManifest, FormatError> {
    match manifest {
        kiln_oci::Manifest::Index(_) => Err(FormatError::IsIndex),
        kiln_oci::Manifest::Image(m) if m.config.media_type == CACHE_CONFIG_MEDIA_TYPE => Ok(m),
        kiln_oci::Manifest::Image(m) => Err(FormatError::NotACache(m.config.media_type.clone())),
    }
}

/// Decodes a cache manifest and its config. Records that contradict the manifest (a layer index out
/// of range or pointing at another digest) are dropped, counted in the second value: one bad record
/// must not cost the rest of the cache.
pub fn decode(manifest: &ImageManifest, config: &[u8]) -> Result<(Vec<Entry>, usize), FormatError> {
    if manifest.config.media_type != CACHE_CONFIG_MEDIA_TYPE {
        return Err(FormatError::NotACache(manifest.config.media_type.clone()));
    }
    decode_wire(manifest, config)
}

/// [`decode`] of a cache config found anywhere (a cache ref's config blob, or the inline cache in
/// an image config), against `manifest`'s layers.
pub fn decode_wire(manifest: &ImageManifest, config: &[u8]) -> Result<(Vec<Entry>, usize), FormatError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: u32,
    }
    let probe: Probe = serde_json::from_slice(config).map_err(|e| FormatError::Json(e.to_string()))?;
    if probe.schema_version != FORMAT_VERSION {
        return Err(FormatError::Version(probe.schema_version));
    }
    let wire: WireConfig = serde_json::from_slice(config).map_err(|e| FormatError::Json(e.to_string()))?;
    let mut bad = 0;
    let mut out = Vec::with_capacity(wire.records.len());
    for w in wire.records {
        let layer = match w.layer {
            None => None,
            Some(l) => match manifest.layers.get(l.index) {
                Some(d) if d.digest == l.digest => {
                    Some(LayerRecord { descriptor: Descriptor::new(&d.media_type, d.digest.clone(), d.size), diff_id: l.diff_id })
                }
                _ => {
                    bad += 1;
                    continue;
                }
            },
        };
        let last_used = w.last_used.max(w.created);
        out.push(Entry {
            record: Record { key: w.key, parent: w.parent, instruction: w.instruction, inputs: w.inputs, layer, created: w.created },
            platform: w.platform,
            last_used,
        });
    }
    Ok((out, bad))
}

/// The records a `--cache-to` of `mode` exports, out of every record the build produced.
///
/// `max` exports them all. `min` exports the chains that end at `results` (the final step of each
/// image built, one per platform): those steps' layers are exactly the images' layers, and the
/// config-only steps between them are needed for the chain to hit. Steps of other stages (a
/// `COPY --from=builder`'s builder) are left out, as in BuildKit's `mode=min`.
pub fn select(mode: CacheMode, records: &[Record], results: &[Digest]) -> Vec<Record> {
    match mode {
        CacheMode::Max => records.to_vec(),
        CacheMode::Min => {
            let by_key: HashMap<&Digest, &Record> = records.iter().map(|r| (&r.key, r)).collect();
            let mut keep: HashSet<&Digest> = HashSet::new();
            for result in results {
                let mut cur = by_key.get(result).copied();
                // `keep.insert` failing means a chain already walked (or a cycle in hostile data).
                while let Some(r) = cur {
                    if !keep.insert(&r.key) {
                        break;
                    }
                    cur = r.parent.as_ref().and_then(|p| by_key.get(p).copied());
                }
            }
            records.iter().filter(|r| keep.contains(&r.key)).cloned().collect()
        }
    }
}

/// Keys of `entries` whose ancestors (by `parent`, within `entries`) include a key of `dropped`.
/// Used to keep a record set consistent: a record is useless once a step below it is gone, since
/// the image it describes needs every layer of its chain.
pub(crate) fn descendants_of(entries: &[Entry], dropped: &BTreeSet<Digest>) -> BTreeSet<Digest> {
    let parent: HashMap<&Digest, Option<&Digest>> = entries.iter().map(|e| (&e.record.key, e.record.parent.as_ref())).collect();
    let mut out = BTreeSet::new();
    for e in entries {
        let mut seen: HashSet<&Digest> = HashSet::new();
        let mut cur = e.record.parent.as_ref();
        while let Some(p) = cur {
            if !seen.insert(p) {
                break;
            }
            if dropped.contains(p) {
                out.insert(e.record.key.clone());
                break;
            }
            cur = parent.get(p).copied().flatten();
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn key(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    /// A record `name` on top of `parent`, with a layer of `size` bytes unless `size` is 0.
    pub fn rec(name: &str, parent: Option<&str>, size: u64, created: u64) -> Record {
        let layer = (size > 0).then(|| LayerRecord {
            descriptor: Descriptor::new(media::OCI_LAYER_GZIP, key(&format!("blob {name}")), size),
            diff_id: key(&format!("tar {name}")),
        });
        let mut inputs = BTreeMap::new();
        inputs.insert("platform".to_string(), "linux/amd64".to_string());
        Record { key: key(name), parent: parent.map(key), instruction: format!("RUN {name}"), inputs, layer, created }
    }

    #[test]
    fn encode_decode_round_trips_and_is_deterministic() {
        let entries = vec![
            Entry::exported(rec("b", Some("a"), 20, 5), 100),
            Entry::exported(rec("a", None, 10, 5), 100),
            Entry::exported(rec("env", Some("b"), 0, 5), 100),
        ];
        let enc = encode(&entries);
        let mut rev = entries.clone();
        rev.reverse();
        assert_eq!(encode(&rev).manifest, enc.manifest, "order of input must not change the digest");
        let m = kiln_oci::Manifest::parse(&enc.manifest, None).unwrap();
        let im = check_manifest(&m).unwrap();
        assert_eq!(im.layers.len(), 2);
        assert_eq!(im.config.media_type, CACHE_CONFIG_MEDIA_TYPE);
        assert_eq!(im.annotations.as_ref().unwrap()[ANNOTATION_FORMAT], "1");
        let (mut back, bad) = decode(im, &enc.config).unwrap();
        assert_eq!(bad, 0);
        back.sort_by(|a, b| a.key().cmp(b.key()));
        let mut want = entries;
        want.sort_by(|a, b| a.key().cmp(b.key()));
        assert_eq!(back, want);
        assert_eq!(back[0].platform.as_deref(), Some("linux/amd64"));
    }

    #[test]
    fn docker_layer_types_are_listed_under_their_oci_names() {
        let mut r = rec("a", None, 10, 5);
        if let Some(l) = r.layer.as_mut() {
            l.descriptor.media_type = media::DOCKER_LAYER_GZIP.to_string();
        }
        let enc = encode(&[Entry::exported(r, 100)]);
        assert_eq!(enc.layers[0].media_type, media::OCI_LAYER_GZIP);
        assert_eq!(oci_layer_type("application/x-custom"), "application/x-custom");
    }

    #[test]
    fn decode_drops_records_that_contradict_the_manifest() {
        let enc = encode(&[Entry::exported(rec("a", None, 10, 5), 100), Entry::exported(rec("b", Some("a"), 20, 5), 100)]);
        let m = kiln_oci::Manifest::parse(&enc.manifest, None).unwrap();
        let mut im = check_manifest(&m).unwrap().clone();
        im.layers.truncate(1);
        let (back, bad) = decode(&im, &enc.config).unwrap();
        assert_eq!((back.len(), bad), (1, 1));
    }

    #[test]
    fn foreign_content_is_refused_with_a_reason() {
        let cfg = Descriptor::for_bytes(media::OCI_CONFIG, b"{}");
        let image = kiln_oci::Manifest::Image(ImageManifest::new_oci(cfg, vec![]));
        let e = check_manifest(&image).unwrap_err();
        assert!(e.to_string().contains("not a kiln cache"), "{e}");
        let idx = kiln_oci::Manifest::Index(kiln_oci::ImageIndex::new_oci());
        assert_eq!(check_manifest(&idx).unwrap_err(), FormatError::IsIndex);

        let enc = encode(&[]);
        let m = kiln_oci::Manifest::parse(&enc.manifest, None).unwrap();
        let im = check_manifest(&m).unwrap();
        assert!(matches!(decode(im, br#"{"schemaVersion":2,"records":[]}"#), Err(FormatError::Version(2))));
        assert!(matches!(decode(im, b"{not json"), Err(FormatError::Json(_))));
    }

    #[test]
    fn mode_min_keeps_the_result_chains_and_max_keeps_all() {
        let records = vec![
            rec("base", None, 10, 1),
            rec("run", Some("base"), 10, 1),
            rec("env", Some("run"), 0, 1),
            rec("final", Some("env"), 10, 1),
            rec("builder", Some("base"), 10, 1),
            rec("builder2", Some("builder"), 10, 1),
        ];
        let min = select(CacheMode::Min, &records, &[key("final")]);
        let names: Vec<&str> = min.iter().map(|r| r.instruction.as_str()).collect();
        assert_eq!(names, ["RUN base", "RUN run", "RUN env", "RUN final"]);
        assert_eq!(select(CacheMode::Max, &records, &[key("final")]).len(), 6);
        assert!(select(CacheMode::Min, &records, &[key("missing")]).is_empty());
        // A cycle in parent links must not hang.
        let cyc = vec![rec("x", Some("y"), 1, 1), rec("y", Some("x"), 1, 1)];
        assert_eq!(select(CacheMode::Min, &cyc, &[key("x")]).len(), 2);
    }
}
