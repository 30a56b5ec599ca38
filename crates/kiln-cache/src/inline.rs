//! `--cache-to type=inline`: the cache rides in the image itself, so a plain pushed image can warm the
//! next build (`--cache-from type=registry,ref=IMAGE`) without a cache ref of its own.
//!
//! The model: an inline export keeps the records of the image's own chain (`mode=min`, the only mode
//! an image can carry, as in BuildKit) and hands them to the image exporter
//! ([`CacheSink::inline_records`]), which writes them into each image config under
//! [`INLINE_CONFIG_KEY`]: kiln's cache config ([`mod@crate::format`]) with each record's layer
//! pointing into *that image's* `layers` (matched by diff id, since the image leaves the machine
//! compressed while records name the store's plain form). Reading is the registry source's job: a ref
//! whose manifest is an image (or an index of images) rather than a cache manifest is read through
//! [`decode_image_config`], and its layers are fetched from the image's repository like any cached
//! layer. The key is kiln's own, not BuildKit's `moby.buildkit.cache.v0`, whose format differs: a
//! BuildKit reading kiln's image sees no inline cache rather than a broken one.

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_oci::{Descriptor, Digest, ImageManifest, Store};
use kiln_registry::Client;

use crate::backend::{Backend, CacheSink, ExportReport, Opened, SinkSpec};
use crate::format::{self, Entry, FormatError};
use crate::local::{CacheError, Record};
use crate::registry::{ExportSummary, LayerSources};
use crate::spec::{CacheFrom, CacheMode, CacheTo, Options, SpecError};

/// The image config field that holds the inline cache.
pub const INLINE_CONFIG_KEY: &str = "dev.kiln.cache.v1";

/// `type=inline`: a sink only.
pub struct InlineBackend;

impl Backend for InlineBackend {
    fn name(&self) -> &'static str {
        "inline"
    }

    fn usage(&self) -> &'static str {
        "type=inline"
    }

    fn source(&self, options: &Options<'_>) -> Result<CacheFrom, SpecError> {
        options.accept(&[])?;
        Err(options.error("an inline cache is read from the image that carries it: use --cache-from type=registry,ref=IMAGE"))
    }

    fn sink(&self, options: &Options<'_>, mode: CacheMode) -> Result<CacheTo, SpecError> {
        options.accept(&["mode"])?;
        if mode == CacheMode::Max {
            return Err(options.error(
                "an image carries its own layers only, so type=inline exports mode=min (as BuildKit); use type=registry for mode=max",
            ));
        }
        Ok(InlineExport.into())
    }
}

/// A parsed `--cache-to type=inline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineExport;

impl SinkSpec for InlineExport {
    fn open<'c>(&self, _client: Option<&'c Client>) -> Opened<Box<dyn CacheSink + 'c>> {
        Opened::Opened(Box::new(InlineSink::default()))
    }
}

/// Holds the records until the image exporter writes them.
#[derive(Debug, Default)]
pub struct InlineSink {
    records: Mutex<Vec<Record>>,
}

impl CacheSink for InlineSink {
    fn mode(&self) -> CacheMode {
        CacheMode::Min
    }

    fn export(&self, records: &[Record], _store: &Store, _sources: &LayerSources) -> Result<ExportReport, CacheError> {
        *self.records.lock().unwrap_or_else(|p| p.into_inner()) = records.to_vec();
        Ok(ExportReport::Exported(ExportSummary::inline(records.len())))
    }

    fn inline_records(&self) -> Option<Vec<Record>> {
        Some(self.records.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn describe(&self) -> String {
        "the image (type=inline)".to_string()
    }
}

/// The inline cache for one image: `records` in kiln's cache config form, their layers matched to
/// the image's `layers` by diff id (`diff_ids[i]` is `layers[i]`'s). Records whose layer the image
/// does not hold are left out, and so are the records built on them. Times are zeroed, so that
/// the image digest stays a function of the build.
pub fn encode_for_image(records: &[Record], layers: &[Descriptor], diff_ids: &[Digest]) -> serde_json::Value {
    let by_diff: HashMap<&Digest, &Descriptor> = diff_ids.iter().zip(layers).collect();
    let mut kept: Vec<Entry> = Vec::new();
    let mut gone: Vec<&Digest> = Vec::new();
    for original in records {
        if original.parent.as_ref().is_some_and(|p| gone.contains(&p)) {
            gone.push(&original.key);
            continue;
        }
        let mut r = original.clone();
        if let Some(l) = r.layer.as_mut() {
            match by_diff.get(&l.diff_id) {
                Some(d) => l.descriptor = (*d).clone(),
                None => {
                    gone.push(&original.key);
                    continue;
                }
            }
        }
        // No times: the same build must give the same image digest (TTLs are a cache ref's matter).
        r.created = 0;
        kept.push(Entry::exported(r, 0));
    }
    format::encode_against(&kept, layers)
}

/// The entries of an image config's inline cache, or `None` when it carries none.
pub fn decode_image_config(manifest: &ImageManifest, config: &[u8]) -> Result<Option<(Vec<Entry>, usize)>, FormatError> {
    let value: serde_json::Value = serde_json::from_slice(config).map_err(|e| FormatError::Json(e.to_string()))?;
    match value.get(INLINE_CONFIG_KEY) {
        None => Ok(None),
        Some(cache) => format::decode_wire(manifest, &serde_json::to_vec(cache).unwrap_or_default()).map(Some),
    }
}
