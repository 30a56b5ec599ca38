//! `docker buildx build` flags that kiln does not have, taken anyway so that the error names the
//! flag and says what kiln does instead (clap alone would say "unexpected argument" and nothing
//! more), and the attestation flags, which are accepted with `false` until attestations are built.
//!
//! A workflow written for buildx should run with `kiln build` in its place; where it cannot, the
//! user must learn it from the first run, never from a missing push or an image without what they
//! asked for. So nothing here is ignored: each flag below is either refused or, for
//! `--provenance`/`--sbom`, accepted only with a value that asks for nothing.

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
    #[arg(long, hide = true, value_name = "ATTRS")]
    attest: Vec<String>,
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
        } else if !self.attest.is_empty() {
            Some((
                "--attest",
                "attestations (provenance, SBOM) are not built yet; remove --attest, or pass --provenance=false --sbom=false",
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

/// `--provenance VALUE` / `--sbom VALUE`: `false` or `0` (what kiln's GitHub Action passes by
/// default) is accepted; any other value asks for an attestation kiln cannot make yet.
pub fn attestation(flag: &str, value: Option<&str>) -> anyhow::Result<()> {
    match value.map(str::trim) {
        None | Some("false" | "0") => Ok(()),
        Some(v) => bail!(
            "{flag}={v}: kiln does not make {} attestations yet; pass {flag}=false (in kiln's GitHub Action: {}: false)",
            if flag == "--sbom" { "SBOM" } else { "provenance" },
            flag.trim_start_matches("--")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn false_and_zero_ask_for_nothing_and_anything_else_is_refused() {
        assert!(attestation("--provenance", None).is_ok());
        assert!(attestation("--provenance", Some("false")).is_ok());
        assert!(attestation("--sbom", Some("0")).is_ok());
        for v in ["true", "mode=max", "1", "generator=docker/scout-sbom-indexer:latest"] {
            let e = attestation("--sbom", Some(v)).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--sbom={v}: kiln does not make SBOM attestations yet")), "{e}");
        }
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
            (Unsupported { attest: vec!["type=sbom".into()], ..Default::default() }, "--attest"),
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
