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
