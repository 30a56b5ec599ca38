//! `--cache-from` / `--cache-to` values, and the Go-style durations and byte sizes inside them.
//!
//! The syntax follows `docker buildx build`: comma-separated `key=value` pairs, `type=` first by
//! convention (but accepted anywhere). Unknown keys are errors rather than silently ignored, because a
//! mistyped `mdoe=max` that quietly exports `min` is a cache that never warms.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use kiln_oci::Reference;
use kiln_registry::Client;

use crate::backend::{CacheSink, CacheSource, Opened};
use crate::dir::{DirCache, DirSink};
use crate::registry::{RegistryCache, RegistrySink};

/// The default age after which an exported record is pruned: 14 days (`ttl=336h`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(336 * 3600);

/// A `--cache-from`/`--cache-to` value that could not be understood. The message quotes the flag and
/// the offending part, and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value:?}: {reason}")]
pub struct SpecError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

/// What to export to a registry ref: every step (`max`) or only the result's chain (`min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The records of the final image's steps (its layers and the config-only steps between them).
    #[default]
    Min,
    /// The records of every step of every stage built.
    Max,
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheMode::Min => "min",
            CacheMode::Max => "max",
        })
    }
}

/// One `--cache-from` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFrom {
    Registry { reference: Reference },
    Local { src: PathBuf },
}

/// Export settings of a registry `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryExport {
    pub reference: Reference,
    pub mode: CacheMode,
    /// `true` (default): a failed export is a warning. `false`: it fails the build.
    pub ignore_error: bool,
    /// Records not exported for this long are pruned; `None` (`ttl=0`) keeps them forever.
    pub ttl: Option<Duration>,
    /// Total bytes of layers the ref may hold; oldest records go first. `None`: no budget.
    pub max_size: Option<u64>,
}

impl RegistryExport {
    /// The defaults of `type=registry,ref=R`: `mode=min`, `ignore-error=true`, `ttl=336h`, no size budget.
    pub fn new(reference: Reference) -> RegistryExport {
        RegistryExport { reference, mode: CacheMode::Min, ignore_error: true, ttl: Some(DEFAULT_TTL), max_size: None }
    }
}

/// One `--cache-to` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTo {
    Registry(RegistryExport),
    Local { dest: PathBuf, mode: CacheMode },
}

fn pairs<'a>(flag: &'static str, value: &'a str) -> Result<Vec<(&'a str, &'a str)>, SpecError> {
    let err = |reason: String| SpecError { flag, value: value.to_string(), reason };
    let mut out: Vec<(&str, &str)> = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(err(format!("{part:?} is not key=value (example: type=registry,ref=ghcr.io/org/app:cache)")));
        };
        let k = k.trim();
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(err(format!("{k} is given twice")));
        }
        out.push((k, v.trim()));
    }
    Ok(out)
}

fn parse_bool(flag: &'static str, value: &str, key: &str, v: &str) -> Result<bool, SpecError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(SpecError { flag, value: value.to_string(), reason: format!("{key}={v:?} must be true or false") }),
    }
}

fn parse_ref(flag: &'static str, value: &str, r: &str) -> Result<Reference, SpecError> {
    let reference = Reference::parse(r).map_err(|e| SpecError {
        flag,
        value: value.to_string(),
        reason: format!("ref={r:?} is not an image reference: {e}"),
    })?;
    if reference.digest().is_some() && flag == "--cache-to" {
        return Err(SpecError {
            flag,
            value: value.to_string(),
            reason: format!("ref={r:?} pins a digest; a cache ref is updated in place, so give it a tag (e.g. :buildcache)"),
        });
    }
    Ok(reference)
}

fn take_type<'a>(flag: &'static str, value: &str, kv: &[(&'a str, &'a str)]) -> Result<&'a str, SpecError> {
    match kv.iter().find(|(k, _)| *k == "type") {
        Some((_, t)) => Ok(t),
        None => {
            Err(SpecError { flag, value: value.to_string(), reason: "no type= given; use type=registry,ref=REF or type=local,…".into() })
        }
    }
}

fn unknown_key(flag: &'static str, value: &str, ty: &str, key: &str, allowed: &[&str]) -> SpecError {
    SpecError { flag, value: value.to_string(), reason: format!("unknown option {key:?} for type={ty}; accepted: {}", allowed.join(", ")) }
}

impl CacheFrom {
    /// Parses one `--cache-from` value. A bare reference (no `=`) means `type=registry,ref=…`.
    pub fn parse(value: &str) -> Result<CacheFrom, SpecError> {
        const FLAG: &str = "--cache-from";
        // buildx accepts a bare reference as shorthand for a registry cache source.
        if !value.contains('=') && !value.trim().is_empty() {
            return Ok(CacheFrom::Registry { reference: parse_ref(FLAG, value, value.trim())? });
        }
        let kv = pairs(FLAG, value)?;
        let ty = take_type(FLAG, value, &kv)?;
        let get = |key: &str| kv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        match ty {
            "registry" => {
                const ALLOWED: &[&str] = &["type", "ref"];
                if let Some((k, _)) = kv.iter().find(|(k, _)| !ALLOWED.contains(k)) {
                    return Err(unknown_key(FLAG, value, ty, k, ALLOWED));
                }
                let r = get("ref").filter(|r| !r.is_empty()).ok_or_else(|| SpecError {
                    flag: FLAG,
                    value: value.to_string(),
                    reason: "type=registry needs ref=REF".into(),
                })?;
                Ok(CacheFrom::Registry { reference: parse_ref(FLAG, value, r)? })
            }
            "local" => {
                const ALLOWED: &[&str] = &["type", "src"];
                if let Some((k, _)) = kv.iter().find(|(k, _)| !ALLOWED.contains(k)) {
                    return Err(unknown_key(FLAG, value, ty, k, ALLOWED));
                }
                let src = get("src").filter(|s| !s.is_empty()).ok_or_else(|| SpecError {
                    flag: FLAG,
                    value: value.to_string(),
                    reason: "type=local needs src=DIR".into(),
                })?;
                Ok(CacheFrom::Local { src: PathBuf::from(src) })
            }
            other => Err(SpecError {
                flag: FLAG,
                value: value.to_string(),
                reason: format!("type={other:?} is not supported; use type=registry or type=local"),
            }),
        }
    }
}

impl CacheTo {
    /// Parses one `--cache-to` value.
    pub fn parse(value: &str) -> Result<CacheTo, SpecError> {
        const FLAG: &str = "--cache-to";
        let kv = pairs(FLAG, value)?;
        let ty = take_type(FLAG, value, &kv)?;
        let get = |key: &str| kv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let err = |reason: String| SpecError { flag: FLAG, value: value.to_string(), reason };
        let mode = match get("mode") {
            None => CacheMode::Min,
            Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(m) => return Err(err(format!("mode={m:?} must be min or max"))),
        };
        match ty {
            "registry" => {
                const ALLOWED: &[&str] = &["type", "ref", "mode", "ignore-error", "ttl", "max-size"];
                if let Some((k, _)) = kv.iter().find(|(k, _)| !ALLOWED.contains(k)) {
                    return Err(unknown_key(FLAG, value, ty, k, ALLOWED));
                }
                let r = get("ref").filter(|r| !r.is_empty()).ok_or_else(|| err("type=registry needs ref=REF".into()))?;
                let reference = parse_ref(FLAG, value, r)?;
                let ignore_error = match get("ignore-error") {
                    None => true,
                    Some(v) => parse_bool(FLAG, value, "ignore-error", v)?,
                };
                let ttl = match get("ttl") {
                    None => Some(DEFAULT_TTL),
                    Some(v) => {
                        let d = parse_go_duration(v).map_err(|e| err(format!("ttl={v:?}: {e}")))?;
                        (!d.is_zero()).then_some(d)
                    }
                };
                let max_size = match get("max-size") {
                    None => None,
                    Some(v) => Some(parse_size(v).map_err(|e| err(format!("max-size={v:?}: {e}")))?),
                };
                Ok(CacheTo::Registry(RegistryExport { reference, mode, ignore_error, ttl, max_size }))
            }
            "local" => {
                const ALLOWED: &[&str] = &["type", "dest", "mode"];
                if let Some((k, _)) = kv.iter().find(|(k, _)| !ALLOWED.contains(k)) {
                    return Err(unknown_key(FLAG, value, ty, k, ALLOWED));
                }
                let dest = get("dest").filter(|s| !s.is_empty()).ok_or_else(|| err("type=local needs dest=DIR".into()))?;
                Ok(CacheTo::Local { dest: PathBuf::from(dest), mode })
            }
            other => Err(err(format!("type={other:?} is not supported; use type=registry or type=local"))),
        }
    }
}

impl CacheFrom {
    /// Opens the source for a build: reads its records (never its layers). `client` is what
    /// registry sources speak through.
    pub fn open<'c>(&self, client: Option<&'c Client>) -> Opened<Box<dyn CacheSource + 'c>> {
        match self {
            CacheFrom::Registry { reference } => match client {
                Some(client) => RegistryCache::open(client, reference).map(|c| Box::new(c) as Box<dyn CacheSource + 'c>),
                None => Opened::Unusable(format!("cache {reference} not used: the build has no registry client")),
            },
            CacheFrom::Local { src } => DirCache::open(src).map(|c| Box::new(c) as Box<dyn CacheSource + 'c>),
        }
    }
}

impl CacheTo {
    /// The destination, ready to export to. Nothing is read or written until
    /// [`CacheSink::export`].
    pub fn open<'c>(&self, client: Option<&'c Client>) -> Opened<Box<dyn CacheSink + 'c>> {
        match self {
            CacheTo::Registry(target) => match client {
                Some(client) => Opened::Opened(Box::new(RegistrySink::new(client, target.clone()))),
                None => Opened::Unusable(format!("cache export to {} skipped: the build has no registry client", target.reference)),
            },
            CacheTo::Local { dest, mode } => Opened::Opened(Box::new(DirSink::new(dest, *mode))),
        }
    }
}

/// Parses Go's `time.ParseDuration` syntax: a sequence of decimal numbers with units
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `336h`, `1h30m`, `1.5h`. `0` alone is allowed.
/// Negative durations are refused: a TTL cannot be negative.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; use e.g. 336h or 90m".into());
    }
    if s.starts_with('-') {
        return Err("a negative duration makes no sense here".into());
    }
    let rest = s.strip_prefix('+').unwrap_or(s);
    let mut total: f64 = 0.0;
    let mut chars = rest.char_indices().peekable();
    let mut any = false;
    while chars.peek().is_some() {
        let start = chars.peek().map(|(i, _)| *i).unwrap_or(0);
        let mut end = start;
        while let Some((i, c)) = chars.peek().copied() {
            if c.is_ascii_digit() || c == '.' {
                end = i + c.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        let number = &rest[start..end];
        if number.is_empty() || number == "." {
            return Err(format!("{s:?} is not a Go duration (expected a number before each unit, e.g. 1h30m)"));
        }
        let n: f64 = number.parse().map_err(|_| format!("{number:?} is not a number"))?;
        let ustart = end;
        let mut uend = ustart;
        while let Some((i, c)) = chars.peek().copied() {
            if c.is_ascii_digit() || c == '.' {
                break;
            }
            uend = i + c.len_utf8();
            chars.next();
        }
        let unit = &rest[ustart..uend];
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("{s:?}: missing unit after {number} (use ns, us, ms, s, m or h)")),
            u => return Err(format!("{s:?}: unknown unit {u:?} (use ns, us, ms, s, m or h; days are 24h)")),
        };
        total += n * secs;
        any = true;
    }
    if !any || !total.is_finite() || total > 1e12 {
        return Err(format!("{s:?} is not a usable duration"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a byte size: a number with an optional unit. `KB`, `MB`, `GB`, `TB` are powers of 1000
/// and `KiB`, `MiB`, `GiB`, `TiB` powers of 1024 (case does not matter; `B` alone or no unit means
/// bytes; a lone `K`, `M`, `G`, `T` is read as the decimal unit).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("{s:?} is not a size (example: 2GB, 500MiB, 1048576)"));
    }
    let n: f64 = num.parse().map_err(|_| format!("{num:?} is not a number"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("unknown unit {u:?} (use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB)")),
    };
    let v = n * mult;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(v.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("336h"), Ok(Duration::from_secs(336 * 3600)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("2h45m0.5s"), Ok(Duration::from_millis((2 * 3600 + 45 * 60) * 1000 + 500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "14d", "h", "10", "-1h", "1h-", "1..5h", "abc"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_go_duration("14d").unwrap_err().contains("24h"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("2gb"), Ok(2_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("1.5KB"), Ok(1500));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in ["", "GB", "2XB", "1e99TB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn cache_from_forms() {
        let r = CacheFrom::parse("type=registry,ref=127.0.0.1:5000/app:cache").unwrap();
        let CacheFrom::Registry { reference } = r else { panic!("expected registry") };
        assert_eq!(reference.to_string(), "127.0.0.1:5000/app:cache");
        assert_eq!(CacheFrom::parse("type=local,src=/tmp/c").unwrap(), CacheFrom::Local { src: PathBuf::from("/tmp/c") });
        let bare = CacheFrom::parse("ghcr.io/org/app:cache").unwrap();
        assert!(matches!(bare, CacheFrom::Registry { .. }));
        let e = CacheFrom::parse("type=registry").unwrap_err();
        assert!(e.to_string().contains("needs ref=REF"), "{e}");
        let e = CacheFrom::parse("type=gha,scope=x").unwrap_err();
        assert!(e.to_string().contains("type=\"gha\" is not supported"), "{e}");
        let e = CacheFrom::parse("type=registry,ref=a/b:c,mode=max").unwrap_err();
        assert!(e.to_string().contains("unknown option \"mode\""), "{e}");
        let e = CacheFrom::parse("type=registry,ref=a//b:c").unwrap_err();
        assert!(e.to_string().contains("not an image reference"), "{e}");
        assert!(CacheFrom::parse("type=local").is_err());
        assert!(CacheFrom::parse("ref=a/b:c").unwrap_err().to_string().contains("no type="));
    }

    #[test]
    fn cache_to_forms_and_defaults() {
        let CacheTo::Registry(r) = CacheTo::parse("type=registry,ref=127.0.0.1:5000/app:cache").unwrap() else {
            panic!("expected registry")
        };
        assert_eq!(r, RegistryExport::new(r.reference.clone()));
        assert_eq!(r.mode, CacheMode::Min);
        assert!(r.ignore_error);
        assert_eq!(r.ttl, Some(DEFAULT_TTL));
        assert_eq!(r.max_size, None);

        let CacheTo::Registry(r) = CacheTo::parse("type=registry,ref=h:1/a:b,mode=max,ignore-error=false,ttl=24h,max-size=2GB").unwrap()
        else {
            panic!("expected registry")
        };
        assert_eq!(r.mode, CacheMode::Max);
        assert!(!r.ignore_error);
        assert_eq!(r.ttl, Some(Duration::from_secs(86400)));
        assert_eq!(r.max_size, Some(2_000_000_000));

        let CacheTo::Registry(r) = CacheTo::parse("type=registry,ref=h:1/a:b,ttl=0").unwrap() else { panic!("expected registry") };
        assert_eq!(r.ttl, None);

        assert_eq!(
            CacheTo::parse("type=local,dest=/tmp/out,mode=max").unwrap(),
            CacheTo::Local { dest: PathBuf::from("/tmp/out"), mode: CacheMode::Max }
        );

        let cases = [
            ("type=registry,ref=h:1/a:b,mode=all", "mode=\"all\" must be min or max"),
            ("type=registry,ref=h:1/a:b,ignore-error=maybe", "must be true or false"),
            ("type=registry,ref=h:1/a:b,ttl=14d", "ttl=\"14d\""),
            ("type=registry,ref=h:1/a:b,max-size=lots", "max-size=\"lots\""),
            ("type=registry,ref=h:1/a:b,compression=zstd", "unknown option \"compression\""),
            ("type=registry,ref=h:1/a:b,ref=h:1/a:c", "ref is given twice"),
            ("type=registry,mode=max", "needs ref=REF"),
            ("type=local", "needs dest=DIR"),
            ("type=local,dest=/x,ttl=1h", "unknown option \"ttl\""),
            ("type=registry,ref=h:1/a@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "pins a digest"),
            ("type=registry,ref", "is not key=value"),
        ];
        for (input, want) in cases {
            let e = CacheTo::parse(input).unwrap_err().to_string();
            assert!(e.contains(want), "{input}: {e}");
            assert!(e.starts_with("--cache-to"), "{e}");
        }
    }
}
