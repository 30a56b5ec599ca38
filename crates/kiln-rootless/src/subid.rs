//! `/etc/subuid` and `/etc/subgid`: which ranges of host ids a user may map into a user namespace.
//!
//! Each line is `OWNER:START:COUNT`, where OWNER is a user name or a numeric uid (shadow's
//! `newuidmap` accepts both, and so does kiln; both files are keyed by the *user*, never by a group).
//! A user may have several lines; blank lines and `#` comments are skipped, as shadow skips them.
//! A malformed line is an error that names the file and line: a range kiln silently dropped would
//! show up much later as a chown that fails.

use std::path::Path;

use crate::Error;

/// One range of host ids: `count` ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub count: u32,
}

/// The ranges `user` (by name, or by `id`) owns in the file at `path`, in file order. A missing
/// file means no ranges.
pub fn read(path: &Path, user: Option<&str>, id: u32) -> Result<Vec<Range>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, user, id).map_err(|(line, why)| Error::BadSubid { path: path.to_path_buf(), line, why }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Io { what: "read", path: path.to_path_buf(), source: e }),
    }
}

/// Parses the text of a subuid/subgid file; an error carries the 1-based line number.
pub fn parse(text: &str, user: Option<&str>, id: u32) -> Result<Vec<Range>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split(':');
        let (Some(owner), Some(start), Some(count), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err((i + 1, format!("{line:?} is not OWNER:START:COUNT")));
        };
        let num = |s: &str, what: &str| s.parse::<u32>().map_err(|_| (i + 1, format!("{what} {s:?} in {line:?} is not a number")));
        let start = num(start, "start")?;
        let count = num(count, "count")?;
        let mine = Some(owner) == user || owner.parse::<u32>().ok() == Some(id);
        if mine && count > 0 {
            if start.checked_add(count - 1).is_none() {
                return Err((i + 1, format!("{line:?} runs past the largest id")));
            }
            out.push(Range { start, count });
        }
    }
    Ok(out)
}

/// One line of a uid_map/gid_map: `count` ids from `inside` in the namespace are `outside..` on
/// the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The map kiln asks for: the user's own id as 0, then every range, back to back, from 1 (the
/// layout rootless Podman and BuildKit use, so image id N is host id `start + N - 1`). The kernel
/// refuses overlapping host ranges, so the user's own id is cut out of a range that holds it.
pub fn mappings(own: u32, ranges: &[Range]) -> Vec<Mapping> {
    let mut out = vec![Mapping { inside: 0, outside: own, count: 1 }];
    let mut next: u64 = 1;
    let mut push = |start: u32, count: u32, next: &mut u64| {
        if count == 0 || *next > u64::from(u32::MAX) {
            return;
        }
        let room = u64::from(u32::MAX) - *next + 1;
        let count = u64::from(count).min(room) as u32;
        out.push(Mapping { inside: *next as u32, outside: start, count });
        *next += u64::from(count);
    };
    for r in ranges {
        let end = u64::from(r.start) + u64::from(r.count);
        if u64::from(own) >= u64::from(r.start) && u64::from(own) < end {
            push(r.start, own - r.start, &mut next);
            push(own + 1, (end - u64::from(own) - 1) as u32, &mut next);
        } else {
            push(r.start, r.count, &mut next);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
alice:100000:65536

bob:165536:65536
1000:300000:10
alice:400000:0
alice:500000:5
";

    #[test]
    fn names_and_numeric_ids_and_several_ranges() {
        let r = parse(FILE, Some("alice"), 1000).unwrap();
        assert_eq!(r, vec![Range { start: 100000, count: 65536 }, Range { start: 300000, count: 10 }, Range { start: 500000, count: 5 }]);
        assert_eq!(parse(FILE, Some("bob"), 1001).unwrap(), vec![Range { start: 165536, count: 65536 }]);
        assert_eq!(parse(FILE, None, 1000).unwrap(), vec![Range { start: 300000, count: 10 }]);
        assert!(parse(FILE, Some("carol"), 1002).unwrap().is_empty());
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(parse("a:1:2\nalice:x:3\n", Some("alice"), 1).unwrap_err().0, 2);
        assert_eq!(parse("alice:1\n", Some("alice"), 1).unwrap_err().0, 1);
        assert_eq!(parse("alice:1:2:3\n", Some("alice"), 1).unwrap_err().0, 1);
        assert!(parse("alice:4294967295:2\n", Some("alice"), 1).is_err());
    }

    #[test]
    fn a_missing_file_is_no_range() {
        let d = tempfile::tempdir().unwrap();
        assert!(read(&d.path().join("subuid"), Some("alice"), 1000).unwrap().is_empty());
        std::fs::write(d.path().join("subuid"), "alice:5:x\n").unwrap();
        let e = read(&d.path().join("subuid"), Some("alice"), 1000).unwrap_err().to_string();
        assert!(e.contains("subuid:1"), "{e}");
    }

    #[test]
    fn own_id_first_then_ranges_back_to_back() {
        let m = mappings(1000, &[Range { start: 100000, count: 65536 }, Range { start: 300000, count: 10 }]);
        assert_eq!(
            m,
            vec![
                Mapping { inside: 0, outside: 1000, count: 1 },
                Mapping { inside: 1, outside: 100000, count: 65536 },
                Mapping { inside: 65537, outside: 300000, count: 10 },
            ]
        );
        // The user's own id inside a range is cut out of it.
        let m = mappings(10, &[Range { start: 5, count: 10 }]);
        assert_eq!(
            m,
            vec![
                Mapping { inside: 0, outside: 10, count: 1 },
                Mapping { inside: 1, outside: 5, count: 5 },
                Mapping { inside: 6, outside: 11, count: 4 },
            ]
        );
    }
}
