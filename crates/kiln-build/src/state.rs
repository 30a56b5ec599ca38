//! The state a stage carries from step to step: its layers, its image config, and its cache key.

use kiln_oci::{ContainerConfig, Descriptor, Digest, History, ImageConfig, Platform};
use serde::{Deserialize, Serialize};

/// One layer of an image being built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// A stage's image as of some step.
#[derive(Debug, Clone)]
pub struct ImageState {
    pub platform: Platform,
    pub layers: Vec<LayerRef>,
    /// The image config; `rootfs` and `history` are rebuilt from `layers` and `history` at export.
    pub config: ImageConfig,
    pub history: Vec<History>,
    /// The cache key of the last step (or of the base image).
    pub key: Digest,
    /// Seconds since the epoch of the newest step that made a layer: the image's `created`, so that a
    /// rebuild from cache gives the same digest.
    pub created: u64,
    /// `SHELL` in force (Docker's default `/bin/sh -c`).
    pub shell: Vec<String>,
    /// A CMD was set in the current stage (then ENTRYPOINT keeps it; else it resets an inherited one).
    pub cmd_set: bool,
}

impl ImageState {
    /// An empty image (`FROM scratch`).
    pub fn scratch(platform: &Platform) -> ImageState {
        let mut config = ImageConfig::new(platform);
        config.config = Some(ContainerConfig {
            env: Some(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()]),
            ..ContainerConfig::default()
        });
        ImageState {
            platform: platform.clone(),
            layers: Vec::new(),
            config,
            history: Vec::new(),
            key: kiln_cache::inputs::scratch_root(platform),
            created: 0,
            shell: default_shell(),
            cmd_set: false,
        }
    }

    /// The runtime config, created on first use.
    pub fn runtime(&mut self) -> &mut ContainerConfig {
        self.config.config.get_or_insert_with(ContainerConfig::default)
    }

    /// `KEY=VALUE` environment of the image.
    pub fn env(&self) -> Vec<String> {
        self.config.config.as_ref().and_then(|c| c.env.clone()).unwrap_or_default()
    }

    pub fn user(&self) -> String {
        self.config.config.as_ref().and_then(|c| c.user.clone()).unwrap_or_default()
    }

    pub fn workdir(&self) -> String {
        self.config.config.as_ref().and_then(|c| c.working_dir.clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".to_string())
    }
}

pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// Sets `KEY=VALUE` in an env list, replacing an existing KEY in place (Docker's order).
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let item = format!("{key}={value}");
    for e in env.iter_mut() {
        if e.split_once('=').map(|(k, _)| k) == Some(key) || e == key {
            *e = item;
            return;
        }
    }
    env.push(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_env_replaces_in_place_and_appends_new_keys() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string(), "B=2".to_string()];
        set_env(&mut env, "A", "x=y");
        set_env(&mut env, "C", "3");
        assert_eq!(env, vec!["PATH=/bin", "A=x=y", "B=2", "C=3"]);
    }
}
