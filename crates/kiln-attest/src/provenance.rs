//! SLSA provenance, with BuildKit's field names, from the inputs kiln knows exactly.
//!
//! v0.2 (`https://slsa.dev/provenance/v0.2`, the default): `builder.id`, `buildType`
//! (`https://mobyproject.org/buildkit@v1`, since the structure is BuildKit's), `invocation`
//! (`configSource {uri, digest, entryPoint}`, `parameters {frontend: dockerfile.v0, args, locals}`,
//! `environment {platform}`), `metadata {buildInvocationID, buildStartedOn, buildFinishedOn,
//! completeness, reproducible}` and `materials`. v1 (`https://slsa.dev/provenance/v1`) carries
//! the same facts as `buildDefinition` and `runDetails`.
//!
//! Materials: each base image as `pkg:docker/<repo>@<tag>?platform=<os>%2F<arch>` with its
//! manifest's sha256 (as BuildKit names them), each `ADD <url>` with its content's sha256, and two
//! kiln adds because it knows them: `local:context` (one sha256 over the path and content digest
//! of every context file the build read, sorted by path) and `local:dockerfile` (the Dockerfile's
//! sha256).
//!
//! `mode=min` gives no build arguments, labels or target; `mode=max` gives them as BuildKit's
//! frontend receives them (`build-arg:NAME`, `label:NAME`, `target`). Neither gives secrets nor
//! SSH forwards: [`BuildInputs`] has no place for them. With `SOURCE_DATE_EPOCH` the times are
//! that instant and the invocation id is derived from the inputs, so the statement is reproducible.

use std::collections::BTreeMap;

use kiln_oci::{Digest, Platform, Reference};
use serde_json::{json, Map, Value};

use crate::spec::{Mode, ProvenanceSpec, SlsaVersion};
use crate::statement::{Statement, Subject};

/// A base image the build resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// As the Dockerfile (or `--build-context`) named it, normalized (`docker.io/library/busybox:1`).
    pub reference: Reference,
    pub platform: Platform,
    /// The platform manifest's digest.
    pub digest: Digest,
}

/// The CI run the build ran in (GitHub Actions), from its `GITHUB_*` variables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CiRun {
    pub server_url: String,
    pub repository: String,
    pub sha: Option<String>,
    pub git_ref: Option<String>,
    pub run_id: String,
    pub run_attempt: String,
    pub workflow_ref: Option<String>,
    pub event_name: Option<String>,
}

impl CiRun {
    /// The run, when the environment names one (`GITHUB_REPOSITORY` and `GITHUB_RUN_ID`).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Option<CiRun> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let repository = get("GITHUB_REPOSITORY")?;
        let run_id = get("GITHUB_RUN_ID")?;
        Some(CiRun {
            server_url: get("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into()),
            repository,
            sha: get("GITHUB_SHA"),
            git_ref: get("GITHUB_REF"),
            run_id,
            run_attempt: get("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into()),
            workflow_ref: get("GITHUB_WORKFLOW_REF"),
            event_name: get("GITHUB_EVENT_NAME"),
        })
    }

    /// The run's URL, which buildx gives BuildKit as the builder id.
    pub fn run_url(&self) -> String {
        format!("{}/{}/actions/runs/{}/attempts/{}", self.server_url, self.repository, self.run_id, self.run_attempt)
    }

    /// The repository's git URL with the ref (`https://github.com/o/r.git#refs/heads/main`), as
    /// BuildKit names a git config source.
    fn source_uri(&self) -> String {
        let base = format!("{}/{}.git", self.server_url, self.repository);
        match &self.git_ref {
            Some(r) => format!("{base}#{r}"),
            None => base,
        }
    }
}

/// What the provenance of one platform image is made from. Nothing secret belongs here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildInputs {
    /// `kiln 0.1.0`'s version.
    pub kiln_version: String,
    /// The Dockerfile as named relative to the context when it is inside it (`Dockerfile`).
    pub dockerfile_path: String,
    pub dockerfile_digest: Option<Digest>,
    /// Over the context files the build read (`None` when it read none).
    pub context_digest: Option<Digest>,
    /// `--build-arg`s (only `mode=max` shows them).
    pub build_args: BTreeMap<String, String>,
    /// `--label`s (only `mode=max`).
    pub labels: BTreeMap<String, String>,
    /// `--target` (only `mode=max`).
    pub target: Option<String>,
    pub bases: Vec<BaseImage>,
    /// `ADD <url>` sources and their content's sha256.
    pub urls: Vec<(String, Digest)>,
    /// Where kiln ran (`linux/amd64`): BuildKit's `environment.platform`.
    pub builder_platform: String,
    /// RFC 3339 UTC.
    pub started_on: String,
    pub finished_on: String,
    /// `SOURCE_DATE_EPOCH` was set: the output is meant to be byte-for-byte reproducible.
    pub reproducible: bool,
    pub ci: Option<CiRun>,
}

/// The `pkg:docker/…` package URL BuildKit names a docker image with: Docker Hub's `library/`
/// dropped, the registry kept otherwise, the tag (or the digest) as version, the platform escaped.
pub fn docker_purl(r: &Reference, platform: Option<&Platform>) -> String {
    let name = match r.registry() {
        "docker.io" => r.repository().strip_prefix("library/").unwrap_or(r.repository()).to_string(),
        reg => format!("{reg}/{}", r.repository()),
    };
    let version = match (r.tag(), r.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "latest".to_string(),
    };
    let mut s = format!("pkg:docker/{name}@{version}");
    if let Some(p) = platform {
        s.push_str("?platform=");
        s.push_str(&p.to_string().replace('/', "%2F"));
    }
    s
}

fn digest_map(d: &Digest) -> Value {
    json!({ d.algorithm().as_str(): d.hex() })
}

impl BuildInputs {
    /// `materials` (v0.2) / `resolvedDependencies` (v1).
    fn materials(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for b in &self.bases {
            out.push(json!({ "uri": docker_purl(&b.reference, Some(&b.platform)), "digest": digest_map(&b.digest) }));
        }
        for (url, d) in &self.urls {
            out.push(json!({ "uri": url, "digest": digest_map(d) }));
        }
        if let Some(d) = &self.context_digest {
            out.push(json!({ "uri": "local:context", "digest": digest_map(d) }));
        }
        if let Some(d) = &self.dockerfile_digest {
            out.push(json!({ "uri": "local:dockerfile", "digest": digest_map(d) }));
        }
        out
    }

    /// The frontend's arguments as BuildKit receives them; empty in `mode=min`.
    fn args(&self, mode: Mode) -> Map<String, Value> {
        let mut args = Map::new();
        if mode == Mode::Min {
            return args;
        }
        args.insert("filename".into(), Value::String(self.dockerfile_path.clone()));
        for (k, v) in &self.build_args {
            args.insert(format!("build-arg:{k}"), Value::String(v.clone()));
        }
        for (k, v) in &self.labels {
            args.insert(format!("label:{k}"), Value::String(v.clone()));
        }
        if let Some(t) = &self.target {
            args.insert("target".into(), Value::String(t.clone()));
        }
        args
    }

    fn config_source(&self, path_key: &str) -> Value {
        let mut cs = Map::new();
        if let Some(ci) = &self.ci {
            cs.insert("uri".into(), Value::String(ci.source_uri()));
            if let Some(sha) = &ci.sha {
                cs.insert("digest".into(), json!({ "sha1": sha }));
            }
        }
        cs.insert(path_key.into(), Value::String(self.dockerfile_path.clone()));
        Value::Object(cs)
    }

    /// The builder's id: `builder-id=`, else the CI run's URL, else empty (as BuildKit leaves it).
    fn builder_id(&self, spec: &ProvenanceSpec) -> String {
        spec.builder_id.clone().or_else(|| self.ci.as_ref().map(CiRun::run_url)).unwrap_or_default()
    }

    /// What environment BuildKit's v0.2 `invocation.environment` holds, plus the CI run's
    /// workflow and event (as the SLSA GitHub generator records them) and kiln's version.
    fn environment(&self) -> Value {
        let mut env = Map::new();
        env.insert("platform".into(), Value::String(self.builder_platform.clone()));
        env.insert("kiln_version".into(), Value::String(self.kiln_version.clone()));
        if let Some(ci) = &self.ci {
            if let Some(w) = &ci.workflow_ref {
                env.insert("github_workflow_ref".into(), Value::String(w.clone()));
            }
            if let Some(e) = &ci.event_name {
                env.insert("github_event_name".into(), Value::String(e.clone()));
            }
            env.insert("github_run_id".into(), Value::String(ci.run_id.clone()));
            env.insert("github_run_attempt".into(), Value::String(ci.run_attempt.clone()));
        }
        Value::Object(env)
    }

    /// `vcs` in BuildKit's metadata extension: what buildx sends as `vcs:source`/`vcs:revision`.
    fn vcs(&self) -> Option<Value> {
        let ci = self.ci.as_ref()?;
        let mut v = Map::new();
        v.insert("source".into(), Value::String(format!("{}/{}", ci.server_url, ci.repository)));
        if let Some(sha) = &ci.sha {
            v.insert("revision".into(), Value::String(sha.clone()));
        }
        Some(Value::Object(v))
    }

    /// One id per build invocation: derived from the inputs (so a reproducible build repeats it).
    fn invocation_id(&self) -> String {
        let mut h = kiln_oci::Digest::sha256_of(
            format!(
                "{}\n{}\n{:?}\n{:?}\n{}",
                self.started_on,
                self.dockerfile_path,
                self.dockerfile_digest.as_ref().map(|d| d.to_string()),
                self.context_digest.as_ref().map(|d| d.to_string()),
                self.ci.as_ref().map(CiRun::run_url).unwrap_or_default()
            )
            .as_bytes(),
        )
        .hex()
        .to_string();
        h.truncate(25);
        h
    }

    /// The predicate for `spec`.
    pub fn predicate(&self, spec: &ProvenanceSpec) -> Value {
        let locals = json!([{ "name": "context" }, { "name": "dockerfile" }]);
        let mut bk_meta = Map::new();
        if let Some(v) = self.vcs() {
            bk_meta.insert("vcs".into(), v);
        }
        match spec.version {
            SlsaVersion::V02 => json!({
                "builder": { "id": self.builder_id(spec) },
                "buildType": "https://mobyproject.org/buildkit@v1",
                "materials": self.materials(),
                "invocation": {
                    "configSource": self.config_source("entryPoint"),
                    "parameters": { "frontend": "dockerfile.v0", "args": self.args(spec.mode), "locals": locals },
                    "environment": self.environment(),
                },
                "metadata": {
                    "buildInvocationID": self.invocation_id(),
                    "buildStartedOn": self.started_on,
                    "buildFinishedOn": self.finished_on,
                    "reproducible": self.reproducible,
                    "completeness": {
                        "parameters": spec.mode == Mode::Max,
                        "environment": true,
                        // A local context is not tracked by a VCS kiln can verify.
                        "materials": false,
                    },
                    "https://mobyproject.org/buildkit@v1#metadata": bk_meta,
                },
            }),
            SlsaVersion::V1 => {
                let mut run_meta = json!({
                    "invocationID": self.invocation_id(),
                    "startedOn": self.started_on,
                    "finishedOn": self.finished_on,
                    "buildkit_reproducible": self.reproducible,
                    "buildkit_completeness": { "request": spec.mode == Mode::Max, "resolvedDependencies": false },
                });
                if !bk_meta.is_empty() {
                    run_meta["buildkit_metadata"] = Value::Object(bk_meta);
                }
                json!({
                    "buildDefinition": {
                        "buildType": "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md",
                        "externalParameters": {
                            "configSource": self.config_source("path"),
                            "request": { "frontend": "dockerfile.v0", "args": self.args(spec.mode), "locals": locals },
                        },
                        "internalParameters": { "builderPlatform": self.builder_platform },
                        "resolvedDependencies": self.materials(),
                    },
                    "runDetails": {
                        "builder": { "id": self.builder_id(spec), "version": { "kiln": self.kiln_version } },
                        "metadata": run_meta,
                    },
                })
            }
        }
    }

    /// The provenance statement about `subject`.
    pub fn statement(&self, spec: &ProvenanceSpec, subject: Subject) -> Statement {
        let predicate_type = match spec.version {
            SlsaVersion::V02 => crate::SLSA_V02,
            SlsaVersion::V1 => crate::SLSA_V1,
        };
        Statement { predicate_type: predicate_type.into(), subjects: vec![subject], predicate: self.predicate(spec) }
    }
}

/// One digest over the context files a build read: sha256 of `PATH NUL DIGEST LF` lines sorted by
/// path (what `local:context` names).
pub fn context_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a Digest)>) -> Option<Digest> {
    let mut lines: Vec<String> = files.into_iter().map(|(p, d)| format!("{p}\0{d}\n")).collect();
    if lines.is_empty() {
        return None;
    }
    lines.sort();
    lines.dedup();
    Some(Digest::sha256_of(lines.concat().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> BuildInputs {
        BuildInputs {
            kiln_version: "0.1.0".into(),
            dockerfile_path: "Dockerfile".into(),
            dockerfile_digest: Some(Digest::sha256_of(b"FROM busybox")),
            context_digest: context_digest([("a", &Digest::sha256_of(b"a"))]),
            build_args: [("TOKEN".to_string(), "sekrit".to_string())].into(),
            bases: vec![BaseImage {
                reference: Reference::parse("busybox:1.36").unwrap(),
                platform: Platform::parse("linux/arm64").unwrap(),
                digest: Digest::sha256_of(b"base"),
            }],
            urls: vec![("https://example.com/f".into(), Digest::sha256_of(b"f"))],
            builder_platform: "linux/amd64".into(),
            started_on: "2026-12-03T10:00:00Z".into(),
            finished_on: "2026-12-03T10:00:00Z".into(),
            ..BuildInputs::default()
        }
    }

    #[test]
    fn purls_are_named_as_buildkit_names_them() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(docker_purl(&Reference::parse("alpine:3.17").unwrap(), Some(&p)), "pkg:docker/alpine@3.17?platform=linux%2Farm%2Fv7");
        assert_eq!(docker_purl(&Reference::parse("user/app").unwrap(), None), "pkg:docker/user/app@latest");
        assert_eq!(docker_purl(&Reference::parse("localhost:5000/x/y:t").unwrap(), None), "pkg:docker/localhost:5000/x/y@t");
    }

    #[test]
    fn min_mode_has_no_build_args_and_max_mode_has_them() {
        let i = inputs();
        let min = serde_json::to_string(&i.predicate(&ProvenanceSpec::default())).unwrap();
        assert!(!min.contains("sekrit") && !min.contains("TOKEN"), "{min}");
        let max_spec = ProvenanceSpec { mode: Mode::Max, ..Default::default() };
        let max = i.predicate(&max_spec);
        assert_eq!(max["invocation"]["parameters"]["args"]["build-arg:TOKEN"], "sekrit");
        assert_eq!(max["metadata"]["completeness"]["parameters"], true);
        let mats = max["materials"].as_array().unwrap();
        let uris: Vec<&str> = mats.iter().map(|m| m["uri"].as_str().unwrap()).collect();
        assert_eq!(uris, ["pkg:docker/busybox@1.36?platform=linux%2Farm64", "https://example.com/f", "local:context", "local:dockerfile"]);
        assert_eq!(mats[0]["digest"]["sha256"], Digest::sha256_of(b"base").hex());
    }

    #[test]
    fn v1_carries_the_same_facts_in_its_own_shape() {
        let mut i = inputs();
        i.ci = CiRun::from_env(|k| {
            Some(
                match k {
                    "GITHUB_REPOSITORY" => "o/r",
                    "GITHUB_RUN_ID" => "42",
                    "GITHUB_RUN_ATTEMPT" => "2",
                    "GITHUB_SHA" => "abc",
                    "GITHUB_REF" => "refs/heads/main",
                    _ => return None,
                }
                .to_string(),
            )
        });
        let v1 = i.statement(
            &ProvenanceSpec { version: SlsaVersion::V1, ..Default::default() },
            Subject { name: "x".into(), digest: Digest::sha256_of(b"m") },
        );
        assert_eq!(v1.predicate_type, crate::SLSA_V1);
        let p = &v1.predicate;
        assert_eq!(p["runDetails"]["builder"]["id"], "https://github.com/o/r/actions/runs/42/attempts/2");
        assert_eq!(p["buildDefinition"]["externalParameters"]["configSource"]["uri"], "https://github.com/o/r.git#refs/heads/main");
        assert_eq!(p["buildDefinition"]["externalParameters"]["configSource"]["digest"]["sha1"], "abc");
        assert_eq!(p["buildDefinition"]["resolvedDependencies"].as_array().unwrap().len(), 4);
        let v02 = i.predicate(&ProvenanceSpec::default());
        assert_eq!(v02["builder"]["id"], "https://github.com/o/r/actions/runs/42/attempts/2");
        assert_eq!(v02["invocation"]["configSource"]["entryPoint"], "Dockerfile");
    }

    #[test]
    fn the_context_digest_does_not_depend_on_order() {
        let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
        assert_eq!(context_digest([("x", &a), ("y", &b)]), context_digest([("y", &b), ("x", &a)]));
        assert_ne!(context_digest([("x", &a)]), context_digest([("x", &b)]));
        assert_eq!(context_digest(std::iter::empty()), None);
    }
}
