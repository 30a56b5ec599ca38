//! `kiln build [CONTEXT]`: flags in, a `BuildRequest` to `kiln_build::orchestrate::build_all`, the summary out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use kiln_build::orchestrate::BuildRequest;
use kiln_build::output::Output;
use kiln_build::BuildOptions;

use kiln_oci::{Platform, Reference};

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
    /// Where the result goes (repeatable), as buildx: type=image[,name=N][,push=true][,push-by-digest=true]
    /// [,name-canonical=true][,store=false] (the default), type=registry, type=oci,dest=P|-[,tar=false],
    /// type=docker[,dest=P|-] (without dest: into the Docker engine), type=local,dest=DIR (or -o DIR),
    /// type=tar,dest=P|- (or -o -); image outputs also take compression=gzip|zstd|uncompressed,
    /// compression-level=N, force-compression=true and annotation[-TYPE][[PLATFORM]].KEY=VALUE.
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Write the image digest, config digest and per-step record here as JSON.
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// Push the image to the registry of each --tag (same as --output type=registry).
    #[arg(long)]
    pub push: bool,
    /// Run this shell command in the built image; a non-zero exit fails the build before any output.
    #[arg(long = "test")]
    pub test: Option<String>,
    /// How to show progress: auto (the live view on a terminal outside CI, else plain), plain, tty,
    /// quiet, rawjson (one JSON object per event on stderr).
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Mode,
    /// Read cache from: type=registry,ref=REF (a cache ref, or an image pushed with an inline cache) or
    /// type=local,src=DIR (repeatable).
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Write cache to: type=registry,ref=REF[,mode=min|max][,ignore-error=true|false][,ttl=336h][,max-size=2GB]
    /// or type=local,dest=DIR, or type=inline (the records in the image's config) (repeatable).
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
    // -- flags: isolation (--isolation none) --
    /// How RUN steps are isolated: default (kiln's sandbox: namespaces over a snapshot, as root;
    /// buildah's `oci`), or none (build in the root kiln runs in, inside an unprivileged container).
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub isolation: String,
    /// With --isolation none: go on even where / does not look like a container's.
    #[arg(long)]
    pub force: bool,
    /// With --isolation none: a path the build never diffs, removes or writes (repeatable).
    #[arg(long = "ignore-path", value_name = "PATH")]
    pub ignore_paths: Vec<PathBuf>,
    // -- flags: RUN environment (network, hosts, shm, ulimit, secrets, ssh) --
    /// Network of every RUN without its own --network: default (in kiln, the host's network: kiln
    /// has no sandboxed network with outside access), none (only lo), or host.
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Add a line to /etc/hosts in every RUN (repeatable): HOST:IP or HOST=IP, e.g. db:10.0.0.5,
    /// host:::1. Never written to a layer.
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Size of /dev/shm in RUN: bytes, or with a unit (64m, 2g); default 64m.
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// A resource limit for every RUN (repeatable): TYPE=SOFT[:HARD], e.g. nofile=1024:4096
    /// (-1 or infinity: unlimited).
    #[arg(long = "ulimit", value_name = "TYPE=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// A secret for RUN --mount=type=secret (repeatable): id=ID[,src=PATH|,env=VAR][,type=file|env].
    /// Without src and env: the environment variable ID if set, else the file ID.
    #[arg(long = "secret", value_name = "id=ID,…")]
    pub secrets: Vec<String>,
    /// An ssh agent for RUN --mount=type=ssh (repeatable): default (the agent of $SSH_AUTH_SOCK),
    /// ID (the same agent under another id) or ID=SOCKET. Never written to a layer.
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET]")]
    pub ssh: Vec<String>,
    // -- flags: outputs and --load --
    /// Load the image into the local Docker engine (DOCKER_HOST, else /var/run/docker.sock), as
    /// `docker load` does, tags kept (same as --output type=docker). One platform only.
    #[arg(long)]
    pub load: bool,
    // -- flags: build contexts, --pull, inline cache --
    /// An extra context (repeatable): NAME=VALUE, VALUE a directory, docker-image://REF[@DIGEST] or
    /// oci-layout://PATH[:TAG|@DIGEST]. It replaces the stage or image named NAME (FROM NAME,
    /// COPY --from=NAME, RUN --mount=from=NAME).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Resolve every base image (and docker-image:// context) at its registry, even when the store
    /// has the tag; an unreachable registry is then an error.
    #[arg(long)]
    pub pull: bool,
    // -- flags: image metadata (labels, annotations, iidfile, quiet, attestations) --
    /// Set a label on the image (repeatable): K=V, over the Dockerfile's LABELs.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Add an annotation to the image (repeatable): [TYPE[,TYPE…][[PLATFORM]]:]KEY=VALUE, where TYPE is
    /// manifest (the default), manifest-descriptor, index or index-descriptor.
    #[arg(long = "annotation", value_name = "ANNOTATION")]
    pub annotations: Vec<String>,
    /// Write the image ID (the config digest; the index digest for several platforms) to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Print only the image digest: no progress, no summary (errors still go to stderr).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Provenance attestation: true|false, or mode=min|max[,version=v0.2|v1]. Default: mode=min on
    /// pushes and OCI layouts (buildx's), unless BUILDX_NO_DEFAULT_ATTESTATIONS is set.
    #[arg(long, value_name = "VALUE")]
    pub provenance: Option<String>,
    /// SBOM attestation (SPDX, scanned natively): true|false, or scan-stage=true.
    #[arg(long, value_name = "VALUE")]
    pub sbom: Option<String>,
    /// An attestation (repeatable): type=provenance[,mode=min|max][,version=v0.2|v1] or
    /// type=sbom[,scan-stage=true]; disabled=true turns one off.
    #[arg(long, value_name = "ATTRS")]
    pub attest: Vec<String>,
    #[command(flatten)]
    pub unsupported: super::buildx::Unsupported,
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

/// `--label K=V` (a label needs its `=`; an empty value is a label with an empty value).
fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for it in items {
        match it.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => bail!("--label {it:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

/// `--platform a,b`: each normalized, duplicates dropped, at least one; this machine's by default.
fn parse_platforms(list: Option<&str>) -> anyhow::Result<Vec<Platform>> {
    let Some(list) = list else { return Ok(vec![Platform::host()]) };
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
    Ok(v)
}

pub fn run(a: Args, g: &Global, cancel: &kiln_build::Cancel) -> anyhow::Result<()> {
    a.unsupported.refuse()?;
    let root = g.root();
    let request = request(&a, &root, cancel)?;
    let mode = if a.quiet { Mode::Quiet } else { a.progress };
    let printer = Printer::new(mode);
    let result = kiln_build::orchestrate::build_all(&request, &printer);
    printer.finish(result.is_ok());
    let done = result?;
    done.record(&root, a.metadata_file.as_deref())?;

    let md = &done.metadata;
    if let Some(path) = &a.iidfile {
        // buildx writes the config digest (docker's image ID) when there is one image, else the
        // index's digest.
        let id = md.config_digest.as_deref().unwrap_or(&md.digest);
        kiln_oci::atomic::write(path, id.as_bytes(), kiln_oci::atomic::Durability::Synced)
            .with_context(|| format!("--iidfile {}", path.display()))?;
    }
    if !a.quiet {
        printer.line(&printer.summary(done.steps(), &md.digest));
    }
    if mode != Mode::Quiet {
        printer.line(&md.cache_policy.to_string());
        for m in &md.cache_misses {
            printer.line(&format!("  miss: {}: {}", m.step, m.changed));
        }
    }
    // An output written to stdout (dest=-) owns it: the digest would corrupt the tar.
    if !kiln_build::output::Output::any_to_stdout(&request.outputs) {
        println!("{}", md.digest);
    }
    Ok(())
}

/// The flags, parsed and checked, as a request (in the order the checks have always run).
fn request(a: &Args, root: &Path, cancel: &kiln_build::Cancel) -> anyhow::Result<BuildRequest> {
    let platforms = parse_platforms(a.platform.as_deref())?;
    let attest = super::buildx::attestations(a.provenance.as_deref(), a.sbom.as_deref(), &a.attest)?;
    let tags: Vec<Reference> =
        a.tags.iter().map(|t| Reference::parse(t).with_context(|| format!("--tag {t}"))).collect::<anyhow::Result<_>>()?;
    let outputs: Vec<Output> = a.outputs.iter().map(|o| Output::parse(o)).collect::<Result<_, _>>()?;
    let mut annotations = Vec::new();
    for s in &a.annotations {
        annotations.extend(kiln_build::output::Annotation::parse_flag(s).map_err(kiln_build::output::OutputError::from)?);
    }
    let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse::<u64>().ok());
    let flags = kiln_build::output::OutputFlags {
        push: a.push,
        load: a.load,
        tags: &tags,
        annotations: &annotations,
        source_date_epoch,
        stdout_is_terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        platforms: platforms.len(),
    };
    let outputs = Output::resolve(outputs, &flags)?;
    if a.quiet && Output::any_to_stdout(&outputs) {
        bail!("-q prints the image digest to stdout, where an --output with dest=- writes; drop one of them");
    }
    let mut net = a.net.clone();
    net.insecure_registry.extend(outputs.iter().flat_map(Output::insecure_hosts));
    let choice: kiln_cache::PolicyChoice = a.cache_policy.parse().map_err(anyhow::Error::msg)?;
    let policy = kiln_cache::resolve_from_process(choice);
    let cache_from = a
        .cache_from
        .iter()
        .map(|s| kiln_cache::CacheFrom::parse(s).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cache_to =
        a.cache_to.iter().map(|s| kiln_cache::CacheTo::parse(s).map_err(|e| anyhow::anyhow!("{e}"))).collect::<anyhow::Result<Vec<_>>>()?;
    let options = BuildOptions {
        root: root.to_path_buf(),
        context: a.context.clone(),
        dockerfile: a.file.clone(),
        build_args: parse_kv(&a.build_args, "--build-arg")?,
        target: a.target.clone(),
        // Set per platform by build_all, as is fetch_final.
        platform: platforms[0].clone(),
        no_cache: a.no_cache,
        init_binary: None,
        source_date_epoch,
        cache_from,
        cache_to,
        policy,
        registry: Some(std::sync::Arc::new(net.client())),
        snapshotter: match a.snapshotter {
            SnapshotterArg::Auto => kiln_build::SnapshotterKind::Auto,
            SnapshotterArg::Overlay => kiln_build::SnapshotterKind::Overlay,
            SnapshotterArg::Native => kiln_build::SnapshotterKind::Native,
        },
        fetch_final: true,
        // Set by build_all from the outputs.
        push_ahead: Vec::new(),
        cancel: cancel.clone(),
        // -- options: RUN environment --
        run_env: kiln_build::RunEnvironment::from_flags(
            &kiln_build::run_env::RunFlags {
                network: a.network.as_deref(),
                add_hosts: &a.add_hosts,
                shm_size: a.shm_size.as_deref(),
                ulimits: &a.ulimits,
                secrets: &a.secrets,
                ssh: &a.ssh,
            },
            &|name| std::env::var_os(name),
        )?,
        // -- options: build contexts, --pull, inline cache --
        build_contexts: kiln_build::NamedContexts::parse_flags(&a.build_contexts)?,
        pull: a.pull,
        // -- options: image metadata --
        labels: parse_labels(&a.labels)?,
        // -- options: attestations --
        sbom_stages: attest.sbom.as_ref().map(|s| s.scan_stage),
        // -- options: isolation --
        isolation: isolation(a, platforms.len())?,
    };
    Ok(BuildRequest { options, platforms, tags, outputs, test: a.test.clone(), attest })
}

/// `--isolation`, `--force`, `--ignore-path`: buildah's names (`oci`, `chroot`, `rootless`) are
/// answered by name.
fn isolation(a: &Args, platforms: usize) -> anyhow::Result<kiln_build::Isolation> {
    let none = match a.isolation.as_str() {
        "default" | "oci" => false,
        "none" => true,
        "chroot" => anyhow::bail!(
            "--isolation chroot is not a mode of kiln's: use default (kiln's sandbox, as root) or none (inside an unprivileged container)"
        ),
        "rootless" => anyhow::bail!(
            "--isolation rootless is not a mode of kiln's: use default (kiln's sandbox) or none (inside an unprivileged container)"
        ),
        other => anyhow::bail!("--isolation {other:?} is not known: use default or none"),
    };
    if !none {
        if a.force {
            anyhow::bail!("--force only goes with --isolation none (it allows building in a root that does not look like a container's)");
        }
        if !a.ignore_paths.is_empty() {
            anyhow::bail!("--ignore-path only goes with --isolation none (the sandbox never looks outside the step's root)");
        }
        return Ok(kiln_build::Isolation::Sandbox);
    }
    if platforms > 1 {
        anyhow::bail!("--isolation none builds one platform at a time in the one root (asked for {platforms}); run one build per platform");
    }
    if a.test.is_some() {
        anyhow::bail!(
            "--test runs the image in kiln's sandbox, which --isolation none cannot make; test the image after the build instead"
        );
    }
    Ok(kiln_build::Isolation::None { force: a.force, ignore_paths: a.ignore_paths.clone() })
}
