//! Pulling into the local store: what `kiln pull`, `kiln run` and a build's `FROM` share.
//!
//! The registry's root manifest is stored verbatim (an index stays an index, with only the asked
//! platforms' images fetched: see [`crate::pull_image`]), and the tag is then pointed at it. The one
//! policy question is when a tag that already names something may move, which [`Tagging`] answers:
//! an explicit pull follows the registry, as `docker pull` does; a pull made because an image was
//! missing (a build's base, `kiln run --pull missing`) fills in what the store has and moves the tag
//! only when that loses nothing.

use kiln_oci::{media, Descriptor, Manifest, Reference, Store};

use crate::client::{Client, Repo};
use crate::error::{RegistryError, Result};
use crate::local::{store_err, LocalImages};
use crate::transfer::{pull_image, CopyOptions, PlatformSelection, Progress, RegistrySource};

/// Where the store's tag goes after a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tagging {
    /// To whatever the registry's tag names now (`kiln pull`, `kiln run --pull always`).
    Follow,
    /// Nowhere new unless nothing is lost: a stored index that lists the platforms asked for is
    /// completed by its own digest (the tag stays pinned to it); otherwise the registry's tag is
    /// pulled and the store's tag moves to it only when it was absent or the new root lists every
    /// image the old one had here. When it may not move, the pull is used by digest.
    Keep,
}

/// What [`pull_to_store`] did.
#[derive(Clone, Debug)]
pub struct StorePull {
    /// The root manifest stored (index or image manifest), by digest.
    pub root: Descriptor,
    /// Whether the store's tag names `root` now.
    pub tagged: bool,
    /// The image manifests fetched (index entries with their platforms, or the lone image).
    pub images: Vec<Descriptor>,
    pub blobs_moved: usize,
    pub bytes_moved: u64,
}

/// Pulls `reference` from its registry into `store` for `selection`, then tags it per `tagging`.
pub fn pull_to_store(
    client: &Client,
    store: &Store,
    reference: &Reference,
    selection: &PlatformSelection,
    tagging: Tagging,
    progress: &dyn Progress,
) -> Result<StorePull> {
    let name = reference.to_string();
    let src = RegistrySource { client, repo: Repo::new(reference.registry(), reference.repository()) };
    // The lease (held by the destination) keeps `kiln prune` off the fresh blobs until they are tagged.
    let dst = LocalImages::new(store.clone(), "store", true)?;
    let opts = CopyOptions { platform: None, parallel: client.options().parallel };
    let local = store.resolve(reference).map_err(|e| store_err("store", e))?;
    let registry_ref = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };

    if tagging == Tagging::Keep && reference.digest().is_none() {
        if let Some(l) = local.as_ref().filter(|l| lists_all(store, l, selection)) {
            match pull_image(&src, &l.digest.to_string(), &dst, None, selection, &opts, progress) {
                Ok(res) => {
                    return Ok(StorePull {
                        root: l.clone(),
                        tagged: true,
                        images: res.images,
                        blobs_moved: res.root.blobs_moved,
                        bytes_moved: res.root.bytes_moved,
                    });
                }
                // The registry no longer has the stored index: ask it what the tag names now.
                Err(RegistryError::NotFound { .. }) => {
                    tracing::info!("{name}: the registry no longer has the stored index {}; pulling the tag", l.digest);
                }
                Err(e) => return Err(e),
            }
        }
    }

    let res = pull_image(&src, &registry_ref, &dst, None, selection, &opts, progress)?;
    let root = Descriptor::new(&res.root.media_type, res.root.digest.clone(), res.root.size);
    let may_tag = match (&local, tagging) {
        (None, _) | (_, Tagging::Follow) => true,
        (Some(l), Tagging::Keep) => l.digest == root.digest || covers(store, l, &root),
    };
    let already = local.as_ref().is_some_and(|l| l.digest == root.digest);
    if may_tag && !already {
        store.tag_name(&name, &root).map_err(|e| store_err("store", e))?;
    } else if !may_tag {
        tracing::info!(
            "{name}: the store's tag names {} and the registry's names {}; using the pulled one by digest",
            local.as_ref().map(|l| l.digest.to_string()).unwrap_or_default(),
            root.digest
        );
    }
    Ok(StorePull { root, tagged: may_tag, images: res.images, blobs_moved: res.root.blobs_moved, bytes_moved: res.root.bytes_moved })
}

/// Does the stored index `l` list an image for every platform asked for (or, for all of them, is it
/// an index at all)?
fn lists_all(store: &Store, l: &Descriptor, selection: &PlatformSelection) -> bool {
    if !media::is_index(&l.media_type) {
        return false;
    }
    let Ok(raw) = store.read_manifest(l) else { return false };
    let Manifest::Index(ix) = raw.value else { return false };
    match selection {
        PlatformSelection::All => true,
        _ => selection.platforms().iter().all(|p| ix.find_platform(p).is_some()),
    }
}

/// Does the new root list every image the store has of the old one (so moving the tag loses nothing)?
fn covers(store: &Store, old: &Descriptor, new: &Descriptor) -> bool {
    let present: Vec<_> = match store.platform_images(old) {
        Ok(images) => images.into_iter().filter(|i| i.present).map(|i| i.descriptor.digest).collect(),
        // Nothing readable behind the old tag: nothing to lose.
        Err(_) => return true,
    };
    let listed: Vec<_> = match store.read_manifest(new).map(|r| r.value) {
        Ok(Manifest::Index(ix)) => ix.manifests.into_iter().map(|d| d.digest).collect(),
        _ => vec![new.digest.clone()],
    };
    present.iter().all(|d| listed.contains(d))
}
