//! Running a command in an image of the store (`kiln run`, and `kiln build --test`).
//!
//! The image's layers are stacked read-only with a throwaway upper dir, so a run never changes the
//! image; the process gets the image's ENV, USER and WORKDIR, like `docker run`.

use std::path::{Path, PathBuf};

use kiln_oci::{Platform, Store};
use kiln_sandbox::{ExitStatus, Sandbox, Spec, Stream};

use crate::error::BuildError;
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
}

/// Runs the request, sending each output line to `sink`; returns how the process ended.
pub fn run_image(req: &RunRequest<'_>, sink: &mut dyn FnMut(Stream, &[u8])) -> Result<ExitStatus, BuildError> {
    let store = Store::open(req.root)?;
    let _lease = store.lease()?;
    let base = crate::base::load(&store, req.image, req.platform)?;
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
        return Err(BuildError::Usage(format!(
            "{} has no ENTRYPOINT or CMD: give a command, e.g. `kiln run {} -- sh`",
            req.image, req.image
        )));
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
        None => Sandbox::new().map_err(|e| BuildError::Usage(e.to_string()))?,
    };
    let outcome = sandbox.run(&spec, sink).map_err(|e| BuildError::Usage(format!("{}: {e}", req.image)))?;
    drop(mounted);
    Ok(outcome.status)
}
