//! The local side of a copy: kiln's store and `oci:PATH` layouts (both OCI image layouts, read and
//! written through `kiln_oci::Store`, which makes every write atomic and verified).
//!
//! The only difference between the two is how tags are named in `index.json`: the store files them
//! under the full reference (`127.0.0.1:5000/app:1`), an OCI layout under the bare tag (`1`), as
//! skopeo and umoci do.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use kiln_oci::store::REF_NAME_ANNOTATION;
use kiln_oci::{Descriptor, Digest, Manifest, Store, StoreError};

use crate::blob::copy_large;
use crate::error::{from_io, RegistryError, Result};
use crate::manifest::FetchedManifest;
use crate::transfer::{ImageDest, ImageSource, ProgressReader};

/// A store or layout as a source or destination.
pub struct LocalImages {
    pub store: Store,
    /// For messages: `store` or `oci:/path`.
    pub label: String,
    _lease: Option<kiln_oci::Lease>,
}

impl LocalImages {
    /// Wraps `store`. A destination takes a lease so a concurrent `kiln prune` cannot collect blobs
    /// written before the manifest that refers to them is tagged.
    pub fn new(store: Store, label: impl Into<String>, writing: bool) -> Result<Self> {
        let label = label.into();
        let lease = if writing { Some(store.lease().map_err(|e| store_err(&label, e))?) } else { None };
        Ok(LocalImages { store, label, _lease: lease })
    }

    /// The index entry named `name`, or, for a digest, the manifest blob itself.
    pub fn find(&self, name: &str) -> Result<Option<Descriptor>> {
        let index = self.store.read_index().map_err(|e| store_err(&self.label, e))?;
        if let Ok(d) = Digest::parse(name) {
            if let Some(x) = index.manifests.iter().find(|x| x.digest == d) {
                return Ok(Some(x.clone()));
            }
            if self.store.has_blob(&d) {
                let bytes = self.store.read_blob(&d).map_err(|e| store_err(&self.label, e))?;
                let m = Manifest::parse(&bytes, None)
                    .map_err(|e| RegistryError::InvalidManifest { reference: format!("{}@{d}", self.label), message: e.to_string() })?;
                return Ok(Some(Descriptor::new(m.media_type(), d, bytes.len() as u64)));
            }
            return Ok(None);
        }
        Ok(index.manifests.iter().find(|x| x.annotation(REF_NAME_ANNOTATION) == Some(name)).cloned())
    }
}

pub(crate) fn store_err(label: &str, e: StoreError) -> RegistryError {
    match e {
        StoreError::Io { action, path, source } => from_io(source, format!("{label}: {action} {}", path.display())),
        StoreError::Digest(d) => RegistryError::Store { context: label.to_string(), message: format!("{d}; the content was not stored") },
        other => RegistryError::Store { context: label.to_string(), message: other.to_string() },
    }
}

impl ImageSource for LocalImages {
    fn describe(&self) -> String {
        self.label.clone()
    }
    fn manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let Some(desc) = self.find(reference)? else {
            return Err(RegistryError::Store {
                context: format!("{}: {reference}", self.label),
                message: "no such image; pull, import or build it first (see kiln images)".into(),
            });
        };
        let bytes = self.store.read_blob(&desc.digest).map_err(|e| store_err(&self.label, e))?;
        Ok(FetchedManifest { bytes, media_type: desc.media_type.clone(), digest: desc.digest })
    }
    fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send + '_>> {
        let mut f: File = self.store.open_blob(&desc.digest).map_err(|e| store_err(&self.label, e))?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset)).map_err(|e| from_io(e, format!("{}: seeking in blob {}", self.label, desc.digest)))?;
        }
        Ok(Box::new(f))
    }
}

impl ImageDest for LocalImages {
    fn describe(&self) -> String {
        self.label.clone()
    }
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.store.has_blob(&desc.digest))
    }
    fn put_blob(&self, desc: &Descriptor, src: &dyn ImageSource, progress: &(dyn Fn(u64) + Sync)) -> Result<&'static str> {
        let what = format!("{} <- {}@{}", self.label, src.describe(), desc.digest);
        let mut r = ProgressReader::new(src.open_blob(desc, 0)?, 0, progress);
        // The store's writer hashes what it writes and `commit` checks the digest: one hash pass
        // over the data (put_blob_stream would hash it twice), and nothing lands unless it matches.
        let mut w = self.store.blob_writer().map_err(|e| store_err(&what, e))?;
        copy_large(&mut r, &mut w).map_err(|e| from_io(e, what.clone()))?;
        let info = w.commit(Some(&desc.digest)).map_err(|e| store_err(&what, e))?;
        if info.size != desc.size {
            // The digest matched, so the descriptor's size was wrong: the manifest lies, not the data.
            tracing::warn!(digest = %desc.digest, expected = desc.size, actual = info.size, "blob size differs from its descriptor");
        }
        Ok("downloaded")
    }
    fn put_manifest(&self, m: &FetchedManifest, tag: Option<&str>) -> Result<()> {
        let info = self.store.put_blob_stream(&m.bytes[..], Some(&m.digest)).map_err(|e| store_err(&self.label, e))?;
        if let Some(t) = tag {
            let d = Descriptor::new(&m.media_type, info.digest, info.size);
            self.store.tag_name(t, &d).map_err(|e| store_err(&self.label, e))?;
        }
        Ok(())
    }
}
