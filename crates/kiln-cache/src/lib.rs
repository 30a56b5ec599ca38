//! kiln-cache: what a build remembers between runs.
//!
//! A *cache key* names the result of one build step: it hashes the parent step's key, the instruction
//! as expanded, the args and env it can see, the platform and, for COPY/ADD, the content of the files it
//! reads (see `docs/cache.md`). A [`Record`] stores what that step produced: the layer it added (or
//! none, for steps that only change the image config), plus enough of its inputs to explain a later
//! miss ("what changed?") without re-running anything.
//!
//! Records live in a [`LocalCache`] under the kiln root (`<root>/cache/records/<hex>.json`), one small
//! JSON file per key, written atomically (temp file, fsync, rename) so that an interrupted build never
//! leaves a record a later build would trust. The layers themselves live in the local store, addressed
//! by digest; a record is only a hit if its layer blob is still there.

mod local;

pub use local::{CacheError, LayerRecord, LocalCache, Record};
