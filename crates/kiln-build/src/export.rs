//! Exporters: where a finished build goes. Each resolved `--output` becomes one [`Exporter`] (see
//! [`Output::exporter`]), and every exporter is fed the same [`BuildResult`]: the per-platform images
//! and the artifact over them as the store keeps it. Each derives the form it writes from that
//! ([`Artifact::in_form`]: its compression and annotations), so two outputs never disagree about
//! the build, only about how it is packed.
//!
//! A new kind of output (attestations, say) is one implementation of [`Exporter`] plus one arm in
//! [`Output::parse`]; the orchestration ([`crate::orchestrate`]) checks every exporter before the
//! build ([`Exporter::check`]) and runs them, in order, after it.

use kiln_cache::LayerSources;
use kiln_oci::{Platform, Reference, Store};
use kiln_registry::Client;

use crate::engine::Engine;
use crate::error::BuildError;
use crate::output::{self, Artifact, Dest, ImageOutput, LayoutFormat, LayoutOutput, Output, OutputError, RootfsFormat, RootfsOutput};
use crate::{Built, Progress};

/// What every exporter is fed: the images a build made, one per platform, and the artifact over them.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// One image per platform, in the order the platforms were asked for.
    pub images: Vec<Built>,
    /// The artifact as the store keeps it (plain-tar layers; an index when there are several images).
    pub local: Artifact,
}

impl BuildResult {
    /// Where layers the store lacks can be mounted or streamed from, over every image.
    pub fn layer_sources(&self) -> LayerSources {
        let mut sources = LayerSources::new();
        for b in &self.images {
            sources.extend(&b.layer_sources);
        }
        sources
    }

    /// The platform of a one-image build (annotations limited to a platform need it).
    pub fn single_platform(&self) -> Option<Platform> {
        match self.images.as_slice() {
            [one] => Some(one.config.platform()),
            _ => None,
        }
    }
}

/// What exporters share besides the result.
pub struct ExportContext<'a> {
    pub store: &'a Store,
    /// For exporters that talk to a registry.
    pub registry: Option<&'a Client>,
    /// Where exporters report what they did (`info`) and warn.
    pub progress: &'a dyn Progress,
    /// `SOURCE_DATE_EPOCH`, for the times in a root file system tar.
    pub source_date_epoch: Option<u64>,
    /// The build's attestations, for the outputs that carry them.
    pub attest: &'a crate::attest::Attester,
}

/// What one export did, for the summary and the metadata file.
#[derive(Debug, Clone, Default)]
pub struct ExportDone {
    /// The artifact it wrote, in the form it wrote it (`None` for file-system outputs).
    pub wrote: Option<Artifact>,
    /// The digest a registry stored, for an exporter that pushed.
    pub pushed: Option<kiln_oci::Digest>,
    /// The names it gave the image (`image.name` in the metadata).
    pub names: Vec<String>,
}

/// One output of a build.
pub trait Exporter: std::fmt::Debug + Send + Sync {
    /// Whether what it writes leaves the machine (the build then reports that form's digest).
    fn leaves_machine(&self) -> bool {
        true
    }

    /// Whether it needs every layer in the local store (a push mounts cached layers in the registry
    /// instead, so a push-only build downloads none).
    fn needs_local_layers(&self) -> bool {
        true
    }

    /// What can be checked before the build, so that a build is not spent on an output that cannot
    /// be written (no Docker engine for `--load`, say).
    fn check(&self) -> Result<(), BuildError> {
        Ok(())
    }

    /// The repositories it pushes the image to, whose layers the build may send ahead while it
    /// runs ([`crate::eager`]); none for an exporter that does not push.
    fn push_targets(&self) -> Vec<crate::eager::PushTarget> {
        Vec::new()
    }

    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError>;
}

impl Output {
    /// The exporter that writes this output.
    pub fn exporter(&self) -> Box<dyn Exporter> {
        match self {
            Output::Image(o) => Box::new(ImageExport(o.clone())),
            Output::Oci(o) => Box::new(LayoutExport { format: LayoutFormat::Oci, out: o.clone() }),
            Output::Docker(o) => Box::new(LayoutExport { format: LayoutFormat::Docker, out: o.clone() }),
            Output::Local(o) => Box::new(RootfsExport { format: RootfsFormat::Local, out: o.clone() }),
            Output::Tar(o) => Box::new(RootfsExport { format: RootfsFormat::Tar, out: o.clone() }),
        }
    }
}

/// `type=image` / `type=registry` / `--push`: tags the image in the local store under its names
/// (`store=true`), and pushes it to each name's registry (`push=true`), or by digest to the first
/// name's repository only (the digest names the image everywhere).
#[derive(Debug, Clone)]
pub struct ImageExport(pub ImageOutput);

impl Exporter for ImageExport {
    fn leaves_machine(&self) -> bool {
        self.0.push
    }

    fn needs_local_layers(&self) -> bool {
        // Recompressing (another codec, or forced) reads every layer.
        self.0.store || self.0.form.codec != kiln_oci::layer::Codec::DEFAULT || self.0.form.force
    }

    fn push_targets(&self) -> Vec<crate::eager::PushTarget> {
        let o = &self.0;
        if !o.push {
            return Vec::new();
        }
        // By digest, only the first name's repository is pushed to (see `export`).
        let names = if o.push_by_digest { &o.names[..o.names.len().min(1)] } else { &o.names[..] };
        names.iter().map(|r| crate::eager::PushTarget { reference: r.clone(), codec: o.form.codec, force: o.form.force }).collect()
    }

    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError> {
        let o = &self.0;
        let single = result.single_platform();
        let mut done = ExportDone::default();
        if o.store {
            let art = result.local.with_annotations(ctx.store, &o.form, single.as_ref())?;
            output::tag(ctx.store, &art, &o.names)?;
            if !o.push {
                ctx.attest.skip("the local store (type=image without push)", ctx.progress);
            }
            done.names = o.names.iter().map(Reference::to_string).collect();
            done.wrote = Some(art);
        }
        if o.push {
            let client = ctx.registry.ok_or(OutputError::NoRegistryClient)?;
            let art = result.local.in_form(ctx.store, &o.form, single.as_ref(), false, &result.images)?;
            let art = ctx.attest.carry(ctx.store, result, art, &o.names)?;
            let sources = result.layer_sources();
            done.names.clear();
            for t in &o.names {
                let d = crate::push::push_artifact(client, ctx.store, &art, t, o.push_by_digest, &sources, ctx.progress)?;
                let repo = t.repository_only();
                let named = if o.push_by_digest { repo.with_digest(d.clone()).to_string() } else { t.to_string() };
                ctx.progress.info(&format!("pushed {named} ({d})"));
                done.names.push(if o.push_by_digest { repo.to_string() } else { t.to_string() });
                if o.name_canonical {
                    done.names.push(repo.with_digest(d.clone()).to_string());
                }
                done.pushed = Some(d);
                if o.push_by_digest {
                    break;
                }
            }
            done.wrote = Some(art);
        }
        Ok(done)
    }
}

/// `type=oci` and `type=docker`: an image file to a path or stdout, or, for `type=docker` without
/// `dest` (`--load`), into the local Docker engine.
#[derive(Debug, Clone)]
pub struct LayoutExport {
    pub format: LayoutFormat,
    pub out: LayoutOutput,
}

impl Exporter for LayoutExport {
    fn check(&self) -> Result<(), BuildError> {
        if self.out.dest.is_none() {
            Engine::from_env().and_then(|e| e.reachable()).map_err(OutputError::from)?;
        }
        Ok(())
    }

    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError> {
        let art = result.local.in_form(ctx.store, &self.out.form, result.single_platform().as_ref(), true, &result.images)?;
        let names = &self.out.names;
        let art = match self.format {
            LayoutFormat::Oci => ctx.attest.carry(ctx.store, result, art, names)?,
            LayoutFormat::Docker => {
                ctx.attest.skip(if self.out.dest.is_none() { "--load" } else { "type=docker" }, ctx.progress);
                art
            }
        };
        match &self.out.dest {
            Some(dest) => output::write_layout(ctx.store, &art, self.format, dest, self.out.tar, names)?,
            None => {
                if art.images.len() != 1 {
                    return Err(OutputError::DockerOnePlatform { count: art.images.len() }.into());
                }
                let engine = Engine::from_env().map_err(OutputError::from)?;
                let at = std::path::PathBuf::from(engine.to_string());
                let said = engine
                    .load(|w| output::write_archive_to(ctx.store, &art, LayoutFormat::Docker, names, w, &at))?
                    .map_err(OutputError::from)?;
                for line in said {
                    ctx.progress.info(&format!("docker engine: {line}"));
                }
            }
        }
        Ok(ExportDone { names: names.iter().map(Reference::to_string).collect(), wrote: Some(art), pushed: None })
    }
}

/// `type=local` and `type=tar`: the root file system as files.
#[derive(Debug, Clone)]
pub struct RootfsExport {
    pub format: RootfsFormat,
    pub out: RootfsOutput,
}

impl Exporter for RootfsExport {
    fn leaves_machine(&self) -> bool {
        false
    }

    fn export(&self, result: &BuildResult, ctx: &ExportContext<'_>) -> Result<ExportDone, BuildError> {
        ctx.attest.skip(if self.format == RootfsFormat::Local { "type=local" } else { "type=tar" }, ctx.progress);
        output::write_rootfs(ctx.store, &result.images, self.format, &self.out.dest, self.out.platform_split, ctx.source_date_epoch)?;
        if let Dest::Path(p) = &self.out.dest {
            ctx.progress.info(&format!("wrote the root file system to {}", p.display()));
        }
        Ok(ExportDone::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::OutputFlags;

    fn tag(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn only_image_outputs_that_store_or_recompress_need_local_layers() {
        let t = [tag("localhost:5000/app:1")];
        let flags = OutputFlags { tags: &t, ..Default::default() };
        let all: Vec<Output> =
            ["type=image", "type=registry", "type=registry,compression=zstd", "type=image,push=true", "type=oci,dest=a", "-"]
                .iter()
                .map(|s| Output::parse(s).unwrap())
                .collect();
        let all = Output::resolve(all, &flags).unwrap();
        let local: Vec<bool> = all.iter().map(|o| o.exporter().needs_local_layers()).collect();
        let leaves: Vec<bool> = all.iter().map(|o| o.exporter().leaves_machine()).collect();
        assert_eq!(local, [true, false, true, true, true, true]);
        assert_eq!(leaves, [false, true, true, true, true, false]);
    }
}
