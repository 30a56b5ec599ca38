//! Outputs: where a built image goes besides the local store.
//!
//! `--output` follows `docker buildx build`: `type=image` (the store, tagged; the default),
//! `type=oci,dest=P` (an OCI image layout as a tarball, or a directory with `tar=false`),
//! `type=docker,dest=P` (a tarball `docker load` accepts: an OCI layout plus Docker's
//! `manifest.json`), and `type=registry` (push; the caller does that with `kiln-registry`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_oci::{Descriptor, Digest, Reference, Store};

use crate::error::BuildError;
use crate::Built;

/// What an output writes: a root manifest (an image, or an index of per-platform images) and every
/// blob below it.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub root: Descriptor,
    pub blobs: Vec<Digest>,
    /// (config digest, layer digests) per image, for docker's `manifest.json`.
    pub images: Vec<(Digest, Vec<Digest>)>,
    /// Each image's manifest, in the order of `images`.
    pub manifests: Vec<Descriptor>,
}

impl Artifact {
    /// One image.
    pub fn single(b: &Built) -> Artifact {
        Artifact { root: b.manifest.clone(), blobs: blobs(b), images: vec![image_of(b)], manifests: vec![b.manifest.clone()] }
    }

    /// An OCI index over per-platform images, written to the store.
    pub fn index(store: &Store, built: &[Built]) -> Result<Artifact, BuildError> {
        let mut index = kiln_oci::ImageIndex::new_oci();
        let mut all = Vec::new();
        for b in built {
            index.manifests.push(descriptor_with_platform(b));
            for d in blobs(b) {
                if !all.contains(&d) {
                    all.push(d);
                }
            }
        }
        let root = store.put_manifest(&kiln_oci::Manifest::Index(index))?;
        all.insert(0, root.digest.clone());
        Ok(Artifact {
            root,
            blobs: all,
            images: built.iter().map(image_of).collect(),
            manifests: built.iter().map(|b| b.manifest.clone()).collect(),
        })
    }

    /// The form that leaves the machine: every layer the build stored as plain tar gzipped (see
    /// `kiln_oci::layer::gzip_image`; remembered per layer, so a second export costs nothing). The
    /// store's tags keep pointing at the plain form, as a local image store's image ids do.
    pub fn for_export(&self, store: &Store) -> Result<Artifact, BuildError> {
        let layer_err = |e: kiln_oci::layer::LayerError| BuildError::Layer { digest: self.root.digest.to_string(), source: e };
        let root = kiln_oci::layer::gzip_image(store, &self.root).map_err(layer_err)?;
        if root == self.root {
            return Ok(self.clone());
        }
        let mut art = Artifact { root: root.clone(), blobs: Vec::new(), images: Vec::new(), manifests: Vec::new() };
        let children = match store.read_manifest(&root)?.value {
            kiln_oci::Manifest::Index(ix) => {
                art.blobs.push(root.digest.clone());
                ix.manifests
            }
            kiln_oci::Manifest::Image(_) => vec![root],
        };
        for child in children {
            let kiln_oci::Manifest::Image(m) = store.read_manifest(&child)?.value else {
                return Err(BuildError::Usage(format!("{}: nested indexes are not exported", child.digest)));
            };
            let layers: Vec<Digest> = m.layers.iter().map(|l| l.digest.clone()).collect();
            for d in std::iter::once(&child.digest).chain(std::iter::once(&m.config.digest)).chain(&layers) {
                if !art.blobs.contains(d) {
                    art.blobs.push(d.clone());
                }
            }
            art.images.push((m.config.digest.clone(), layers));
            art.manifests.push(child);
        }
        Ok(art)
    }
}

fn image_of(b: &Built) -> (Digest, Vec<Digest>) {
    (b.config_digest.clone(), b.layers.iter().map(|l| l.descriptor.digest.clone()).collect())
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Tag the image in the local store.
    Image,
    Oci {
        dest: PathBuf,
        tar: bool,
    },
    Docker {
        dest: PathBuf,
    },
    /// Push to the registry named by the tags (`push-by-digest` pushes without a tag).
    Registry {
        push_by_digest: bool,
    },
}

impl Output {
    /// Parses `type=…,dest=…` (or the short forms `-` is not supported: a terminal is no place for a tar).
    pub fn parse(s: &str) -> Result<Output, BuildError> {
        let bad = |m: &str| BuildError::Usage(format!("--output {s:?}: {m}"));
        let mut kv: BTreeMap<String, String> = BTreeMap::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, "true"));
            kv.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
        let ty = kv.remove("type").ok_or_else(|| bad("missing type= (image, oci, docker or registry)"))?;
        let dest = kv.remove("dest").map(PathBuf::from);
        let flag = |kv: &BTreeMap<String, String>, k: &str, default: bool| -> Result<bool, BuildError> {
            match kv.get(k).map(String::as_str) {
                None => Ok(default),
                Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(v) => Err(bad(&format!("{k}={v}: expected true or false"))),
            }
        };
        if dest.is_some() && !matches!(ty.as_str(), "oci" | "docker") {
            return Err(bad(&format!("kiln does not support dest= for type={ty}")));
        }
        // Every attribute kiln does not act on is refused by name: `type=image,name=R,push=true` once
        // exited 0 without pushing because the rest of the line was dropped.
        let known: &[&str] = match ty.as_str() {
            "oci" => &["tar"],
            "registry" => &["push-by-digest"],
            _ => &[],
        };
        if let Some(k) = kv.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(
                &format!("kiln does not support {k}= for type={ty} yet (accepted: {})", known.join(", ")).replace(" (accepted: )", "")
            ));
        }
        match ty.as_str() {
            "image" => Ok(Output::Image),
            "oci" => Ok(Output::Oci { dest: dest.ok_or_else(|| bad("type=oci needs dest=PATH"))?, tar: flag(&kv, "tar", true)? }),
            "docker" => Ok(Output::Docker { dest: dest.ok_or_else(|| bad("type=docker needs dest=PATH"))? }),
            "registry" => Ok(Output::Registry { push_by_digest: flag(&kv, "push-by-digest", false)? }),
            other => Err(bad(&format!("unknown type {other:?}: use image, oci, docker or registry"))),
        }
    }
}

/// Tags the artifact in the store under every reference.
pub fn tag(store: &Store, art: &Artifact, tags: &[Reference]) -> Result<(), BuildError> {
    for t in tags {
        store.tag(t, &art.root)?;
    }
    Ok(())
}

/// The blobs an image consists of: manifest, config, layers.
fn blobs(built: &Built) -> Vec<Digest> {
    let mut v = vec![built.manifest.digest.clone(), built.config_digest.clone()];
    v.extend(built.layers.iter().map(|l| l.descriptor.digest.clone()));
    v
}

/// Writes an OCI layout (directory or tarball) holding `built`, its manifest named `tags`' tags.
pub fn write_oci(store: &Store, built: &Artifact, dest: &Path, tar: bool, tags: &[Reference]) -> Result<(), BuildError> {
    let names: Vec<String> = tags.iter().filter_map(|t| t.tag().map(str::to_string)).collect();
    if tar {
        write_tar(store, built, dest, &names, false, tags)
    } else {
        let layout = Store::open_layout(dest)?;
        for d in &built.blobs {
            let f = store.open_blob(d)?;
            layout.put_blob_stream(io::BufReader::new(f), Some(d))?;
        }
        if names.is_empty() {
            layout.tag_name("latest", &built.root)?;
        }
        for n in &names {
            layout.tag_name(n, &built.root)?;
        }
        layout.tidy_layout();
        Ok(())
    }
}

/// Writes a docker-archive tarball: the OCI layout plus `manifest.json` with RepoTags.
pub fn write_docker(store: &Store, built: &Artifact, dest: &Path, tags: &[Reference]) -> Result<(), BuildError> {
    if built.images.len() != 1 {
        return Err(BuildError::Output {
            output: format!("type=docker,dest={}", dest.display()),
            message: "a docker archive holds one platform's image; use type=oci for several platforms".into(),
        });
    }
    let names: Vec<String> = tags.iter().filter_map(|t| t.tag().map(str::to_string)).collect();
    write_tar(store, built, dest, &names, true, tags)
}

fn write_tar(store: &Store, built: &Artifact, dest: &Path, names: &[String], docker: bool, tags: &[Reference]) -> Result<(), BuildError> {
    let io_err = |source| BuildError::Io { action: "write", path: dest.to_path_buf(), source };
    let tmp = PathBuf::from(format!("{}.kiln-tmp", dest.display()));
    let file = fs::File::create(&tmp).map_err(io_err)?;
    let mut tb = tar::Builder::new(io::BufWriter::new(file));
    tb.mode(tar::HeaderMode::Deterministic);
    let add_bytes = |tb: &mut tar::Builder<io::BufWriter<fs::File>>, path: &str, bytes: &[u8]| -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tb.append_data(&mut h, path, bytes)
    };
    let dir = |tb: &mut tar::Builder<io::BufWriter<fs::File>>, path: &str| -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Directory);
        tb.append_data(&mut h, path, io::empty())
    };
    let run = || -> Result<(), BuildError> {
        add_bytes(&mut tb, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err)?;
        let mut manifests = Vec::new();
        let mut m = built.root.clone();
        let ann_names: Vec<String> = if names.is_empty() { vec!["latest".to_string()] } else { names.to_vec() };
        for n in &ann_names {
            let mut ann = BTreeMap::new();
            ann.insert(kiln_oci::store::REF_NAME_ANNOTATION.to_string(), n.clone());
            if docker {
                if let Some(t) = tags.iter().find(|t| t.tag() == Some(n.as_str())) {
                    ann.insert("io.containerd.image.name".to_string(), t.to_string());
                }
            }
            m.annotations = Some(ann);
            manifests.push(m.clone());
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": kiln_oci::media::OCI_INDEX, "manifests": manifests});
        add_bytes(&mut tb, "index.json", &serde_json::to_vec(&index).unwrap_or_default()).map_err(io_err)?;
        if docker {
            let repo_tags: Vec<String> = tags.iter().filter(|t| t.tag().is_some()).map(|t| t.familiar()).collect();
            let (config, layers) = &built.images[0];
            let mf = serde_json::json!([{
                "Config": format!("blobs/sha256/{}", config.hex()),
                "RepoTags": repo_tags,
                "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", l.hex())).collect::<Vec<_>>(),
            }]);
            add_bytes(&mut tb, "manifest.json", &serde_json::to_vec(&mf).unwrap_or_default()).map_err(io_err)?;
        }
        dir(&mut tb, "blobs/").map_err(io_err)?;
        dir(&mut tb, "blobs/sha256/").map_err(io_err)?;
        let mut seen = std::collections::BTreeSet::new();
        for d in &built.blobs {
            if !seen.insert(d.to_string()) {
                continue;
            }
            let size = store.blob_size(d)?;
            let f = store.open_blob(d)?;
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tb.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), io::BufReader::new(f)).map_err(io_err)?;
        }
        let mut w = tb.into_inner().map_err(io_err)?;
        w.flush().map_err(io_err)?;
        w.get_ref().sync_all().map_err(io_err)?;
        Ok(())
    };
    match run() {
        Ok(()) => fs::rename(&tmp, dest).map_err(io_err),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The manifest descriptor with its platform, for indexes.
pub fn descriptor_with_platform(built: &Built) -> Descriptor {
    let mut d = built.manifest.clone();
    d.platform = Some(built.config.platform());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_kiln_does_not_act_on_are_refused_by_name() {
        // The seed workflow's line: it must fail loudly, never exit 0 without pushing.
        let seed = "type=image,name=localhost:5000/app,push-by-digest=true,name-canonical=true,push=true";
        let e = Output::parse(seed).unwrap_err().to_string();
        assert!(e.starts_with(&format!("--output {seed:?}: kiln does not support ")), "{e}");
        assert!(e.contains("for type=image yet"), "{e}");
        let e = Output::parse("type=registry,compression=zstd").unwrap_err().to_string();
        assert!(e.contains("kiln does not support compression= for type=registry yet (accepted: push-by-digest)"), "{e}");
        assert!(Output::parse("type=image,dest=x").is_err());
        assert_eq!(Output::parse("type=registry,push-by-digest=true").unwrap(), Output::Registry { push_by_digest: true });
        assert_eq!(Output::parse("type=oci,dest=o.tar,tar=false").unwrap(), Output::Oci { dest: "o.tar".into(), tar: false });
        assert_eq!(Output::parse("type=image").unwrap(), Output::Image);
    }
}
