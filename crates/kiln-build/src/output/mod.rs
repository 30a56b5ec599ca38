//! Outputs: what `--output` (`-o`), `--push` and `--load` ask a build to write, as buildx spells it.
//!
//! The model: every output is one of five kinds, each with the attributes BuildKit's exporter of
//! that name takes (parsed from buildx's CSV syntax, [`csv`]):
//! - [`Output::Image`] (`type=image`, and `type=registry` = image with `push=true`): tag the image in
//!   the local store under its names, and/or push it to each name's registry (by digest with
//!   `push-by-digest=true`).
//! - [`Output::Oci`] / [`Output::Docker`]: an OCI image layout (a tarball, or with `tar=false` a
//!   directory) / a docker-archive tarball (`docker load`'s format), written to `dest=PATH`, to
//!   stdout with `dest=-`, or, for `type=docker` without `dest` (and `--load`), loaded into the local
//!   Docker engine ([`crate::engine`]).
//! - [`Output::Local`] / [`Output::Tar`]: the image's root file system as files in a directory, or
//!   as one tar (`-o DIR` and `-o -` are the short forms).
//!
//! How an image leaves the machine is its [`Form`]: the layer codec (`compression=`,
//! `compression-level=`, `force-compression=`) and the annotations ([`annotate`]). The store keeps
//! plain-tar layers; each output derives its form from that (remembered per layer, so two outputs of
//! one form cost one compression).
//!
//! Every attribute kiln does not act on is refused by name: an accepted option always does what it
//! says (`type=image,name=R,push=true` once exited 0 without pushing because the rest was dropped).

pub mod annotate;
pub mod csv;
mod inline_cache;
mod layout;
pub mod mediatypes;
mod rootfs;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_oci::layer::Codec;
use kiln_oci::{Descriptor, Digest, Reference, Store};

pub use annotate::{Annotation, AnnotationError, Level};
pub(crate) use layout::write_archive_to;
pub use layout::{descriptor_with_platform, write_layout, LayoutFormat};
pub use rootfs::{write_rootfs, RootfsFormat};

use crate::error::BuildError;
use crate::Built;

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Image(ImageOutput),
    Oci(LayoutOutput),
    Docker(LayoutOutput),
    Local(RootfsOutput),
    Tar(RootfsOutput),
}

/// `type=image` / `type=registry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOutput {
    /// `name=`; empty means the `--tag`s ([`Output::resolve`] fills them in).
    pub names: Vec<Reference>,
    pub push: bool,
    /// Push without a tag; the digest names the image (the first name's repository only).
    pub push_by_digest: bool,
    /// Also report `NAME@DIGEST` in the metadata's `image.name`.
    pub name_canonical: bool,
    /// Tag the image in the local store (`store=`; false for `type=registry` and `--push`, whose
    /// builds then need no layer locally).
    pub store: bool,
    /// Push over plain HTTP (`insecure=true`, `registry.insecure=true`).
    pub insecure: bool,
    pub form: Form,
}

/// `type=oci` / `type=docker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutOutput {
    /// `None` for `type=docker` means: load into the Docker engine.
    pub dest: Option<Dest>,
    /// A tarball (the default) or, `tar=false` (OCI only), a directory.
    pub tar: bool,
    /// `name=`; empty means the `--tag`s. Their tags name the image in the layout.
    pub names: Vec<Reference>,
    pub form: Form,
}

/// `type=local` / `type=tar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsOutput {
    pub dest: Dest,
    /// `platform-split=`: one directory per platform (the default for several platforms).
    pub platform_split: Option<bool>,
}

/// Where a file output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Path(PathBuf),
    /// `dest=-` (never a terminal).
    Stdout,
}

/// How an image leaves the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub codec: Codec,
    /// Recompress layers that arrived compressed another way.
    pub force: bool,
    pub annotations: Vec<Annotation>,
    /// `rewrite-timestamp=`, checked against `SOURCE_DATE_EPOCH` by [`Output::resolve`].
    pub rewrite_timestamp: Option<bool>,
    /// `oci-mediatypes=`: OCI media types (the default, but for `type=docker`), or Docker's
    /// schema 2 ([`mediatypes`]).
    pub oci_mediatypes: bool,
}

impl Default for Form {
    fn default() -> Form {
        Form { codec: Codec::DEFAULT, force: false, annotations: Vec::new(), rewrite_timestamp: None, oci_mediatypes: true }
    }
}

/// What is wrong with one `--output` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    #[error(transparent)]
    Csv(#[from] csv::CsvError),
    #[error("{0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("missing type= (image, registry, oci, docker, local or tar)")]
    MissingType,
    #[error("unknown type {0:?}: use image, registry, oci, docker, local or tar")]
    UnknownType(String),
    #[error("kiln does not support {key}= for type={ty}{}", accepted_list(accepted))]
    Unsupported { key: String, ty: String, accepted: Vec<&'static str> },
    #[error("{key}={value:?}: kiln does not support it: {why}")]
    Refused { key: String, value: String, why: &'static str },
    #[error("{key}={value:?}: expected true or false")]
    NotBool { key: String, value: String },
    #[error("type={0} needs dest=PATH (or dest=- for stdout)")]
    NeedsDest(&'static str),
    #[error("dest= is empty")]
    EmptyDest,
    #[error("name={name:?}: {source}")]
    Name {
        name: String,
        #[source]
        source: kiln_oci::ReferenceError,
    },
    #[error(transparent)]
    Codec(#[from] kiln_oci::layer::CodecError),
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
}

fn accepted_list(accepted: &[&str]) -> String {
    if accepted.is_empty() {
        String::new()
    } else {
        format!(" yet (accepted: {})", accepted.join(", "))
    }
}

/// Why the outputs cannot be written as asked.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("--output {spec:?}: {problem}")]
    Spec { spec: String, problem: SpecProblem },
    #[error("--annotation {0}")]
    Annotation(#[from] AnnotationError),
    #[error("--annotation: no output writes an image to annotate (type=local and type=tar write files)")]
    NothingToAnnotate,
    #[error(
        "annotations need OCI media types, and this output writes Docker's (type=docker does by default): add oci-mediatypes=true to it"
    )]
    AnnotationsNeedOci,
    #[error("{0}")]
    DockerMediaTypes(#[from] mediatypes::DockerTypesError),
    #[error("pushing needs a name: add -t REGISTRY/NAME[:TAG]")]
    PushWithoutName,
    #[error("pushing needs a registry client (a bug in the caller of kiln-build)")]
    NoRegistryClient,
    #[error("{0} outputs write to stdout (dest=- or -o -); at most one can")]
    StdoutTwice(usize),
    #[error("dest=-: refusing to write a tar to a terminal; redirect stdout or use dest=PATH")]
    StdoutIsTerminal,
    #[error("rewrite-timestamp=true needs SOURCE_DATE_EPOCH set: it rewrites layer times to it")]
    RewriteWithoutEpoch,
    #[error(
        "rewrite-timestamp=false: kiln always clamps the times in the layers it writes to SOURCE_DATE_EPOCH when it is set; unset SOURCE_DATE_EPOCH instead"
    )]
    RewriteOff,
    #[error("{digest}: nested indexes are not exported")]
    NestedIndex { digest: Digest },
    #[error(
        "type=docker (and --load): a docker archive holds one platform's image and this build makes {count}; load one platform (--platform), push them (--push), or use type=oci"
    )]
    DockerOnePlatform { count: usize },
    #[error("--load: {0}")]
    Engine(#[from] crate::engine::EngineError),
}

/// A `--output` line's attributes, taken one by one; what is left at the end is refused.
struct Attrs {
    spec: String,
    ty: &'static str,
    map: BTreeMap<String, String>,
}

impl Attrs {
    fn err(&self, problem: SpecProblem) -> OutputError {
        OutputError::Spec { spec: self.spec.clone(), problem }
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.map.remove(key)
    }

    /// Go's `strconv.ParseBool`, which BuildKit uses.
    fn take_bool(&mut self, key: &str) -> Result<Option<bool>, OutputError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Some(true)),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Some(false)),
                _ => Err(self.err(SpecProblem::NotBool { key: key.to_string(), value: v })),
            },
        }
    }

    fn refuse_value(&mut self, key: &str, refused: impl Fn(&str) -> Option<&'static str>) -> Result<(), OutputError> {
        if let Some(v) = self.map.get(key) {
            if let Some(why) = refused(v) {
                return Err(self.err(SpecProblem::Refused { key: key.to_string(), value: v.clone(), why }));
            }
            self.map.remove(key);
        }
        Ok(())
    }

    fn dest(&mut self) -> Result<Option<Dest>, OutputError> {
        match self.take("dest") {
            None => Ok(None),
            Some(d) if d.is_empty() => Err(self.err(SpecProblem::EmptyDest)),
            Some(d) if d == "-" => Ok(Some(Dest::Stdout)),
            Some(d) => Ok(Some(Dest::Path(PathBuf::from(d)))),
        }
    }

    fn names(&mut self) -> Result<Vec<Reference>, OutputError> {
        let Some(list) = self.take("name") else { return Ok(Vec::new()) };
        let mut names = Vec::new();
        for n in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let r = Reference::parse(n).map_err(|source| self.err(SpecProblem::Name { name: n.to_string(), source }))?;
            names.push(r);
        }
        Ok(names)
    }

    fn form(&mut self) -> Result<Form, OutputError> {
        let name = self.take("compression");
        let level = self.take("compression-level");
        let codec = match (&name, &level) {
            (None, None) => Codec::DEFAULT,
            _ => Codec::parse(name.as_deref().unwrap_or("gzip"), level.as_deref()).map_err(|e| self.err(e.into()))?,
        };
        let force = self.take_bool("force-compression")?.unwrap_or(false);
        // BuildKit's default: OCI media types, but Docker's for type=docker (what `docker load` of
        // older engines needs).
        let oci_mediatypes = self.take_bool("oci-mediatypes")?.unwrap_or(self.ty != "docker");
        if !oci_mediatypes && codec.compression() == kiln_oci::Compression::Zstd {
            return Err(self.err(SpecProblem::Refused {
                key: "oci-mediatypes".into(),
                value: "false".into(),
                why: "Docker's media types have no zstd layers; add oci-mediatypes=true for compression=zstd",
            }));
        }
        let rewrite_timestamp = self.take_bool("rewrite-timestamp")?;
        let mut annotations = Vec::new();
        let keys: Vec<String> = self.map.keys().filter(|k| k.starts_with("annotation")).cloned().collect();
        for k in keys {
            let v = self.map.get(&k).cloned().unwrap_or_default();
            if let Some(a) = Annotation::parse_attr(&k, &v) {
                annotations.push(a.map_err(|e| self.err(e.into()))?);
                self.map.remove(&k);
            }
        }
        Ok(Form { codec, force, annotations, rewrite_timestamp, oci_mediatypes })
    }

    /// `type=image` and `type=registry`.
    fn image(mut self) -> Result<Output, OutputError> {
        let names = self.names()?;
        let push = self.take_bool("push")?;
        let push_by_digest = self.take_bool("push-by-digest")?.unwrap_or(false);
        let name_canonical = self.take_bool("name-canonical")?.unwrap_or(false);
        let store = self.take_bool("store")?;
        let insecure = self.take_bool("insecure")?.unwrap_or(false) | self.take_bool("registry.insecure")?.unwrap_or(false);
        self.refuse_value("unpack", |v| {
            (v != "false").then_some("kiln's store keeps images, not unpacked snapshots; `kiln run` unpacks when it runs one")
        })?;
        let form = self.form()?;
        let mut accepted = vec!["name", "push", "push-by-digest", "name-canonical", "store", "insecure", "registry.insecure"];
        accepted.extend(FORM_KEYS);
        self.finish(&accepted)?;
        let registry = self.ty == "registry";
        Ok(Output::Image(ImageOutput {
            names,
            // type=registry is type=image,push=true (buildx), and needs nothing locally.
            push: registry || push.unwrap_or(false),
            push_by_digest,
            name_canonical,
            store: store.unwrap_or(!registry),
            insecure,
            form,
        }))
    }

    /// `type=oci` and `type=docker`.
    fn layout(mut self) -> Result<Output, OutputError> {
        let dest = self.dest()?;
        let tar = self.take_bool("tar")?.unwrap_or(true);
        if self.ty == "docker" && !tar {
            return Err(self.err(SpecProblem::Refused {
                key: "tar".into(),
                value: "false".into(),
                why: "a docker archive is a tarball; use type=oci,tar=false for a directory",
            }));
        }
        if !tar && dest == Some(Dest::Stdout) {
            return Err(self.err(SpecProblem::Refused {
                key: "tar".into(),
                value: "false".into(),
                why: "a directory cannot go to stdout (dest=-)",
            }));
        }
        let names = self.names()?;
        let form = self.form()?;
        let mut accepted = vec!["dest", "tar", "name"];
        accepted.extend(FORM_KEYS);
        self.finish(&accepted)?;
        let out = LayoutOutput { dest, tar, names, form };
        if self.ty == "oci" {
            if out.dest.is_none() {
                return Err(self.err(SpecProblem::NeedsDest("oci")));
            }
            Ok(Output::Oci(out))
        } else {
            Ok(Output::Docker(out))
        }
    }

    /// `type=local` and `type=tar`.
    fn rootfs(mut self) -> Result<Output, OutputError> {
        let dest = self.dest()?.ok_or_else(|| self.err(SpecProblem::NeedsDest(self.ty)))?;
        if self.ty == "local" && dest == Dest::Stdout {
            return Err(self.err(SpecProblem::Refused {
                key: "dest".into(),
                value: "-".into(),
                why: "files cannot go to stdout; use type=tar,dest=- (or -o -) for a tar there",
            }));
        }
        let platform_split = self.take_bool("platform-split")?;
        self.finish(&["dest", "platform-split"])?;
        let out = RootfsOutput { dest, platform_split };
        Ok(if self.ty == "local" { Output::Local(out) } else { Output::Tar(out) })
    }

    /// Refuses whatever attribute is left, naming it and what this type accepts.
    fn finish(&self, accepted: &[&'static str]) -> Result<(), OutputError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.err(SpecProblem::Unsupported { key: k.clone(), ty: self.ty.to_string(), accepted: accepted.to_vec() })),
        }
    }
}

const FORM_KEYS: [&str; 6] =
    ["compression", "compression-level", "force-compression", "oci-mediatypes", "rewrite-timestamp", "annotation.*"];

impl Output {
    /// Parses one `--output` as buildx does: `type=T,KEY=VALUE,…` in CSV, or the short forms `-o DIR`
    /// (`type=local,dest=DIR`) and `-o -` (`type=tar,dest=-`).
    pub fn parse(spec: &str) -> Result<Output, OutputError> {
        let bad = |problem| OutputError::Spec { spec: spec.to_string(), problem };
        let fields = csv::fields(spec).map_err(|e| bad(e.into()))?;
        if let [only] = fields.as_slice() {
            if !only.contains('=') && !only.is_empty() {
                let dest = if only == "-" { Dest::Stdout } else { Dest::Path(PathBuf::from(only)) };
                let out = RootfsOutput { dest, platform_split: None };
                return Ok(if only == "-" { Output::Tar(out) } else { Output::Local(out) });
            }
        }
        let mut map = BTreeMap::new();
        for f in fields.iter().filter(|f| !f.is_empty()) {
            let (k, v) = f.split_once('=').ok_or_else(|| bad(SpecProblem::NotKeyValue(f.clone())))?;
            // buildx lower-cases the keys (and keeps the last of a repeated one).
            map.insert(k.trim().to_lowercase(), v.to_string());
        }
        let ty = map.remove("type").ok_or_else(|| bad(SpecProblem::MissingType))?;
        let ty: &'static str = match ty.as_str() {
            "image" => "image",
            "registry" => "registry",
            "oci" => "oci",
            "docker" => "docker",
            "local" => "local",
            "tar" => "tar",
            _ => return Err(bad(SpecProblem::UnknownType(ty))),
        };
        let a = Attrs { spec: spec.to_string(), ty, map };
        match ty {
            "image" | "registry" => a.image(),
            "oci" | "docker" => a.layout(),
            _ => a.rootfs(),
        }
    }

    /// The form of an output that writes an image.
    pub fn form_mut(&mut self) -> Option<&mut Form> {
        match self {
            Output::Image(o) => Some(&mut o.form),
            Output::Oci(o) | Output::Docker(o) => Some(&mut o.form),
            Output::Local(_) | Output::Tar(_) => None,
        }
    }

    fn writes_stdout(&self) -> bool {
        match self {
            Output::Oci(o) | Output::Docker(o) => o.dest == Some(Dest::Stdout),
            Output::Local(o) | Output::Tar(o) => o.dest == Dest::Stdout,
            Output::Image(_) => false,
        }
    }

    /// The registries an output was told to push to over plain HTTP.
    pub fn insecure_hosts(&self) -> Vec<String> {
        match self {
            Output::Image(o) if o.insecure => o.names.iter().map(|n| n.registry().to_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// The outputs a build writes, as buildx resolves them: those asked for; `--push` sets `push=true`
    /// on every image output (or adds `type=registry`); `--load` adds `type=docker` unless one without
    /// `dest` is there; the store when nothing was asked. Names default to the tags; `--annotation`s go
    /// to every output that writes an image.
    pub fn resolve(mut outputs: Vec<Output>, flags: &OutputFlags<'_>) -> Result<Vec<Output>, OutputError> {
        if flags.push {
            let mut any = false;
            for o in &mut outputs {
                if let Output::Image(i) = o {
                    i.push = true;
                    any = true;
                }
            }
            if !any {
                outputs.push(Output::Image(ImageOutput::registry()));
            }
        }
        if flags.load && !outputs.iter().any(|o| matches!(o, Output::Docker(LayoutOutput { dest: None, .. }))) {
            outputs.push(Output::Docker(LayoutOutput { dest: None, tar: true, names: Vec::new(), form: Form::default() }));
        }
        if outputs.is_empty() {
            outputs.push(Output::Image(ImageOutput::store()));
        }
        for o in &mut outputs {
            match o {
                Output::Image(ImageOutput { names, .. })
                | Output::Oci(LayoutOutput { names, .. })
                | Output::Docker(LayoutOutput { names, .. })
                    if names.is_empty() =>
                {
                    names.extend(flags.tags.iter().cloned())
                }
                _ => {}
            }
            if let Output::Image(i) = o {
                if i.push && i.names.is_empty() {
                    return Err(OutputError::PushWithoutName);
                }
            }
        }
        if !flags.annotations.is_empty() {
            let mut any = false;
            for form in outputs.iter_mut().filter_map(Output::form_mut) {
                form.annotations.extend(flags.annotations.iter().cloned());
                any = true;
            }
            if !any {
                return Err(OutputError::NothingToAnnotate);
            }
        }
        for form in outputs.iter_mut().filter_map(Output::form_mut) {
            if !form.oci_mediatypes && !form.annotations.is_empty() {
                return Err(OutputError::AnnotationsNeedOci);
            }
            match (form.rewrite_timestamp, flags.source_date_epoch) {
                (Some(true), None) => return Err(OutputError::RewriteWithoutEpoch),
                (Some(false), Some(_)) => return Err(OutputError::RewriteOff),
                _ => {}
            }
        }
        if flags.platforms > 1 && outputs.iter().any(|o| matches!(o, Output::Docker(_))) {
            return Err(OutputError::DockerOnePlatform { count: flags.platforms });
        }
        match outputs.iter().filter(|o| o.writes_stdout()).count() {
            0 => {}
            1 if flags.stdout_is_terminal => return Err(OutputError::StdoutIsTerminal),
            1 => {}
            n => return Err(OutputError::StdoutTwice(n)),
        }
        Ok(outputs)
    }

    /// Whether one of the outputs writes to stdout (the caller must then print nothing there).
    pub fn any_to_stdout(outputs: &[Output]) -> bool {
        outputs.iter().any(Output::writes_stdout)
    }
}

impl ImageOutput {
    /// `type=image`: the local store.
    pub fn store() -> ImageOutput {
        ImageOutput {
            names: Vec::new(),
            push: false,
            push_by_digest: false,
            name_canonical: false,
            store: true,
            insecure: false,
            form: Form::default(),
        }
    }

    /// `type=registry` (and `--push`): a push, nothing kept locally.
    pub fn registry() -> ImageOutput {
        ImageOutput { push: true, store: false, ..ImageOutput::store() }
    }
}

/// The flags besides `--output` that shape the outputs.
#[derive(Debug, Clone, Default)]
pub struct OutputFlags<'a> {
    pub push: bool,
    pub load: bool,
    pub tags: &'a [Reference],
    pub annotations: &'a [Annotation],
    pub source_date_epoch: Option<u64>,
    /// Whether stdout is a terminal (then no output may write a tar there).
    pub stdout_is_terminal: bool,
    /// How many platforms the build makes (a docker archive, and so `--load`, holds one).
    pub platforms: usize,
}

/// What an output writes: a root manifest (an image, or an index of per-platform images) and every
/// blob below it.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub root: Descriptor,
    pub blobs: Vec<Digest>,
    /// (config digest, layer digests) per image, for docker's `manifest.json`.
    pub images: Vec<(Digest, Vec<Digest>)>,
    /// Each image's manifest, in the order of `images`.
    pub manifests: Vec<Descriptor>,
    /// Annotations for an OCI layout's descriptor of `root` (`index-descriptor`).
    pub layout_annotations: BTreeMap<String, String>,
}

impl Artifact {
    /// One image.
    pub fn single(b: &Built) -> Artifact {
        Artifact {
            root: b.manifest.clone(),
            blobs: blobs(b),
            images: vec![image_of(b)],
            manifests: vec![b.manifest.clone()],
            layout_annotations: BTreeMap::new(),
        }
    }

    /// An OCI index over per-platform images, written to the store.
    pub fn index(store: &Store, built: &[Built]) -> Result<Artifact, BuildError> {
        let mut index = kiln_oci::ImageIndex::new_oci();
        for b in built {
            index.manifests.push(descriptor_with_platform(b));
        }
        let root = store.put_manifest(&kiln_oci::Manifest::Index(index))?;
        Artifact::from_root(store, root)
    }

    /// The artifact under `root`, read back from the store's manifests.
    pub fn from_root(store: &Store, root: Descriptor) -> Result<Artifact, BuildError> {
        let mut art = Artifact {
            root: root.clone(),
            blobs: Vec::new(),
            images: Vec::new(),
            manifests: Vec::new(),
            layout_annotations: BTreeMap::new(),
        };
        let children = match store.read_manifest(&root)?.value {
            kiln_oci::Manifest::Index(ix) => {
                art.blobs.push(root.digest.clone());
                ix.manifests
            }
            kiln_oci::Manifest::Image(_) => vec![root],
        };
        for child in children {
            let kiln_oci::Manifest::Image(m) = store.read_manifest(&child)?.value else {
                return Err(OutputError::NestedIndex { digest: child.digest.clone() }.into());
            };
            let layers: Vec<Digest> = m.layers.iter().map(|l| l.digest.clone()).collect();
            for d in std::iter::once(&child.digest).chain(std::iter::once(&m.config.digest)).chain(&layers) {
                if !art.blobs.contains(d) {
                    art.blobs.push(d.clone());
                }
            }
            art.images.push((m.config.digest.clone(), layers));
            art.manifests.push(child);
        }
        Ok(art)
    }

    /// This (store-form) artifact in `form`: layers compressed with its codec (see
    /// `kiln_oci::layer::compress_image`; remembered per layer, so a second export costs nothing),
    /// then annotated. `layout` says whether the output is an OCI layout; `single` is the platform
    /// of a one-image artifact; `builds` are its images' builds, in order, whose inline caches
    /// (`--cache-to type=inline`) go into the configs. The store's tags keep pointing at the plain form.
    pub fn in_form(
        &self,
        store: &Store,
        form: &Form,
        single: Option<&kiln_oci::Platform>,
        layout: bool,
        builds: &[Built],
    ) -> Result<Artifact, BuildError> {
        let layer_err = |e: kiln_oci::layer::LayerError| BuildError::Layer { digest: self.root.digest.to_string(), source: e };
        let root = kiln_oci::layer::compress_image(store, &self.root, form.codec, form.force).map_err(layer_err)?;
        let root = inline_cache::embed(store, &root, builds)?;
        let root = if form.oci_mediatypes { root } else { mediatypes::to_docker(store, &root)? };
        self.annotated(store, root, form, single, layout)
    }

    /// This artifact with `form`'s annotations only, layers as they are (what the store keeps).
    pub fn with_annotations(&self, store: &Store, form: &Form, single: Option<&kiln_oci::Platform>) -> Result<Artifact, BuildError> {
        self.annotated(store, self.root.clone(), form, single, false)
    }

    fn annotated(
        &self,
        store: &Store,
        root: Descriptor,
        form: &Form,
        single: Option<&kiln_oci::Platform>,
        layout: bool,
    ) -> Result<Artifact, BuildError> {
        let a = annotate::apply(store, &root, single, &form.annotations, layout)?;
        if a.root == self.root && a.index_descriptor.is_empty() {
            return Ok(self.clone());
        }
        let mut art = Artifact::from_root(store, a.root)?;
        art.layout_annotations = a.index_descriptor;
        Ok(art)
    }
}

fn image_of(b: &Built) -> (Digest, Vec<Digest>) {
    (b.config_digest.clone(), b.layers.iter().map(|l| l.descriptor.digest.clone()).collect())
}

/// The blobs an image consists of: manifest, config, layers.
fn blobs(built: &Built) -> Vec<Digest> {
    let mut v = vec![built.manifest.digest.clone(), built.config_digest.clone()];
    v.extend(built.layers.iter().map(|l| l.descriptor.digest.clone()));
    v
}

/// Writes one tarball to `dest` with `write` (given the writer and the path to name in errors): a
/// file through a temporary name beside it, synced and renamed when complete and removed when not,
/// so a failed or cancelled export leaves nothing a reader would take for a whole one; or stdout.
pub(crate) fn write_tarball(
    dest: &Dest,
    write: impl FnOnce(&mut dyn std::io::Write, &std::path::Path) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    use std::io::Write as _;
    match dest {
        Dest::Path(p) => {
            let io_err = |path: &std::path::Path| {
                let path = path.to_path_buf();
                move |source| BuildError::Io { action: "write", path, source }
            };
            let tmp = PathBuf::from(format!("{}.kiln-tmp", p.display()));
            let run = || -> Result<(), BuildError> {
                let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io_err(&tmp))?);
                write(&mut w, p)?;
                let file = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
                file.sync_all().map_err(io_err(&tmp))?;
                std::fs::rename(&tmp, p).map_err(io_err(p))
            };
            run().inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        }
        Dest::Stdout => {
            let path = std::path::Path::new("<stdout>");
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            write(&mut w, path)?;
            w.flush().map_err(|source| BuildError::Io { action: "write", path: path.to_path_buf(), source })
        }
    }
}

/// Tags the artifact in the store under every name.
pub fn tag(store: &Store, art: &Artifact, names: &[Reference]) -> Result<(), BuildError> {
    for t in names {
        store.tag(t, &art.root)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
