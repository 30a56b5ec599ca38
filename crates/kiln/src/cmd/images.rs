//! `kiln images`: the tags in the local store.

use anyhow::Context;
use kiln_oci::{Manifest, Store};

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print only the references.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full digests.
    #[arg(long)]
    pub no_trunc: bool,
}

pub fn run(a: Args, g: &Global) -> anyhow::Result<()> {
    let store = Store::open(&g.root()).with_context(|| format!("opening the store under {}", g.root().display()))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut rows = vec![["REFERENCE".to_string(), "DIGEST".into(), "SIZE".into(), "CREATED".into()]];
    for e in store.list()? {
        let name = e.reference.as_ref().map(|r| r.familiar()).unwrap_or_else(|| e.name.clone());
        if a.quiet {
            println!("{name}");
            continue;
        }
        let digest = if a.no_trunc { e.descriptor.digest.to_string() } else { e.descriptor.digest.short().to_string() };
        let (size, created) = summarize(&store, &e.descriptor);
        let created = created.and_then(|c| parse_rfc3339(&c)).map(|t| ago(now - t)).unwrap_or_else(|| "N/A".into());
        rows.push([name, digest, human_size(size), created]);
    }
    if a.quiet {
        return Ok(());
    }
    let widths: Vec<usize> = (0..4).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        println!("{:<w0$}   {:<w1$}   {:<w2$}   {}", r[0], r[1], r[2], r[3], w0 = widths[0], w1 = widths[1], w2 = widths[2]);
    }
    Ok(())
}

/// Total size of the blobs present for an image (manifest, configs, layers; all platforms of an index)
/// and the creation time of its (first) config.
fn summarize(store: &Store, desc: &kiln_oci::Descriptor) -> (u64, Option<String>) {
    let mut size = 0;
    let mut created = None;
    let mut queue = vec![desc.clone()];
    while let Some(d) = queue.pop() {
        if !store.has_blob(&d.digest) {
            continue;
        }
        size += d.size;
        let Ok(raw) = store.read_manifest(&d) else { continue };
        match raw.value {
            Manifest::Index(i) => queue.extend(i.manifests),
            Manifest::Image(m) => {
                if created.is_none() {
                    created = store.read_config(&m.config.digest).ok().and_then(|c| c.value.created);
                }
                size += m.config.size;
                size += m.layers.iter().filter(|l| store.has_blob(&l.digest)).map(|l| l.size).sum::<u64>();
            }
        }
    }
    (size, created)
}

/// Sizes as `docker images` prints them (decimal units).
pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').chars().take(5).collect::<String>().trim_end_matches('.').to_string()
            + units[u]
    }
}

fn ago(secs: i64) -> String {
    let secs = secs.max(0);
    let (n, unit) = match secs {
        s if s < 60 => return "Less than a minute ago".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 30 => (s / 86_400, "day"),
        s if s < 86_400 * 365 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b't' && b[10] != b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600 + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant).
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats_round_trip() {
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20.123456+01:00"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_500), "1.5kB");
        assert_eq!(human_size(4_261_000), "4.261MB");
        assert_eq!(human_size(12_345_678_901), "12.34GB");
    }
}
