//! Named build contexts: `--build-context NAME=VALUE`, as buildx and BuildKit's Dockerfile
//! frontend have them.
//!
//! A named context is a source the Dockerfile names as if it were a stage or an image, and that the
//! command line points somewhere else. VALUE is one of:
//! - a local directory (a path, relative to where kiln runs), with its own `.dockerignore`: its
//!   files, for `COPY --from=NAME`, and, where an image is needed (`FROM NAME`,
//!   `RUN --mount=from=NAME`), an image of one layer holding them, owned by root, without
//!   timestamps, with an empty config (BuildKit's empty image);
//! - `docker-image://REF[@DIGEST]`: an image from its registry (or the store), as a `FROM` would
//!   take it;
//! - `oci-layout://PATH[:TAG|@DIGEST]`: an image in an OCI layout directory on disk (the tag
//!   defaults to `latest`), such as `kiln build -o type=oci,dest=PATH,tar=false` writes.
//!
//! NAME is matched as BuildKit matches it: as an image reference, normalized, so that
//! `--build-context alpine=…` replaces `FROM alpine`, `FROM alpine:latest` and
//! `FROM docker.io/library/alpine`, and `--build-context docker.io/library/alpine:3.19=…` replaces
//! `FROM alpine:3.19`. A name that is a stage's (`FROM … AS NAME`) replaces the whole stage: its
//! instructions are not run, and `FROM NAME` / `COPY --from=NAME` read the context instead.
//!
//! Cache keys follow from what the context is: an image (either kind) is keyed by its manifest
//! digest, as a base image is; a directory read by COPY by the content and mode of the files it
//! reads, as the main context is (plus the context's name), so that editing a file there misses
//! and nothing else does; a directory taken as an image by that image's digest, which changes with
//! the names, modes and content of its files and nothing else (not mtimes, not owners).
//!
//! Git and HTTP(S) URLs (`https://…`, `git@…`) and bake's `target:` are refused by name: kiln
//! neither fetches remote contexts nor runs bake.

use std::path::{Path, PathBuf};

use kiln_oci::{Digest, Reference};

/// Where a named context's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A directory on disk.
    Local(PathBuf),
    /// `docker-image://REF`: an image reference (normalized, `:latest` when it names no tag).
    Image(Reference),
    /// `oci-layout://PATH[:TAG|@DIGEST]`: an image in an OCI layout; without either, tag `latest`.
    Layout { dir: PathBuf, tag: Option<String>, digest: Option<Digest> },
}

/// One `--build-context NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedContext {
    /// NAME as given.
    pub name: String,
    /// VALUE as given (for messages).
    pub value: String,
    pub source: ContextSource,
}

/// Every `--build-context` of a build, looked up by name the way BuildKit matches them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedContexts {
    list: Vec<NamedContext>,
}

/// A `--build-context` value kiln cannot take.
#[derive(Debug, thiserror::Error)]
pub enum NamedContextError {
    #[error("--build-context {arg:?}: expected NAME=VALUE (VALUE: a directory, docker-image://REF or oci-layout://PATH[:TAG|@DIGEST])")]
    MissingEquals { arg: String },
    #[error("--build-context {arg:?}: the name {name:?} is not a valid stage or image name: {source}")]
    BadName {
        arg: String,
        name: String,
        #[source]
        source: kiln_oci::ReferenceError,
    },
    #[error("--build-context {arg:?}: the value is empty; give a directory, docker-image://REF or oci-layout://PATH")]
    EmptyValue { arg: String },
    #[error("--build-context {arg:?}: {what} contexts are not supported by kiln; fetch it first and pass the directory (or docker-image://REF for an image)")]
    Remote { arg: String, what: &'static str },
    #[error("--build-context {arg:?}: target: contexts belong to `docker buildx bake`, which kiln does not have; build that target first and pass its image as docker-image://REF or oci-layout://PATH")]
    BakeTarget { arg: String },
    #[error("--build-context {arg:?}: {scheme}:// is not a context kiln knows; use a directory, docker-image://REF or oci-layout://PATH[:TAG|@DIGEST]")]
    UnknownScheme { arg: String, scheme: String },
    #[error("--build-context {arg:?}: not an image reference: {source}")]
    BadImage {
        arg: String,
        #[source]
        source: kiln_oci::ReferenceError,
    },
    #[error("--build-context {arg:?}: not an OCI layout digest: {source}")]
    BadLayoutDigest {
        arg: String,
        #[source]
        source: kiln_oci::DigestError,
    },
    #[error("--build-context {arg:?}: the layout path is empty")]
    EmptyLayoutPath { arg: String },
    #[error("--build-context {arg:?}: {} is not a directory{}", path.display(), if *missing { " (it does not exist)" } else { "" })]
    NotADirectory { arg: String, path: PathBuf, missing: bool },
    #[error("--build-context {name}= is given twice ({first:?} and {second:?}); give each name once")]
    Duplicate { name: String, first: String, second: String },
}

/// The form names are compared in: the normalized reference (`docker.io/library/alpine:latest`),
/// or the lowercased text when it is not one.
pub(crate) fn match_key(name: &str) -> String {
    Reference::parse(name).map(|r| r.to_string()).unwrap_or_else(|_| name.to_lowercase())
}

impl NamedContext {
    /// Parses one `NAME=VALUE`.
    pub fn parse(arg: &str) -> Result<NamedContext, NamedContextError> {
        let Some((name, value)) = arg.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            return Err(NamedContextError::MissingEquals { arg: arg.to_string() });
        };
        let a = || arg.to_string();
        Reference::parse_without_default_tag(name).map_err(|source| NamedContextError::BadName {
            arg: a(),
            name: name.to_string(),
            source,
        })?;
        if value.is_empty() {
            return Err(NamedContextError::EmptyValue { arg: a() });
        }
        let source = if let Some(r) = value.strip_prefix("docker-image://") {
            ContextSource::Image(Reference::parse(r).map_err(|source| NamedContextError::BadImage { arg: a(), source })?)
        } else if let Some(spec) = value.strip_prefix("oci-layout://") {
            parse_layout(arg, spec)?
        } else if value.starts_with("target:") {
            return Err(NamedContextError::BakeTarget { arg: a() });
        } else if let Some(what) = remote_kind(value) {
            return Err(NamedContextError::Remote { arg: a(), what });
        } else if let Some((scheme, _)) = value.split_once("://") {
            return Err(NamedContextError::UnknownScheme { arg: a(), scheme: scheme.to_string() });
        } else {
            ContextSource::Local(PathBuf::from(value))
        };
        Ok(NamedContext { name: name.to_string(), value: value.to_string(), source })
    }
}

/// `git@host:…`, `git://…`, `http(s)://…`: what BuildKit would fetch.
fn remote_kind(value: &str) -> Option<&'static str> {
    if value.starts_with("git@") || value.starts_with("git://") || value.starts_with("ssh://") {
        Some("Git")
    } else if value.starts_with("https://") || value.starts_with("http://") {
        Some(if value.ends_with(".git") || value.contains(".git#") { "Git" } else { "HTTP(S) URL" })
    } else {
        None
    }
}

/// `PATH[:TAG|@DIGEST]`: a digest after the last `@`, else a tag after a `:` past the last `/`.
fn parse_layout(arg: &str, spec: &str) -> Result<ContextSource, NamedContextError> {
    let (dir, tag, digest) = if let Some((dir, d)) = spec.rsplit_once('@') {
        let digest = Digest::parse(d).map_err(|source| NamedContextError::BadLayoutDigest { arg: arg.to_string(), source })?;
        (dir, None, Some(digest))
    } else {
        let slash = spec.rfind('/').map_or(0, |i| i + 1);
        match spec[slash..].rfind(':') {
            Some(c) => (&spec[..slash + c], Some(spec[slash + c + 1..].to_string()).filter(|t| !t.is_empty()), None),
            None => (spec, None, None),
        }
    };
    if dir.is_empty() {
        return Err(NamedContextError::EmptyLayoutPath { arg: arg.to_string() });
    }
    Ok(ContextSource::Layout { dir: PathBuf::from(dir), tag, digest })
}

impl NamedContexts {
    /// Parses every `--build-context`; a name given twice is an error.
    pub fn parse_flags<S: AsRef<str>>(args: &[S]) -> Result<NamedContexts, NamedContextError> {
        let mut out = NamedContexts::default();
        for a in args {
            let nc = NamedContext::parse(a.as_ref())?;
            if let Some(first) = out.get(&nc.name) {
                return Err(NamedContextError::Duplicate { name: nc.name.clone(), first: first.value.clone(), second: nc.value });
            }
            out.list.push(nc);
        }
        Ok(out)
    }

    /// The context a `FROM` or `--from=` value names, if any.
    pub fn get(&self, name: &str) -> Option<&NamedContext> {
        let k = match_key(name);
        self.list.iter().find(|c| match_key(&c.name) == k)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &NamedContext> {
        self.list.iter()
    }

    /// Local directories made absolute against `cwd` (the build runs with paths as given).
    pub fn local_dirs(&self) -> impl Iterator<Item = (&NamedContext, &Path)> {
        self.list.iter().filter_map(|c| match &c.source {
            ContextSource::Local(p) => Some((c, p.as_path())),
            _ => None,
        })
    }
}

/// A directory context, with its own `.dockerignore` (BuildKit reads it from the named directory).
pub(crate) fn open_dir(path: &Path) -> Result<crate::context::Context, crate::BuildError> {
    let ignore = path.join(".dockerignore");
    let text = match std::fs::read_to_string(&ignore) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(crate::BuildError::Io { action: "read", path: ignore, source }),
    };
    let m = kiln_dockerfile::dockerignore::Matcher::from_dockerignore(&text)
        .map_err(|source| crate::BuildError::Dockerignore { path: ignore, source })?;
    crate::context::Context::open(path, m)
}

/// The local directory contexts of a build, opened (each with its own `.dockerignore`, as
/// BuildKit reads it).
pub(crate) struct LocalContexts {
    dirs: Vec<(String, crate::context::Context)>,
}

impl LocalContexts {
    pub(crate) fn open(contexts: &NamedContexts) -> Result<LocalContexts, crate::BuildError> {
        let mut dirs = Vec::new();
        for (nc, path) in contexts.local_dirs() {
            if !path.is_dir() {
                let arg = format!("{}={}", nc.name, nc.value);
                return Err(NamedContextError::NotADirectory { arg, path: path.to_path_buf(), missing: !path.exists() }.into());
            }
            dirs.push((nc.name.clone(), open_dir(path)?));
        }
        Ok(LocalContexts { dirs })
    }

    /// The directory context `name` (a `COPY --from=` value) names: its name as given, and its files.
    pub(crate) fn get(&self, name: &str) -> Option<(&str, &crate::context::Context)> {
        let k = match_key(name);
        self.dirs.iter().find(|(n, _)| match_key(n) == k).map(|(n, c)| (n.as_str(), c))
    }

    /// Every directory, for what `--isolation none` leaves alone.
    pub(crate) fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, c)| c.root())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn parse(arg: &str) -> ContextSource {
        NamedContext::parse(arg).unwrap().source
    }

    fn err(arg: &str) -> NamedContextError {
        NamedContext::parse(arg).unwrap_err()
    }

    #[test]
    fn values_are_a_directory_an_image_or_a_layout() {
        assert_eq!(parse("src=./vendor"), ContextSource::Local("./vendor".into()));
        assert_eq!(parse("src=/abs/dir"), ContextSource::Local("/abs/dir".into()));
        let ContextSource::Image(r) = parse("alpine=docker-image://localhost:5000/base:v1") else { panic!() };
        assert_eq!(r.to_string(), "localhost:5000/base:v1");
        let ContextSource::Image(r) = parse("alpine=docker-image://busybox") else { panic!() };
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let ContextSource::Image(r) = parse(&format!("a=docker-image://busybox@{d}")) else { panic!() };
        assert_eq!(r.digest().map(ToString::to_string), Some(d.clone()));
        assert_eq!(parse("b=oci-layout:///tmp/lay"), ContextSource::Layout { dir: "/tmp/lay".into(), tag: None, digest: None });
        assert_eq!(parse("b=oci-layout://lay:v2"), ContextSource::Layout { dir: "lay".into(), tag: Some("v2".into()), digest: None });
        assert_eq!(
            parse("b=oci-layout://./x:y/lay"),
            ContextSource::Layout { dir: "./x:y/lay".into(), tag: None, digest: None },
            "a colon before the last slash is part of the path"
        );
        assert_eq!(
            parse(&format!("b=oci-layout:///l@{d}")),
            ContextSource::Layout { dir: "/l".into(), tag: None, digest: Some(Digest::parse(&d).unwrap()) }
        );
    }

    #[test]
    fn bad_values_name_the_flag_and_the_value() {
        let cases = [
            ("novalue", "expected NAME=VALUE"),
            ("=dir", "expected NAME=VALUE"),
            ("Bad Name=dir", "is not a valid stage or image name"),
            ("a=", "the value is empty"),
            ("a=https://github.com/x/y.git", "Git contexts are not supported"),
            ("a=git@github.com:x/y.git", "Git contexts are not supported"),
            ("a=https://example.com/ctx.tar.gz", "HTTP(S) URL contexts are not supported"),
            ("a=target:base", "docker buildx bake"),
            ("a=s3://bucket/x", "s3:// is not a context kiln knows"),
            ("a=docker-image://UPPER", "not an image reference"),
            ("a=oci-layout:///l@sha256:nothex", "not an OCI layout digest"),
            ("a=oci-layout://:tag", "the layout path is empty"),
        ];
        for (arg, want) in cases {
            let e = err(arg).to_string();
            assert!(e.starts_with(&format!("--build-context {arg:?}: ")), "{e}");
            assert!(e.contains(want), "{arg}: {e}");
        }
        assert!(err("a=docker-image://UPPER").source().and_then(|s| s.downcast_ref::<kiln_oci::ReferenceError>()).is_some());
        assert!(err("a=oci-layout:///l@sha256:x").source().and_then(|s| s.downcast_ref::<kiln_oci::DigestError>()).is_some());
    }

    #[test]
    fn names_match_as_normalized_references() {
        let cs = NamedContexts::parse_flags(&["alpine=docker-image://busybox", "docker.io/library/debian:12=./d", "build=./b"]).unwrap();
        for n in ["alpine", "alpine:latest", "docker.io/library/alpine", "library/alpine:latest"] {
            assert_eq!(cs.get(n).map(|c| c.name.as_str()), Some("alpine"), "{n}");
        }
        assert!(cs.get("alpine:3.19").is_none());
        assert_eq!(cs.get("debian:12").map(|c| c.name.as_str()), Some("docker.io/library/debian:12"));
        assert!(cs.get("debian").is_none());
        assert_eq!(cs.get("build").map(|c| c.value.as_str()), Some("./b"));
        assert_eq!(cs.local_dirs().count(), 2);
        let dup = NamedContexts::parse_flags(&["a=./x", "a:latest=./y"]).unwrap_err().to_string();
        assert_eq!(dup, "--build-context a:latest= is given twice (\"./x\" and \"./y\"); give each name once");
    }
}
