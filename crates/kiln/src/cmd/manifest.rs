//! `kiln manifest merge` (≡ `docker buildx imagetools create`) and `kiln manifest inspect`
//! (≡ `docker buildx imagetools inspect`): flags in, [`kiln_registry::merge`] does the work, lines out.
//!
//! Each native runner builds one platform and pushes it by digest (no tag, so runners never race
//! for one); the merge job then assembles one index from the digests and pushes it under every tag.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use kiln_oci::{media, Manifest, Platform};
use kiln_registry::merge::{self, MergeRequest};

use super::copy::{parse_ref, repo_of, NetArgs, TermProgress};
use crate::Global;

/// `kiln manifest …`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Assemble one multi-platform index from images (by digest or tag) and push it under each tag
    /// (docker buildx imagetools create).
    Merge(MergeArgs),
    /// Show a manifest or index as the registry serves it (docker buildx imagetools inspect).
    Inspect(InspectArgs),
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Tag the index is pushed under, e.g. ghcr.io/owner/app:1.2 (repeatable; every tag gets the
    /// same index).
    #[arg(short = 't', long = "tag", value_name = "REF", required_unless_present = "dry_run")]
    pub tags: Vec<String>,
    /// The images or indexes to merge: NAME@sha256:…, NAME:TAG (resolved once to its digest), or a
    /// bare sha256:… (in the one repository the command names). An index contributes its entries.
    #[arg(value_name = "SOURCE", required_unless_present_any = ["files", "append"])]
    pub sources: Vec<String>,
    /// Read a source descriptor (JSON: digest, and optionally mediaType, size, platform,
    /// annotations) from a file (repeatable).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Add the sources to the index that the first -t names, keeping its entries.
    #[arg(long)]
    pub append: bool,
    /// Annotate the index (index:KEY=VALUE) or each entry (manifest-descriptor:KEY=VALUE, or
    /// manifest-descriptor[os/arch]:KEY=VALUE for one platform's)
    /// (repeatable; TYPE,TYPE:KEY=VALUE names several).
    #[arg(long = "annotation", value_name = "TYPE:K=V")]
    pub annotations: Vec<String>,
    /// Keep only these platforms' images (comma-separated or repeated).
    #[arg(long = "platform", value_name = "OS/ARCH", value_delimiter = ',')]
    pub platforms: Vec<String>,
    /// Print the index that would be pushed, and push nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the digest of the pushed index to this file.
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
    /// buildx's --prefer-index: kiln always makes an index, so only true is accepted.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub prefer_index: Option<String>,
    /// Progress output: auto, plain, tty or quiet.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub progress: String,
    /// buildx's --builder: refused, kiln has no builder instances.
    #[arg(long, value_name = "NAME", hide = true)]
    pub builder: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The image or index, e.g. ghcr.io/owner/app:1 or ghcr.io/owner/app@sha256:…
    pub reference: String,
    /// Print the manifest exactly as the registry served it (the bytes its digest is computed over).
    #[arg(long)]
    pub raw: bool,
    /// buildx's --format (Go templates): refused by name.
    #[arg(long, value_name = "TEMPLATE", hide = true)]
    pub format: Option<String>,
    /// buildx's --builder: refused, kiln has no builder instances.
    #[arg(long, value_name = "NAME", hide = true)]
    pub builder: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(c: Command, g: &Global) -> anyhow::Result<()> {
    match c {
        Command::Merge(a) => merge(a, g),
        Command::Inspect(a) => inspect(a, g),
    }
}

fn refuse_builder(builder: &Option<String>) -> anyhow::Result<()> {
    if builder.is_some() {
        bail!("--builder is a docker buildx flag kiln does not support: kiln has no builder instances; drop --builder");
    }
    Ok(())
}

fn merge(a: MergeArgs, _g: &Global) -> anyhow::Result<()> {
    refuse_builder(&a.builder)?;
    match a.prefer_index.as_deref().map(str::trim) {
        None | Some("true" | "1") => {}
        Some(v) => bail!(
            "--prefer-index={v} is not supported: kiln always pushes an index (a lone index source is pushed as it is); \
             to copy a single image under another tag use `kiln copy SRC DST`"
        ),
    }
    let quiet = match a.progress.as_str() {
        "auto" | "plain" | "tty" => false,
        "quiet" => true,
        "rawjson" => bail!("--progress=rawjson is not supported by kiln: use auto, plain, tty or quiet"),
        other => bail!("--progress={other}: expected auto, plain, tty or quiet"),
    };
    let platforms = a
        .platforms
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| Platform::parse(p.trim()).with_context(|| format!("--platform {p}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // As in buildx, -f files' sources come before the arguments.
    let mut sources = Vec::new();
    for f in &a.files {
        sources.push(merge::read_source_file(f)?);
    }
    sources.extend(a.sources.iter().cloned());
    let req = MergeRequest { tags: a.tags.clone(), sources, annotations: a.annotations.clone(), append: a.append, platforms };
    let client = a.net.client();
    let plan = merge::plan(&client, &req)?;
    for r in &plan.resolved {
        eprintln!("merge: resolved {} to {}", r.input, r.digest);
    }
    if a.dry_run {
        println!("{}", String::from_utf8_lossy(&plan.bytes));
        return Ok(());
    }
    let progress = TermProgress::new("merge");
    let pushed = merge::push(&client, &plan, &progress);
    progress.clear();
    for p in pushed? {
        if !quiet {
            eprintln!("merge: {} → index {} ({})", p.tag, p.digest, plan.platforms());
        }
    }
    if let Some(p) = &a.digest_file {
        crate::atomic_write(p, format!("{}\n", plan.digest).as_bytes())
            .with_context(|| format!("writing the digest to {}", p.display()))?;
    }
    println!("{}", plan.digest);
    Ok(())
}

fn inspect(a: InspectArgs, _g: &Global) -> anyhow::Result<()> {
    refuse_builder(&a.builder)?;
    if a.format.is_some() {
        bail!(
            "--format is a docker buildx imagetools inspect flag kiln does not support (no Go templates): \
             use --raw and jq, or `kiln inspect --remote REF` for the manifest and config as JSON"
        );
    }
    let r = parse_ref(&a.reference)?;
    let repo = repo_of(&r);
    let name = match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    };
    let client = a.net.client();
    let fetched = client.get_manifest(&repo, &name)?;
    if a.raw {
        use std::io::Write as _;
        // No newline: the output hashes to the digest.
        let mut out = std::io::stdout().lock();
        out.write_all(&fetched.bytes).and_then(|()| out.flush()).context("writing to stdout")?;
        return Ok(());
    }
    let parsed =
        Manifest::parse(&fetched.bytes, Some(&fetched.media_type)).with_context(|| format!("{r}: not a manifest kiln can read"))?;
    let mut out = String::new();
    push_rows(
        &mut out,
        "",
        &[("Name:", r.to_string()), ("MediaType:", fetched.media_type.clone()), ("Digest:", fetched.digest.to_string())],
    );
    if let Manifest::Index(idx) = parsed {
        out.push_str("\nManifests:\n");
        let base = if r.digest().is_some() { repo.to_string() } else { r.to_string() };
        for (i, m) in idx.manifests.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let mut rows = vec![("Name:", format!("{base}@{}", m.digest)), ("MediaType:", m.media_type.clone())];
            if let Some(p) = &m.platform {
                rows.push(("Platform:", p.to_string()));
                if let Some(v) = &p.os_version {
                    rows.push(("OSVersion:", v.clone()));
                }
            }
            let annotations = m.annotations.as_ref().filter(|a| !a.is_empty());
            if annotations.is_some() {
                rows.push(("Annotations:", String::new()));
            }
            push_rows(&mut out, "  ", &rows);
            if let Some(anns) = annotations {
                let width = anns.keys().map(|k| k.len() + 1).max().unwrap_or(0);
                for (k, v) in anns {
                    out.push_str(&format!("    {:<width$} {v}\n", format!("{k}:")));
                }
            }
        }
        if let Some(anns) = idx.annotations.as_ref().filter(|a| !a.is_empty()) {
            out.push_str("\nAnnotations:\n");
            let width = anns.keys().map(|k| k.len() + 1).max().unwrap_or(0);
            for (k, v) in anns {
                out.push_str(&format!("  {:<width$} {v}\n", format!("{k}:")));
            }
        }
    } else if !media::is_image_manifest(&fetched.media_type) {
        bail!("{r}: {} is neither an image manifest nor an index", fetched.media_type);
    }
    print!("{out}");
    Ok(())
}

/// `label value` rows with the values aligned, as buildx's tabwriter prints them.
fn push_rows(out: &mut String, prefix: &str, rows: &[(&str, String)]) {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in rows {
        let line = format!("{prefix}{label:<width$} {value}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
}
