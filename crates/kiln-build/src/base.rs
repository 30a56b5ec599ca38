//! Base images: what `FROM <image>` starts from, read from the local store for one platform and
//! pulled into it (that platform only, the index kept whole) when it is not there, or every time
//! with `--pull`. A `--build-context` named like the image takes its place (see [`crate::named_context`]).

use kiln_oci::{media, Descriptor, Digest, ImageConfig, Manifest, Platform, Reference, Store, StoreError};

use std::path::Path;
use std::sync::Arc;

use crate::context::Kind;
use crate::named_context::{ContextSource, NamedContext, NamedContexts};

use crate::error::{BaseFailure, BuildError};
use crate::state::{default_shell, ImageState, LayerRef};

/// A base image resolved for one platform.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub manifest: Descriptor,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
}

/// Base images of one build, each looked up (and pulled) at most once per platform, shared by the
/// resolver (which needs a base's ENV and WORKDIR) and the solver (which needs its layers). A failure
/// is remembered too, so an unreachable registry is waited for once, not once per mention.
pub struct Bases {
    store: Store,
    client: Option<std::sync::Arc<kiln_registry::Client>>,
    contexts: NamedContexts,
    pull: bool,
    /// Where pulls report their bytes (see [`Transfers`]).
    transfers: Option<Transfers>,
    memo: std::sync::Mutex<std::collections::HashMap<(String, String), Looked>>,
}

/// One byte count of a transfer, for [`crate::Progress::transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub what: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// A sending end for [`Transfer`]s. Base lookups live behind the resolver's `'static` callback,
/// which cannot hold the build's borrowed `Progress`; they send here instead, and a thread scoped
/// to the build hands each event to it (`crate::build`).
#[derive(Debug, Clone)]
pub struct Transfers(pub std::sync::mpsc::Sender<Transfer>);

/// A [`kiln_registry::Progress`] turned into [`Transfer`]s named `PREFIX sha256:…`, handed to a
/// sink: the build's [`crate::Progress`] directly (for transfers on the build's own threads: cache
/// imports and exports), or a channel (for pulls behind the resolver's `'static` callback).
pub(crate) struct TransferReport<'a> {
    sink: Box<dyn Fn(Transfer) + Send + Sync + 'a>,
    prefix: String,
    sizes: std::sync::Mutex<std::collections::HashMap<kiln_oci::Digest, u64>>,
}

impl<'a> TransferReport<'a> {
    pub(crate) fn new(progress: &'a dyn crate::Progress, prefix: String) -> TransferReport<'a> {
        TransferReport::to(Box::new(move |t: Transfer| progress.transfer(&t.what, t.done, t.total)), prefix)
    }

    fn to(sink: Box<dyn Fn(Transfer) + Send + Sync + 'a>, prefix: String) -> TransferReport<'a> {
        TransferReport { sink, prefix, sizes: Default::default() }
    }

    fn send(&self, digest: &kiln_oci::Digest, done: Option<u64>) {
        let total = self.sizes.lock().ok().and_then(|m| m.get(digest).copied());
        let hex = digest.hex();
        let what = format!("{} sha256:{}", self.prefix, &hex[..hex.len().min(12)]);
        (self.sink)(Transfer { what, done: done.or(total).unwrap_or(0), total });
    }
}

impl kiln_registry::Progress for TransferReport<'_> {
    fn blob_start(&self, digest: &kiln_oci::Digest, size: u64, _kind: &str) {
        if let Ok(mut m) = self.sizes.lock() {
            m.insert(digest.clone(), size);
        }
        self.send(digest, Some(0));
    }

    fn blob_progress(&self, digest: &kiln_oci::Digest, done: u64) {
        self.send(digest, Some(done));
    }

    fn blob_done(&self, digest: &kiln_oci::Digest, _outcome: &str) {
        // Finished: done == total (a blob that was there already reports its size too).
        self.send(digest, None);
    }
}

/// A pull's reporter: `pull IMAGE sha256:…` down the build's channel.
fn pull_report<'a>(tx: &'a std::sync::mpsc::Sender<Transfer>, image: &str) -> TransferReport<'a> {
    TransferReport::to(
        Box::new(move |t| {
            let _ = tx.send(t);
        }),
        format!("pull {image}"),
    )
}

/// A lookup's result as it is given again; a failure is shared by every mention of the image.
type Looked = Result<BaseImage, Arc<BuildError>>;

impl Bases {
    pub fn new(store: Store, client: Option<std::sync::Arc<kiln_registry::Client>>) -> Bases {
        Bases {
            store,
            client,
            contexts: NamedContexts::default(),
            pull: false,
            transfers: None,
            memo: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Reporting the bytes of pulls to `transfers`.
    pub fn reporting(mut self, transfers: Transfers) -> Bases {
        self.transfers = Some(transfers);
        self
    }

    /// With `--build-context`s that replace the images they are named like, and `--pull`.
    pub fn with(mut self, contexts: NamedContexts, pull: bool) -> Bases {
        self.contexts = contexts;
        self.pull = pull;
        self
    }

    pub fn get(&self, image: &str, platform: &Platform) -> Result<BaseImage, BuildError> {
        let k = (image.to_string(), platform.to_string());
        if let Some(r) = self.memo.lock().ok().and_then(|m| m.get(&k).cloned()) {
            return r.map_err(BuildError::Again);
        }
        let r = match self.contexts.get(image) {
            Some(nc) => self.context(nc, platform),
            None => ensure(&self.store, self.client.as_deref(), image, platform, self.pull, self.transfers.as_ref()),
        }
        .map_err(Arc::new);
        if let Ok(mut m) = self.memo.lock() {
            m.insert(k, r.clone());
        }
        r.map_err(BuildError::Again)
    }

    /// The image a named context stands for.
    fn context(&self, nc: &NamedContext, platform: &Platform) -> Result<BaseImage, BuildError> {
        match &nc.source {
            ContextSource::Image(r) => {
                ensure(&self.store, self.client.as_deref(), &r.to_string(), platform, self.pull, self.transfers.as_ref())
            }
            ContextSource::Layout { dir, tag, digest } => from_layout(&self.store, nc, dir, tag.as_deref(), digest.as_ref(), platform),
            ContextSource::Local(dir) => dir_image(&self.store, dir, platform),
        }
    }
}

/// A directory context as an image, as BuildKit takes one where an image is needed (`FROM NAME`,
/// `RUN --mount=from=NAME`): one layer of its files (less its `.dockerignore`), owned by root, with
/// no timestamps, and an empty config. So the image, and every key built on it, changes with the
/// files' content, names and modes, and with nothing else.
fn dir_image(store: &Store, dir: &Path, platform: &Platform) -> Result<BaseImage, BuildError> {
    let context = crate::named_context::open_dir(dir)?;
    let entries = context.walk("")?;
    let layer_err = |source| BuildError::Layer { digest: "(new)".into(), source };
    let info = kiln_oci::layer::write_layer_to_store(store, |w| {
        let tar_err = |e: std::io::Error| kiln_oci::layer::LayerError::Tar(e);
        let mut b = tar::Builder::new(kiln_oci::DigestWriter::new(w));
        for e in entries.iter().filter(|e| !e.rel.is_empty()) {
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match &e.kind {
                Kind::File { size } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*size);
                    let f = std::fs::File::open(context.host_path(&e.rel)).map_err(|source| kiln_oci::layer::LayerError::Io {
                        op: "read",
                        path: context.host_path(&e.rel),
                        source,
                    })?;
                    b.append_data(&mut h, &e.rel, f).map_err(tar_err)?;
                }
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{}/", e.rel), std::io::empty()).map_err(tar_err)?;
                }
                Kind::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &e.rel, target).map_err(tar_err)?;
                }
            }
        }
        let (_, digest, size) = b.into_inner().map_err(tar_err)?.finish();
        let compression = kiln_oci::Compression::None;
        Ok(kiln_oci::layer::LayerInfo { digest: digest.clone(), size, diff_id: digest, uncompressed_size: size, compression })
    })
    .map_err(layer_err)?;
    let layer = LayerRef { descriptor: info.descriptor(), diff_id: info.diff_id.clone() };
    let mut config = ImageState::scratch(platform).config;
    config.rootfs = kiln_oci::RootFs { diff_ids: vec![info.diff_id], ..kiln_oci::RootFs::default() };
    let cfg = store.put_blob_bytes(&config.to_json())?;
    let config_desc = Descriptor::new(media::OCI_CONFIG, cfg.digest, cfg.size);
    let manifest = Manifest::Image(kiln_oci::ImageManifest::new_oci(config_desc, vec![layer.descriptor.clone()]));
    let desc = store.put_manifest(&manifest)?;
    Ok(BaseImage { manifest: desc, config, layers: vec![layer] })
}

/// The image of an OCI layout for `platform`, its blobs copied into the store (where snapshots and
/// exports find layers); the layout is only read.
fn from_layout(
    store: &Store,
    nc: &NamedContext,
    dir: &Path,
    tag: Option<&str>,
    digest: Option<&Digest>,
    platform: &Platform,
) -> Result<BaseImage, BuildError> {
    let err = |source: BaseFailure| BuildError::Base { reference: format!("{}={}", nc.name, nc.value), source };
    if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
        return Err(err(BaseFailure::NoLayout { name: nc.name.clone(), path: dir.to_path_buf() }));
    }
    let layout = Store::open_layout(dir)?;
    let index = layout.read_index();
    layout.tidy_layout();
    let index = index?;
    let root = match (digest, tag) {
        (Some(d), _) => match index.manifests.iter().find(|m| &m.digest == d) {
            Some(m) => m.clone(),
            None if layout.has_blob(d) => {
                let bytes = layout.read_blob(d)?;
                let m = Manifest::parse(&bytes, None).map_err(|source| StoreError::Manifest { digest: d.clone(), source })?;
                Descriptor::new(m.media_type(), d.clone(), bytes.len() as u64)
            }
            None => return Err(err(BaseFailure::LayoutDigest { name: nc.name.clone(), path: dir.to_path_buf(), digest: d.clone() })),
        },
        (None, tag) => {
            let tag = tag.unwrap_or("latest");
            let named = |m: &&Descriptor| {
                m.annotation(kiln_oci::store::REF_NAME_ANNOTATION).is_some_and(|n| n == tag || n.ends_with(&format!(":{tag}")))
            };
            match index.manifests.iter().find(named) {
                Some(m) => m.clone(),
                None => {
                    let tags: Vec<&str> =
                        index.manifests.iter().filter_map(|m| m.annotation(kiln_oci::store::REF_NAME_ANNOTATION)).collect();
                    let tags = if tags.is_empty() { "none".to_string() } else { tags.join(", ") };
                    return Err(err(BaseFailure::LayoutTag { name: nc.name.clone(), path: dir.to_path_buf(), tag: tag.to_string(), tags }));
                }
            }
        }
    };
    let desc = layout.select_platform(&nc.name, &root, platform)?;
    let copy = |d: &Digest| -> Result<(), BuildError> {
        if !store.has_blob(d) {
            let f = layout.open_blob(d)?;
            store.put_blob_stream(std::io::BufReader::new(f), Some(d))?;
        }
        Ok(())
    };
    copy(&desc.digest)?;
    if let Manifest::Image(m) = &layout.read_manifest(&desc)?.value {
        copy(&m.config.digest)?;
        for l in &m.layers {
            copy(&l.digest)?;
        }
    }
    load_manifest(store, &nc.name, desc)
}

/// Finds `image` for `platform` in the store, pulling it from its registry when it is not there, or
/// has no image for the platform here. The pull keeps an index whole and only adds the platform's
/// image to it: a tag that names an index listing the platform is completed by that index's digest
/// and stays where it is, and a tag moves to what the registry names only when that loses none of
/// the images the store had (see [`kiln_registry::Tagging::Keep`]); otherwise the pull is used by
/// digest.
///
/// `pull` (`--pull`): a tag is resolved at its registry first, whatever the store has, and the
/// store's tag follows it; a registry that cannot be reached is then an error. A digest reference
/// names the same image everywhere, so the store's copy is used; so is an image of `kiln.local`
/// (kiln's own namespace for imported images, which names no registry).
pub fn ensure(
    store: &Store,
    client: Option<&kiln_registry::Client>,
    image: &str,
    platform: &Platform,
    pull: bool,
    transfers: Option<&Transfers>,
) -> Result<BaseImage, BuildError> {
    let err = |source: BaseFailure| BuildError::Base { reference: image.to_string(), source };
    let reference = Reference::parse(image).map_err(|e| err(BaseFailure::Reference(e)))?;
    let kiln_local = reference.registry() == "kiln.local";
    let always = pull && client.is_some() && !kiln_local && reference.digest().is_none();
    let local_err = if always {
        None
    } else {
        match load(store, image, platform) {
            Ok(b) => return Ok(b),
            Err(e) => Some(e),
        }
    };
    let (client, local_err) = match (client, local_err) {
        (Some(c), None) => (c, None),
        (Some(c), Some(e)) if !kiln_local => (c, Some(e)),
        (_, Some(e)) => return Err(e),
        // No registry to ask: the store is all there is.
        (None, None) => return load(store, image, platform),
    };
    let why = match &local_err {
        None => "--pull resolves it at its registry".to_string(),
        Some(BuildError::Store(StoreError::PlatformAbsent(_))) => format!("has no image for {platform} in the local store"),
        Some(_) => "not in the local store".to_string(),
    };
    let tagging = if always { kiln_registry::Tagging::Follow } else { kiln_registry::Tagging::Keep };
    let selection = kiln_registry::PlatformSelection::Only(vec![platform.clone()]);
    let reporter = transfers.map(|t| pull_report(&t.0, image));
    let progress: &dyn kiln_registry::Progress = match &reporter {
        Some(r) => r,
        None => &kiln_registry::NoProgress,
    };
    let pulled = kiln_registry::pull_to_store(client, store, &reference, &selection, tagging, progress).map_err(|source| {
        err(BaseFailure::Pull { why, platform: platform.to_string(), image: image.to_string(), source: Box::new(source) })
    })?;
    load(store, &reference.with_digest(pulled.root.digest).to_string(), platform)
}

/// Finds `image` in the store for `platform`: an index is narrowed to the platform's image, which
/// must have been fetched; an image manifest must be for the platform (or name none in its config).
pub fn load(store: &Store, image: &str, platform: &Platform) -> Result<BaseImage, BuildError> {
    let err = |source: BaseFailure| BuildError::Base { reference: image.to_string(), source };
    let reference = Reference::parse(image).map_err(|e| err(BaseFailure::Reference(e)))?;
    let Some(root) = store.resolve(&reference)? else {
        return Err(err(BaseFailure::NotLocal { reference: reference.to_string(), image: image.to_string() }));
    };
    // Named as the user wrote it, so the suggested `kiln pull` is the command they would type.
    let desc = store.select_platform(image, &root, platform)?;
    load_manifest(store, image, desc)
}

/// The layers and config of the image manifest `desc`.
pub(crate) fn load_manifest(store: &Store, image: &str, mut desc: Descriptor) -> Result<BaseImage, BuildError> {
    let err = |source: BaseFailure| BuildError::Base { reference: image.to_string(), source };
    let raw = store.read_manifest(&desc)?;
    let Manifest::Image(m) = &raw.value else {
        return Err(err(BaseFailure::NotAnImage { digest: desc.digest.clone() }));
    };
    let config = store.read_config(&m.config.digest)?.value;
    let ids = &config.rootfs.diff_ids;
    if ids.len() != m.layers.len() {
        return Err(err(BaseFailure::LayerCount { config: ids.len(), manifest: m.layers.len() }));
    }
    let layers = m.layers.iter().zip(ids).map(|(d, id)| LayerRef { descriptor: d.clone(), diff_id: id.clone() }).collect();
    if desc.media_type.is_empty() {
        desc.media_type = media::OCI_MANIFEST.to_string();
    }
    Ok(BaseImage { manifest: desc, config, layers })
}

impl BaseImage {
    /// The stage state a `FROM` of this image starts with.
    pub fn state(&self, platform: &Platform) -> ImageState {
        let created = self.config.created.as_deref().and_then(crate::time::parse_rfc3339).unwrap_or(0);
        let mut config = self.config.clone();
        let history = config.history.take().unwrap_or_default();
        let shell = config.config.as_ref().and_then(|c| c.shell.clone()).unwrap_or_else(default_shell);
        ImageState {
            platform: platform.clone(),
            layers: self.layers.clone(),
            config,
            history,
            key: kiln_cache::inputs::image_root(&self.manifest.digest, platform),
            created,
            shell,
            cmd_set: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pulls_bytes_reach_the_build_as_transfers_named_by_image_and_blob() {
        use kiln_registry::Progress as _;
        let (tx, rx) = std::sync::mpsc::channel();
        let p = pull_report(&tx, "reg/app:1");
        let d = kiln_oci::Digest::sha256_of(b"layer");
        p.blob_start(&d, 100, "layer");
        p.blob_progress(&d, 40);
        p.blob_done(&d, "downloaded");
        drop(p);
        drop(tx);
        let got: Vec<Transfer> = rx.iter().collect();
        let what = format!("pull reg/app:1 sha256:{}", &d.hex()[..12]);
        let t = |done| Transfer { what: what.clone(), done, total: Some(100) };
        assert_eq!(got, [t(0), t(40), t(100)], "the last one has done == total");
    }

    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_missing_base_says_what_to_run_and_keeps_why_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let e = load(&store, "busybox:1", &Platform::host()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "base image busybox:1: not in the local store (docker.io/library/busybox:1); run `kiln pull busybox:1` or `kiln import ROOTFS.tar -t busybox:1` first"
        );
        assert!(matches!(e.source().and_then(|s| s.downcast_ref::<BaseFailure>()), Some(BaseFailure::NotLocal { .. })), "{e:?}");
        let bad = load(&store, "busybox@sha256:nothex", &Platform::host()).unwrap_err();
        let failure = bad.source().and_then(|s| s.downcast_ref::<BaseFailure>());
        assert!(matches!(failure, Some(BaseFailure::Reference(_))), "{bad:?}");
        assert!(failure.and_then(|f| f.source()).and_then(|s| s.downcast_ref::<kiln_oci::ReferenceError>()).is_some(), "{bad:?}");
    }

    #[test]
    fn a_directory_image_changes_with_content_and_mode_not_with_mtimes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a"), "a").unwrap();
        std::fs::write(dir.join(".dockerignore"), "skip\n").unwrap();
        let p = Platform::parse("linux/amd64").unwrap();
        let first = dir_image(&store, &dir, &p).unwrap();
        assert_eq!(first.layers.len(), 1);
        std::fs::write(dir.join("sub/a"), "a").unwrap();
        std::fs::write(dir.join("skip"), "ignored").unwrap();
        assert_eq!(dir_image(&store, &dir, &p).unwrap().manifest.digest, first.manifest.digest, "mtimes and ignored files do not count");
        std::fs::set_permissions(dir.join("sub/a"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mode = dir_image(&store, &dir, &p).unwrap();
        assert_ne!(mode.manifest.digest, first.manifest.digest, "a mode does");
        std::fs::write(dir.join("sub/a"), "b").unwrap();
        assert_ne!(dir_image(&store, &dir, &p).unwrap().manifest.digest, mode.manifest.digest, "content does");
        assert_eq!(load_manifest(&store, "d", first.manifest.clone()).unwrap().layers, first.layers, "the image is in the store");
    }

    #[test]
    fn a_failed_lookup_is_given_again_with_the_same_text_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let bases = Bases::new(Store::open(dir.path()).unwrap(), None);
        let first = bases.get("busybox:1", &Platform::host()).unwrap_err();
        let again = bases.get("busybox:1", &Platform::host()).unwrap_err();
        assert_eq!(first.to_string(), again.to_string());
        assert!(first.to_string().starts_with("base image busybox:1: not in the local store"), "{first}");
        assert!(matches!(again.source().and_then(|s| s.downcast_ref::<BaseFailure>()), Some(BaseFailure::NotLocal { .. })), "{again:?}");
    }
}
