//! `kiln build [CONTEXT]`: flags in, `kiln_build::build`, outputs and the summary out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use kiln_build::metadata::{CacheMiss, ImageMetadata, LastBuild, Metadata};
use kiln_build::output::{self, Output};
use kiln_build::{BuildOptions, Progress};

use kiln_oci::{Platform, Reference, Store};

use crate::progress::{Mode, Printer};
use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The build context directory.
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Name and tag the image (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Set a build-time variable (repeatable): K=V, or K to take it from the environment.
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build this stage and the stages it needs.
    #[arg(long)]
    pub target: Option<String>,
    /// Target platforms, comma-separated, e.g. linux/amd64,linux/arm64 (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Run every step, reusing nothing from the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Where the image goes: type=image (default), type=oci,dest=P[,tar=false], type=docker,dest=P,
    /// type=registry[,push-by-digest=true].
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Write the image digest, config digest and per-step record here as JSON.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Push the image to the registry of each --tag (same as --output type=registry).
    #[arg(long)]
    pub push: bool,
    /// Run this shell command in the built image; a non-zero exit fails the build before any output.
    #[arg(long = "test")]
    pub test: Option<String>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Mode,
    /// Read cache from: type=registry,ref=REF or type=local,src=DIR (repeatable).
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Write cache to: type=registry,ref=REF[,mode=min|max][,ignore-error=true|false][,ttl=336h][,max-size=2GB]
    /// or type=local,dest=DIR (repeatable).
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Who may read and write --cache-from/--cache-to: auto (from the CI event), read-write, read-only, off.
    #[arg(long = "cache-policy", default_value = "auto")]
    pub cache_policy: String,
    /// How step roots are made: overlay (overlayfs), native (copies, where overlayfs is unavailable),
    /// or auto (overlay when it can be mounted here).
    #[arg(long, value_enum, default_value = "auto", env = "KILN_SNAPSHOTTER")]
    pub snapshotter: SnapshotterArg,
    #[command(flatten)]
    pub net: super::copy::NetArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SnapshotterArg {
    Auto,
    Overlay,
    Native,
}

fn parse_kv(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for it in items {
        match it.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            None if !it.is_empty() => {
                // Docker: `--build-arg K` takes K from the environment, and is dropped when unset.
                if let Ok(v) = std::env::var(it) {
                    out.insert(it.clone(), v);
                }
            }
            _ => bail!("{what} {it:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

fn parse_secret(s: &str) -> anyhow::Result<(String, PathBuf)> {
    let mut id = None;
    let mut src = None;
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            Some(("type", "file")) => {}
            _ => bail!("--secret {s:?}: expected id=ID,src=PATH"),
        }
    }
    match (id, src) {
        (Some(i), Some(p)) => {
            if !p.is_file() {
                bail!("--secret {s:?}: {} is not a readable file", p.display());
            }
            Ok((i, p))
        }
        _ => bail!("--secret {s:?}: expected id=ID,src=PATH"),
    }
}

pub fn run(a: Args, g: &Global, cancel: &kiln_build::Cancel) -> anyhow::Result<()> {
    let root = g.root();
    let platforms: Vec<Platform> = match &a.platform {
        Some(list) => {
            let mut v: Vec<Platform> = Vec::new();
            for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let p = Platform::parse(p).with_context(|| format!("--platform {p}"))?.normalized();
                if !v.contains(&p) {
                    v.push(p);
                }
            }
            if v.is_empty() {
                bail!("--platform {list:?}: name at least one platform, e.g. linux/amd64");
            }
            v
        }
        None => vec![Platform::host()],
    };
    let tags: Vec<Reference> =
        a.tags.iter().map(|t| Reference::parse(t).with_context(|| format!("--tag {t}"))).collect::<anyhow::Result<_>>()?;
    let mut outputs: Vec<Output> = a.outputs.iter().map(|o| Output::parse(o)).collect::<Result<_, _>>()?;
    if a.push && !outputs.iter().any(|o| matches!(o, Output::Registry { .. })) {
        outputs.push(Output::Registry { push_by_digest: false });
    }
    if outputs.is_empty() {
        outputs.push(Output::Image);
    }
    if outputs.iter().any(|o| matches!(o, Output::Registry { .. })) && tags.is_empty() {
        bail!("pushing needs a name: add -t REGISTRY/NAME[:TAG]");
    }
    let mut secrets = BTreeMap::new();
    for s in &a.secrets {
        let (id, p) = parse_secret(s)?;
        secrets.insert(id, p);
    }
    let choice: kiln_cache::PolicyChoice = a.cache_policy.parse().map_err(anyhow::Error::msg)?;
    let policy = kiln_cache::resolve_from_process(choice);
    let cache_from = a
        .cache_from
        .iter()
        .map(|s| kiln_cache::CacheFrom::parse(s).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_to =
        a.cache_to.iter().map(|s| kiln_cache::CacheTo::parse(s).map_err(|e| anyhow::anyhow!("{e}"))).collect::<anyhow::Result<Vec<_>>>()?;
    let sde = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse::<u64>().ok());
    let client = std::sync::Arc::new(a.net.client());
    let base = BuildOptions {
        root: root.clone(),
        context: a.context.clone(),
        dockerfile: a.file.clone(),
        build_args: parse_kv(&a.build_args, "--build-arg")?,
        target: a.target.clone(),
        platform: platforms[0].clone(),
        no_cache: a.no_cache,
        secrets,
        init_binary: None,
        source_date_epoch: sde,
        cache_from,
        cache_to,
        policy: policy.clone(),
        registry: Some(client.clone()),
        snapshotter: match a.snapshotter {
            SnapshotterArg::Auto => kiln_build::SnapshotterKind::Auto,
            SnapshotterArg::Overlay => kiln_build::SnapshotterKind::Overlay,
            SnapshotterArg::Native => kiln_build::SnapshotterKind::Native,
        },
        // A push-only build with no smoke test needs no layer locally: cached ones are mounted.
        fetch_final: a.test.is_some() || outputs.iter().any(|o| !matches!(o, Output::Registry { .. })),
        cancel: cancel.clone(),
    };
    let printer = Printer::new(a.progress);

    // Each platform is its own build; they share the store, the local cache and the snapshots
    // (all safe for concurrent use), and run side by side up to the number of cores.
    let per_platform: Vec<BuildOptions> = platforms.iter().map(|p| BuildOptions { platform: p.clone(), ..base.clone() }).collect();
    let width = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let mut built = Vec::new();
    for chunk in per_platform.chunks(width) {
        let results: Vec<Result<kiln_build::Built, kiln_build::BuildError>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|o| s.spawn(|| kiln_build::build(o, &printer))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(kiln_build::BuildError::Usage("a build thread panicked".into()))))
                .collect()
        });
        // Cancelled, every platform kept something: say it all in the one line.
        let mut kept = Vec::new();
        for (o, r) in chunk.iter().zip(results) {
            match r {
                Ok(b) => built.push(b),
                Err(kiln_build::BuildError::Cancelled { kept: k }) => {
                    kept.push(if platforms.len() > 1 { format!("{}: {k}", o.platform) } else { k })
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !kept.is_empty() {
            return Err(kiln_build::BuildError::Cancelled { kept: kept.join("; ") }.into());
        }
    }

    if let Some(cmd) = &a.test {
        // The test runs on each platform's image by digest (foreign ones under emulation): nothing
        // is tagged, exported or pushed before every one passes.
        let store = Store::open(&root)?;
        for b in &built {
            let platform = b.config.platform();
            let name = format!("kiln.local/test@{}", b.manifest.digest);
            store.tag_name(&name, &b.manifest)?;
            let req = kiln_build::run::RunRequest {
                root: &root,
                image: &name,
                platform: &platform,
                command: vec![cmd.clone()],
                shell: true,
                init_binary: None,
                cancel: cancel.clone(),
            };
            let status = kiln_build::run::run_image(&req, &mut |_s, line| printer.output(cmd, line));
            let _ = store.untag_name(&name);
            let status = status?;
            if status != kiln_sandbox::ExitStatus::Code(0) {
                bail!("--test {cmd:?} failed on {platform} ({status}); nothing was tagged, exported or pushed");
            }
            if a.progress != Mode::Quiet {
                eprintln!("test passed on {platform}: {cmd}");
            }
        }
    }

    let store = Store::open(&root)?;
    let local = if built.len() == 1 { output::Artifact::single(&built[0]) } else { output::Artifact::index(&store, &built)? };
    // The store keeps the plain-tar form; whatever leaves the machine is gzipped first (once: the
    // form is remembered), and that is the digest the build reports, as BuildKit reports the pushed one.
    let leaves = outputs.iter().any(|o| !matches!(o, Output::Image));
    let art = if leaves { local.for_export(&store)? } else { local.clone() };
    let mut pushed: Option<String> = None;
    for o in &outputs {
        match o {
            Output::Image => output::tag(&store, &local, &tags)?,
            Output::Oci { dest, tar } => output::write_oci(&store, &art, dest, *tar, &tags)?,
            Output::Docker { dest } => output::write_docker(&store, &art, dest, &tags)?,
            Output::Registry { push_by_digest } => {
                let mut sources = kiln_cache::LayerSources::new();
                for b in &built {
                    sources.extend(&b.layer_sources);
                }
                for t in &tags {
                    let d = kiln_build::push::push_artifact(&client, &store, &art, t, *push_by_digest, &sources)?;
                    if a.progress != Mode::Quiet {
                        eprintln!(
                            "pushed {} ({d})",
                            if *push_by_digest { t.repository_only().with_digest(d.clone()).to_string() } else { t.to_string() }
                        );
                    }
                    pushed = Some(d.to_string());
                    if *push_by_digest {
                        break; // one repository is enough: the digest names the image everywhere
                    }
                }
            }
        }
    }
    let steps: Vec<kiln_build::StepReport> = built.iter().flat_map(|b| b.steps.iter().cloned()).collect();
    let misses: Vec<CacheMiss> =
        built.iter().flat_map(|b| b.explanations.iter()).map(|(s, w)| CacheMiss { step: s.clone(), changed: w.clone() }).collect();
    if let Some(path) = &a.metadata_file {
        let md = Metadata {
            digest: art.root.digest.to_string(),
            descriptor: art.root.clone(),
            store_digest: local.root.digest.to_string(),
            config_digest: if built.len() == 1 { Some(built[0].config_digest.to_string()) } else { None },
            image_name: tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
            images: built
                .iter()
                .zip(&art.manifests)
                .map(|(b, m)| ImageMetadata {
                    platform: b.config.platform().to_string(),
                    digest: m.digest.to_string(),
                    config_digest: b.config_digest.to_string(),
                })
                .collect(),
            pushed,
            steps: steps.clone(),
            cache_policy: policy.clone(),
            cache_exports: built.iter().flat_map(|b| b.cache_exports.iter().cloned()).collect(),
            cache_misses: misses.clone(),
        };
        md.write(path)?;
    }
    // `kiln cache explain` reads the last build's misses from here.
    LastBuild { digest: art.root.digest.to_string(), misses: misses.clone(), steps: steps.clone() }.save(&root);
    eprintln!("{}", printer.summary(&steps, &art.root.digest.to_string()));
    if a.progress != Mode::Quiet {
        eprintln!("{policy}");
        for m in &misses {
            eprintln!("  miss: {}: {}", m.step, m.changed);
        }
    }
    println!("{}", art.root.digest);
    Ok(())
}
