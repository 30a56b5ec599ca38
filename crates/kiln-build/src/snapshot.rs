//! Snapshots: root file systems for build steps, stacked with overlayfs.
//!
//! A snapshot is named by the *chain id* of the layers below it (OCI's ChainID: the chain of one layer
//! is its diff id; of several, `sha256(parent_chain + " " + diff_id)`), so the same stack of layers is
//! extracted once and shared by every step and every build that uses it. A snapshot directory holds
//! `fs/` and a `kind` file:
//! * `diff`: `fs` is an overlay upper dir (whiteouts as 0/0 char devices, opaque dirs as the
//!   `trusted.overlay.opaque` xattr) that sits on the snapshot of its parent chain. Every step kiln
//!   runs leaves one of these behind for free: its upper dir *is* the next step's lower dir.
//! * `flat`: `fs` is the whole root file system of the chain, every layer applied in order. Used for
//!   base images and for layers that came from a cache, where no upper dir exists. Made by a kiln
//!   that is not root (`--isolation none` as an ordinary user), its files are kiln's own, and an
//!   `owners` file beside `fs` lists the owners other than root the layers give, by path.
//!
//! A snapshot appears by rename from a temp dir, so a half-extracted one is never used.
//!
//! An upper dir is only a faithful diff when overlayfs writes whole objects into it. Three kernel
//! features break that, and each can be on by default (a Kconfig option, or a module parameter
//! under `/sys/module/overlay/parameters/`): `redirect_dir` renames a lower directory by leaving
//! an empty directory with a `trusted.overlay.redirect` xattr in the upper dir (its children stay
//! below); `metacopy` copies up only the inode of a file that was chmod/chown'd (an empty file
//! with `trusted.overlay.metacopy`); `index` ties upper inodes to lower ones. kiln mounts with all
//! three off, whatever the defaults, so a directory rename is a real copy and a chmod copies the
//! data up. In a user namespace (rootless mode) the mount also carries `userxattr`, and the markers
//! are `user.overlay.*` xattrs instead of `trusted.overlay.*`. The layer writer refuses an upper dir that still holds a redirect or metacopy xattr
//! (e.g. a snapshot made by an older kiln): an error, never a wrong layer.
//!
//! Every mount is registered while it exists, so a second signal can still unmount what this
//! process holds before exiting ([`unmount_all_now`]); what a killed process left behind is
//! reclaimed by the next build ([`crate::reclaim`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kiln_oci::layer::{apply_layer, ApplyOptions};
use kiln_oci::{Digest, Store};

use crate::error::{BuildError, SnapshotError};
use crate::state::LayerRef;

/// Beside `fs` in a flat snapshot made without root: the owners its files should have (see
/// [`Snapshotter::unkept_owners`]).
const OWNERS_FILE: &str = "owners";

/// Overlay's mount data must fit in one page; past this depth a flat snapshot is made instead.
const MAX_LOWERS: usize = 32;

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// The overlay mounts this process holds now (merged dirs), for [`unmount_all_now`].
static MOUNTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The options that keep the upper dir a faithful diff (see the module doc).
const FAITHFUL: [(&str, &str); 3] = [("redirect_dir", "off"), ("index", "off"), ("metacopy", "off")];

/// Where the running kernel lists the overlay features it has (present once the module is loaded).
const OVERLAY_PARAMS: &str = "/sys/module/overlay/parameters";

/// The snapshot directory of a kiln root.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
    /// The copying fallback (`--snapshotter native`): every snapshot is flat, a step works on a full
    /// copy of its parent's root, and its layer is the difference between the two trees.
    native: bool,
}

/// The chain id of `diff_ids[..]`, one per prefix.
pub fn chain_ids(diff_ids: &[&Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => (*d).clone(),
            Some(parent) => Digest::sha256_of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { action, path, source }
}

impl Snapshotter {
    pub fn open(root: &Path) -> Snapshotter {
        Snapshotter { dir: root.join("snapshots"), native: false }
    }

    /// The copying snapshotter, for machines without overlayfs. Its snapshots live apart from the
    /// overlay ones (they are all flat).
    pub fn open_native(root: &Path) -> Snapshotter {
        Snapshotter { dir: root.join("snapshots-native"), native: true }
    }

    pub fn is_native(&self) -> bool {
        self.native
    }

    /// Keeps a native step's finished root as the flat snapshot of `chain`. Consumes the directory.
    pub fn commit_flat(&self, root: &Path, chain: &Digest) -> Result<(), BuildError> {
        if self.kind(chain).is_some() {
            remove_tree(root);
            return Ok(());
        }
        let tmp = self.temp_dir("flat")?;
        fs::rename(root, tmp.join("fs")).map_err(io_err("move", root))?;
        fs::write(tmp.join("kind"), "flat\n").map_err(io_err("write", &tmp))?;
        self.publish(tmp, chain)
    }

    fn snap_dir(&self, chain: &Digest) -> PathBuf {
        // Short names keep the overlay mount data (one page) able to hold many lower dirs.
        self.dir.join(&chain.hex()[..20])
    }

    fn kind(&self, chain: &Digest) -> Option<String> {
        fs::read_to_string(self.snap_dir(chain).join("kind")).ok().map(|s| s.trim().to_string())
    }

    /// A fresh private working directory under the snapshot dir (same file system, so renames work).
    pub fn temp_dir(&self, what: &str) -> Result<PathBuf, BuildError> {
        let tmp = self.dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        // Marks this process's temp dirs as in use, so no concurrent kiln reclaims them.
        crate::reclaim::hold_owner_lock(&self.dir)?;
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let d = tmp.join(format!("{what}-{}-{n}", std::process::id()));
        if d.exists() {
            remove_tree(&d);
        }
        fs::create_dir(&d).map_err(io_err("create", &d))?;
        Ok(d)
    }

    /// The lower dirs (topmost first) that present `layers` as one root file system, extracting
    /// what is missing from the store.
    pub fn lowers(&self, store: &Store, layers: &[LayerRef]) -> Result<Vec<PathBuf>, BuildError> {
        if layers.is_empty() {
            let empty = self.dir.join("empty");
            if !empty.is_dir() {
                fs::create_dir_all(&empty).map_err(io_err("create", &empty))?;
            }
            return Ok(vec![empty]);
        }
        let diff_ids: Vec<&Digest> = layers.iter().map(|l| &l.diff_id).collect();
        let chains = chain_ids(&diff_ids);
        let mut out = Vec::new();
        let mut i = chains.len();
        while i > 0 {
            let chain = &chains[i - 1];
            match self.kind(chain).as_deref() {
                Some("diff") if self.native => {
                    self.make_flat(store, &layers[..i], chain)?;
                    out.push(self.snap_dir(chain).join("fs"));
                    return Ok(out);
                }
                Some("flat") => {
                    out.push(self.snap_dir(chain).join("fs"));
                    return Ok(out);
                }
                Some("diff") if out.len() < MAX_LOWERS => {
                    out.push(self.snap_dir(chain).join("fs"));
                    i -= 1;
                }
                _ => {
                    self.make_flat(store, &layers[..i], chain)?;
                    out.push(self.snap_dir(chain).join("fs"));
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn make_flat(&self, store: &Store, layers: &[LayerRef], chain: &Digest) -> Result<(), BuildError> {
        let tmp = self.temp_dir("flat")?;
        let fs_dir = tmp.join("fs");
        fs::create_dir(&fs_dir).map_err(io_err("create", &fs_dir))?;
        // Owners the layers give that an unprivileged kiln could not keep: the last entry for a
        // path wins, and root owners are what the files get anyway.
        let mut unkept: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
        for layer in layers {
            let blob = store.open_blob(&layer.descriptor.digest)?;
            let opts = ApplyOptions { expected_diff_id: Some(layer.diff_id.clone()), ..ApplyOptions::default() };
            match apply_layer(io::BufReader::with_capacity(1 << 20, blob), &fs_dir, &opts) {
                Err(e) => {
                    remove_tree(&tmp);
                    return Err(BuildError::Layer { digest: layer.descriptor.digest.to_string(), source: e });
                }
                Ok(report) => {
                    for (path, uid, gid) in report.unkept_owners {
                        if (uid, gid) == (0, 0) {
                            unkept.remove(&path);
                        } else {
                            unkept.insert(path, (uid, gid));
                        }
                    }
                }
            }
        }
        if !unkept.is_empty() {
            let mut rec = Vec::new();
            for (path, (uid, gid)) in &unkept {
                rec.extend_from_slice(format!("{uid} {gid} {path}\0").as_bytes());
            }
            fs::write(tmp.join(OWNERS_FILE), rec).map_err(io_err("write", &tmp))?;
        }
        fs::write(tmp.join("kind"), "flat\n").map_err(io_err("write", &tmp))?;
        self.publish(tmp, chain)
    }

    /// The owners other than root that the layers of the flat snapshot whose `fs` is `fs_dir` give
    /// and an unprivileged kiln could not keep (its files are kiln's own): layer path → (uid, gid).
    /// Empty for a snapshot made by root, which keeps them in the files.
    pub fn unkept_owners(fs_dir: &Path) -> Result<std::collections::HashMap<String, (u64, u64)>, BuildError> {
        let Some(dir) = fs_dir.parent() else { return Ok(Default::default()) };
        let file = dir.join(OWNERS_FILE);
        let data = match fs::read(&file) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(BuildError::Io { action: "read", path: file, source: e }),
        };
        let bad = || BuildError::Io {
            action: "read",
            path: file.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, "not a list of `uid gid path` records"),
        };
        let mut out = std::collections::HashMap::new();
        for rec in data.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let rec = std::str::from_utf8(rec).map_err(|_| bad())?;
            let mut it = rec.splitn(3, ' ');
            let (Some(u), Some(g), Some(p)) = (it.next(), it.next(), it.next()) else { return Err(bad()) };
            out.insert(p.to_string(), (u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?));
        }
        Ok(out)
    }

    /// Keeps `upper` (an overlay upper dir, whose lower is the chain's parent) as the diff snapshot
    /// of `chain`. Consumes the directory.
    pub fn commit_upper(&self, upper: &Path, chain: &Digest) -> Result<(), BuildError> {
        if self.kind(chain).is_some() {
            remove_tree(upper);
            return Ok(());
        }
        let tmp = self.temp_dir("diff")?;
        fs::rename(upper, tmp.join("fs")).map_err(io_err("move", upper))?;
        fs::write(tmp.join("kind"), "diff\n").map_err(io_err("write", &tmp))?;
        self.publish(tmp, chain)
    }

    fn publish(&self, tmp: PathBuf, chain: &Digest) -> Result<(), BuildError> {
        let dest = self.snap_dir(chain);
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(()),
            // Another build published the same chain first: theirs is as good as ours.
            Err(_) if dest.join("kind").exists() => {
                remove_tree(&tmp);
                Ok(())
            }
            Err(e) => {
                remove_tree(&tmp);
                Err(BuildError::Io { action: "publish snapshot", path: dest, source: e })
            }
        }
    }

    /// Mounts an overlay of `lowers` with a fresh upper dir; read-only when `writable` is false.
    /// The native snapshotter copies the (single, flat) lower dir instead, or, read-only, uses it as is.
    pub fn mount(&self, lowers: &[PathBuf], writable: bool) -> Result<Mounted, BuildError> {
        let base = self.temp_dir("mnt")?;
        if self.native {
            let lower = lowers.first().cloned().unwrap_or_else(|| self.dir.join("empty"));
            if !writable {
                return Ok(Mounted { merged: lower.clone(), upper: base.join("upper"), base, mounted: false, lower: Some(lower) });
            }
            let merged = base.join("merged");
            fs::create_dir(&merged).map_err(io_err("create", &merged))?;
            // cp keeps owners, modes, times, xattrs, hard links and devices, and reflinks where it can.
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg("--reflink=auto")
                .arg(format!("{}/.", lower.display()))
                .arg(&merged)
                .status()
                .map_err(io_err("run cp for", &merged))?;
            if !st.success() {
                return Err(BuildError::Snapshot(SnapshotError::Copy { lower, status: st }));
            }
            return Ok(Mounted { merged, upper: base.join("upper"), base, mounted: false, lower: Some(lower) });
        }
        let merged = base.join("merged");
        let upper = base.join("upper");
        let work = base.join("work");
        for d in [&merged, &upper, &work] {
            fs::create_dir(d).map_err(io_err("create", d))?;
        }
        let mut m = Mounted { base, merged, upper, mounted: false, lower: None };
        let mut data = String::from("lowerdir=");
        for (i, l) in lowers.iter().enumerate() {
            let s = l.to_string_lossy();
            if s.contains(':') || s.contains(',') {
                return Err(BuildError::Snapshot(SnapshotError::OverlayPath { path: s.into_owned() }));
            }
            if i > 0 {
                data.push(':');
            }
            data.push_str(&s);
        }
        let lower_only = lowers.len() == 1 && !writable;
        if writable {
            data.push_str(&format!(",upperdir={},workdir={}", m.upper.display(), m.work_dir().display()));
        } else if lower_only {
            // overlay needs two lower dirs when there is no upper dir.
            data.push(':');
            data.push_str(&self.lowers_empty()?.to_string_lossy());
        }
        let flags = if writable { 0 } else { libc::MS_RDONLY };
        mount_faithful(&m.merged, &data, flags)?;
        m.mounted = true;
        register(&m.merged);
        Ok(m)
    }

    /// The directory this snapshotter keeps its snapshots and temp dirs in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lowers_empty(&self) -> Result<PathBuf, BuildError> {
        let empty = self.dir.join("empty");
        fs::create_dir_all(&empty).map_err(io_err("create", &empty))?;
        Ok(empty)
    }
}

/// An overlay mount; unmounted and removed on drop (the upper dir can be taken first).
#[derive(Debug)]
pub struct Mounted {
    base: PathBuf,
    pub merged: PathBuf,
    pub upper: PathBuf,
    mounted: bool,
    /// Native snapshots: the parent's flat root the copy was made from (for the diff).
    pub lower: Option<PathBuf>,
}

impl Mounted {
    /// `/` itself as a step's root (`--isolation none`): nothing mounted; `base`, a temp dir, is
    /// removed on drop.
    pub(crate) fn host_root(base: PathBuf) -> Mounted {
        Mounted { upper: base.join("upper"), base, merged: PathBuf::from("/"), mounted: false, lower: None }
    }

    fn work_dir(&self) -> PathBuf {
        self.base.join("work")
    }

    /// Unmounts, leaving the upper dir for the caller to read or move.
    pub fn unmount(&mut self) -> Result<(), BuildError> {
        if self.mounted {
            sys_umount(&self.merged).map_err(io_err("unmount", &self.merged))?;
            self.mounted = false;
            unregister(&self.merged);
        }
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = sys_umount(&self.merged);
            unregister(&self.merged);
        }
        remove_tree(&self.base);
    }
}

/// Mounts overlayfs with [`FAITHFUL`] options. A kernel that rejects an option it does not know
/// (EINVAL) lacks that feature, and so cannot have it on: the mount is retried with only the
/// options of the features `/sys/module/overlay/parameters/` lists.
fn mount_faithful(target: &Path, lowers_and_dirs: &str, flags: libc::c_ulong) -> Result<(), BuildError> {
    let all: Vec<&str> = FAITHFUL.iter().map(|(k, _)| *k).collect();
    let first = sys_mount_overlay(target, &with_options(lowers_and_dirs, &all), flags);
    let err = match first {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let known: Vec<&str> = all.iter().copied().filter(|k| Path::new(OVERLAY_PARAMS).join(k).exists()).collect();
            if known.len() == all.len() {
                e
            } else {
                match sys_mount_overlay(target, &with_options(lowers_and_dirs, &known), flags) {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                }
            }
        }
        Err(e) => e,
    };
    Err(BuildError::Snapshot(SnapshotError::Overlay {
        target: target.to_path_buf(),
        options: with_options("", &all).trim_start_matches(',').to_string(),
        source: err,
    }))
}

fn with_options(data: &str, features: &[&str]) -> String {
    // In a user namespace (kiln rootless, or a rootless container) the kernel lets overlayfs keep
    // its whiteout and opaque markers only in `user.overlay.*` xattrs (Linux 5.11+); `trusted.*`
    // needs real root. The layer writer reads both and emits neither. `userxattr` conflicts with
    // `redirect_dir=off` (which still *follows* redirects by default); `nofollow` creates none
    // either, and follows none.
    let userns = kiln_rootless::in_user_namespace();
    let mut out = data.to_string();
    for (k, v) in FAITHFUL.iter().filter(|(k, _)| features.contains(k)) {
        let v = if userns && *k == "redirect_dir" { "nofollow" } else { v };
        out.push_str(&format!(",{k}={v}"));
    }
    if userns {
        out.push_str(",userxattr");
    }
    out
}

fn register(merged: &Path) {
    if let Ok(mut m) = MOUNTS.lock() {
        m.push(merged.to_path_buf());
    }
}

fn unregister(merged: &Path) {
    if let Ok(mut m) = MOUNTS.lock() {
        m.retain(|p| p != merged);
    }
}

/// Detaches every overlay this process has mounted, at once, for an exit that cannot wait for the
/// threads that own them (a second signal, or the cancel deadline). Their temp dirs stay: the
/// next build reclaims them.
pub fn unmount_all_now() -> usize {
    let held: Vec<PathBuf> = match MOUNTS.lock() {
        Ok(mut m) => std::mem::take(&mut *m),
        Err(_) => return 0,
    };
    held.iter().filter(|p| sys_umount(p).is_ok()).count()
}

/// Removes a tree that may hold read-only dirs or immutable-looking modes; best effort.
pub fn remove_tree(p: &Path) {
    if fs::remove_dir_all(p).is_err() && p.exists() {
        tracing::warn!(path = %p.display(), "could not remove a temp dir");
    }
}

fn cstr(p: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn sys_mount_overlay(target: &Path, data: &str, flags: libc::c_ulong) -> io::Result<()> {
    let t = cstr(target)?;
    let d = std::ffi::CString::new(data).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in data"))?;
    let src = c"overlay";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(src.as_ptr(), t.as_ptr(), src.as_ptr(), flags, d.as_ptr().cast()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn sys_umount(target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: `t` is a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
