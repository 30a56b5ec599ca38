//! kiln-cache: what a build remembers between runs.
//!
//! A *cache key* names the result of one build step: it hashes the parent step's key, the instruction
//! as expanded, the args and env it can see, the platform and, for COPY/ADD, the content of the files it
//! reads (see `docs/cache.md`). A [`Record`] stores what that step produced: the layer it added (or
//! none, for steps that only change the image config), plus enough of its inputs to explain a later
//! miss ("what changed?") without re-running anything.
//!
//! Records live in a [`LocalCache`] under the kiln root (`<root>/cache/records/<hex>.json`), one small
//! JSON file per key, replaced atomically (`kiln_oci::atomic`, not fsynced: a record lost or torn by a
//! machine crash reads as a miss, which costs a rebuild, never a wrong image), so that an interrupted build
//! never leaves a record a later build would trust. The layers themselves live in the local store, addressed
//! by digest; a record is only a hit if its layer blob is still there.
//!
//! # The registry cache
//!
//! To start warm on a fresh CI runner, records travel through a *cache ref*: a tag in any OCI
//! registry whose manifest is an ordinary OCI image manifest. Its config blob
//! ([`CACHE_CONFIG_MEDIA_TYPE`]) is the key graph, every record with its parent, inputs, platform
//! and times; its layers are the cached layers themselves, plain layer blobs that the registry can
//! mount into the image's repository ([`mod@format`]).
//!
//! * Import is lazy: [`RegistryCache::open`] reads the manifest and config only; a build asks
//!   [`RegistryCache::lookup`] per step and [`RegistryCache::fetch_layer`] only for the layers it
//!   really needs. A missing ref is a miss with one warning ([`Opened::Missing`]).
//! * Export is read-merge-write ([`export`]): the ref's records are merged with this build's
//!   ([`merge()`]; same key: the last used wins; other branches and platforms are kept), aged out
//!   (`ttl`) and trimmed to a size budget (`max-size`) without ever keeping a record whose ancestor
//!   went, then the missing layers, the config and the manifest are pushed. A ref that changed in
//!   between is read and merged again, so concurrent builds of different branches do not wipe each
//!   other's cache. Failures are warnings ([`ExportOutcome`]) unless `ignore-error=false`.
//! * [`select`] picks what `mode=min|max` exports; [`CacheFrom`] and [`CacheTo`] parse the flags
//!   (through the backend their `type=` names) and open the stores they name.
//! * Every store is one implementation of a small interface ([`mod@backend`]): a [`CacheSource`]
//!   looks up records and fetches layers (the local cache, [`LocalSource`], is one like the
//!   others), a [`CacheSink`] exports and reports ([`ExportReport`]), and opening either gives one
//!   [`Opened`] outcome. A build iterates over them and never asks which kind it holds.
//! * `type=local` directories ([`dir`]) hold the same manifest, config and layers in an OCI layout.
//! * `type=gha` ([`mod@gha`]) keeps the same key graph in the GitHub Actions cache service: each
//!   layer a content-addressed entry, the graph a small index entry per scope and git ref, merged on
//!   export; it asks for a signed URL right before each transfer, so URLs that expire never break it.
//! * `type=inline` ([`mod@inline`]) writes the image's own records into its config; the registry
//!   source reads them back from any image that carries them.
//! * The key encoding and the names of a step's inputs have one owner, [`mod@inputs`]: a build
//!   names every input with an [`Input`] and hashes them with [`StepInputs::key`] (netstrings under a
//!   version line, [`KEY_VERSION`]); records keep them as `name → value` strings.
//! * A miss is explained ([`explain_miss`]) by diffing the step against the closest record built on
//!   the same parent, naming inputs through [`Input::parse`]: the instruction text, a build arg, an
//!   env var, a context file.
//! * Who may write at all is the [`policy`]: `--cache-policy auto` reads the CI event, so pull
//!   requests (and forks above all) read the cache and never write it.
//!
//! # Adding a cache backend
//!
//! A backend is one module and one line; nothing outside this crate
//! changes, because a build only ever holds a [`CacheFrom`]/[`CacheTo`] and the traits they open to.
//! [`mod@registry`], [`mod@dir`] and [`mod@gha`] are the ones to copy from.
//!
//! 1. In a new module, a unit struct that implements [`Backend`]: its `type=` ([`Backend::name`]),
//!    a usage line for the "no type= given" message, and [`Backend::source`] /
//!    [`Backend::sink`], which read the [`Options`] of one flag value. They call
//!    [`Options::accept`] with every key they take (a key not listed is refused by name; `type` is
//!    implied, and a sink lists `mode`, which [`CacheTo::parse`] has already read for it),
//!    [`Options::require`] for keys they cannot do without, and [`Options::error`] for a value they
//!    cannot use. Parsing does no I/O.
//! 2. The typed specs they return: a struct for each side, implementing [`SourceSpec`] and
//!    [`SinkSpec`], whose `open` makes the store at build time (a [`CacheSource`], a [`CacheSink`])
//!    or says in one [`Opened::Missing`]/[`Opened::Unusable`] warning why the build goes on without
//!    it. A backend that cannot be one side returns an [`Options::error`] from that method.
//! 3. One line in [`BACKENDS`] (`spec.rs`): the unknown-`type=` and no-`type=` messages list the
//!    backends from there, and the tests in `spec.rs` check every entry refuses unknown keys.
//! 4. Declare the module here (`pub mod gha;`); callers that need a spec's options back read them
//!    with [`CacheFrom::get`] / [`CacheTo::get`] (re-exporting the specs at the crate root is a
//!    convenience, as for the two backends here).

pub mod backend;
pub mod dir;
pub mod explain;
pub mod format;
pub mod gha;
pub mod inline;
pub mod inputs;
mod local;
pub mod merge;
pub mod policy;
pub mod registry;
pub mod spec;

pub use backend::{Backend, CacheSink, CacheSource, ExportReport, ExportTarget, ExportWarning, Opened, SinkSpec, SourceSpec};
pub use dir::{export_dir, DirBackend, DirCache, DirExport, DirImport, DirSink, DIR_TAG};
pub use explain::{explain_miss, Change, Explanation};
pub use format::{select, Entry, FormatError, CACHE_CONFIG_MEDIA_TYPE};
pub use gha::{GhaBackend, GhaCache, GhaError, GhaExport, GhaImport, GhaSettings, GhaSink};
pub use inline::{InlineBackend, InlineExport, INLINE_CONFIG_KEY};
pub use inputs::{Input, StepInputs, KEY_VERSION};
pub use local::{CacheError, LayerRecord, LocalCache, LocalSource, Record};
pub use merge::{merge, Merged, PruneRules};
pub use policy::{resolve as resolve_policy, resolve_from_process, CachePolicy, PolicyChoice, ResolvedPolicy};
pub use registry::{
    export, export_at, ExportOutcome, ExportSummary, LayerSources, RegistryBackend, RegistryCache, RegistryCacheError, RegistryExport,
    RegistryImport, RegistrySink, DEFAULT_TTL,
};
pub use spec::{parse_go_duration, parse_size, CacheFrom, CacheMode, CacheTo, Options, SpecError, BACKENDS};
