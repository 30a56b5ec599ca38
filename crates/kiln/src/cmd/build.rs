//! `kiln build [CONTEXT]`: flags in, `kiln_build::build`, outputs and the summary out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
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
    /// Target platform, e.g. linux/amd64 (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Run every step, reusing nothing from the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Where the image goes: type=image (default), type=oci,dest=P[,tar=false], type=docker,dest=P.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Write the image digest, config digest and per-step record here as JSON.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
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
    #[command(flatten)]
    pub net: super::copy::NetArgs,
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

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let root = g.root();
    let platform = match &a.platform {
        Some(p) if p.contains(',') => bail!("--platform {p}: building several platforms at once is not supported yet; build each in turn"),
        Some(p) => Platform::parse(p).with_context(|| format!("--platform {p}"))?.normalized(),
        None => Platform::host(),
    };
    let tags: Vec<Reference> = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("--tag {t}")))
        .collect::<anyhow::Result<_>>()?;
    let outputs: Vec<Output> = if a.outputs.is_empty() {
        vec![Output::Image]
    } else {
        a.outputs.iter().map(|o| Output::parse(o)).collect::<Result<_, _>>()?
    };
    if outputs.iter().any(|o| matches!(o, Output::Registry { .. })) {
        bail!("--output type=registry is not wired into kiln build yet: build, then `kiln push REF`");
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
    let cache_to = a
        .cache_to
        .iter()
        .map(|s| kiln_cache::CacheTo::parse(s).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if (!cache_from.is_empty() || !cache_to.is_empty()) && a.progress != Mode::Quiet {
        eprintln!("{policy}");
    }
    let sde = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse::<u64>().ok());
    let opts = BuildOptions {
        root: root.clone(),
        context: a.context.clone(),
        dockerfile: a.file.clone(),
        build_args: parse_kv(&a.build_args, "--build-arg")?,
        target: a.target.clone(),
        platform: platform.clone(),
        no_cache: a.no_cache,
        secrets,
        init_binary: None,
        source_date_epoch: sde,
        cache_from,
        cache_to,
        policy: policy.clone(),
        registry: Some(std::sync::Arc::new(a.net.client())),
    };
    let printer = Printer::new(a.progress);
    let built = kiln_build::build(&opts, &printer)?;

    if let Some(cmd) = &a.test {
        // The test runs on the image by digest: nothing is tagged or exported before it passes.
        let store = Store::open(&root)?;
        let name = format!("kiln.local/test@{}", built.manifest.digest);
        store.tag_name(&name, &built.manifest)?;
        let req = kiln_build::run::RunRequest {
            root: &root,
            image: &name,
            platform: &platform,
            command: vec![cmd.clone()],
            shell: true,
            init_binary: None,
        };
        let status = kiln_build::run::run_image(&req, &mut |_s, line| printer.output(cmd, line));
        let _ = store.untag_name(&name);
        let status = status?;
        if status != kiln_sandbox::ExitStatus::Code(0) {
            bail!("--test {cmd:?} failed in the built image ({status}); nothing was tagged or exported");
        }
        if a.progress != Mode::Quiet {
            eprintln!("test passed: {cmd}");
        }
    }

    let store = Store::open(&root)?;
    for o in &outputs {
        match o {
            Output::Image => output::tag(&store, &built, &tags)?,
            Output::Oci { dest, tar } => output::write_oci(&store, &built, dest, *tar, &tags)?,
            Output::Docker { dest } => output::write_docker(&store, &built, dest, &tags)?,
            Output::Registry { .. } => {}
        }
    }
    if let Some(path) = &a.metadata_file {
        let md = serde_json::json!({
            "containerimage.digest": built.manifest.digest.to_string(),
            "containerimage.config.digest": built.config_digest.to_string(),
            "containerimage.descriptor": built.manifest,
            "image.name": tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
            "kiln.platform": platform.to_string(),
            "kiln.steps": built.steps,
            "kiln.cache-policy": policy,
            "kiln.cache-exports": built.cache_exports,
            "kiln.cache-misses": built.explanations.iter().map(|(s, w)| serde_json::json!({"step": s, "changed": w})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&md)?;
        crate::atomic_write(path, &bytes).with_context(|| format!("--metadata-file {}", path.display()))?;
    }
    // `kiln cache explain` reads the last build's misses from here.
    let last = serde_json::json!({
        "digest": built.manifest.digest.to_string(),
        "misses": built.explanations.iter().map(|(s, w)| serde_json::json!({"step": s, "changed": w})).collect::<Vec<_>>(),
        "steps": built.steps,
    });
    let last_path = root.join("cache").join("last-build.json");
    if std::fs::create_dir_all(root.join("cache")).is_ok() {
        let _ = crate::atomic_write(&last_path, &serde_json::to_vec_pretty(&last)?);
    }
    eprintln!("{}", printer.summary(&built.steps, &built.manifest.digest.to_string()));
    for (step, why) in &built.explanations {
        if a.progress != Mode::Quiet {
            eprintln!("  miss: {step}: {why}");
        }
    }
    println!("{}", built.manifest.digest);
    Ok(())
}
