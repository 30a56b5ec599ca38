//! Base images: what `FROM <image>` starts from, read from the local store.

use kiln_oci::{media, Descriptor, ImageConfig, Manifest, Platform, Reference, Store};

use crate::error::BuildError;
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
    memo: std::sync::Mutex<std::collections::HashMap<(String, String), Result<BaseImage, String>>>,
}

impl Bases {
    pub fn new(store: Store, client: Option<std::sync::Arc<kiln_registry::Client>>) -> Bases {
        Bases { store, client, memo: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }

    pub fn get(&self, image: &str, platform: &Platform) -> Result<BaseImage, BuildError> {
        let k = (image.to_string(), platform.to_string());
        if let Some(r) = self.memo.lock().ok().and_then(|m| m.get(&k).cloned()) {
            return r.map_err(|message| BuildError::Base { reference: image.to_string(), message });
        }
        let r = ensure(&self.store, self.client.as_deref(), image, platform);
        let remembered = match &r {
            Ok(b) => Ok(b.clone()),
            Err(BuildError::Base { message, .. }) => Err(message.clone()),
            Err(e) => Err(e.to_string()),
        };
        if let Ok(mut m) = self.memo.lock() {
            m.insert(k, remembered);
        }
        r
    }
}

/// Finds `image` for `platform` in the store, pulling it from its registry when it is not there (or
/// has no image for the platform). A pulled image is tagged with its reference unless that tag
/// already names something else (e.g. another platform's pull); then it is used by digest.
pub fn ensure(store: &Store, client: Option<&kiln_registry::Client>, image: &str, platform: &Platform) -> Result<BaseImage, BuildError> {
    let local_err = match load(store, image, platform) {
        Ok(b) => return Ok(b),
        Err(e) => e,
    };
    let Some(client) = client else { return Err(local_err) };
    let err = |message: String| BuildError::Base { reference: image.to_string(), message };
    let reference = Reference::parse(image).map_err(|e| err(e.to_string()))?;
    if reference.registry() == "kiln.local" {
        // kiln's own namespace for imported images never names a real registry.
        return Err(local_err);
    }
    let src = kiln_registry::RegistrySource {
        client,
        repo: kiln_registry::Repo::new(reference.registry(), reference.repository()),
    };
    let src_ref = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let tagged = store.resolve(&reference)?.is_some();
    let dst = kiln_registry::LocalImages::new(store.clone(), "store", true).map_err(|e| err(e.to_string()))?;
    let tag = if tagged { None } else { Some(reference.to_string()) };
    let opts = kiln_registry::CopyOptions { platform: Some(platform.clone()), parallel: client.options().parallel };
    let res = kiln_registry::copy_image(&src, &src_ref, &dst, tag.as_deref(), &opts, &kiln_registry::NoProgress)
        .map_err(|e| {
            err(format!(
                "not in the local store, and pulling it failed: {e}. Pull it with `kiln pull {image}` (kiln login first if it is private) or import it with `kiln import ROOTFS.tar -t {image}`"
            ))
        })?;
    let by_digest = reference.with_digest(res.digest.clone()).to_string();
    load(store, if tagged { &by_digest } else { image }, platform)
}

/// Finds `image` in the store for `platform` (an index is narrowed to the platform's manifest).
pub fn load(store: &Store, image: &str, platform: &Platform) -> Result<BaseImage, BuildError> {
    let err = |message: String| BuildError::Base { reference: image.to_string(), message };
    let reference = Reference::parse(image).map_err(|e| err(e.to_string()))?;
    let Some(mut desc) = store.resolve(&reference)? else {
        return Err(err(format!(
            "not in the local store ({}); run `kiln pull {image}` or `kiln import ROOTFS.tar -t {image}` first",
            reference
        )));
    };
    for _ in 0..4 {
        let raw = store.read_manifest(&desc)?;
        match &raw.value {
            Manifest::Index(index) => {
                let Some(child) = index.find_platform(platform) else {
                    let have: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect();
                    return Err(err(format!("has no image for {platform} (it has: {})", have.join(", "))));
                };
                desc = child.clone();
            }
            Manifest::Image(m) => {
                let config = store.read_config(&m.config.digest)?.value;
                let ids = &config.rootfs.diff_ids;
                if ids.len() != m.layers.len() {
                    return Err(err(format!(
                        "its config lists {} layers but its manifest {}",
                        ids.len(),
                        m.layers.len()
                    )));
                }
                let layers = m
                    .layers
                    .iter()
                    .zip(ids)
                    .map(|(d, id)| LayerRef { descriptor: d.clone(), diff_id: id.clone() })
                    .collect();
                if desc.media_type.is_empty() {
                    desc.media_type = media::OCI_MANIFEST.to_string();
                }
                return Ok(BaseImage { manifest: desc, config, layers });
            }
        }
    }
    Err(err("indexes nest too deeply".to_string()))
}

impl BaseImage {
    /// The stage state a `FROM` of this image starts with.
    pub fn state(&self, platform: &Platform) -> ImageState {
        let created = self
            .config
            .created
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
            .unwrap_or(0);
        let mut config = self.config.clone();
        let history = config.history.take().unwrap_or_default();
        let shell = config.config.as_ref().and_then(|c| c.shell.clone()).unwrap_or_else(default_shell);
        ImageState {
            platform: platform.clone(),
            layers: self.layers.clone(),
            config,
            history,
            key: kiln_oci::Digest::sha256_of(format!("from {} {platform}", self.manifest.digest).as_bytes()),
            created,
            shell,
            cmd_set: false,
        }
    }
}
