//! Running a command in an image of the store (`kiln run`, and `kiln build --test`), pulling it first
//! when `kiln run` asks for that ([`ensure_image`]).
//!
//! The image's layers are stacked read-only with a throwaway upper dir, so a run never changes the
//! image; the process gets the image's ENV, USER and WORKDIR, like `docker run`.

use std::path::{Path, PathBuf};

use kiln_oci::{Platform, Store};
use kiln_sandbox::{ExitStatus, Sandbox, Spec, Stream};

use crate::error::{BaseFailure, BuildError, RunRefusal};
use crate::snapshot::Snapshotter;
use crate::state::LayerRef;

/// What to run.
pub struct RunRequest<'a> {
    pub root: &'a Path,
    /// Image reference or digest reference in the store.
    pub image: &'a str,
    pub platform: &'a Platform,
    /// The command; empty means the image's ENTRYPOINT + CMD. A given command replaces CMD and
    /// keeps ENTRYPOINT, as `docker run IMAGE CMD…` does.
    pub command: Vec<String>,
    /// Wrap `command` in the image's shell (`--test 'CMD'`) instead of appending it to ENTRYPOINT.
    pub shell: bool,
    pub init_binary: Option<PathBuf>,
    /// Stops the run from another thread (a signal): the command's process tree is killed and
    /// [`BuildError::Cancelled`] returned, with the overlay unmounted.
    pub cancel: crate::Cancel,
}

/// When `kiln run` pulls, as `docker run --pull`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// When the store lacks the image, or the platform's image of it.
    Missing,
    /// Every time: the tag is resolved again at its registry and follows it.
    Always,
    /// Never: only the store is asked.
    Never,
}

/// The image [`ensure_image`] found: what to put in [`RunRequest::image`] and
/// [`RunRequest::platform`], and what was pulled for it.
pub struct RunTarget {
    /// The tag, or the reference pinned by digest when a pull could not move the tag.
    pub image: String,
    pub platform: Platform,
    pub pulled: Option<kiln_registry::StorePull>,
    /// Keeps `kiln prune` away from an image pulled but not tagged until it has been run.
    pub lease: kiln_oci::Lease,
}

/// Finds `image` in the store for `platform`, pulling it per `policy`. With no platform asked for,
/// an index gives this machine's image and a lone image manifest is taken whatever its platform (as
/// `docker run` does); with one asked for, a lone image for another platform is an error. Messages
/// say "image", not "base image": nothing is being built.
pub fn ensure_image(
    root: &Path,
    client: Option<&kiln_registry::Client>,
    image: &str,
    platform: Option<&Platform>,
    policy: PullPolicy,
    progress: &dyn kiln_registry::Progress,
) -> Result<RunTarget, BuildError> {
    let store = Store::open(root)?;
    let lease = store.lease()?;
    let reference = kiln_oci::Reference::parse(image)
        .map_err(|e| BuildError::Image { reference: image.to_string(), source: BaseFailure::Reference(e) })?;
    let local = |name: &str| -> Result<Option<Platform>, BuildError> {
        let r = kiln_oci::Reference::parse(name)
            .map_err(|e| BuildError::Image { reference: name.to_string(), source: BaseFailure::Reference(e) })?;
        let Some(root) = store.resolve(&r)? else { return Ok(None) };
        if platform.is_none() {
            if let Some(only) = lone_image_platform(&store, &root)? {
                return Ok(Some(only));
            }
        }
        let want = platform.cloned().unwrap_or_else(Platform::host);
        store.select_platform(image, &root, &want)?;
        Ok(Some(want))
    };
    let not_here = |how: &str| BuildError::from(RunRefusal::NotInStore { image: image.to_string(), how: how.to_string() });
    let kiln_local = reference.registry() == "kiln.local";
    let local_first = match policy {
        PullPolicy::Always if !kiln_local => None,
        _ => Some(local(image)),
    };
    match local_first {
        Some(Ok(Some(p))) => return Ok(RunTarget { image: image.to_string(), platform: p, pulled: None, lease }),
        Some(Ok(None)) if policy == PullPolicy::Never => return Err(not_here("")),
        Some(Ok(None)) if kiln_local => return Err(RunRefusal::LocalNameMissing { image: image.to_string() }.into()),
        Some(Err(e)) if policy == PullPolicy::Never || kiln_local => return Err(e),
        _ => {}
    }
    let Some(client) = client else { return Err(not_here("")) };
    let selection = match platform {
        Some(p) => kiln_registry::PlatformSelection::Only(vec![p.clone()]),
        None => kiln_registry::PlatformSelection::Host(Platform::host()),
    };
    let tagging = if policy == PullPolicy::Always { kiln_registry::Tagging::Follow } else { kiln_registry::Tagging::Keep };
    let pulled = kiln_registry::pull_to_store(client, &store, &reference, &selection, tagging, progress).map_err(|e| {
        let had = match &local_first {
            Some(Err(local)) => format!("{local}; and "),
            Some(_) => "not in the local store, and ".to_string(),
            None => String::new(),
        };
        BuildError::Pull { image: image.to_string(), had, source: Box::new(e) }
    })?;
    let name = if pulled.tagged { image.to_string() } else { reference.with_digest(pulled.root.digest.clone()).to_string() };
    match local(&name)? {
        Some(p) => Ok(RunTarget { image: name, platform: p, pulled: Some(pulled), lease }),
        None => Err(not_here(" after pulling it")),
    }
}

/// The platform of `root` when it is a lone image manifest (the host's when its config names none).
fn lone_image_platform(store: &Store, root: &kiln_oci::Descriptor) -> Result<Option<Platform>, BuildError> {
    if !matches!(store.read_manifest(root)?.value, kiln_oci::Manifest::Image(_)) {
        return Ok(None);
    }
    let platform = store.platform_images(root)?.into_iter().next().and_then(|i| i.platform);
    Ok(Some(platform.unwrap_or_else(Platform::host)))
}

/// Runs the request, sending each output line to `sink`; returns how the process ended.
pub fn run_image(req: &RunRequest<'_>, sink: &mut dyn FnMut(Stream, &[u8])) -> Result<ExitStatus, BuildError> {
    req.cancel.check()?;
    let store = Store::open(req.root)?;
    let _lease = store.lease()?;
    crate::reclaim::reclaim(req.root);
    let base = crate::base::load(&store, req.image, req.platform).map_err(|e| match e {
        BuildError::Base { reference, source } => BuildError::Image { reference, source },
        e => e,
    })?;
    let layers: Vec<LayerRef> = base.layers.clone();
    let rc = base.config.config.clone().unwrap_or_default();
    let argv: Vec<String> = if req.shell {
        let mut v = rc.shell.clone().unwrap_or_else(crate::state::default_shell);
        v.push(req.command.join(" "));
        v
    } else {
        let mut v = rc.entrypoint.clone().unwrap_or_default();
        if req.command.is_empty() {
            v.extend(rc.cmd.clone().unwrap_or_default());
        } else {
            v.extend(req.command.iter().cloned());
        }
        v
    };
    if argv.is_empty() {
        return Err(RunRefusal::NoCommand { image: req.image.to_string() }.into());
    }
    let snaps = Snapshotter::open(req.root);
    let lowers = snaps.lowers(&store, &layers)?;
    let mounted = match snaps.mount(&lowers, true) {
        Ok(m) => m,
        // Where overlayfs cannot mount, run on a copy (as `kiln build --snapshotter auto` does).
        Err(_) => {
            let native = Snapshotter::open_native(req.root);
            let lowers = native.lowers(&store, &layers)?;
            native.mount(&lowers, true)?
        }
    };
    let mut spec = Spec::new(&mounted.merged, argv);
    spec.env = rc.env.clone().unwrap_or_default();
    spec.user = rc.user.clone().unwrap_or_default();
    spec.workdir = PathBuf::from(rc.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()));
    let sandbox = match &req.init_binary {
        Some(b) => Sandbox::with_init_binary(b),
        None => Sandbox::new().map_err(|source| BuildError::Run { image: String::new(), source })?,
    }
    .with_cancel(req.cancel.sandbox());
    let outcome = sandbox.run(&spec, sink).map_err(|e| match e {
        kiln_sandbox::Error::Cancelled { .. } => BuildError::Cancelled { kept: format!("{} stopped", req.image) },
        source => BuildError::Run { image: req.image.to_string(), source },
    })?;
    drop(mounted);
    Ok(outcome.status)
}
