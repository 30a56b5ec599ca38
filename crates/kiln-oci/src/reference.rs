//! Image references with Docker's normalisation rules.
//!
//! `busybox` means `docker.io/library/busybox:latest`. The first path component is a registry host when it
//! contains `.` or `:`, is `localhost`, or has an uppercase letter; otherwise the reference lives on Docker
//! Hub. A reference may carry a tag, a digest, or both (then the digest decides what is fetched).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's distribution API.
pub const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const MAX_NAME_LEN: usize = 255;

/// Why a reference string was rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference {input:?}: {reason}")]
    Invalid { input: String, reason: String },
}

/// A normalised image reference: registry, repository, optional tag, optional digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses with Docker's normalisation; adds `:latest` when neither tag nor digest is given.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let mut r = Reference::parse_without_default_tag(input)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".to_string());
        }
        Ok(r)
    }

    /// Parses with Docker's normalisation but leaves a missing tag missing (for repository names).
    pub fn parse_without_default_tag(input: &str) -> Result<Reference, ReferenceError> {
        let bad = |reason: &str| ReferenceError::Invalid { input: input.to_string(), reason: reason.to_string() };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(bad("a 64-character hexadecimal string is an image ID, not a reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (rest, Some(Digest::parse(d).map_err(|e| bad(&format!("bad digest: {e}")))?)),
            None => (input, None),
        };
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|s| colon > s) => (&rest[..colon], Some(&rest[colon + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|r| bad(&r))?;
        }
        let (mut registry, mut repository) = match name.find('/') {
            Some(i) if is_registry_like(&name[..i]) => (name[..i].to_string(), name[i + 1..].to_string()),
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if registry == LEGACY_DOCKER_HUB {
            registry = DOCKER_HUB.to_string();
        }
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if repository.to_lowercase() != repository {
            return Err(bad(&format!("repository name {repository:?} must be lowercase")));
        }
        validate_registry(&registry).map_err(|r| bad(&r))?;
        validate_repository(&repository).map_err(|r| bad(&r))?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("repository name must not be more than 255 characters"));
        }
        Ok(Reference { registry, repository, tag: tag.map(str::to_string), digest })
    }

    /// The registry as written in references (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) to speak the distribution API to: `registry-1.docker.io` for Docker Hub.
    pub fn registry_endpoint(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_ENDPOINT
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// This reference with another tag (the digest is dropped, since it named other content).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        validate_tag(tag).map_err(|reason| ReferenceError::Invalid { input: tag.to_string(), reason })?;
        Ok(Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() })
    }

    /// This reference pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), ..self.clone() }
    }

    /// The same repository with neither tag nor digest.
    pub fn repository_only(&self) -> Reference {
        Reference { tag: None, digest: None, ..self.clone() }
    }

    /// The short form people type: `busybox:latest`, `user/app:1`, `localhost:5000/x:y`.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(r) if !r.contains('/') => r.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        self.push_suffix(&mut s);
        s
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

/// Docker's rule for "the first component names a registry".
fn is_registry_like(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.to_lowercase() != first
}

fn validate_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("tag {t:?} must be 1-128 of [A-Za-z0-9_.-] and not start with '.' or '-'"))
    }
}

fn validate_registry(r: &str) -> Result<(), String> {
    let err = || format!("registry {r:?} is not a valid host[:port]");
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(err)?;
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(err());
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(err()),
        };
        (None, port)
    } else {
        match r.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
    }
    if let Some(h) = host {
        for comp in h.split('.') {
            let b = comp.as_bytes();
            let ok = !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
            if !ok {
                return Err(err());
            }
        }
    }
    Ok(())
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by `/`.
fn validate_repository(repo: &str) -> Result<(), String> {
    for comp in repo.split('/') {
        if !valid_path_component(comp) {
            return Err(format!(
                "repository component {comp:?} must be lowercase letters and digits, separated by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl fmt::Display for Reference {
    /// The full form: `docker.io/library/busybox:latest`. Use [`Reference::familiar`] for the short form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reference::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalisation_table() {
        // (input, registry, repository, tag, has digest, full form)
        let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
            ("busybox", "docker.io", "library/busybox", Some("latest"), false),
            ("busybox:1.36", "docker.io", "library/busybox", Some("1.36"), false),
            ("library/busybox", "docker.io", "library/busybox", Some("latest"), false),
            ("docker.io/busybox", "docker.io", "library/busybox", Some("latest"), false),
            ("docker.io/library/busybox", "docker.io", "library/busybox", Some("latest"), false),
            ("index.docker.io/busybox", "docker.io", "library/busybox", Some("latest"), false),
            ("index.docker.io/user/app:v1", "docker.io", "user/app", Some("v1"), false),
            ("user/app", "docker.io", "user/app", Some("latest"), false),
            ("user/app/sub", "docker.io", "user/app/sub", Some("latest"), false),
            ("localhost/app", "localhost", "app", Some("latest"), false),
            ("localhost:5000/app", "localhost:5000", "app", Some("latest"), false),
            ("localhost:5000/app:tag", "localhost:5000", "app", Some("tag"), false),
            ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000", "a/b", Some("c"), false),
            ("ghcr.io/owner/repo:main", "ghcr.io", "owner/repo", Some("main"), false),
            ("quay.io/x/y", "quay.io", "x/y", Some("latest"), false),
            ("example.com:443/x", "example.com:443", "x", Some("latest"), false),
            ("Example/x", "Example", "x", Some("latest"), false),
            ("[::1]:5000/x", "[::1]:5000", "x", Some("latest"), false),
            ("[2001:db8::1]/x", "[2001:db8::1]", "x", Some("latest"), false),
            ("my-reg.local/a.b/c_d/e__f/g-h--i:T_a.g-1", "my-reg.local", "a.b/c_d/e__f/g-h--i", Some("T_a.g-1"), false),
            ("busybox@D", "docker.io", "library/busybox", None, true),
            ("busybox:1@D", "docker.io", "library/busybox", Some("1"), true),
            ("localhost:5000/app@D", "localhost:5000", "app", None, true),
            ("localhost:5000/app:v2@D", "localhost:5000", "app", Some("v2"), true),
            ("a:_tag", "docker.io", "library/a", Some("_tag"), false),
        ];
        for (input, reg, repo, tag, dig) in cases {
            let input = if *dig { input.replace("@D", &format!("@{D}")) } else { input.to_string() };
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry(), *reg, "{input}");
            assert_eq!(r.repository(), *repo, "{input}");
            assert_eq!(r.tag(), *tag, "{input}");
            assert_eq!(r.digest().is_some(), *dig, "{input}");
            // Display is a fixed point of parsing.
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{input}");
            assert_eq!(Reference::parse(&r.familiar()).unwrap(), r, "{input}");
        }
    }

    #[test]
    fn rejects_invalid_references() {
        let long = format!("a/{}", "b".repeat(260));
        let bad = [
            "",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox:",
            "busybox:-tag",
            "busybox:.tag",
            "busybox:tag with space",
            "busybox@sha256:abc",
            "busybox@",
            "/busybox",
            "busybox/",
            "a//b",
            "-a/b",
            "a-/b",
            "a/_b",
            "a/b___c",
            "a/b..c",
            "localhost:port/x",
            "-host.com/x",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            &long,
        ];
        for b in bad {
            assert!(Reference::parse(b).is_err(), "{b:?} should be rejected");
        }
        let t = format!("busybox:{}", "t".repeat(129));
        assert!(Reference::parse(&t).is_err());
        let t = format!("busybox:{}", "t".repeat(128));
        assert!(Reference::parse(&t).is_ok());
    }

    #[test]
    fn full_and_familiar_forms() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.registry_endpoint(), "registry-1.docker.io");
        let r = Reference::parse("user/app:1").unwrap();
        assert_eq!(r.familiar(), "user/app:1");
        let r = Reference::parse("docker.io/library/a/b").unwrap();
        assert_eq!(r.familiar(), "library/a/b:latest");
        let r = Reference::parse("localhost:5000/x:y").unwrap();
        assert_eq!(r.to_string(), "localhost:5000/x:y");
        assert_eq!(r.familiar(), "localhost:5000/x:y");
        assert_eq!(r.registry_endpoint(), "localhost:5000");
        let r = Reference::parse(&format!("busybox:1@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{D}"));
        assert_eq!(r.familiar(), format!("busybox:1@{D}"));
        assert!(Reference::parse_without_default_tag("busybox").unwrap().tag().is_none());
        let t = r.with_tag("2").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/busybox:2");
        assert!(r.with_tag("bad tag").is_err());
        assert_eq!(r.repository_only().to_string(), "docker.io/library/busybox");
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Reference>(&j).unwrap(), r);
        assert!(serde_json::from_str::<Reference>("\"Bad/Ref\"").is_err());
    }
}
