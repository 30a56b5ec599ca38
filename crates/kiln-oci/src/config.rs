//! The image config (`application/vnd.oci.image.config.v1+json`, Docker's container config). Fields kiln
//! does not model are kept in `extra` maps so a config read and written again loses nothing; for byte
//! stability keep the original bytes with [`crate::Raw`] and only re-serialise configs kiln changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::Raw;
use crate::platform::Platform;

type Extra = serde_json::Map<String, serde_json::Value>;

/// The image config.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time, kept as a string so that it round-trips exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<History>>,
    /// Everything else (Docker's `container_config`, `docker_version`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The runtime defaults (`config` in the image config). Docker's capitalised field names.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Fields kiln does not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The layer chain by diff id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs { kind: "layers".to_string(), diff_ids: Vec::new() }
    }
}

/// One history entry.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ImageConfig {
    /// A config for `platform` with no layers.
    pub fn new(platform: &Platform) -> ImageConfig {
        ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            os_version: platform.os_version.clone(),
            ..ImageConfig::default()
        }
    }

    /// Parses config JSON.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Compact JSON; object keys of the `extra` maps come out sorted, so the output is deterministic.
    pub fn to_json(&self) -> Vec<u8> {
        // Only strings, bools, maps and JSON values: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The platform this config declares.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            features: None,
        }
    }
}

impl Raw<ImageConfig> {
    /// Parses a config and keeps its bytes.
    pub fn parse_config(bytes: Vec<u8>) -> Result<Raw<ImageConfig>, serde_json::Error> {
        let value = ImageConfig::parse(&bytes)?;
        Ok(Raw { bytes, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CONFIG: &str = r##"{"architecture":"amd64","config":{"Hostname":"","Env":["PATH=/bin"],"Cmd":["sh"],"Image":"sha256:abc","Labels":{"a":"b"},"OnBuild":null},"container":"3a4","container_config":{"Hostname":"3a4","Cmd":["/bin/sh","-c","#(nop) CMD [\"sh\"]"]},"created":"2023-05-19T20:19:21.953353678Z","docker_version":"20.10.23","history":[{"created":"2023-05-19T20:19:21.953353678Z","created_by":"/bin/sh -c #(nop) ADD file:abc in / ","x-custom":1}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0"]},"variant":"v8","zz-unknown":{"nested":[1,2,3]}}"##;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let c = ImageConfig::parse(DOCKER_CONFIG.as_bytes()).unwrap();
        assert_eq!(c.extra.get("docker_version").and_then(|v| v.as_str()), Some("20.10.23"));
        assert!(c.extra.contains_key("container_config"));
        assert!(c.extra.contains_key("zz-unknown"));
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.extra.get("Hostname").and_then(|v| v.as_str()), Some(""));
        assert_eq!(cc.extra.get("Image").and_then(|v| v.as_str()), Some("sha256:abc"));
        assert_eq!(c.history.as_ref().unwrap()[0].extra.get("x-custom"), Some(&serde_json::json!(1)));
        let out = c.to_json();
        let again = ImageConfig::parse(&out).unwrap();
        assert_eq!(again, c);
        // Every key of the input is still in the output (the `null` OnBuild becomes absent, which is why
        // digests must come from the raw bytes).
        let a: serde_json::Value = serde_json::from_str(DOCKER_CONFIG).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for k in a.as_object().unwrap().keys() {
            assert!(b.get(k).is_some(), "lost key {k}");
        }
        assert_eq!(a["zz-unknown"], b["zz-unknown"]);
    }

    #[test]
    fn raw_keeps_exact_bytes_for_the_digest() {
        let raw = Raw::parse_config(DOCKER_CONFIG.as_bytes().to_vec()).unwrap();
        assert_eq!(raw.bytes, DOCKER_CONFIG.as_bytes());
        assert_eq!(raw.digest(), Digest::sha256_of(DOCKER_CONFIG.as_bytes()));
        assert_eq!(raw.value.platform().to_string(), "linux/amd64/v8");
    }

    #[test]
    fn own_config_serialisation_is_deterministic() {
        let mut c = ImageConfig::new(&Platform::parse("linux/arm64").unwrap());
        c.extra.insert("b".into(), serde_json::json!(1));
        c.extra.insert("a".into(), serde_json::json!(2));
        assert_eq!(c.to_json(), c.clone().to_json());
        let s = String::from_utf8(c.to_json()).unwrap();
        assert!(s.find("\"a\"").unwrap() < s.find("\"b\"").unwrap());
        assert!(s.contains(r#""rootfs":{"type":"layers","diff_ids":[]}"#), "{s}");
    }
}
