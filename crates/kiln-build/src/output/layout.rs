//! Image files: an OCI image layout (a directory, or the same as a tarball) and a docker archive (an
//! OCI layout tarball plus Docker's `manifest.json`, which `docker load` reads). Tarballs are written
//! deterministically (sorted blobs, zero times) to a file (through a temporary name, renamed when
//! complete), to stdout, or to any writer (the Docker engine's load request).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::Path;

use kiln_oci::{Descriptor, Reference, Store};

use super::{Artifact, Dest, OutputError};
use crate::error::BuildError;
use crate::Built;

/// Which file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutFormat {
    Oci,
    Docker,
}

/// Writes `art` as `format` to `dest` (a directory when `tar` is false), naming it by `names`' tags.
pub fn write_layout(
    store: &Store,
    art: &Artifact,
    format: LayoutFormat,
    dest: &Dest,
    tar: bool,
    names: &[Reference],
) -> Result<(), BuildError> {
    if format == LayoutFormat::Docker && art.images.len() != 1 {
        return Err(OutputError::DockerOnePlatform { count: art.images.len() }.into());
    }
    match dest {
        Dest::Path(p) if !tar => write_dir(store, art, p, names),
        dest => super::write_tarball(dest, |w, path| write_archive_to(store, art, format, names, w, path)),
    }
}

/// The tags of `names` (a layout names images by tag); `latest` when there are none.
fn ref_names(names: &[Reference]) -> Vec<String> {
    let v: Vec<String> = names.iter().filter_map(|t| t.tag().map(str::to_string)).collect();
    if v.is_empty() {
        vec!["latest".to_string()]
    } else {
        v
    }
}

/// The layout's descriptor of the root: with the `index-descriptor` annotations.
fn layout_root(art: &Artifact) -> Descriptor {
    let mut d = art.root.clone();
    if !art.layout_annotations.is_empty() {
        d.annotations.get_or_insert_with(BTreeMap::new).extend(art.layout_annotations.clone());
    }
    d
}

/// An OCI layout directory (added to one that is there: its other tags stay).
fn write_dir(store: &Store, art: &Artifact, dest: &Path, names: &[Reference]) -> Result<(), BuildError> {
    let layout = Store::open_layout(dest)?;
    for d in &art.blobs {
        let f = store.open_blob(d)?;
        layout.put_blob_stream(io::BufReader::new(f), Some(d))?;
    }
    let root = layout_root(art);
    for n in ref_names(names) {
        layout.tag_name(&n, &root)?;
    }
    layout.tidy_layout();
    Ok(())
}

/// Writes the tarball to `out` and hands it back (flushed by the caller). `path` names `out` in errors.
pub(crate) fn write_archive<W: Write>(
    store: &Store,
    art: &Artifact,
    format: LayoutFormat,
    names: &[Reference],
    out: W,
    path: &Path,
) -> Result<W, BuildError> {
    let io_err = |source| BuildError::Io { action: "write", path: path.to_path_buf(), source };
    let mut tb = tar::Builder::new(out);
    tb.mode(tar::HeaderMode::Deterministic);
    let header = |size: u64, mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_entry_type(kind);
        h
    };
    let file = |tb: &mut tar::Builder<W>, p: &str, bytes: &[u8]| {
        tb.append_data(&mut header(bytes.len() as u64, 0o644, tar::EntryType::Regular), p, bytes)
    };
    file(&mut tb, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err)?;
    let root = layout_root(art);
    let mut manifests = Vec::new();
    for n in ref_names(names) {
        let mut m = root.clone();
        let ann = m.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert(kiln_oci::store::REF_NAME_ANNOTATION.to_string(), n.clone());
        if format == LayoutFormat::Docker {
            if let Some(t) = names.iter().find(|t| t.tag() == Some(n.as_str())) {
                ann.insert("io.containerd.image.name".to_string(), t.to_string());
            }
        }
        manifests.push(m);
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": kiln_oci::media::OCI_INDEX, "manifests": manifests});
    file(&mut tb, "index.json", &serde_json::to_vec(&index).unwrap_or_default()).map_err(io_err)?;
    if format == LayoutFormat::Docker {
        let repo_tags: Vec<String> = names.iter().filter(|t| t.tag().is_some()).map(|t| t.familiar()).collect();
        let (config, layers) = &art.images[0];
        let mf = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", config.hex()),
            "RepoTags": repo_tags,
            "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", l.hex())).collect::<Vec<_>>(),
        }]);
        file(&mut tb, "manifest.json", &serde_json::to_vec(&mf).unwrap_or_default()).map_err(io_err)?;
    }
    for d in ["blobs/", "blobs/sha256/"] {
        tb.append_data(&mut header(0, 0o755, tar::EntryType::Directory), d, io::empty()).map_err(io_err)?;
    }
    let mut seen = BTreeSet::new();
    for d in &art.blobs {
        if !seen.insert(d.to_string()) {
            continue;
        }
        let size = store.blob_size(d)?;
        let f = store.open_blob(d)?;
        tb.append_data(&mut header(size, 0o644, tar::EntryType::Regular), format!("blobs/sha256/{}", d.hex()), io::BufReader::new(f))
            .map_err(io_err)?;
    }
    tb.into_inner().map_err(io_err)
}

/// [`write_archive`] into a borrowed writer (the Docker engine's request body).
pub(crate) fn write_archive_to(
    store: &Store,
    art: &Artifact,
    format: LayoutFormat,
    names: &[Reference],
    out: &mut dyn Write,
    path: &Path,
) -> Result<(), BuildError> {
    write_archive(store, art, format, names, out, path).map(|_| ())
}

/// The manifest descriptor with its platform, for indexes.
pub fn descriptor_with_platform(built: &Built) -> Descriptor {
    let mut d = built.manifest.clone();
    d.platform = Some(built.config.platform());
    d
}
