//! Exporters: where a finished build goes. Each `--output` becomes one [`Exporter`] (see
//! [`Output::exporter`]), and every exporter is fed the same [`BuildResult`]: the per-platform images
//! and the artifact in both its forms (as the store keeps it, and as it leaves the machine).
//!
//! A new kind of output (a local directory, a tar of the root file system, `--load`, attestations)
//! is one implementation of [`Exporter`] plus one arm in [`Output::parse`]; the orchestration
//! ([`crate::orchestrate`]) runs whatever exporters it is given, in order.

use std::path::PathBuf;

use kiln_cache::LayerSources;
use kiln_oci::{Digest, Reference, Store};
use kiln_registry::Client;

use crate::error::BuildError;
use crate::output::{self, Artifact, Output};
use crate::{Built, Progress};

/// What every exporter is fed: the images a build made, one per platform, and the artifact over them.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// One image per platform, in the order the platforms were asked for.
    pub images: Vec<Built>,
    /// The artifact as the store keeps it (plain-tar layers; an index when there are several images).
    pub local: Artifact,
    /// The artifact as it leaves the machine (gzipped layers), or `local` when nothing leaves.
    pub export: Artifact,
}

impl BuildResult {
    /// The digest the build reports: the exported form's root, as BuildKit reports the pushed one.
    pub fn digest(&self) -> &Digest {
        &self.export.root.digest
    }

    /// Where layers the store lacks can be mounted or streamed from, over every image.
    pub fn layer_sources(&self) -> LayerSources {
        let mut sources = LayerSources::new();
        for b in &self.images {
            sources.extend(&b.layer_sources);
        }
        sources
    }
}

/// What exporters share besides the result.
pub struct ExportContext<'a> {
    pub store: &'a Store,
    /// `--tag`s, in the order given.
    pub tags: &'a [Reference],
    /// For exporters that talk to a registry.
    pub registry: Option<&'a Client>,
    /// Where exporters report what they did (`info`) and warn.
    pub progress: &'a dyn Progress,
}

/// What one export did, for the summary and the metadata file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportDone {
    /// The digest a registry stored, for an exporter that pushed.
    pub pushed: Option<Digest>,
}

/// One output of a build.
pub trait Exporter: std::fmt::Debug + Send + Sync {
    /// Whether it writes the form that leaves the machine (gzipped layers) rather than the store's.
    fn leaves_machine(&self) -> bool {
        true
    }

    /// Whether it needs every layer in the local store (a push mounts cached layers in the registry
    /// instead, so a push-only build downloads none).
    fn needs_local_layers(&self) -> bool {
        true
    }

    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError>;
}

impl Output {
    /// The exporter that writes this output.
    pub fn exporter(&self) -> Box<dyn Exporter> {
        match self {
            Output::Image => Box::new(StoreTag),
            Output::Oci { dest, tar } => Box::new(OciLayout { dest: dest.clone(), tar: *tar }),
            Output::Docker { dest } => Box::new(DockerArchive { dest: dest.clone() }),
            Output::Registry { push_by_digest } => Box::new(RegistryPush { by_digest: *push_by_digest }),
        }
    }

    /// The outputs a build writes: those asked for, a registry push for `--push` (unless one was
    /// asked for already), and the store when nothing was. Pushing needs a name.
    pub fn resolve(mut outputs: Vec<Output>, push: bool, tags: &[Reference]) -> Result<Vec<Output>, BuildError> {
        if push && !outputs.iter().any(|o| matches!(o, Output::Registry { .. })) {
            outputs.push(Output::Registry { push_by_digest: false });
        }
        if outputs.is_empty() {
            outputs.push(Output::Image);
        }
        if outputs.iter().any(|o| matches!(o, Output::Registry { .. })) && tags.is_empty() {
            return Err(BuildError::Usage("pushing needs a name: add -t REGISTRY/NAME[:TAG]".into()));
        }
        Ok(outputs)
    }
}

/// `type=image`: tags the image in the local store under every `--tag`.
#[derive(Debug, Clone, Copy)]
pub struct StoreTag;

impl Exporter for StoreTag {
    fn leaves_machine(&self) -> bool {
        false
    }

    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError> {
        output::tag(ctx.store, &result.local, ctx.tags)?;
        Ok(ExportDone::default())
    }
}

/// `type=oci,dest=P[,tar=false]`: an OCI image layout, as a tarball or a directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    pub dest: PathBuf,
    pub tar: bool,
}

impl Exporter for OciLayout {
    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError> {
        output::write_oci(ctx.store, &result.export, &self.dest, self.tar, ctx.tags)?;
        Ok(ExportDone::default())
    }
}

/// `type=docker,dest=P`: a tarball `docker load` accepts.
#[derive(Debug, Clone)]
pub struct DockerArchive {
    pub dest: PathBuf,
}

impl Exporter for DockerArchive {
    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError> {
        output::write_docker(ctx.store, &result.export, &self.dest, ctx.tags)?;
        Ok(ExportDone::default())
    }
}

/// `type=registry[,push-by-digest=true]` (and `--push`): pushes to the registry of each `--tag`, or,
/// by digest, to the first tag's repository only (the digest names the image everywhere).
#[derive(Debug, Clone, Copy)]
pub struct RegistryPush {
    pub by_digest: bool,
}

impl Exporter for RegistryPush {
    fn needs_local_layers(&self) -> bool {
        false
    }

    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError> {
        let client = ctx.registry.ok_or_else(|| BuildError::Usage("pushing needs a registry client".into()))?;
        let sources = result.layer_sources();
        let mut done = ExportDone::default();
        for t in ctx.tags {
            let d = crate::push::push_artifact(client, ctx.store, &result.export, t, self.by_digest, &sources)?;
            let named = if self.by_digest { t.repository_only().with_digest(d.clone()).to_string() } else { t.to_string() };
            ctx.progress.info(&format!("pushed {named} ({d})"));
            done.pushed = Some(d);
            if self.by_digest {
                break;
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn outputs_default_to_the_store_and_push_adds_one_registry_output() {
        let t = [tag("localhost:5000/app:1")];
        assert_eq!(Output::resolve(vec![], false, &[]).unwrap(), vec![Output::Image]);
        assert_eq!(Output::resolve(vec![], true, &t).unwrap(), vec![Output::Registry { push_by_digest: false }]);
        let by_digest = vec![Output::Registry { push_by_digest: true }];
        assert_eq!(Output::resolve(by_digest.clone(), true, &t).unwrap(), by_digest);
        let oci = Output::Oci { dest: "x.tar".into(), tar: true };
        assert_eq!(Output::resolve(vec![oci.clone()], true, &t).unwrap(), vec![oci, Output::Registry { push_by_digest: false }]);
    }

    #[test]
    fn pushing_without_a_tag_is_refused() {
        let e = Output::resolve(vec![], true, &[]).unwrap_err();
        assert_eq!(e.to_string(), "pushing needs a name: add -t REGISTRY/NAME[:TAG]");
        assert!(Output::resolve(vec![Output::Registry { push_by_digest: true }], false, &[]).is_err());
    }

    #[test]
    fn only_the_store_keeps_the_plain_form_and_only_a_push_needs_no_local_layers() {
        let all = [
            Output::Image,
            Output::Oci { dest: "a".into(), tar: false },
            Output::Docker { dest: "b".into() },
            Output::Registry { push_by_digest: false },
        ];
        let leaves: Vec<bool> = all.iter().map(|o| o.exporter().leaves_machine()).collect();
        let local: Vec<bool> = all.iter().map(|o| o.exporter().needs_local_layers()).collect();
        assert_eq!(leaves, [false, true, true, true]);
        assert_eq!(local, [true, true, true, false]);
    }
}
