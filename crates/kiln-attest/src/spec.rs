//! What a build is asked to attest: buildx's `--provenance`, `--sbom` and `--attest` flags.
//!
//! buildx turns `--provenance=V` into `--attest type=provenance,V` and `--sbom=V` into `--attest
//! type=sbom,V`, where a boolean V means `disabled=!V`. kiln parses them the same way, takes one of
//! each type at most (buildx refuses a duplicate), and refuses by name every attribute it does not
//! act on: `generator=` (kiln scans natively, no scanner image runs), `scan-context=`, and
//! anything unknown.
//!
//! The default, when no flag names provenance: buildx's since 0.10, a `mode=min` provenance on the
//! outputs that carry attestations (registry pushes and OCI layouts; `--load`, `type=docker`,
//! `type=local` and `type=tar` carry none). docker/build-push-action leaves `provenance` unset by
//! default, so an Action user gets that default too. `BUILDX_NO_DEFAULT_ATTESTATIONS` turns it off,
//! as in buildx. An SBOM is made only when asked for.

/// How much a provenance says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Where, when and from what; no build arguments.
    #[default]
    Min,
    /// Also the build arguments, labels and target (never secrets).
    Max,
}

/// The SLSA provenance version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlsaVersion {
    #[default]
    V02,
    V1,
}

/// `type=provenance`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvenanceSpec {
    pub mode: Mode,
    pub version: SlsaVersion,
    /// `builder-id=`: overrides the builder id (the CI run's URL by default).
    pub builder_id: Option<String>,
}

/// `type=sbom`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SbomSpec {
    /// `scan-stage=true`: also the final state of every other stage built.
    pub scan_stage: bool,
}

/// The attestations a build makes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attestations {
    pub provenance: Option<ProvenanceSpec>,
    pub sbom: Option<SbomSpec>,
    /// Whether a flag asked for them (an output that cannot carry them then says so), or they are
    /// buildx's default (skipped without a word where they cannot go).
    pub asked: bool,
}

/// Why an attestation flag is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{flag} {value:?}: {what}")]
    Bad { flag: String, value: String, what: String },
}

impl Attestations {
    /// Nothing.
    pub fn none() -> Attestations {
        Attestations::default()
    }

    /// Whether anything is made.
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom.is_some()
    }

    /// Parses the flags as buildx does. `default_provenance` is false when
    /// `BUILDX_NO_DEFAULT_ATTESTATIONS` is set.
    pub fn from_flags(
        provenance: Option<&str>,
        sbom: Option<&str>,
        attest: &[String],
        default_provenance: bool,
    ) -> Result<Attestations, SpecError> {
        let mut lines: Vec<(String, String, Attrs)> = Vec::new();
        if let Some(v) = provenance {
            lines.push(("--provenance".into(), v.to_string(), shorthand("provenance", v, "--provenance")?));
        }
        if let Some(v) = sbom {
            lines.push(("--sbom".into(), v.to_string(), shorthand("sbom", v, "--sbom")?));
        }
        for a in attest {
            lines.push(("--attest".into(), a.clone(), fields(a, "--attest")?));
        }
        let mut out = Attestations::none();
        let (mut seen_prov, mut seen_sbom) = (false, false);
        for (flag, value, attrs) in lines {
            let bad = |what: String| SpecError::Bad { flag: flag.clone(), value: value.clone(), what };
            let ty = attrs.iter().find(|(k, _)| k == "type").map(|(_, v)| v.clone());
            let ty = ty.ok_or_else(|| bad("missing type= (provenance or sbom)".into()))?;
            let seen = match ty.as_str() {
                "provenance" => &mut seen_prov,
                "sbom" => &mut seen_sbom,
                other => return Err(bad(format!("unknown attestation type {other:?}: kiln makes provenance and sbom"))),
            };
            if *seen {
                return Err(bad(format!("a second {ty} attestation: give each type once (buildx refuses a duplicate too)")));
            }
            *seen = true;
            let mut disabled = false;
            let mut prov = ProvenanceSpec::default();
            let mut sb = SbomSpec::default();
            for (k, v) in attrs.iter().filter(|(k, _)| k != "type") {
                match (ty.as_str(), k.as_str()) {
                    (_, "disabled") => disabled = parse_bool(v).ok_or_else(|| bad(format!("disabled={v:?}: expected true or false")))?,
                    ("provenance", "mode") => {
                        prov.mode = match v.as_str() {
                            "min" => Mode::Min,
                            "max" => Mode::Max,
                            _ => return Err(bad(format!("mode={v:?}: expected min or max"))),
                        }
                    }
                    ("provenance", "version") => {
                        prov.version = match v.as_str() {
                            "v0.2" => SlsaVersion::V02,
                            "v1" | "v1.0" => SlsaVersion::V1,
                            _ => return Err(bad(format!("version={v:?}: expected v0.2 or v1"))),
                        }
                    }
                    ("provenance", "builder-id") => prov.builder_id = Some(v.clone()),
                    ("sbom", "scan-stage") => {
                        sb.scan_stage = parse_bool(v).ok_or_else(|| bad(format!("scan-stage={v:?}: expected true or false")))?
                    }
                    ("sbom", "generator") => {
                        return Err(bad(format!(
                            "generator={v}: kiln does not run a scanner image; it reads the image's package databases natively (drop generator=)"
                        )))
                    }
                    ("sbom", "scan-context") => {
                        return Err(bad("scan-context: kiln scans images and stages, not the build context; drop it".into()))
                    }
                    (_, other) => {
                        let accepted = if ty == "provenance" { "mode, version, builder-id, disabled" } else { "scan-stage, disabled" };
                        return Err(bad(format!("kiln does not support {other}= for type={ty} (accepted: {accepted})")));
                    }
                }
            }
            if disabled {
                continue;
            }
            out.asked = true;
            if ty == "provenance" {
                out.provenance = Some(prov);
            } else {
                out.sbom = Some(sb);
            }
        }
        if !seen_prov && default_provenance {
            out.provenance = Some(ProvenanceSpec::default());
        }
        Ok(out)
    }
}

/// One flag's attributes, in order, keys lower-cased.
type Attrs = Vec<(String, String)>;

/// `--provenance=V` / `--sbom=V`: a boolean, or attributes.
fn shorthand(ty: &str, v: &str, flag: &str) -> Result<Vec<(String, String)>, SpecError> {
    let v = v.trim();
    let mut out = vec![("type".to_string(), ty.to_string())];
    if let Some(b) = parse_bool(v) {
        out.push(("disabled".into(), (!b).to_string()));
        return Ok(out);
    }
    let rest = fields(v, flag)?;
    if let Some((_, t)) = rest.iter().find(|(k, _)| k == "type") {
        if t != ty {
            return Err(SpecError::Bad { flag: flag.into(), value: v.into(), what: format!("type={t} in {flag}: use --attest type={t}") });
        }
    }
    out.extend(rest.into_iter().filter(|(k, _)| k != "type"));
    Ok(out)
}

/// `k=v,k=v`, keys lower-cased.
fn fields(s: &str, flag: &str) -> Result<Vec<(String, String)>, SpecError> {
    let mut out = Vec::new();
    for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = f.split_once('=').ok_or_else(|| SpecError::Bad {
            flag: flag.into(),
            value: s.into(),
            what: format!("{f:?} is not KEY=VALUE"),
        })?;
        out.push((k.trim().to_lowercase(), v.trim().to_string()));
    }
    Ok(out)
}

/// Go's `strconv.ParseBool`, which buildx uses.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: Option<&str>, s: Option<&str>, a: &[&str]) -> Result<Attestations, SpecError> {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        Attestations::from_flags(p, s, &a, true)
    }

    #[test]
    fn no_flag_is_buildx_default_min_provenance_not_asked() {
        let a = parse(None, None, &[]).unwrap();
        assert_eq!(a.provenance, Some(ProvenanceSpec::default()));
        assert_eq!(a.sbom, None);
        assert!(!a.asked);
        let off = Attestations::from_flags(None, None, &[], false).unwrap();
        assert!(!off.any());
    }

    #[test]
    fn booleans_and_modes() {
        assert_eq!(parse(Some("false"), None, &[]).unwrap().provenance, None);
        let t = parse(Some("true"), Some("1"), &[]).unwrap();
        assert_eq!(t.provenance.unwrap().mode, Mode::Min);
        assert_eq!(t.sbom, Some(SbomSpec { scan_stage: false }));
        assert!(t.asked);
        let m = parse(Some("mode=max,version=v1"), None, &[]).unwrap().provenance.unwrap();
        assert_eq!((m.mode, m.version), (Mode::Max, SlsaVersion::V1));
        let a = parse(None, None, &["type=provenance,mode=max", "type=sbom,scan-stage=true"]).unwrap();
        assert_eq!(a.provenance.unwrap().mode, Mode::Max);
        assert!(a.sbom.unwrap().scan_stage);
        assert_eq!(parse(None, None, &["type=provenance,disabled=true"]).unwrap().provenance, None);
    }

    #[test]
    fn what_kiln_does_not_act_on_is_refused_by_name() {
        let cases = [
            (parse(None, Some("generator=docker/scout-sbom-indexer:latest"), &[]), "natively"),
            (parse(None, None, &["type=sbom,generator=x"]), "generator=x"),
            (parse(None, None, &["type=provenance,inline-only=true"]), "inline-only="),
            (parse(None, None, &["type=vex"]), "unknown attestation type"),
            (parse(Some("mode=huge"), None, &[]), "mode=\"huge\""),
            (parse(Some("version=v3"), None, &[]), "version=\"v3\""),
            (parse(Some("true"), None, &["type=provenance"]), "a second provenance"),
            (parse(None, None, &["mode=max"]), "missing type="),
            (parse(None, Some("scan-context=true"), &[]), "scan-context"),
        ];
        for (r, want) in cases {
            let e = r.unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
