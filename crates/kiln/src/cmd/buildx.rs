//! `docker buildx build` flags that kiln does not have, taken anyway so that the error names the
//! flag and says what kiln does instead (clap alone would say "unexpected argument" and nothing
//! more), and the attestation flags (`--provenance`, `--sbom`, `--attest`), parsed with buildx's
//! meaning by `kiln-attest`.
//!
//! A workflow written for buildx should run with `kiln build` in its place; where it cannot, the
//! user must learn it from the first run, never from a missing push or an image without what they
//! asked for. So nothing here is ignored: each flag below is refused, and an attestation
//! attribute kiln does not act on is refused by name.

use anyhow::bail;

/// The buildx flags kiln refuses, hidden from `--help`.
#[derive(clap::Args, Debug, Default)]
pub struct Unsupported {
    #[arg(long, hide = true, value_name = "NAME")]
    builder: Option<String>,
    #[arg(long, hide = true, value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    #[arg(long, hide = true, value_name = "METHOD")]
    call: Option<String>,
    #[arg(long, hide = true)]
    check: bool,
    #[arg(long, hide = true, value_name = "PARENT")]
    cgroup_parent: Option<String>,
    #[arg(long, hide = true, value_name = "STAGE")]
    no_cache_filter: Vec<String>,
    #[arg(long, hide = true)]
    detach: bool,
    #[arg(short = 'D', long, hide = true)]
    debug: bool,
    // `docker build`'s legacy flags, which buildx takes and ignores. kiln takes them because it
    // already does what they ask: no intermediate containers are left (`--rm`, `--force-rm`) and
    // the context is read in place, never uploaded (`--compress`). `--rm=false` asks for what kiln
    // cannot do, and is refused.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    rm: Option<String>,
    #[arg(long, hide = true)]
    force_rm: bool,
    #[arg(long, hide = true)]
    compress: bool,
}

impl Unsupported {
    /// The first flag given, refused with what kiln does instead.
    pub fn refuse(&self) -> anyhow::Result<()> {
        let why = if self.builder.is_some() {
            Some((
                "--builder",
                "kiln has no builder instances: it builds in its own process, so drop --builder (and docker/setup-buildx-action)",
            ))
        } else if !self.allow.is_empty() {
            Some((
                "--allow",
                "kiln has no entitlements: RUN --network=host is allowed without one, and RUN --security=insecure is not supported",
            ))
        } else if self.call.is_some() || self.check {
            Some((
                if self.check { "--check" } else { "--call" },
                "kiln has no build checks or frontend methods: it always builds (`kiln dockerfile dump` shows how it parses the Dockerfile)",
            ))
        } else if self.cgroup_parent.is_some() {
            Some(("--cgroup-parent", "kiln runs each RUN in the cgroup kiln itself runs in; start kiln in the cgroup you want"))
        } else if !self.no_cache_filter.is_empty() {
            Some(("--no-cache-filter", "kiln can only skip the cache for the whole build: use --no-cache"))
        } else if self.detach {
            Some(("--detach", "kiln builds in the foreground; run it in the background with your shell if you need to"))
        } else if self.debug {
            Some((
                "--debug",
                "kiln has no debug shell; a failed RUN prints its last output lines, and `kiln run IMAGE -- sh` opens a shell in an image",
            ))
        } else if self.rm.as_deref().is_some_and(|v| matches!(v, "false" | "0")) {
            Some(("--rm=false", "kiln leaves no intermediate containers to keep; `kiln run IMAGE -- sh` opens a shell in a built image"))
        } else {
            None
        };
        match why {
            Some((flag, what)) => bail!("{flag} is a docker buildx flag kiln does not support: {what}"),
            None => Ok(()),
        }
    }
}

/// `--provenance`, `--sbom` and `--attest`, as buildx reads them; buildx's default (a `mode=min`
/// provenance where the output carries attestations) unless `BUILDX_NO_DEFAULT_ATTESTATIONS` is set.
pub fn attestations(provenance: Option<&str>, sbom: Option<&str>, attest: &[String]) -> anyhow::Result<kiln_attest::Attestations> {
    let default = std::env::var_os("BUILDX_NO_DEFAULT_ATTESTATIONS").is_none_or(|v| v.is_empty());
    Ok(kiln_attest::Attestations::from_flags(provenance, sbom, attest, default)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_flags_take_buildx_values_and_refuse_generator() {
        let a = attestations(Some("mode=max"), Some("true"), &[]).unwrap();
        assert_eq!(a.provenance.unwrap().mode, kiln_attest::Mode::Max);
        assert!(a.sbom.is_some());
        let e = attestations(None, Some("generator=docker/scout-sbom-indexer:latest"), &[]).unwrap_err().to_string();
        assert!(e.contains("natively"), "{e}");
        let e = attestations(None, None, &["type=provenance,foo=bar".into()]).unwrap_err().to_string();
        assert!(e.contains("foo="), "{e}");
    }

    #[test]
    fn each_refusal_names_its_flag() {
        let cases: Vec<(Unsupported, &str)> = vec![
            (Unsupported { builder: Some("b".into()), ..Default::default() }, "--builder"),
            (Unsupported { allow: vec!["network.host".into()], ..Default::default() }, "--allow"),
            (Unsupported { call: Some("outline".into()), ..Default::default() }, "--call"),
            (Unsupported { check: true, ..Default::default() }, "--check"),
            (Unsupported { cgroup_parent: Some("x".into()), ..Default::default() }, "--cgroup-parent"),
            (Unsupported { no_cache_filter: vec!["s".into()], ..Default::default() }, "--no-cache-filter"),
            (Unsupported { detach: true, ..Default::default() }, "--detach"),
            (Unsupported { debug: true, ..Default::default() }, "--debug"),
            (Unsupported { rm: Some("false".into()), ..Default::default() }, "--rm=false"),
        ];
        for (u, flag) in cases {
            let e = u.refuse().unwrap_err().to_string();
            assert!(e.starts_with(&format!("{flag} is a docker buildx flag kiln does not support: ")), "{e}");
        }
        assert!(Unsupported::default().refuse().is_ok());
        // What kiln already does is accepted.
        assert!(Unsupported { rm: Some("true".into()), force_rm: true, compress: true, ..Default::default() }.refuse().is_ok());
    }
}
