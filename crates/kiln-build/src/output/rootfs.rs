//! `type=local` and `type=tar`: the built image's root file system as files, not as an image (what
//! `docker build -o out .` gives). Each platform's layers are applied in order into a fresh
//! directory beside the destination (whiteouts delete what they hide, as in a container's root);
//! then that tree is moved into `dest` (merged into what is there, as BuildKit's local exporter
//! does: same-named files are replaced, others kept), or written as one deterministic tar.
//!
//! With several platforms each gets its own subdirectory, `os_arch[_variant]`, unless
//! `platform-split=false` merges them into one tree (later platforms win).

use std::fs;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use kiln_oci::layer::{apply_layer, write_layer_from_dir, ApplyOptions, WriteOptions};
use kiln_oci::Store;

use super::Dest;
use crate::error::BuildError;
use crate::Built;

/// Files or one tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsFormat {
    Local,
    Tar,
}

/// A directory removed when dropped (an export that fails or is cancelled leaves nothing).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `images`' root file systems to `dest` (see the module doc).
pub fn write_rootfs(
    store: &Store,
    images: &[Built],
    format: RootfsFormat,
    dest: &Dest,
    platform_split: Option<bool>,
    source_date_epoch: Option<u64>,
) -> Result<(), BuildError> {
    let split = platform_split.unwrap_or(images.len() > 1);
    // The tree is made beside its destination, so that moving it in is a rename.
    let beside = match dest {
        Dest::Path(p) => p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf(),
        Dest::Stdout => store.dir().to_path_buf(),
    };
    let name = match dest {
        Dest::Path(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        Dest::Stdout => "stdout".to_string(),
    };
    let scratch = Scratch(beside.join(format!(".{name}.kiln-rootfs-{}", std::process::id())));
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { action, path, source }
    };
    let _ = fs::remove_dir_all(&scratch.0);
    fs::create_dir_all(&scratch.0).map_err(io_err("create", &scratch.0))?;
    for b in images {
        let dir = if split { scratch.0.join(platform_dir(&b.config.platform())) } else { scratch.0.clone() };
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        for l in &b.layers {
            let blob = store.open_blob(&l.descriptor.digest)?;
            apply_layer(BufReader::new(blob), &dir, &ApplyOptions::default())
                .map_err(|source| BuildError::Layer { digest: l.descriptor.digest.to_string(), source })?;
        }
    }
    match (format, dest) {
        (RootfsFormat::Local, Dest::Path(p)) => move_into(&scratch.0, p).map_err(io_err("write", p)),
        (RootfsFormat::Local, Dest::Stdout) => unreachable_stdout(),
        (RootfsFormat::Tar, dest) => super::write_tarball(dest, |w, _| write_tar(&scratch.0, w, source_date_epoch).map(drop)),
    }
}

/// `type=local,dest=-` is not a thing (buildx: `-o -` is a tar); the parser never makes it.
fn unreachable_stdout() -> Result<(), BuildError> {
    Err(BuildError::Io {
        action: "write",
        path: PathBuf::from("<stdout>"),
        source: io::Error::new(io::ErrorKind::InvalidInput, "type=local cannot write to stdout; use type=tar,dest=-"),
    })
}

/// BuildKit's directory name for a platform: `linux_amd64`, `linux_arm_v7`.
fn platform_dir(p: &kiln_oci::Platform) -> String {
    p.normalized().to_string().replace('/', "_")
}

fn write_tar<W: Write>(tree: &Path, out: W, source_date_epoch: Option<u64>) -> Result<W, BuildError> {
    let opts = WriteOptions { compression: kiln_oci::Compression::None, source_date_epoch: source_date_epoch.map(|s| s as i64) };
    let (w, _) =
        write_layer_from_dir(tree, out, &opts).map_err(|source| BuildError::Layer { digest: "the root file system".into(), source })?;
    Ok(w)
}

/// Moves every entry of `from` into `to` (created if missing): directories merge, anything else
/// replaces what has its name.
fn move_into(from: &Path, to: &Path) -> io::Result<()> {
    match fs::metadata(to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return fs::rename(from, to),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "it exists and is not a directory")),
        Ok(_) => {}
    }
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        match fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() && entry.file_type()?.is_dir() => move_into(&src, &dst)?,
            Ok(m) => {
                if m.is_dir() {
                    fs::remove_dir_all(&dst)?;
                } else {
                    fs::remove_file(&dst)?;
                }
                fs::rename(&src, &dst)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::rename(&src, &dst)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_a_tree_in_merges_directories_and_replaces_files() {
        let t = tempfile::tempdir().unwrap();
        let (from, to) = (t.path().join("from"), t.path().join("to"));
        fs::create_dir_all(from.join("etc")).unwrap();
        fs::write(from.join("etc/new"), "new").unwrap();
        fs::write(from.join("etc/both"), "from").unwrap();
        fs::create_dir_all(from.join("was-a-file")).unwrap();
        fs::create_dir_all(to.join("etc")).unwrap();
        fs::write(to.join("etc/both"), "to").unwrap();
        fs::write(to.join("etc/kept"), "kept").unwrap();
        fs::write(to.join("was-a-file"), "x").unwrap();
        move_into(&from, &to).unwrap();
        assert_eq!(fs::read_to_string(to.join("etc/new")).unwrap(), "new");
        assert_eq!(fs::read_to_string(to.join("etc/both")).unwrap(), "from");
        assert_eq!(fs::read_to_string(to.join("etc/kept")).unwrap(), "kept");
        assert!(to.join("was-a-file").is_dir());
        let fresh = t.path().join("fresh");
        fs::create_dir_all(t.path().join("f2/a")).unwrap();
        move_into(&t.path().join("f2"), &fresh).unwrap();
        assert!(fresh.join("a").is_dir());
        fs::write(t.path().join("file"), "").unwrap();
        fs::create_dir_all(t.path().join("f3")).unwrap();
        assert!(move_into(&t.path().join("f3"), &t.path().join("file")).is_err());
    }

    #[test]
    fn platform_directories_are_named_as_buildkit_names_them() {
        assert_eq!(platform_dir(&kiln_oci::Platform::parse("linux/amd64").unwrap()), "linux_amd64");
        assert_eq!(platform_dir(&kiln_oci::Platform::parse("linux/arm/v7").unwrap()), "linux_arm_v7");
        assert_eq!(platform_dir(&kiln_oci::Platform::parse("linux/arm64/v8").unwrap()), "linux_arm64");
    }
}
