//! The solver's side of `--isolation none` ([`crate::hostroot`]): reset `/` to a step's parent,
//! run the step there, and make its layer from the tree diff.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_cache::LayerRecord;
use kiln_oci::layer::{write_layer_from_entries, write_layer_from_tar, write_layer_to_store};
use kiln_sandbox::direct::{Confinement, Direct};

use super::{chain_key, Shared, Solver};
use crate::error::BuildError;
use crate::hostroot::{owner, sync, tree, HostRootError, Skip};
use crate::snapshot::Mounted;
use crate::state::{ImageState, LayerRef};

/// What `/` holds and how steps run in it.
pub(crate) struct HostRoot {
    skip: Skip,
    direct: Direct,
    /// The chain key of the layers `/` holds now; `None` when unknown (the container's own
    /// files, or a step that failed half-way).
    live: Option<String>,
    origins: sync::Origins,
    /// kiln's ids when it is not root: they stand for the image's root in layers.
    unprivileged: Option<(u32, u32)>,
    /// Not root: files in `/` that are kiln's but belong to someone else in the image (the
    /// base's owners, which extraction could not give): layer path → ids ([`owner`]).
    owners: HashMap<String, (u64, u64)>,
}

impl HostRoot {
    pub(super) fn for_build(shared: Shared<'_>) -> Option<HostRoot> {
        let opts = shared.opts;
        let crate::Isolation::None { ignore_paths, .. } = &opts.isolation else { return None };
        let mut own: Vec<PathBuf> = vec![opts.root.clone(), opts.context.clone()];
        own.extend(std::env::current_exe().ok());
        own.extend(opts.init_binary.clone());
        own.extend(opts.dockerfile.clone());
        own.extend(shared.local_contexts.dirs().map(Path::to_path_buf));
        let skip = Skip::discover(&own, ignore_paths);
        let protect: Vec<PathBuf> = own.iter().filter(|p| p.exists()).cloned().collect();
        let direct = Direct::new().with_cancel(opts.cancel.sandbox()).protecting(protect);
        match direct.confinement() {
            Confinement::Landlock { abi } => {
                shared.progress.info(&format!("--isolation none: RUN steps cannot remove or truncate kiln's files (Landlock ABI {abi})"))
            }
            Confinement::None { why } => {
                shared.progress.warn(&format!("--isolation none: RUN steps are not kept off kiln's own files: {why}"))
            }
        }
        // SAFETY: no arguments.
        let ids = unsafe { (libc::geteuid(), libc::getegid()) };
        Some(HostRoot {
            skip,
            direct,
            live: None,
            origins: sync::Origins::default(),
            unprivileged: (ids.0 != 0).then_some(ids),
            owners: HashMap::new(),
        })
    }
}

impl Solver<'_> {
    /// `--isolation none`: stages run one after another in `/`.
    pub(crate) fn in_host_root(&self) -> bool {
        self.host.is_some()
    }

    /// The direct runner, when RUN runs in `/`.
    pub(super) fn direct(&self) -> Option<&Direct> {
        self.host.as_ref().map(|h| &h.direct)
    }

    /// Runs `exec` in `/` made equal to `state`'s layers and returns the layer of what it changed.
    pub(super) fn host_step<F>(&mut self, state: &ImageState, exec: F) -> Result<Option<LayerRecord>, BuildError>
    where
        F: FnOnce(&mut Self, &Mounted, &ImageState) -> Result<(), BuildError>,
    {
        let root = Path::new("/");
        let want = chain_key(&state.layers);
        let stale = self.host.as_ref().is_some_and(|h| h.live.as_deref() != Some(want.as_str()));
        if stale {
            let src = self.snaps.lowers(self.shared.store, &state.layers)?.swap_remove(0);
            let Some(h) = self.host.as_mut() else { return Ok(None) };
            h.live = None;
            h.owners = if h.unprivileged.is_some() { crate::snapshot::Snapshotter::unkept_owners(&src)? } else { HashMap::new() };
            let r = sync::sync(&src, root, &h.skip, &mut h.origins)?;
            tracing::debug!(copied = r.copied, removed = r.removed, kept = r.kept, "reset / to the step's parent");
            h.live = Some(want.clone());
        }
        let Some(h) = self.host.as_mut() else { return Ok(None) };
        let skip = h.skip.clone();
        let walk = |what: &'static str| {
            let skip = skip.clone();
            move || tree::snapshot(root, &skip).map_err(|source| HostRootError::Io { what, path: root.to_path_buf(), source })
        };
        let before = walk("snapshot before the step")()?;
        h.live = None;
        let mounted = Mounted::host_root(self.snaps.temp_dir("host")?);
        exec(self, &mounted, state)?;
        drop(mounted);
        let after = walk("snapshot after the step")()?;
        let entries = tree::diff(&before, &after, root);
        let Some(h) = self.host.as_mut() else { return Ok(None) };
        if entries.is_empty() {
            h.live = Some(want);
            return Ok(None);
        }
        let unprivileged = h.unprivileged;
        let wopts = self.wopts.clone();
        let info = match unprivileged {
            None => write_layer_to_store(self.shared.store, |w| write_layer_from_entries(entries, w, &wopts).map(|(_, i)| i)),
            Some((uid, gid)) => {
                // Plain tar first (in kiln's own temp dir), then the owners mapped on the way in.
                let tmp = self.snaps.temp_dir("owners")?;
                let plain = tmp.join("layer.tar");
                let unreadable = owner::readable_for_writing(&entries);
                let fixes = owner::Fixes {
                    modes: unreadable.iter().map(|(n, _, m)| (n.clone(), *m)).collect(),
                    owners: base_owners_kept(&mut h.owners, &entries, &before, &after, uid),
                };
                let made = std::fs::File::create(&plain)
                    .map_err(|e| kiln_oci::layer::LayerError::Io { op: "create", path: plain.clone(), source: e })
                    .and_then(|f| {
                        let plain_opts = kiln_oci::layer::WriteOptions { compression: kiln_oci::Compression::None, ..wopts.clone() };
                        write_layer_from_entries(entries, std::io::BufWriter::new(f), &plain_opts).map(drop)
                    })
                    .and_then(|()| {
                        let io = |op: &'static str, path: &Path| {
                            let path = path.to_path_buf();
                            move |source| kiln_oci::layer::LayerError::Io { op, path, source }
                        };
                        owner::restore(&unreadable);
                        let mapped = tmp.join("mapped.tar");
                        let src = std::fs::File::open(&plain).map_err(io("open", &plain))?;
                        let dst = std::fs::File::create(&mapped).map_err(io("create", &mapped))?;
                        owner::map_to_root(std::io::BufReader::new(src), std::io::BufWriter::new(dst), uid, gid, &fixes)
                            .map_err(io("map the owners of", &plain))?;
                        let tar = std::fs::File::open(&mapped).map_err(io("open", &mapped))?;
                        write_layer_to_store(self.shared.store, |w| {
                            write_layer_from_tar(std::io::BufReader::new(tar), w, &wopts).map(|(_, i)| i)
                        })
                    });
                crate::snapshot::remove_tree(&tmp);
                made
            }
        }
        .map_err(|e| BuildError::Layer { digest: "(new)".into(), source: e })?;
        let mut layers: Vec<LayerRef> = state.layers.clone();
        layers.push(LayerRef { descriptor: info.descriptor(), diff_id: info.diff_id.clone() });
        if let Some(h) = self.host.as_mut() {
            h.live = Some(chain_key(&layers));
        }
        Ok(Some(LayerRecord { descriptor: info.descriptor(), diff_id: info.diff_id.clone() }))
    }
}

/// The remembered base owners (`owners`) of the entries of a step's layer that the step changed in
/// place (the same inode before and after, still owned by kiln's `uid`); the step's layer gives
/// those back. What the step made anew, replaced or removed is forgotten: from now on it is
/// root's, as in the root build.
fn base_owners_kept(
    owners: &mut HashMap<String, (u64, u64)>,
    entries: &[kiln_oci::layer::LayerEntry],
    before: &tree::Snapshot,
    after: &tree::Snapshot,
    uid: u32,
) -> HashMap<String, (u64, u64)> {
    let mut kept = HashMap::new();
    if owners.is_empty() {
        return kept;
    }
    let mut gone: Vec<&str> = Vec::new();
    for e in entries {
        let path = e.path.trim_end_matches('/');
        let in_place = matches!(e.source, kiln_oci::layer::EntrySource::Host(_))
            && matches!((before.get(path), after.get(path)), (Some(b), Some(a)) if b.ino == a.ino && a.uid == uid);
        if !in_place {
            gone.push(path);
        } else if let Some(ids) = owners.get(path) {
            kept.insert(path.to_string(), *ids);
        }
    }
    for path in gone {
        owners.remove(path);
        // A removed or replaced directory takes what was below it.
        let below = format!("{path}/");
        if owners.keys().any(|k| k.starts_with(&below)) {
            owners.retain(|k, _| !k.starts_with(&below));
        }
    }
    kept
}
