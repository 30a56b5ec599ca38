//! Timestamps as GitHub writes them (RFC 3339), held as whole seconds since the Unix epoch.
//!
//! A hand-rolled parser keeps the crate free of a date library: the API only ever emits
//! `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`, and the analysis needs nothing finer than a second.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parse `YYYY-MM-DD`, or an RFC 3339 date-time with `Z` or a numeric offset.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.trim().as_bytes();
        if b.len() < 10 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(r)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(part).ok()?.parse().ok()
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if b[4] != b'-' || b[7] != b'-' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        if b.len() == 10 {
            return Some(Timestamp(days * 86_400));
        }
        if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
        let offset = match b.get(i) {
            Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
                let oh = num(i + 1..i + 3)?;
                let om = num(i + 4..i + 6)?;
                let o = oh * 3600 + om * 60;
                if sign == b'-' {
                    -o
                } else {
                    o
                }
            }
            _ => return None,
        };
        Some(Timestamp(days * 86_400 + h * 3600 + mi * 60 + sec - offset))
    }

    /// The current time from the system clock.
    pub fn now() -> Timestamp {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Timestamp(secs)
    }

    /// `YYYY-MM-DD`, used in the query GitHub's `created` filter understands.
    pub fn date(self) -> String {
        let (y, m, d) = civil_from_days(self.0.div_euclid(86_400));
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// `--since`: a date (`2024-05-01`), an RFC 3339 time, or an age before `now` (`30d`, `12h`, `2w`).
pub fn parse_since(s: &str, now: Timestamp) -> Option<Timestamp> {
    let s = s.trim();
    if let Some(t) = Timestamp::parse(s) {
        return Some(t);
    }
    let unit = match s.chars().last()? {
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    let n: i64 = s[..s.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    Some(Timestamp(now.0 - n.checked_mul(unit)?))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.rem_euclid(86_400);
        write!(f, "{}T{:02}:{:02}:{:02}Z", self.date(), secs / 3600, secs % 3600 / 60, secs % 60)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 timestamp (expected e.g. 2024-05-01T12:00:00Z)")))
    }
}

// Howard Hinnant's algorithms: exact for the proleptic Gregorian calendar, no tables.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_forms_and_round_trips() {
        let t = Timestamp::parse("2026-09-11T15:33:32Z").unwrap();
        assert_eq!(t.to_string(), "2026-09-11T15:33:32Z");
        // Same instant written with an offset and milliseconds, as Octokit re-serialises it.
        let o = Timestamp::parse("2026-09-12T00:33:32.000+09:00").unwrap();
        assert_eq!(o, t);
        assert_eq!(Timestamp::parse("1970-01-01").unwrap(), Timestamp(0));
        assert_eq!(Timestamp::parse("2000-03-01T00:00:00Z").unwrap().date(), "2000-03-01");
    }

    #[test]
    fn since_accepts_dates_and_ages() {
        let now = Timestamp::parse("2026-01-31T00:00:00Z").unwrap();
        assert_eq!(parse_since("30d", now).unwrap().date(), "2026-01-01");
        assert_eq!(parse_since("2025-12-01", now).unwrap().date(), "2025-12-01");
        assert_eq!(parse_since("24h", now).unwrap().date(), "2026-01-30");
        assert!(parse_since("soon", now).is_none());
        assert!(parse_since("-3d", now).is_none());
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "2024", "2024-13-01", "2024-01-01T25:00:00Z", "2024-01-01T10:00:00", "yesterday"] {
            assert!(Timestamp::parse(s).is_none(), "{s}");
        }
    }
}
