//! `--isolation none`: building in the root file system kiln itself runs in (kaniko's model, for
//! unprivileged containers where nothing can be mounted or unshared).
//!
//! # Model
//!
//! kiln is the container. The root of every step is the container's own `/`:
//! * **Reset.** Before a step that must run, `/` is made equal to the step's parent (its chain of
//!   layers) by [`sync`]: what the parent lacks is removed, what differs is copied in from the
//!   native snapshotter's flat snapshot of that chain (extracted from kiln's store, and kept
//!   there). Files whose metadata and origin show they are already right are left alone, so
//!   stepping from one step to the next costs nothing, and a new stage on the same base costs a
//!   walk plus what the earlier stage changed. Stages run one after another.
//! * **Run.** RUN is a plain fork and exec in `/` ([`kiln_sandbox::direct`]); COPY, ADD and WORKDIR
//!   write into `/` through the same safe path resolver as always. `COPY --from` and
//!   `RUN --mount=from=` read the other stage's flat snapshot in the store, never `/`, which by
//!   then holds another stage.
//! * **Diff.** A step's layer is the difference of the whole tree before and after it
//!   ([`tree`]): a snapshot of every path's `lstat` (type, mode, owner, size, mtime, ctime, inode,
//!   link count, device) compared path by path. ctime is what makes metadata enough: the kernel
//!   moves it on every write, truncate, chmod, chown, xattr change, link and rename, and nothing
//!   can set it back, so no content need be hashed; a changed inode number is a replaced file.
//!   The entries are what an overlay upper dir would hold for the same step: changed paths, their
//!   parent directories, a whiteout for each removed path (the topmost only), and an opaque
//!   directory where a directory was removed and made again. So a layer has the same tar entries,
//!   owners and modes as the root mode's, and with `SOURCE_DATE_EPOCH` the same digest. One
//!   exception: a directory removed and made again under the *same* inode number (ext4 reuses
//!   freed ones) cannot be told from one emptied in place, and comes as a whiteout per old entry
//!   instead of an opaque marker: the same file system, a different tar.
//! * **Skipped.** Never diffed, removed or overwritten ([`Skip`]): kiln's binary, its root (store,
//!   cache, snapshots), the build context and `--build-context` directories, every mount point of
//!   `/proc/self/mountinfo` (`/proc`, `/sys`, `/dev`, the runtime's `/etc/hosts`, volumes), and
//!   each `--ignore-path`. Directories that lead to a skipped path are kept even when the image
//!   lacks them.
//! * **Not as root.** Run as an ordinary user without capabilities (`docker run --user 1000
//!   --cap-drop=ALL`), kiln's own ids stand for the image's root: files it makes are written to
//!   layers as owned by 0:0 ([`owner`]), RUN steps run as kiln, and a step that needs another
//!   owner or user (a `chown`, `COPY --chown`, `USER`, an ADD of a tarball with other owners)
//!   fails, saying so. The base's files are extracted as kiln's own too; the owners they lose are
//!   remembered by path, and a layer that holds one changed in place gives it its owner back
//!   ([`owner`]), so the layers match the root build's. Only what RUN steps see differs: there
//!   the base's files are kiln's.
//!
//! Before anything, [`refuse_on_a_host`] checks that `/` is a container's ([`kiln_sandbox::host`]):
//! wiping a real machine's root is what this mode would do there, so it needs `--force`.

pub mod owner;
pub mod sync;
pub mod tree;

use std::path::{Path, PathBuf};

/// Why a `--isolation none` build cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum HostRootError {
    #[error(
        "--isolation none replaces the root file system kiln runs in with the image being built, and this does not look like a \
         container ({}); run kiln inside a container (e.g. a CI job's or a pod's), or add --force if this machine's root really \
         is disposable",
        reasons.join("; ")
    )]
    NotAContainer { reasons: Vec<String> },
    #[error("--isolation none builds one platform at a time in the one root (asked for {platforms}); run one build per platform")]
    Platforms { platforms: String },
    #[error("--isolation none: {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--isolation none: {}: {message}", path.display())]
    Owner { path: PathBuf, message: String },
}

/// `--isolation none` outside a container is refused unless forced.
pub fn refuse_on_a_host(force: bool) -> Result<(), HostRootError> {
    let v = kiln_sandbox::host::inspect();
    if v.in_container || force {
        return Ok(());
    }
    Err(HostRootError::NotAContainer { reasons: v.reasons })
}

/// Paths the build never touches in `/` (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Skip {
    paths: Vec<PathBuf>,
}

impl Skip {
    /// kiln's own paths, every mount point but `/`, and the `--ignore-path`s (relative ones are
    /// taken from `/`).
    pub fn discover(own: &[PathBuf], ignore: &[PathBuf]) -> Skip {
        let mut paths: Vec<PathBuf> = Vec::new();
        for p in own {
            paths.push(p.canonicalize().unwrap_or_else(|_| p.clone()));
        }
        for p in ignore {
            let abs = Path::new("/").join(p);
            paths.push(abs.canonicalize().unwrap_or(abs));
        }
        paths.extend(mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()));
        Skip::new(paths)
    }

    pub fn new(mut paths: Vec<PathBuf>) -> Skip {
        paths.retain(|p| p != Path::new("/") && p.is_absolute());
        paths.sort();
        paths.dedup();
        Skip { paths }
    }

    /// `path` (absolute) is skipped, or lies below a skipped path.
    pub fn covers(&self, path: &Path) -> bool {
        self.paths.iter().any(|p| path.starts_with(p))
    }

    /// `path` (absolute) is a directory on the way to a skipped path: it must stay.
    pub fn leads_to(&self, path: &Path) -> bool {
        self.paths.iter().any(|p| p != path && p.starts_with(path))
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

/// The mount points of a `/proc/self/mountinfo` text (field 5, octal escapes decoded), but `/`.
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape).filter(|p| p != "/").map(PathBuf::from).collect()
}

/// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_come_from_mountinfo_with_escapes() {
        let mi = "27 1 254:0 / / rw - ext4 /dev/vda rw\n22 27 0:21 / /proc rw - proc proc rw\n\
                  40 27 254:0 /x /work/my\\040dir rw - ext4 /dev/vda rw\n";
        assert_eq!(mount_points(mi), vec![PathBuf::from("/proc"), PathBuf::from("/work/my dir")]);
    }

    #[test]
    fn skip_covers_below_and_keeps_the_way_there() {
        let s = Skip::new(vec!["/kiln/root".into(), "/proc".into(), "/".into()]);
        assert!(s.covers(Path::new("/kiln/root")) && s.covers(Path::new("/kiln/root/store/x")) && s.covers(Path::new("/proc/1")));
        assert!(!s.covers(Path::new("/kiln")) && !s.covers(Path::new("/procx")) && !s.covers(Path::new("/")));
        assert!(s.leads_to(Path::new("/kiln")) && s.leads_to(Path::new("/")) && !s.leads_to(Path::new("/kiln/root")));
    }
}
