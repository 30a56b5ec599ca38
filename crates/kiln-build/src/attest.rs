//! Attestations on the outputs that carry them (see `kiln-attest` for their model and layout).
//!
//! What a build knows is collected while it runs ([`BuildFacts`], one per platform image: the base
//! images resolved by digest, the `ADD <url>` downloads, the context files read, the Dockerfile,
//! and, for the stages that get their own SBOM ([`scans_stage`]), their final layers). After the build, each exporter
//! that carries attestations (a registry push, `type=oci`) hands the artifact it is about to write
//! to [`Attester::carry`]: the statements are made about the image manifests *in that output's
//! form* (their digests are what a reader verifies), written as attestation manifests, and the
//! artifact becomes an index over images and attestation manifests. The SBOM of an image is
//! scanned once and reused by every output (compression changes no file in it).
//!
//! `--load`, `type=docker`, `type=local`, `type=tar` and the local store carry none, as with
//! buildx: when attestations were asked for, such an output says so in one line ([`Attester::skip`]).

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_attest::{Attestations, BuildInputs, CiRun, Statement, Subject};
use kiln_oci::{Digest, Reference, Store};

use crate::error::BuildError;
use crate::export::BuildResult;
use crate::output::Artifact;
use crate::Progress;

/// What one platform's build used, for its provenance (and the stages to scan, for the SBOM).
#[derive(Debug, Clone, Default)]
pub struct BuildFacts {
    pub bases: Vec<kiln_attest::BaseImage>,
    pub urls: Vec<(String, Digest)>,
    pub context_digest: Option<Digest>,
    /// The Dockerfile relative to the context when inside it, else as given.
    pub dockerfile_path: String,
    pub dockerfile_digest: Option<Digest>,
    /// (stage name, its final layers' blob digests) of each stage built but the target that gets
    /// its own SBOM ([`scans_stage`]).
    pub stages: Vec<(String, Vec<Digest>)>,
}

/// The ARG that chooses, per stage, whether a stage other than the target gets its own SBOM.
pub const SCAN_STAGE_ARG: &str = "BUILDKIT_SBOM_SCAN_STAGE";

/// Whether stage `name` gets its own SBOM, by BuildKit's rules (its Dockerfile frontend): the
/// default (`--attest type=sbom,scan-stage=true`, else off), then a global `ARG
/// BUILDKIT_SBOM_SCAN_STAGE=…`, then the stage's own `ARG` (a `--build-arg` overrides only an ARG
/// the Dockerfile declares). A value is `true`, `false`, or a comma-separated list of stage names
/// that are scanned. Only stages the target needs are built, so only those are ever scanned.
pub fn scans_stage(name: &str, default: bool, global_args: &[(String, String)], stage_args: &[(String, String)]) -> bool {
    let enabled = |v: &str| match v.trim() {
        // Go's strconv.ParseBool, which BuildKit uses.
        "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
        "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
        list => list.split(',').any(|s| s.trim() == name),
    };
    let mut on = default;
    for args in [global_args, stage_args] {
        if let Some((_, v)) = args.iter().rev().find(|(k, _)| k == SCAN_STAGE_ARG) {
            on = enabled(v);
        }
    }
    on
}

/// The ARG with which BuildKit's SBOM generator also scans the build context.
pub const SCAN_CONTEXT_ARG: &str = "BUILDKIT_SBOM_SCAN_CONTEXT";

/// kiln's SBOMs read root file systems only: an SBOM build whose global or target-stage ARG
/// `BUILDKIT_SBOM_SCAN_CONTEXT` is true is refused by name rather than quietly made without the
/// context's packages.
pub fn refuse_scan_context<'a>(
    global_args: &'a [(String, String)],
    target_args: impl Iterator<Item = &'a (String, String)>,
) -> Result<(), BuildError> {
    let last = global_args.iter().chain(target_args).filter(|(k, _)| k == SCAN_CONTEXT_ARG).last();
    match last.map(|(_, v)| v.trim()) {
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Err(BuildError::SbomUnsupported(format!(
            "ARG {SCAN_CONTEXT_ARG}=true: kiln's SBOM scans the image's root file system (and stages with \
             {SCAN_STAGE_ARG}), not the build context; drop the ARG or set it to false"
        ))),
        _ => Ok(()),
    }
}

/// Makes a build's attestations for the outputs that carry them.
pub struct Attester {
    spec: Attestations,
    /// RFC 3339.
    started: String,
    finished: String,
    reproducible: bool,
    ci: Option<CiRun>,
    build_args: std::collections::BTreeMap<String, String>,
    labels: std::collections::BTreeMap<String, String>,
    target: Option<String>,
    /// SBOM catalogs by store-form manifest digest (and stage name), made once.
    catalogs: Mutex<HashMap<(Digest, String), kiln_sbom::Catalog>>,
}

impl Attester {
    /// `started`/`finished` are seconds since the epoch; with `SOURCE_DATE_EPOCH` both are it.
    pub fn new(spec: Attestations, opts: &crate::BuildOptions, started: u64, finished: u64) -> Attester {
        let (started, finished) = match opts.source_date_epoch {
            Some(e) => (e, e),
            None => (started, finished),
        };
        Attester {
            spec,
            started: crate::time::rfc3339(started),
            finished: crate::time::rfc3339(finished),
            reproducible: opts.source_date_epoch.is_some(),
            ci: CiRun::from_env(|k| std::env::var(k).ok()),
            build_args: opts.build_args.clone(),
            labels: opts.labels.clone(),
            target: opts.target.clone(),
            catalogs: Mutex::new(HashMap::new()),
        }
    }

    /// Whether there is anything to attest.
    pub fn any(&self) -> bool {
        self.spec.any()
    }

    /// One line for an output that carries no attestations, when they were asked for.
    pub fn skip(&self, output: &str, progress: &dyn Progress) {
        if self.spec.asked && self.spec.any() {
            progress.warn(&format!(
                "attestations skipped for {output}: it carries none (as with buildx); push the image or use type=oci to keep them"
            ));
        }
    }

    /// `art` (in an output's form, images in the order of `result.images`) with each image's
    /// attestation manifest added; `names` name the subjects.
    pub fn carry(&self, store: &Store, result: &BuildResult, art: Artifact, names: &[Reference]) -> Result<Artifact, BuildError> {
        if !self.spec.any() {
            return Ok(art);
        }
        let mut entries = Vec::new();
        for (b, manifest) in result.images.iter().zip(&art.manifests) {
            let store_form = &b.manifest.digest;
            let platform = b.config.platform();
            let name = match names.first() {
                Some(n) => kiln_attest::provenance::docker_purl(n, Some(&platform)),
                None => manifest.digest.to_string(),
            };
            let subject = Subject { name: name.clone(), digest: manifest.digest.clone() };
            let mut statements: Vec<Statement> = Vec::new();
            if let Some(p) = &self.spec.provenance {
                statements.push(self.inputs(&b.facts).statement(p, subject.clone()));
            }
            if self.spec.sbom.is_some() {
                let layers: Vec<Digest> = b.layers.iter().map(|l| l.descriptor.digest.clone()).collect();
                let cat = self.catalog(store, store_form, "", &layers)?;
                statements.push(kiln_attest::sbom::statement(&cat, &self.doc(&name, &manifest.digest, None), subject.clone()));
                // Only the stages `scans_stage` chose are in the facts; after the image's own, in
                // the order they were built, as BuildKit puts its core SBOM first.
                for (stage, layers) in &b.facts.stages {
                    let cat = self.catalog(store, store_form, stage, layers)?;
                    let doc = self.doc(&name, &manifest.digest, Some(stage));
                    statements.push(kiln_attest::sbom::statement(&cat, &doc, subject.clone()));
                }
            }
            entries.push(kiln_attest::write_manifest(store, &manifest.digest, &statements)?);
        }
        let platform = result.single_platform();
        let root = kiln_attest::attach(store, &art.root, platform.as_ref(), &entries)?;
        let mut out = Artifact::from_root(store, root)?;
        out.layout_annotations = art.layout_annotations;
        Ok(out)
    }

    fn catalog(&self, store: &Store, image: &Digest, stage: &str, layers: &[Digest]) -> Result<kiln_sbom::Catalog, BuildError> {
        let key = (image.clone(), stage.to_string());
        if let Some(c) = self.catalogs.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let c = kiln_attest::sbom::scan(store, image, layers)?;
        if let Ok(mut m) = self.catalogs.lock() {
            m.insert(key, c.clone());
        }
        Ok(c)
    }

    fn doc(&self, name: &str, image: &Digest, stage: Option<&str>) -> kiln_sbom::DocumentInfo {
        let doc_name = match stage {
            Some(s) => format!("sbom-{s}"),
            None => name.to_string(),
        };
        kiln_sbom::DocumentInfo {
            name: doc_name,
            // Unique per image (and stage), and the same for the same image: reproducible.
            namespace: format!("https://kiln.invalid/spdx/{}/{}", image.hex(), stage.unwrap_or("image")),
            created: self.started.clone(),
            tool: format!("kiln-{}", env!("CARGO_PKG_VERSION")),
        }
    }

    fn inputs(&self, f: &BuildFacts) -> BuildInputs {
        BuildInputs {
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            dockerfile_path: f.dockerfile_path.clone(),
            dockerfile_digest: f.dockerfile_digest.clone(),
            context_digest: f.context_digest.clone(),
            build_args: self.build_args.clone(),
            labels: self.labels.clone(),
            target: self.target.clone(),
            bases: f.bases.clone(),
            urls: f.urls.clone(),
            builder_platform: kiln_oci::Platform::host().to_string(),
            started_on: self.started.clone(),
            finished_on: self.finished.clone(),
            reproducible: self.reproducible,
            ci: self.ci.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn scan_context_true_is_refused_by_name_and_false_passes() {
        let none = args(&[]);
        let err = refuse_scan_context(&args(&[(SCAN_CONTEXT_ARG, "true")]), none.iter()).unwrap_err().to_string();
        assert!(err.contains("BUILDKIT_SBOM_SCAN_CONTEXT=true"), "{err}");
        refuse_scan_context(&args(&[(SCAN_CONTEXT_ARG, "false")]), none.iter()).unwrap();
        let stage = args(&[(SCAN_CONTEXT_ARG, "0")]);
        refuse_scan_context(&args(&[(SCAN_CONTEXT_ARG, "1")]), stage.iter()).unwrap();
        refuse_scan_context(&none, args(&[(SCAN_CONTEXT_ARG, "True")]).iter()).unwrap_err();
    }

    #[test]
    fn scan_stage_follows_buildkits_rules() {
        let none = args(&[]);
        // The default alone (scan-stage=true or not).
        assert!(scans_stage("build", true, &none, &none));
        assert!(!scans_stage("build", false, &none, &none));
        // A global ARG over the default; the stage's own ARG over both.
        assert!(scans_stage("build", false, &args(&[(SCAN_STAGE_ARG, "true")]), &none));
        assert!(!scans_stage("build", true, &args(&[(SCAN_STAGE_ARG, "false")]), &none));
        assert!(!scans_stage("build", false, &args(&[(SCAN_STAGE_ARG, "true")]), &args(&[(SCAN_STAGE_ARG, "0")])));
        assert!(scans_stage("build", false, &none, &args(&[(SCAN_STAGE_ARG, "True")])));
        // A list names the stages scanned; unnamed stages are `stage-N`.
        let list = args(&[(SCAN_STAGE_ARG, "deps, stage-0")]);
        assert!(scans_stage("stage-0", false, &list, &none));
        assert!(scans_stage("deps", false, &list, &none));
        assert!(!scans_stage("build", true, &list, &none));
        // Other ARGs do not matter.
        assert!(!scans_stage("build", false, &args(&[("BUILDKIT_SBOM_SCAN_CONTEXT", "true")]), &none));
    }
}
