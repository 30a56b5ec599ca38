//! `kiln copy SRC DST`, and the pieces every transfer command shares: where an image lives (a
//! registry, the store, an OCI layout), the registry client built from the flags, and progress output.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use kiln_oci::{Digest, Platform, Reference, Store};
use kiln_registry::{
    Client, ClientOptions, CopyOptions, CopyResult, ImageDest, ImageSource, LocalImages, Progress, RegistryDest, RegistrySource, Repo,
};

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source: [docker://]REF (a registry), store:REF (the local store) or oci:PATH[:TAG] (an OCI layout).
    pub src: String,
    /// Destination, in the same forms.
    pub dst: String,
    /// Copy only this platform's image of a multi-platform index (default: all of them; from the
    /// store, all of them must have been pulled).
    #[arg(long)]
    pub platform: Option<String>,
    /// Write the digest of the copied manifest to this file.
    #[arg(long)]
    pub digest_file: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// Flags of every command that talks to registries.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NetArgs {
    /// Speak plain HTTP to this registry (repeatable). Loopback registries always use plain HTTP.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
}

impl NetArgs {
    pub fn client(&self) -> Client {
        Client::new(ClientOptions { insecure_registries: self.insecure_registry.clone(), ..ClientOptions::default() })
    }
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let src = Endpoint::parse(&a.src)?;
    let dst = Endpoint::parse(&a.dst)?;
    let platform = a.platform.as_deref().map(Platform::parse).transpose().context("--platform")?;
    let client = a.net.client();
    let res = transfer(&client, g, &src, &dst, platform, "copy")?;
    finish(&res, &a.dst, a.digest_file.as_ref())
}

/// Where an image lives.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Registry(Reference),
    Store(Reference),
    Oci { path: PathBuf, tag: Option<String> },
}

impl Endpoint {
    /// `docker://REF` or a bare `REF` is a registry; `store:REF` the local store; `oci:PATH[:TAG]` a layout.
    pub fn parse(s: &str) -> anyhow::Result<Endpoint> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') && !t.is_empty() && !p.is_empty() => (p, Some(t.to_string())),
                _ => (rest, None),
            };
            if path.is_empty() {
                anyhow::bail!("`{s}`: an OCI layout needs a path: oci:PATH[:TAG]");
            }
            return Ok(Endpoint::Oci { path: PathBuf::from(path), tag });
        }
        if let Some(rest) = s.strip_prefix("store:") {
            return Ok(Endpoint::Store(parse_ref(rest)?));
        }
        let rest = s.strip_prefix("docker://").unwrap_or(s);
        Ok(Endpoint::Registry(parse_ref(rest)?))
    }
}

pub fn parse_ref(s: &str) -> anyhow::Result<Reference> {
    Reference::parse(s).with_context(|| format!("`{s}` is not an image reference (expected [HOST[:PORT]/]NAME[:TAG][@DIGEST])"))
}

pub fn repo_of(r: &Reference) -> Repo {
    Repo::new(r.registry(), r.repository())
}

/// The tag (or digest) by which a registry knows the image.
fn registry_ref(r: &Reference) -> String {
    match (r.digest(), r.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    }
}

/// The store's name for an image: the full reference (what `kiln images` shows).
fn store_ref(r: &Reference) -> String {
    r.to_string()
}

/// Runs one copy between two endpoints with progress output.
pub fn transfer(
    client: &Client,
    g: &Global,
    src: &Endpoint,
    dst: &Endpoint,
    platform: Option<Platform>,
    verb: &'static str,
) -> anyhow::Result<CopyResult> {
    let root = g.root();
    let source: Box<dyn ImageSource + '_>;
    let src_ref: String;
    match src {
        Endpoint::Registry(r) => {
            source = Box::new(RegistrySource { client, repo: repo_of(r) });
            src_ref = registry_ref(r);
        }
        Endpoint::Store(r) => {
            let store = Store::open(&root).with_context(|| format!("opening the store under {}", root.display()))?;
            let images = LocalImages::new(store, "store", false)?;
            let name = match (r.digest(), r.tag()) {
                (Some(d), None) => d.to_string(),
                _ => store_ref(r),
            };
            let Some(desc) = images.find(&name)? else {
                anyhow::bail!("{r} is not in the local store; pull, import or build it first (see kiln images)");
            };
            // What is sent must all be here: one platform's image when one is asked for, else every
            // image of an index (a pulled index may list platforms that were never fetched).
            let desc = match &platform {
                Some(p) => images.store.select_platform(&r.to_string(), &desc, p)?,
                None if matches!(dst, Endpoint::Store(_)) => {
                    // Within the store a copy is a second tag for the same manifest, fetched
                    // platforms or not: nothing moves.
                    return retag(&images.store, &desc, dst);
                }
                None => {
                    images.store.require_all_platforms(&r.to_string(), &desc)?;
                    desc
                }
            };
            // Layers kiln built are stored as plain tar; what leaves the store is gzipped (the same
            // remembered blobs `kiln build --push` names), so it is sent by that form's digest.
            src_ref = match dst {
                Endpoint::Store(_) => desc.digest.to_string(),
                _ => kiln_oci::layer::gzip_image(&images.store, &desc)
                    .with_context(|| format!("compressing {} for export", r))?
                    .digest
                    .to_string(),
            };
            source = Box::new(images);
        }
        Endpoint::Oci { path, tag } => {
            if !path.join("index.json").exists() {
                anyhow::bail!("{} is not an OCI layout (no index.json)", path.display());
            }
            let store = Store::open_layout(path).with_context(|| format!("opening the OCI layout {}", path.display()))?;
            let label = format!("oci:{}", path.display());
            src_ref = match tag {
                Some(t) => t.clone(),
                None => {
                    // One image and no tag given: take it, as skopeo does.
                    let idx = store.read_index()?;
                    match idx.manifests.as_slice() {
                        [only] => only.digest.to_string(),
                        _ => "latest".to_string(),
                    }
                }
            };
            source = Box::new(LocalImages::new(store, label, false)?);
        }
    }
    let dest: Box<dyn ImageDest + '_>;
    let dst_tag: Option<String>;
    match dst {
        Endpoint::Registry(r) => {
            dest = Box::new(RegistryDest { client, repo: repo_of(r) });
            dst_tag = Some(registry_ref(r));
        }
        Endpoint::Store(r) => {
            let store = Store::open(&root).with_context(|| format!("opening the store under {}", root.display()))?;
            dest = Box::new(LocalImages::new(store, "store", true)?);
            dst_tag = Some(store_ref(r));
        }
        Endpoint::Oci { path, tag } => {
            let store = Store::open_layout(path).with_context(|| format!("creating the OCI layout {}", path.display()))?;
            dest = Box::new(LocalImages::new(store, format!("oci:{}", path.display()), true)?);
            dst_tag = Some(tag.clone().unwrap_or_else(|| "latest".into()));
        }
    }
    let progress = TermProgress::new(verb);
    let started = Instant::now();
    let opts = CopyOptions { platform, parallel: client.options().parallel };
    let res = kiln_registry::copy_image(source.as_ref(), &src_ref, dest.as_ref(), dst_tag.as_deref(), &opts, &progress);
    progress.clear();
    // OCI layouts other tools read keep only what the spec names (no ingest/ or index.lock).
    for end in [src, dst] {
        if let Endpoint::Oci { path, .. } = end {
            kiln_oci::store::tidy_layout(path);
        }
    }
    let res = res?;
    summary(verb, &source.describe(), &dest.describe(), res.blobs_moved, res.bytes_moved, started);
    Ok(res)
}

/// `kiln copy store:A store:B` without `--platform`: B names what A names.
fn retag(store: &Store, desc: &kiln_oci::Descriptor, dst: &Endpoint) -> anyhow::Result<CopyResult> {
    let Endpoint::Store(r) = dst else { anyhow::bail!("internal: retag to a destination other than the store") };
    let plain = kiln_oci::Descriptor::new(&desc.media_type, desc.digest.clone(), desc.size);
    store.tag(r, &plain).with_context(|| format!("tagging {r}"))?;
    eprintln!("copy: store → store: tagged {r} (nothing moved)");
    Ok(CopyResult { digest: desc.digest.clone(), media_type: desc.media_type.clone(), size: desc.size, blobs_moved: 0, bytes_moved: 0 })
}

/// The one line every transfer ends with.
pub fn summary(verb: &str, src: &str, dst: &str, blobs: usize, bytes: u64, started: Instant) {
    eprintln!("{verb}: {src} → {dst}: {blobs} blob(s), {} moved in {:.1}s", human(bytes), started.elapsed().as_secs_f64());
}

/// Prints the resulting digest and writes it to `--digest-file`.
pub fn finish(res: &CopyResult, what: &str, digest_file: Option<&PathBuf>) -> anyhow::Result<()> {
    print_digest(&res.digest, what, digest_file)
}

/// Prints `what digest` and writes the digest to `--digest-file`.
pub fn print_digest(digest: &Digest, what: &str, digest_file: Option<&PathBuf>) -> anyhow::Result<()> {
    println!("{what} {digest}");
    if let Some(p) = digest_file {
        write_digest(p, digest)?;
    }
    Ok(())
}

fn write_digest(p: &PathBuf, d: &Digest) -> anyhow::Result<()> {
    std::fs::write(p, format!("{d}\n")).with_context(|| format!("writing the digest to {}", p.display()))
}

pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// A bar per blob on a terminal; plain lines (one per finished blob) in CI or when stderr is not one.
pub struct TermProgress {
    verb: &'static str,
    tty: bool,
    state: Mutex<Bars>,
}

struct Bars {
    rows: Vec<Row>,
    drawn: usize,
    last: Option<Instant>,
}

struct Row {
    digest: Digest,
    kind: String,
    size: u64,
    done: u64,
    status: Option<String>,
}

impl TermProgress {
    pub fn new(verb: &'static str) -> Self {
        let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        TermProgress {
            verb,
            tty: !ci && std::io::stderr().is_terminal(),
            state: Mutex::new(Bars { rows: Vec::new(), drawn: 0, last: None }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bars> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn draw(&self, b: &mut Bars, force: bool) {
        if !self.tty {
            return;
        }
        let now = Instant::now();
        if !force && b.last.is_some_and(|l| now.duration_since(l) < Duration::from_millis(100)) {
            return;
        }
        b.last = Some(now);
        let mut out = String::new();
        if b.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", b.drawn));
        }
        for r in &b.rows {
            let frac = if r.size == 0 { 1.0 } else { (r.done as f64 / r.size as f64).min(1.0) };
            let width = 30;
            let filled = (frac * width as f64) as usize;
            let bar: String = "=".repeat(filled) + &" ".repeat(width - filled);
            let status = r.status.clone().unwrap_or_else(|| format!("{} / {}", human(r.done), human(r.size)));
            out.push_str(&format!("\x1b[2K{} {:<6} {} [{bar}] {status}\n", self.verb, r.kind, r.digest.short()));
        }
        b.drawn = b.rows.len();
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(out.as_bytes());
        let _ = e.flush();
    }

    /// Removes nothing but makes sure the last state is on screen.
    pub fn clear(&self) {
        let mut b = self.lock();
        self.draw(&mut b, true);
    }
}

impl Progress for TermProgress {
    fn blob_start(&self, digest: &Digest, size: u64, kind: &str) {
        let mut b = self.lock();
        b.rows.push(Row { digest: digest.clone(), kind: kind.to_string(), size, done: 0, status: None });
        self.draw(&mut b, true);
    }
    fn blob_progress(&self, digest: &Digest, done: u64) {
        let mut b = self.lock();
        if let Some(r) = b.rows.iter_mut().find(|r| &r.digest == digest) {
            r.done = done;
        }
        self.draw(&mut b, false);
    }
    fn blob_done(&self, digest: &Digest, outcome: &str) {
        let mut b = self.lock();
        let mut line = None;
        if let Some(r) = b.rows.iter_mut().find(|r| &r.digest == digest) {
            r.done = r.size;
            r.status = Some(format!("{outcome} ({})", human(r.size)));
            line = Some(format!("{} {} {}: {outcome} ({})", self.verb, r.kind, r.digest, human(r.size)));
        }
        if self.tty {
            self.draw(&mut b, true);
        } else if let Some(l) = line {
            eprintln!("{l}");
        }
    }
}
