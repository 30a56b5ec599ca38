//! `RUN --mount=…` specifications, read as BuildKit reads them: a CSV list
//! of `key=value` fields (a bare key means `true`), `type` defaulting to
//! `bind`.

use std::fmt;

/// What kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        })
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    /// Where it appears in the container. Secret and ssh mounts get
    /// BuildKit's default when omitted; for the others an empty or relative
    /// target is relative to the working directory (resolution joins it).
    pub target: String,
    /// Path inside `from` (bind, cache) or nothing.
    pub source: Option<String>,
    /// A stage name or index, or an image, for bind and cache mounts.
    pub from: Option<String>,
    pub readonly: bool,
    /// Cache id (defaults to the target), secret id or ssh id.
    pub id: Option<String>,
    /// Cache sharing mode (cache mounts only; `shared` by default).
    pub sharing: Sharing,
    /// Fail the step when the secret or ssh agent is not provided.
    pub required: bool,
    /// File mode (octal) for cache, secret and ssh mounts.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// For a secret: expose it as this environment variable.
    pub env: Option<String>,
}

/// Why a `--mount` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --mount={spec:?}: {reason}")]
pub struct MountError {
    pub spec: String,
    pub reason: String,
}

/// Splits one CSV record as Go's `encoding/csv` does for a single line:
/// `,` separates, a field that starts with `"` is quoted and `""` inside
/// it is a literal quote.
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".to_string()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => {}
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare '\"' in an unquoted field".to_string()),
                    Some(c) => field.push(c),
                }
            }
        }
        out.push(field);
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `go-units.RAMInBytes`: a number with an optional binary unit
/// (`b`, `k`/`kb`/`kib`, `m`, `g`, `t`, `p`; case-insensitive).
fn parse_size(v: &str) -> Option<u64> {
    let lower = v.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        "p" | "pb" | "pib" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

impl Mount {
    /// Parses one `--mount` value. `index` is the mount's position among
    /// the step's ssh mounts' default targets (BuildKit numbers them).
    pub fn parse(spec: &str, ssh_index: usize) -> Result<Mount, MountError> {
        Self::parse_with(spec, ssh_index, &mut |v| Ok(v.to_string()))
    }

    /// Like [`Mount::parse`], but each field's value first goes through
    /// `expand` (BuildKit expands build variables in mount values, not in
    /// keys). Fields are read in order, so `type=` must come before the
    /// keys that depend on it (`required`, `size`), as in BuildKit.
    pub fn parse_with(spec: &str, ssh_index: usize, expand: &mut dyn FnMut(&str) -> Result<String, String>) -> Result<Mount, MountError> {
        let err = |reason: String| MountError { spec: spec.to_string(), reason };
        let fields = csv_fields(spec).map_err(err)?;
        let mut m = Mount {
            kind: MountType::Bind,
            target: String::new(),
            source: None,
            from: None,
            readonly: true,
            id: None,
            sharing: Sharing::Shared,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
        };
        let mut ro_auto = true;
        let mut sharing_set = false;
        for field in &fields {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(expand(v).map_err(err)?)),
                None => (field.to_ascii_lowercase(), None),
            };
            let kind = m.kind;
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => m.readonly = true,
                    "readwrite" | "rw" => m.readonly = false,
                    "required" if matches!(kind, MountType::Secret | MountType::Ssh) => m.required = true,
                    "required" => return Err(err(format!("unexpected key 'required' for mount type '{kind}'"))),
                    _ => return Err(err(format!("invalid field '{field}' must be a key=value pair"))),
                }
                if key != "required" {
                    ro_auto = false;
                }
                continue;
            };
            let boolean = |v: &str| parse_bool(v).ok_or_else(|| err(format!("invalid value for {key}: {v}")));
            let number = |v: &str, radix: u32| u32::from_str_radix(v, radix).map_err(|_| err(format!("invalid value {v} for {key}")));
            match key.as_str() {
                "type" => {
                    m.kind = match value.to_ascii_lowercase().as_str() {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => return Err(err(format!("unsupported mount type {value:?}: expected bind, cache, tmpfs, secret or ssh"))),
                    }
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = value,
                "readonly" | "ro" => {
                    m.readonly = boolean(&value)?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = !boolean(&value)?;
                    ro_auto = false;
                }
                "required" if matches!(kind, MountType::Secret | MountType::Ssh) => m.required = boolean(&value)?,
                "size" if kind == MountType::Tmpfs => {
                    m.size = Some(parse_size(&value).ok_or_else(|| err(format!("invalid value for size: {value}")))?)
                }
                "required" | "size" => return Err(err(format!("unexpected key '{key}' for mount type '{kind}'"))),
                "id" => m.id = Some(value),
                "env" => m.env = Some(value),
                "sharing" => {
                    sharing_set = true;
                    m.sharing = match value.to_ascii_lowercase().as_str() {
                        "shared" => Sharing::Shared,
                        "private" => Sharing::Private,
                        "locked" => Sharing::Locked,
                        _ => return Err(err(format!("unsupported sharing value {value:?}: expected shared, private or locked"))),
                    }
                }
                "mode" => m.mode = Some(number(&value, 8)?),
                "uid" => m.uid = Some(number(&value, 10)?),
                "gid" => m.gid = Some(number(&value, 10)?),
                _ => return Err(err(format!("unexpected key '{key}' in '{field}'"))),
            }
        }
        let kind = m.kind;
        if !matches!(kind, MountType::Secret | MountType::Ssh | MountType::Cache) {
            for (name, set) in [("mode", m.mode.is_some()), ("uid", m.uid.is_some()), ("gid", m.gid.is_some())] {
                if set {
                    return Err(err(format!("{name} not allowed for \"{kind}\" type mounts")));
                }
            }
        }
        if ro_auto {
            m.readonly = !matches!(kind, MountType::Cache | MountType::Tmpfs);
        }
        if sharing_set && kind != MountType::Cache {
            return Err(err(format!("invalid cache sharing set for {kind} mount")));
        }
        match kind {
            MountType::Secret => {
                if m.from.is_some() {
                    return Err(err("secret mount should not have a from".to_string()));
                }
                // BuildKit: the id is needed even with `env=` (it is what `--secret id=` names).
                if m.source.is_none() && m.target.is_empty() && m.id.is_none() {
                    return Err(err("invalid secret mount. one of source, target required".to_string()));
                }
                if m.source.is_some() && m.id.is_some() {
                    return Err(err("both source and id can't be set".to_string()));
                }
                // BuildKit's dispatch: the id is source, else id, else the
                // target's base name; the target defaults under /run/secrets.
                if let Some(src) = m.source.take() {
                    m.id = Some(src);
                }
                if m.id.is_none() {
                    m.id = m.target.rsplit('/').next().map(str::to_string);
                }
                if m.target.is_empty() && m.env.is_none() {
                    let id = m.id.as_deref().unwrap_or_default();
                    m.target = format!("/run/secrets/{}", id.rsplit('/').next().unwrap_or(id));
                }
            }
            MountType::Ssh if m.target.is_empty() => m.target = format!("/run/buildkit/ssh_agent.{ssh_index}"),
            MountType::Cache if m.id.is_none() => m.id = Some(m.target.clone()),
            _ => {}
        }
        Ok(m)
    }

    /// What BuildKit checks before expansion: a `from=` value cannot use
    /// variables ("define alias stage instead").
    pub fn check_unexpanded(spec: &str) -> Result<(), MountError> {
        let err = |reason: String| MountError { spec: spec.to_string(), reason };
        for field in csv_fields(spec).map_err(err)? {
            if let Some((k, v)) = field.split_once('=') {
                let dollar = v.find('$').is_some_and(|i| v.len() > i + 1);
                if k.eq_ignore_ascii_case("from") && dollar {
                    return Err(err("'from' doesn't support variable expansion, define alias stage instead".to_string()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes() {
        assert_eq!(csv_fields(r#"a,"b,c",d"#).unwrap(), ["a", "b,c", "d"]);
        assert_eq!(csv_fields(r#""x""y""#).unwrap(), [r#"x"y"#]);
        assert!(csv_fields(r#""open"#).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1kb"), Some(1024));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
    }
}
