//! `--cache-from` / `--cache-to` values, and the Go-style durations and byte sizes inside them.
//!
//! The syntax follows `docker buildx build`: comma-separated `key=value` pairs, `type=` first by
//! convention (but accepted anywhere). Unknown keys are errors rather than silently ignored, because a
//! mistyped `mdoe=max` that quietly exports `min` is a cache that never warms.
//!
//! This module splits a value into [`Options`] and hands them to the [`Backend`] its `type=` names,
//! from the one list [`BACKENDS`]; each backend's own options, and how it opens, live in its module.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kiln_registry::Client;

use crate::backend::{Backend, CacheSink, CacheSource, Opened, SinkSpec, SourceSpec};

/// Every cache backend `--cache-from`/`--cache-to` accept, by the `type=` each answers to. A new
/// backend is its module and one line here.
pub const BACKENDS: &[&dyn Backend] =
    &[&crate::registry::RegistryBackend, &crate::dir::DirBackend, &crate::inline::InlineBackend, &crate::gha::GhaBackend];

/// A value without `=` is buildx's shorthand for a registry cache source: `type=registry,ref=VALUE`.
const BARE_REFERENCE_TYPE: &str = "registry";

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

/// One `--cache-from` source: the spec its backend parsed, opened when the build starts.
#[derive(Debug, Clone)]
pub struct CacheFrom {
    spec: Arc<dyn SourceSpec>,
}

/// One `--cache-to` destination: the spec its backend parsed, opened when the build exports.
#[derive(Debug, Clone)]
pub struct CacheTo {
    spec: Arc<dyn SinkSpec>,
}

impl<T: SourceSpec> From<T> for CacheFrom {
    fn from(spec: T) -> CacheFrom {
        CacheFrom { spec: Arc::new(spec) }
    }
}

impl<T: SinkSpec> From<T> for CacheTo {
    fn from(spec: T) -> CacheTo {
        CacheTo { spec: Arc::new(spec) }
    }
}

/// The `key=value` pairs of one `--cache-from`/`--cache-to` value, for its [`Backend`] to read.
/// Every error it makes quotes the flag and the whole value.
#[derive(Debug)]
pub struct Options<'a> {
    flag: &'static str,
    value: &'a str,
    ty: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Options<'a> {
    /// Splits `value` into pairs and finds its `type=`: no `type=`, a part that is not
    /// `key=value`, or a key given twice is an error.
    fn parse(flag: &'static str, value: &'a str) -> Result<Options<'a>, SpecError> {
        let mut options = Options { flag, value, ty: "", pairs: Vec::new() };
        for part in value.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((k, v)) = part.split_once('=') else {
                return Err(options.error(format!("{part:?} is not key=value (example: type=registry,ref=ghcr.io/org/app:cache)")));
            };
            let k = k.trim();
            if options.pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(options.error(format!("{k} is given twice")));
            }
            options.pairs.push((k, v.trim()));
        }
        match options.get("type") {
            Some(ty) => options.ty = ty,
            None => {
                let usages: Vec<String> = BACKENDS.iter().map(|b| b.usage().to_string()).collect();
                return Err(options.error(format!("no type= given; use {}", or_list(&usages))));
            }
        }
        Ok(options)
    }

    /// The flag the value was given to (`--cache-from`, `--cache-to`).
    pub fn flag(&self) -> &'static str {
        self.flag
    }

    /// The value of `key`, if given (possibly empty).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// Refuses the first key that is neither `type` nor in `accepted`, naming what is accepted.
    pub fn accept(&self, accepted: &[&str]) -> Result<(), SpecError> {
        match self.pairs.iter().find(|(k, _)| *k != "type" && !accepted.contains(k)) {
            Some((key, _)) => {
                Err(self.error(format!("unknown option {key:?} for type={}; accepted: type, {}", self.ty, accepted.join(", "))))
            }
            None => Ok(()),
        }
    }

    /// The value of a key the backend cannot do without (an empty value counts as missing);
    /// `placeholder` (`REF`, `DIR`) says what it takes.
    pub fn require(&self, key: &str, placeholder: &str) -> Result<&'a str, SpecError> {
        self.get(key).filter(|v| !v.is_empty()).ok_or_else(|| self.error(format!("type={} needs {key}={placeholder}", self.ty)))
    }

    /// A `true`/`false` (or `1`/`0`) option; `default` when it is not given.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, SpecError> {
        let Some(v) = self.get(key) else { return Ok(default) };
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(self.error(format!("{key}={v:?} must be true or false"))),
        }
    }

    /// An error about this value: the flag and the value, then `reason`.
    pub fn error(&self, reason: impl Into<String>) -> SpecError {
        SpecError { flag: self.flag, value: self.value.to_string(), reason: reason.into() }
    }

    /// The backend this value's `type=` names; an unknown one is refused with the accepted types.
    fn backend(&self) -> Result<&'static dyn Backend, SpecError> {
        BACKENDS.iter().copied().find(|b| b.name() == self.ty).ok_or_else(|| {
            let types: Vec<String> = BACKENDS.iter().map(|b| format!("type={}", b.name())).collect();
            self.error(format!("type={:?} is not supported; use {}", self.ty, or_list(&types)))
        })
    }
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

impl CacheFrom {
    /// Parses one `--cache-from` value. A bare reference (no `=`) means `type=registry,ref=…`.
    pub fn parse(value: &str) -> Result<CacheFrom, SpecError> {
        const FLAG: &str = "--cache-from";
        // buildx accepts a bare reference as shorthand for a registry cache source.
        let options = if !value.contains('=') && !value.trim().is_empty() {
            Options { flag: FLAG, value, ty: BARE_REFERENCE_TYPE, pairs: vec![("type", BARE_REFERENCE_TYPE), ("ref", value.trim())] }
        } else {
            Options::parse(FLAG, value)?
        };
        options.backend()?.source(&options)
    }

    /// Opens the source for a build: reads its records (never its layers). `client` is what
    /// registry sources speak through.
    pub fn open<'c>(&self, client: Option<&'c Client>) -> Opened<Box<dyn CacheSource + 'c>> {
        self.spec.open(client)
    }

    /// The backend's typed spec, when it is a `T` (e.g. [`crate::RegistryImport`]).
    pub fn get<T: SourceSpec>(&self) -> Option<&T> {
        let spec: &dyn std::any::Any = self.spec.as_ref();
        spec.downcast_ref()
    }
}

impl CacheTo {
    /// Parses one `--cache-to` value.
    pub fn parse(value: &str) -> Result<CacheTo, SpecError> {
        let options = Options::parse("--cache-to", value)?;
        // Every sink takes mode=; it is read before the type is looked up, as it always was.
        let mode = match options.get("mode") {
            None | Some("min") => CacheMode::Min,
            Some("max") => CacheMode::Max,
            Some(m) => return Err(options.error(format!("mode={m:?} must be min or max"))),
        };
        options.backend()?.sink(&options, mode)
    }

    /// The destination, ready to export to. Nothing is read or written until
    /// [`CacheSink::export`].
    pub fn open<'c>(&self, client: Option<&'c Client>) -> Opened<Box<dyn CacheSink + 'c>> {
        self.spec.open(client)
    }

    /// The backend's typed spec, when it is a `T` (e.g. [`crate::RegistryExport`]).
    pub fn get<T: SinkSpec>(&self) -> Option<&T> {
        let spec: &dyn std::any::Any = self.spec.as_ref();
        spec.downcast_ref()
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
    use std::path::PathBuf;

    use super::*;
    use crate::dir::{DirExport, DirImport};
    use crate::registry::{RegistryExport, RegistryImport, DEFAULT_TTL};

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
        let RegistryImport { reference } = r.get::<RegistryImport>().expect("a registry source");
        assert_eq!(reference.to_string(), "127.0.0.1:5000/app:cache");
        assert!(r.get::<DirImport>().is_none(), "a registry source is not a directory");
        assert_eq!(
            CacheFrom::parse("type=local,src=/tmp/c").unwrap().get::<DirImport>(),
            Some(&DirImport { src: PathBuf::from("/tmp/c") })
        );
        let bare = CacheFrom::parse("ghcr.io/org/app:cache").unwrap();
        assert_eq!(bare.get::<RegistryImport>().map(|r| r.reference.to_string()).as_deref(), Some("ghcr.io/org/app:cache"));
        let e = CacheFrom::parse("type=registry").unwrap_err();
        assert!(e.to_string().contains("needs ref=REF"), "{e}");
        let e = CacheFrom::parse("type=s3,bucket=x").unwrap_err();
        assert!(e.to_string().contains("type=\"s3\" is not supported"), "{e}");
        let e = CacheFrom::parse("type=registry,ref=a/b:c,mode=max").unwrap_err();
        assert!(e.to_string().contains("unknown option \"mode\""), "{e}");
        let e = CacheFrom::parse("type=registry,ref=a//b:c").unwrap_err();
        assert!(e.to_string().contains("not an image reference"), "{e}");
        assert!(CacheFrom::parse("type=local").is_err());
        assert!(CacheFrom::parse("ref=a/b:c").unwrap_err().to_string().contains("no type="));
        // A digest pins a cache-from ref well enough: only an export has to move it.
        let pinned = "type=registry,ref=h:1/a@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(CacheFrom::parse(pinned).is_ok());
    }

    /// The messages users see, byte for byte (the backends moved to their modules; the words did not).
    #[test]
    fn messages_read_as_before() {
        let from = |v: &str| CacheFrom::parse(v).unwrap_err().to_string();
        let to = |v: &str| CacheTo::parse(v).unwrap_err().to_string();
        let cases = [
            (
                from("type=s3,bucket=x"),
                r#"--cache-from "type=s3,bucket=x": type="s3" is not supported; use type=registry, type=local, type=inline or type=gha"#,
            ),
            (to("type=s3"), r#"--cache-to "type=s3": type="s3" is not supported; use type=registry, type=local, type=inline or type=gha"#),
            (
                from("ref=a/b:c"),
                r#"--cache-from "ref=a/b:c": no type= given; use type=registry,ref=REF, type=local,…, type=inline or type=gha[,scope=S]"#,
            ),
            (
                to("mode=max"),
                r#"--cache-to "mode=max": no type= given; use type=registry,ref=REF, type=local,…, type=inline or type=gha[,scope=S]"#,
            ),
            (from("type=registry"), r#"--cache-from "type=registry": type=registry needs ref=REF"#),
            (from("type=local,src="), r#"--cache-from "type=local,src=": type=local needs src=DIR"#),
            (to("type=local"), r#"--cache-to "type=local": type=local needs dest=DIR"#),
            (
                from("type=registry,ref=a/b:c,mode=max"),
                r#"--cache-from "type=registry,ref=a/b:c,mode=max": unknown option "mode" for type=registry; accepted: type, ref"#,
            ),
            (
                from("type=local,src=/c,dest=/d"),
                r#"--cache-from "type=local,src=/c,dest=/d": unknown option "dest" for type=local; accepted: type, src"#,
            ),
            (
                to("type=registry,ref=h:1/a:b,compression=zstd"),
                r#"--cache-to "type=registry,ref=h:1/a:b,compression=zstd": unknown option "compression" for type=registry; accepted: type, ref, mode, ignore-error, ttl, max-size"#,
            ),
            (
                to("type=local,dest=/x,ttl=1h"),
                r#"--cache-to "type=local,dest=/x,ttl=1h": unknown option "ttl" for type=local; accepted: type, dest, mode"#,
            ),
            (to("type=gha,mode=all"), r#"--cache-to "type=gha,mode=all": mode="all" must be min or max"#),
            (
                to("type=registry,ref=h:1/a:b,ignore-error=maybe"),
                r#"--cache-to "type=registry,ref=h:1/a:b,ignore-error=maybe": ignore-error="maybe" must be true or false"#,
            ),
            (from("type=local,type=registry"), r#"--cache-from "type=local,type=registry": type is given twice"#),
            (
                from("type=registry,ref"),
                r#"--cache-from "type=registry,ref": "ref" is not key=value (example: type=registry,ref=ghcr.io/org/app:cache)"#,
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        let bad = CacheFrom::parse(" a//b ").unwrap_err().to_string();
        assert!(bad.starts_with(r#"--cache-from " a//b ": ref="a//b" is not an image reference: "#), "{bad}");
    }

    #[test]
    fn the_backend_list_names_each_type_once_and_every_type_parses() {
        let names: Vec<&str> = BACKENDS.iter().map(|b| b.name()).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let unknown = CacheTo::parse("type=nope").unwrap_err().to_string();
        let no_type = CacheFrom::parse("x=y").unwrap_err().to_string();
        for b in BACKENDS {
            assert!(unknown.contains(&format!("type={}", b.name())), "{unknown}");
            assert!(no_type.contains(b.usage()), "{no_type}");
            // Each backend reads its own options: a key no backend takes is refused by name.
            let e = CacheTo::parse(&format!("type={},bogus=1", b.name())).unwrap_err().to_string();
            assert!(e.contains(&format!("unknown option \"bogus\" for type={}; accepted: type, ", b.name())), "{e}");
            let e = CacheFrom::parse(&format!("type={},bogus=1", b.name())).unwrap_err().to_string();
            assert!(e.contains("unknown option \"bogus\""), "{e}");
        }
        assert_eq!(or_list(&["a".into()]), "a");
        assert_eq!(or_list(&["a".into(), "b".into()]), "a or b");
        assert_eq!(or_list(&["a".into(), "b".into(), "c".into()]), "a, b or c");
    }

    #[test]
    fn cache_to_forms_and_defaults() {
        let to = CacheTo::parse("type=registry,ref=127.0.0.1:5000/app:cache").unwrap();
        let r = to.get::<RegistryExport>().expect("a registry sink");
        assert_eq!(r, &RegistryExport::new(r.reference.clone()));
        assert_eq!(r.mode, CacheMode::Min);
        assert!(r.ignore_error);
        assert_eq!(r.ttl, Some(DEFAULT_TTL));
        assert_eq!(r.max_size, None);

        let to = CacheTo::parse("type=registry,ref=h:1/a:b,mode=max,ignore-error=false,ttl=24h,max-size=2GB").unwrap();
        let r = to.get::<RegistryExport>().expect("a registry sink");
        assert_eq!(r.mode, CacheMode::Max);
        assert!(!r.ignore_error);
        assert_eq!(r.ttl, Some(Duration::from_secs(86400)));
        assert_eq!(r.max_size, Some(2_000_000_000));

        let to = CacheTo::parse("type=registry,ref=h:1/a:b,ttl=0").unwrap();
        assert_eq!(to.get::<RegistryExport>().map(|r| r.ttl), Some(None));
        assert!(to.get::<DirExport>().is_none());

        assert_eq!(
            CacheTo::parse("type=local,dest=/tmp/out,mode=max").unwrap().get::<DirExport>(),
            Some(&DirExport { dest: PathBuf::from("/tmp/out"), mode: CacheMode::Max })
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
