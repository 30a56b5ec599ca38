//! Descriptors, image manifests and indexes (OCI and Docker schema2 share one shape each).
//!
//! Digests are computed over raw bytes, so anything fetched from elsewhere is kept as it came ([`Raw`])
//! and only kiln's own output is serialised from these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media;
use crate::platform::Platform;

/// Why a manifest could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON of type {media_type}: {source}")]
    Json {
        media_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported manifest media type {0:?}; kiln reads OCI and Docker schema2 manifests and indexes")]
    Unsupported(String),
    #[error("Docker schema1 manifests ({0}) are not supported; re-push the image with a current client")]
    Schema1(String),
    #[error("manifest has no mediaType and its shape is neither an image manifest nor an index")]
    Unknown,
}

/// A pointer to content: media type, digest and size, plus optional extras.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A plain descriptor.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            urls: None,
            annotations: None,
            data: None,
            platform: None,
            artifact_type: None,
        }
    }

    /// The descriptor of `bytes` stored as `media_type`.
    pub fn for_bytes(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor::new(media_type, Digest::sha256_of(bytes), bytes.len() as u64)
    }

    /// One annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// An image manifest: OCI (`application/vnd.oci.image.manifest.v1+json`) or Docker schema2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageManifest {
    /// A new OCI manifest.
    pub fn new_oci(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: None,
        }
    }
}

/// An index: OCI image index or Docker manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageIndex {
    /// A new, empty OCI index.
    pub fn new_oci() -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: None,
        }
    }

    /// The first entry whose platform matches `want` (entries without a platform never match).
    pub fn find_platform(&self, want: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
    }
}

/// A parsed manifest of either kind.
// Manifests are few and short-lived; boxing the larger variant would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl Manifest {
    /// Parses `bytes`. The media type comes from `content_type` (an HTTP header or a descriptor) when it
    /// names a manifest type, else from the body's `mediaType`, else from the body's shape.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim()).filter(|c| {
            media::is_image_manifest(c) || media::is_index(c) || *c == media::DOCKER_MANIFEST_V1 || *c == media::DOCKER_MANIFEST_V1_SIGNED
        });
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            schema_version: Option<u32>,
            manifests: Option<serde::de::IgnoredAny>,
            config: Option<serde::de::IgnoredAny>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|source| ManifestError::Json { media_type: header.unwrap_or("unknown").to_string(), source })?;
        let media_type = match (header, &probe.media_type) {
            (Some(h), _) => h.to_string(),
            (None, Some(m)) => m.clone(),
            (None, None) if probe.schema_version == Some(1) => media::DOCKER_MANIFEST_V1.to_string(),
            (None, None) if probe.manifests.is_some() => media::OCI_INDEX.to_string(),
            (None, None) if probe.config.is_some() => media::OCI_MANIFEST.to_string(),
            (None, None) => return Err(ManifestError::Unknown),
        };
        let json_err = |source| ManifestError::Json { media_type: media_type.clone(), source };
        if media_type == media::DOCKER_MANIFEST_V1 || media_type == media::DOCKER_MANIFEST_V1_SIGNED {
            return Err(ManifestError::Schema1(media_type));
        }
        if media::is_image_manifest(&media_type) {
            let mut m: ImageManifest = serde_json::from_slice(bytes).map_err(json_err)?;
            m.media_type.get_or_insert(media_type);
            Ok(Manifest::Image(m))
        } else if media::is_index(&media_type) {
            let mut m: ImageIndex = serde_json::from_slice(bytes).map_err(json_err)?;
            m.media_type.get_or_insert(media_type);
            Ok(Manifest::Index(m))
        } else {
            Err(ManifestError::Unsupported(media_type))
        }
    }

    /// The media type (as parsed, or as defaulted from the header or shape).
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image(m) => m.media_type.as_deref().unwrap_or(media::OCI_MANIFEST),
            Manifest::Index(i) => i.media_type.as_deref().unwrap_or(media::OCI_INDEX),
        }
    }

    /// Serialises kiln's own manifests (compact JSON, field order fixed by the types).
    pub fn to_json(&self) -> Vec<u8> {
        let r = match self {
            Manifest::Image(m) => serde_json::to_vec(m),
            Manifest::Index(i) => serde_json::to_vec(i),
        };
        // Serialising these plain structs cannot fail: keys are strings and there are no non-finite floats.
        r.unwrap_or_default()
    }
}

/// Content kept with the exact bytes it was parsed from: digests and re-pushes use the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raw<T> {
    pub bytes: Vec<u8>,
    pub value: T,
}

impl<T> Raw<T> {
    /// The sha256 digest of the raw bytes.
    pub fn digest(&self) -> Digest {
        Digest::sha256_of(&self.bytes)
    }
    /// A descriptor for the raw bytes.
    pub fn descriptor(&self, media_type: &str) -> Descriptor {
        Descriptor::for_bytes(media_type, &self.bytes)
    }
}

impl Raw<Manifest> {
    /// Parses a manifest and keeps its bytes.
    pub fn parse_manifest(bytes: Vec<u8>, content_type: Option<&str>) -> Result<Raw<Manifest>, ManifestError> {
        let value = Manifest::parse(&bytes, content_type)?;
        Ok(Raw { bytes, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "size": 7023},
      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0", "size": 32654,
        "annotations": {"a": "b"}}],
      "annotations": {"com.example.key1": "value1"}
    }"#;

    const DOCKER: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469,
        "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2,
        "digest": "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0"},
        {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 3,
        "digest": "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0",
        "urls": ["https://example.com/layer"]}]
    }"#;

    const LIST: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
      "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 527,
         "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 527,
         "digest": "sha256:9834876dcfb05cb167a5c24953eba58c4ac89b1adf57f28f2f9d09af107ee8f0",
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
      ]
    }"#;

    #[test]
    fn parses_oci_manifest() {
        let m = Manifest::parse(OCI.as_bytes(), None).unwrap();
        let Manifest::Image(m) = m else { panic!("expected image manifest") };
        assert_eq!(m.config.size, 7023);
        assert_eq!(m.layers[0].annotation("a"), Some("b"));
        assert_eq!(m.layers[0].media_type, media::OCI_LAYER_GZIP);
    }

    #[test]
    fn parses_docker_manifest_with_foreign_layer() {
        let m = Manifest::parse(DOCKER.as_bytes(), Some("application/vnd.docker.distribution.manifest.v2+json")).unwrap();
        assert_eq!(m.media_type(), media::DOCKER_MANIFEST);
        let Manifest::Image(m) = m else { panic!("expected image manifest") };
        assert!(media::is_foreign_layer(&m.layers[1].media_type));
        assert_eq!(m.layers[1].urls.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn parses_docker_list_and_selects_platform() {
        let m = Manifest::parse(LIST.as_bytes(), Some("application/octet-stream")).unwrap();
        assert_eq!(m.media_type(), media::DOCKER_MANIFEST_LIST);
        let Manifest::Index(i) = m else { panic!("expected index") };
        let arm = i.find_platform(&Platform::parse("linux/arm64").unwrap()).unwrap();
        assert!(arm.digest.to_string().starts_with("sha256:9834"));
        assert!(i.find_platform(&Platform::parse("linux/s390x").unwrap()).is_none());
    }

    #[test]
    fn header_media_type_wins_and_shape_is_the_last_resort() {
        let no_type = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(Manifest::parse(no_type.as_bytes(), None).unwrap().media_type(), media::OCI_INDEX);
        let m =
            Manifest::parse(no_type.as_bytes(), Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8")).unwrap();
        assert_eq!(m.media_type(), media::DOCKER_MANIFEST_LIST);
        let v1 = r#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(Manifest::parse(v1.as_bytes(), None), Err(ManifestError::Schema1(_))));
        assert!(matches!(Manifest::parse(b"{}", None), Err(ManifestError::Unknown)));
        assert!(Manifest::parse(b"not json", None).is_err());
        let odd = r#"{"schemaVersion":2,"mediaType":"application/x-other"}"#;
        assert!(matches!(Manifest::parse(odd.as_bytes(), None), Err(ManifestError::Unsupported(_))));
    }

    #[test]
    fn own_manifest_serialises_and_reparses() {
        let cfg = Descriptor::for_bytes(media::OCI_CONFIG, b"{}");
        let m = Manifest::Image(ImageManifest::new_oci(cfg, vec![]));
        let bytes = m.to_json();
        assert_eq!(Manifest::parse(&bytes, None).unwrap(), m);
        let raw = Raw::parse_manifest(bytes.clone(), None).unwrap();
        assert_eq!(raw.digest(), Digest::sha256_of(&bytes));
    }
}
