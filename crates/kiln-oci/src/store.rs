//! The local store: an OCI image layout (`oci-layout`, `index.json`, `blobs/<algo>/<hex>`) under
//! `<root>/store`, readable by any OCI tool (`skopeo inspect oci:<root>/store:<ref>`).
//!
//! Tags are entries of `index.json` whose `org.opencontainers.image.ref.name` annotation holds the full
//! normalised reference (`docker.io/library/busybox:latest`).
//!
//! A tag names an image manifest or an index. An index pulled from a registry is kept verbatim (its
//! digest is the registry's, so a push gives back the same index), and only the images of the
//! platforms that were asked for are fetched: the others stay listed in it while their manifests,
//! configs and layers are absent from `blobs/`. A platform is *in the store* when its image
//! manifest blob is (a manifest is written after its config and layers, so its presence vouches for
//! theirs). Pulling another platform of the same index fetches that child and leaves the tag where it
//! is; [`Store::select_platform`] picks the image for a platform out of a tag and names what is
//! missing when it is not there (see `select.rs`). `gc` walks what is present and ignores what is not.
//!
//! Crash safety: every blob is streamed into `ingest/` (a temp file in the store dir, so the final rename
//! stays on one file system), verified, fsynced and renamed into place; a blob path therefore only ever
//! holds complete, verified content, and files left in `ingest/` are never read. `index.json` is replaced
//! the same way. Concurrency: `index.json` updates take an exclusive `flock` on `index.lock`, so parallel
//! kiln processes (and threads) never lose each other's tags. `gc` takes `gc.lock` exclusively, and a
//! writer that must not have its fresh, not-yet-tagged blobs collected holds a [`Lease`] (a shared lock on
//! the same file) from the first blob write until it has tagged the result.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::ImageConfig;
use crate::digest::{Digest, DigestError, DigestWriter, VerifyingReader};
use crate::manifest::{Descriptor, ImageIndex, Manifest, ManifestError, Raw};
use crate::media;
use crate::reference::Reference;

/// The annotation that names a tag in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const COPY_BUF: usize = 256 * 1024;

/// Store failures. Each names the path or digest involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} is not in the store at {store}; pull or import the image first")]
    BlobNotFound { digest: Digest, store: PathBuf },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("{path} is not a valid OCI index: {source}; restore it or remove the store to start over")]
    CorruptIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {digest} in the store: {source}")]
    Manifest {
        digest: Digest,
        #[source]
        source: ManifestError,
    },
    #[error("config {digest} in the store is not valid JSON: {source}")]
    Config {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    /// The tag names an index that lists the platform, or an image for another platform, but that
    /// platform's image was never fetched: a pull of it fixes that.
    #[error("{} has no image for {} in the local store (it has: {}); {}", .0.reference, .0.wanted.join(", "), list_or_none(&.0.have), .0.hint)]
    PlatformAbsent(Box<PlatformMiss>),
    /// The tag names an index that does not list the platform at all (`have`: what it lists).
    #[error("{} has no image for {} (its index lists: {}); {}", .0.reference, .0.wanted.join(", "), list_or_none(&.0.have), .0.hint)]
    PlatformUnlisted(Box<PlatformMiss>),
}

/// A platform a tag lacks in the store (boxed in [`StoreError`], which every store call returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformMiss {
    /// The tag as the user named it.
    pub reference: String,
    /// The platforms asked for and not there.
    pub wanted: Vec<String>,
    /// The platforms that are there (or, for [`StoreError::PlatformUnlisted`], listed).
    pub have: Vec<String>,
    /// What to do about it.
    pub hint: String,
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| {
        // A digest mismatch travels inside io::Error through the copy loop; surface it as itself.
        if source.kind() == io::ErrorKind::InvalidData {
            if let Some(d) = source.get_ref().and_then(|e| e.downcast_ref::<DigestError>()) {
                return StoreError::Digest(d.clone());
            }
        }
        StoreError::Io { action, path: path.to_path_buf(), source }
    }
}

/// A blob's address and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// One tag in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEntry {
    /// The `ref.name` annotation as written.
    pub name: String,
    /// The name parsed as a reference (`None` for names other tools wrote, such as a bare `latest`).
    pub reference: Option<Reference>,
    pub descriptor: Descriptor,
}

/// What `gc` deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Deleted blobs, sorted by digest.
    pub removed: Vec<BlobInfo>,
    /// Bytes freed by blobs and stale ingest files.
    pub freed_bytes: u64,
    /// Stale temp files removed from `ingest/`.
    pub stale_temp_files: usize,
    /// Blobs kept.
    pub kept: usize,
}

/// An OCI image layout on disk.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// Keeps `gc` from running while held (shared lock on `gc.lock`). Released on drop.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

impl Store {
    /// Opens (creating if needed) the store of the kiln root `root`, at `<root>/store`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_layout(&root.join("store"))
    }

    /// Opens (creating if needed) an OCI image layout at `dir` (used for `oci:PATH` too).
    pub fn open_layout(dir: &Path) -> Result<Store, StoreError> {
        let store = Store { dir: dir.to_path_buf() };
        for d in [dir.to_path_buf(), dir.join("blobs").join("sha256"), dir.join("ingest")] {
            fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
        }
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, LAYOUT_JSON)?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            let _g = store.lock_index()?;
            if !index.exists() {
                store.write_index(&ImageIndex::new_oci())?;
            }
        }
        Ok(store)
    }

    /// Removes the store's own working files from a layout other tools read (`type=oci,tar=false`,
    /// `oci:PATH`): an empty `ingest/` and `index.lock`. Best effort; call when done writing.
    pub fn tidy_layout(&self) {
        tidy_layout(&self.dir);
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join(digest.algorithm().as_str()).join(digest.hex())
    }

    /// Is the blob present?
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size of a present blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound { digest: digest.clone(), store: self.dir.clone() })
            }
            Err(e) => Err(io_err("stat", &p)(e)),
        }
    }

    /// Opens a blob for streaming reads.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound { digest: digest.clone(), store: self.dir.clone() }
            } else {
                io_err("open blob", &p)(e)
            }
        })
    }

    /// Reads a (small) blob whole and verifies it: for manifests and configs, never layers.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(digest);
        let mut r = VerifyingReader::new(self.open_blob(digest)?, Some(digest));
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(io_err("read blob", &p))?;
        Ok(out)
    }

    /// Streams `reader` into the store, verifying against `expected` when given. Returns at once
    /// (without reading) when the expected blob is already present. On any error nothing is stored.
    pub fn put_blob_stream<R: Read>(&self, reader: R, expected: Option<&Digest>) -> Result<BlobInfo, StoreError> {
        if let Some(d) = expected {
            if let Ok(size) = self.blob_size(d) {
                return Ok(BlobInfo { digest: d.clone(), size });
            }
        }
        // The writer hashes as it writes and `commit` checks `expected`: one pass over the bytes
        // (a verifying reader on top hashed a pulled 100 MB layer twice).
        let mut w = self.blob_writer()?;
        let mut r = reader;
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read blob content for", &w.temp)(e)),
            };
            let temp = w.temp.clone();
            w.write_all(&buf[..n]).map_err(io_err("write", &temp))?;
        }
        w.commit(expected)
    }

    /// Stores `bytes` as a blob.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<BlobInfo, StoreError> {
        self.put_blob_stream(bytes, None)
    }

    /// A writer into a new temp file in the store; [`BlobWriter::commit`] moves it into place. Dropping
    /// it uncommitted deletes the temp file.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        self.new_blob_writer(true)
    }

    /// A writer that does not hash: for the layer writer, which hashes the very bytes it writes in the
    /// same pass and commits with that digest (hashing 100 MB twice more was a third of a big RUN
    /// step's overhead).
    pub(crate) fn blob_writer_trusting(&self) -> Result<BlobWriter, StoreError> {
        self.new_blob_writer(false)
    }

    fn new_blob_writer(&self, hashing: bool) -> Result<BlobWriter, StoreError> {
        let temp = self.temp_path("blob");
        let file = OpenOptions::new().write(true).create_new(true).open(&temp).map_err(io_err("create", &temp))?;
        let buf = io::BufWriter::with_capacity(COPY_BUF, file);
        Ok(BlobWriter {
            store: self.clone(),
            inner: Some(if hashing { DigestWriter::new(buf) } else { DigestWriter::counting(buf) }),
            hashing,
            temp,
        })
    }

    /// Stores a manifest serialised by kiln and returns its descriptor.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<Descriptor, StoreError> {
        let bytes = manifest.to_json();
        let info = self.put_blob_bytes(&bytes)?;
        Ok(Descriptor::new(manifest.media_type(), info.digest, info.size))
    }

    /// Reads and parses a manifest blob, keeping its bytes.
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<Raw<Manifest>, StoreError> {
        let bytes = self.read_blob(&desc.digest)?;
        Raw::parse_manifest(bytes, Some(&desc.media_type)).map_err(|source| StoreError::Manifest { digest: desc.digest.clone(), source })
    }

    /// Reads and parses a config blob, keeping its bytes.
    pub fn read_config(&self, digest: &Digest) -> Result<Raw<ImageConfig>, StoreError> {
        let bytes = self.read_blob(digest)?;
        Raw::parse_config(bytes).map_err(|source| StoreError::Config { digest: digest.clone(), source })
    }

    /// Points `reference` at `descriptor` (replacing an older tag of the same name).
    pub fn tag(&self, reference: &Reference, descriptor: &Descriptor) -> Result<(), StoreError> {
        self.tag_name(&reference.to_string(), descriptor)
    }

    /// Like [`Store::tag`] with a raw `ref.name` (for layouts whose names are not references).
    pub fn tag_name(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        let _g = self.lock_index()?;
        let mut index = self.read_index()?;
        index.manifests.retain(|d| d.annotation(REF_NAME_ANNOTATION) != Some(name));
        let mut d = descriptor.clone();
        d.annotations.get_or_insert_with(Default::default).insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
        index.manifests.push(d);
        index.manifests.sort_by(|a, b| a.annotation(REF_NAME_ANNOTATION).cmp(&b.annotation(REF_NAME_ANNOTATION)));
        self.write_index(&index)
    }

    /// What `reference` points at: its tag entry, or, for a digest reference, the manifest blob itself.
    pub fn resolve(&self, reference: &Reference) -> Result<Option<Descriptor>, StoreError> {
        let name = reference.to_string();
        let index = self.read_index()?;
        if let Some(d) = index.manifests.iter().find(|d| d.annotation(REF_NAME_ANNOTATION) == Some(name.as_str())) {
            return Ok(Some(d.clone()));
        }
        if let Some(digest) = reference.digest() {
            if let Some(d) = index.manifests.iter().find(|d| &d.digest == digest) {
                return Ok(Some(d.clone()));
            }
            if self.has_blob(digest) {
                let bytes = self.read_blob(digest)?;
                let m = Manifest::parse(&bytes, None).map_err(|source| StoreError::Manifest { digest: digest.clone(), source })?;
                return Ok(Some(Descriptor::new(m.media_type(), digest.clone(), bytes.len() as u64)));
            }
        }
        Ok(None)
    }

    /// All tags, sorted by name.
    pub fn list(&self) -> Result<Vec<StoreEntry>, StoreError> {
        let index = self.read_index()?;
        let mut out: Vec<StoreEntry> = index
            .manifests
            .into_iter()
            .filter_map(|d| {
                let name = d.annotation(REF_NAME_ANNOTATION)?.to_string();
                Some(StoreEntry { reference: Reference::parse(&name).ok(), name, descriptor: d })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a tag; returns what it pointed at. Blobs stay until [`Store::gc`].
    pub fn untag(&self, reference: &Reference) -> Result<Option<Descriptor>, StoreError> {
        self.untag_name(&reference.to_string())
    }

    /// Removes a tag by raw `ref.name`.
    pub fn untag_name(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        let _g = self.lock_index()?;
        let mut index = self.read_index()?;
        let pos = index.manifests.iter().position(|d| d.annotation(REF_NAME_ANNOTATION) == Some(name));
        let Some(pos) = pos else { return Ok(None) };
        let removed = index.manifests.remove(pos);
        self.write_index(&index)?;
        Ok(Some(removed))
    }

    /// Holds off `gc` until dropped; take one before writing blobs you will tag later.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        let file = self.lock_file("gc.lock", rustix::fs::FlockOperation::LockShared)?;
        Ok(Lease { _file: file })
    }

    /// Deletes every blob not reachable from `index.json` (index → manifests → config and layers) and
    /// every temp file in `ingest/`. Waits for leases to be released first.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        let _gc = self.lock_file("gc.lock", rustix::fs::FlockOperation::LockExclusive)?;
        let _idx = self.lock_index()?;
        let index = self.read_index()?;
        let mut live = std::collections::BTreeSet::new();
        let mut queue: Vec<Descriptor> = index.manifests.clone();
        while let Some(d) = queue.pop() {
            if !live.insert(d.digest.clone()) {
                continue;
            }
            if !(media::is_index(&d.media_type) || media::is_image_manifest(&d.media_type)) || !self.has_blob(&d.digest) {
                continue;
            }
            match self.read_manifest(&d) {
                Ok(raw) => match raw.value {
                    Manifest::Index(i) => queue.extend(i.manifests.into_iter().chain(i.subject)),
                    Manifest::Image(m) => {
                        queue.push(m.config);
                        queue.extend(m.layers.into_iter().chain(m.subject));
                    }
                },
                Err(e) => tracing::warn!("gc: cannot read manifest {}: {e}; keeping it", d.digest),
            }
        }
        let mut report = GcReport::default();
        let blobs = self.dir.join("blobs");
        for algo_dir in read_dir_sorted(&blobs)? {
            let algo = algo_dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            for path in read_dir_sorted(&algo_dir)? {
                let hex = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let Ok(digest) = Digest::parse(&format!("{algo}:{hex}")) else {
                    tracing::warn!("gc: leaving unexpected file {}", path.display());
                    continue;
                };
                if live.contains(&digest) {
                    report.kept += 1;
                    continue;
                }
                let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).map_err(io_err("remove blob", &path))?;
                report.freed_bytes += size;
                report.removed.push(BlobInfo { digest, size });
            }
        }
        for path in read_dir_sorted(&self.dir.join("ingest"))? {
            let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err("remove stale temp file", &path))?;
            report.freed_bytes += size;
            report.stale_temp_files += 1;
        }
        report.removed.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(report)
    }

    /// The parsed `index.json`.
    pub fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.dir.join("index.json");
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::CorruptIndex { path, source })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(index).unwrap_or_default();
        self.write_atomic(&self.dir.join("index.json"), &bytes)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        // The index is what every later run trusts: durable before the call returns.
        crate::atomic::write(path, bytes, crate::atomic::Durability::Synced).map_err(io_err("write", path))
    }

    fn temp_path(&self, kind: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        // An empty `ingest/` may have been removed under us (an `--isolation none` RUN step can
        // remove kiln's empty directories, not its files): make it again, best effort.
        let _ = fs::create_dir_all(self.dir.join("ingest"));
        self.dir.join("ingest").join(format!("{kind}-{}-{n}-{nanos}.tmp", std::process::id()))
    }

    fn lock_index(&self) -> Result<File, StoreError> {
        self.lock_file("index.lock", rustix::fs::FlockOperation::LockExclusive)
    }

    fn lock_file(&self, name: &str, op: rustix::fs::FlockOperation) -> Result<File, StoreError> {
        let path = self.dir.join(name);
        let f =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err("open lock file", &path))?;
        rustix::fs::flock(&f, op).map_err(|e| io_err("lock", &path)(e.into()))?;
        Ok(f)
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        out.push(e.map_err(io_err("list", dir))?.path());
    }
    out.sort();
    Ok(out)
}

/// A blob being written into the store; see [`Store::blob_writer`].
pub struct BlobWriter {
    store: Store,
    inner: Option<DigestWriter<io::BufWriter<File>>>,
    /// False: the caller vouches for the digest given to `commit`.
    hashing: bool,
    temp: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.as_ref().map(|w| w.written()).unwrap_or(0)
    }

    /// The temp file the blob is written to until `commit` (for messages about a failed write).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Flushes, fsyncs, checks against `expected` and renames into place. On a mismatch the temp file
    /// is deleted and [`StoreError::Digest`] returned.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<BlobInfo, StoreError> {
        let Some(w) = self.inner.take() else {
            return Err(io_err("commit", &self.temp)(io::Error::other("blob writer already finished")));
        };
        let (buf, actual, size) = w.finish();
        let temp = self.temp.clone();
        let file = buf.into_inner().map_err(|e| io_err("flush", &temp)(e.into_error()))?;
        file.sync_all().map_err(io_err("fsync", &temp))?;
        drop(file);
        let digest = match expected {
            Some(e) if !self.hashing => e.clone(),
            None if !self.hashing => {
                return Err(io_err("commit", &temp)(io::Error::other("a blob written without hashing needs its digest")));
            }
            Some(e) if e.algorithm() != actual.algorithm() => {
                // Non-sha256 expectations are verified by re-reading; rare (registries use sha256).
                let mut r = VerifyingReader::new(File::open(&temp).map_err(io_err("open", &temp))?, Some(e));
                io::copy(&mut r, &mut io::sink()).map_err(io_err("verify", &temp))?;
                e.clone()
            }
            Some(e) if *e != actual => {
                return Err(StoreError::Digest(DigestError::Mismatch { expected: e.clone(), actual, size }));
            }
            _ => actual,
        };
        let dest = self.store.blob_path(&digest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        }
        fs::rename(&temp, &dest).map_err(io_err("rename into place", &dest))?;
        crate::atomic::sync_dir_of(&dest).map_err(io_err("fsync directory of", &dest))?;
        Ok(BlobInfo { digest, size })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("blob writer already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Uncommitted or failed: the temp file must not linger as if it meant something.
        if self.temp.exists() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// [`Store::tidy_layout`] for a layout directory not open as a store.
pub fn tidy_layout(dir: &Path) {
    let _ = fs::remove_dir(dir.join("ingest"));
    let _ = fs::remove_file(dir.join("index.lock"));
}
