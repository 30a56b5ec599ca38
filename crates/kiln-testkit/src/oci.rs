//! A minimal OCI image layout writer, so tests can hand `skopeo` or a client
//! an image without depending on the code under test.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{io, Result};

/// Media type used for the layers: uncompressed tar, so the layer digest is
/// also the diff id and nothing depends on a compressor.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// What [`write_oci_layout`] produced.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// `sha256:…` of the manifest.
    pub manifest_digest: String,
    /// `sha256:…` of the config.
    pub config_digest: String,
    /// `(digest, size)` of each layer, in order.
    pub layers: Vec<(String, u64)>,
}

/// The Go (OCI) name of the architecture we run on.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Writes an OCI image layout at `dir` holding one image tagged `tag`
/// (`org.opencontainers.image.ref.name`), whose layers are the given tar
/// files in order (stored uncompressed). Layers are streamed while hashed.
///
/// `skopeo copy oci:DIR:TAG docker://HOST/REPO:TAG` pushes it.
pub fn write_oci_layout(dir: &Path, tag: &str, layer_tars: &[&Path]) -> Result<OciImage> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(io("create OCI blob dir", &blobs))?;
    let layout = dir.join("oci-layout");
    fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io("write oci-layout", &layout))?;

    let mut layers = Vec::new();
    for tar in layer_tars {
        layers.push(store_file(&blobs, tar)?);
    }
    let diff_ids: Vec<&str> = layers.iter().map(|(d, _)| d.as_str()).collect();
    let config = serde_json::json!({
        "created": "2000-01-01T00:00:00Z",
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let (config_digest, config_size) = store_bytes(&blobs, config.as_bytes())?;
    let layer_descs: Vec<serde_json::Value> =
        layers.iter().map(|(d, s)| serde_json::json!({"mediaType": LAYER_MEDIA_TYPE, "digest": d, "size": s})).collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    })
    .to_string();
    let (manifest_digest, manifest_size) = store_bytes(&blobs, manifest.as_bytes())?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    })
    .to_string();
    let index_path = dir.join("index.json");
    fs::write(&index_path, index).map_err(io("write OCI index.json", &index_path))?;
    Ok(OciImage { manifest_digest, config_digest, layers })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn store_bytes(blobs: &Path, data: &[u8]) -> Result<(String, u64)> {
    let hash = hex(&Sha256::digest(data));
    let path = blobs.join(&hash);
    fs::write(&path, data).map_err(io("write OCI blob", &path))?;
    Ok((format!("sha256:{hash}"), data.len() as u64))
}

fn store_file(blobs: &Path, src: &Path) -> Result<(String, u64)> {
    let tmp = blobs.join(".incoming");
    let mut input = File::open(src).map_err(io("open layer tar", src))?;
    let mut out = BufWriter::new(File::create(&tmp).map_err(io("create OCI blob", &tmp))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io("read layer tar", src))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io("write OCI blob", &tmp))?;
        size += n as u64;
    }
    out.flush().map_err(io("flush OCI blob", &tmp))?;
    let hash = hex(&hasher.finalize());
    let path = blobs.join(&hash);
    fs::rename(&tmp, &path).map_err(io("rename OCI blob", &path))?;
    Ok((format!("sha256:{hash}"), size))
}
