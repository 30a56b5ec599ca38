//! Base images: what `FROM <image>` starts from, read from the local store for one platform and
//! pulled into it (that platform only, the index kept whole) when it is not there.

use kiln_oci::{media, Descriptor, ImageConfig, Manifest, Platform, Reference, Store, StoreError};

use std::sync::Arc;

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
    memo: std::sync::Mutex<std::collections::HashMap<(String, String), Looked>>,
}

/// A lookup's result as it is given again; a failure is shared by every mention of the image.
type Looked = Result<BaseImage, Arc<BuildError>>;

impl Bases {
    pub fn new(store: Store, client: Option<std::sync::Arc<kiln_registry::Client>>) -> Bases {
        Bases { store, client, memo: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }

    pub fn get(&self, image: &str, platform: &Platform) -> Result<BaseImage, BuildError> {
        let k = (image.to_string(), platform.to_string());
        if let Some(r) = self.memo.lock().ok().and_then(|m| m.get(&k).cloned()) {
            return r.map_err(BuildError::Again);
        }
        let r = ensure(&self.store, self.client.as_deref(), image, platform).map_err(Arc::new);
        if let Ok(mut m) = self.memo.lock() {
            m.insert(k, r.clone());
        }
        r.map_err(BuildError::Again)
    }
}

/// Finds `image` for `platform` in the store, pulling it from its registry when it is not there, or
/// has no image for the platform here. The pull keeps an index whole and only adds the platform's
/// image to it: a tag that names an index listing the platform is completed by that index's digest
/// and stays where it is, and a tag moves to what the registry names only when that loses none of
/// the images the store had (see [`kiln_registry::Tagging::Keep`]); otherwise the pull is used by
/// digest.
pub fn ensure(store: &Store, client: Option<&kiln_registry::Client>, image: &str, platform: &Platform) -> Result<BaseImage, BuildError> {
    let local_err = match load(store, image, platform) {
        Ok(b) => return Ok(b),
        Err(e) => e,
    };
    let Some(client) = client else { return Err(local_err) };
    let err = |source: BaseFailure| BuildError::Base { reference: image.to_string(), source };
    let reference = Reference::parse(image).map_err(|e| err(BaseFailure::Reference(e)))?;
    if reference.registry() == "kiln.local" {
        // kiln's own namespace for imported images never names a real registry.
        return Err(local_err);
    }
    let why = match &local_err {
        BuildError::Store(StoreError::PlatformAbsent(_)) => format!("has no image for {platform} in the local store"),
        _ => "not in the local store".to_string(),
    };
    let selection = kiln_registry::PlatformSelection::Only(vec![platform.clone()]);
    let pulled =
        kiln_registry::pull_to_store(client, store, &reference, &selection, kiln_registry::Tagging::Keep, &kiln_registry::NoProgress)
            .map_err(|source| {
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
