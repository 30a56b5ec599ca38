//! Licence names as databases state them, turned into valid SPDX licence expressions.
//!
//! Databases speak several dialects: SPDX already (apk, npm, `License-Expression`), Debian's DEP-5
//! short names (`GPL-2+`, `Expat`, `BSD-3-clause`), Python trove classifier names (`MIT License`).
//! [`to_spdx`] maps each identifier through a table of known names to its SPDX id; anything it does
//! not know becomes a `LicenseRef-…` (declared in the document's `hasExtractedLicensingInfos`) rather
//! than free text in an expression. Operators `AND`/`OR`/`WITH` (any case) and parentheses are kept
//! when the expression is well formed; otherwise the whole string becomes one `LicenseRef`.

/// SPDX ids by lowercase alias. Only unambiguous names: `BSD` alone or `Artistic` stay refs.
const TABLE: &[(&str, &str)] = &[
    ("0bsd", "0BSD"),
    ("apache-2.0", "Apache-2.0"),
    ("apache-2", "Apache-2.0"),
    ("apache 2.0", "Apache-2.0"),
    ("apache software license", "Apache-2.0"),
    ("apache license 2.0", "Apache-2.0"),
    ("apache-1.1", "Apache-1.1"),
    ("artistic-2.0", "Artistic-2.0"),
    ("artistic-1.0", "Artistic-1.0"),
    ("artistic-1.0-perl", "Artistic-1.0-Perl"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("bsl-1.0", "BSL-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("cc0", "CC0-1.0"),
    ("cc-by-3.0", "CC-BY-3.0"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-3.0", "CC-BY-SA-3.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("mit license", "MIT"),
    ("mit-0", "MIT-0"),
    ("isc", "ISC"),
    ("isc license (iscl)", "ISC"),
    ("zlib", "Zlib"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("mozilla public license 2.0 (mpl 2.0)", "MPL-2.0"),
    ("psf-2.0", "PSF-2.0"),
    ("psf", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("unlicense", "Unlicense"),
    ("the unlicense (unlicense)", "Unlicense"),
    ("wtfpl", "WTFPL"),
    ("x11", "X11"),
    ("curl", "curl"),
    ("openssl", "OpenSSL"),
    ("ofl-1.1", "OFL-1.1"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("blueoak-1.0.0", "BlueOak-1.0.0"),
    ("bzip2-1.0.6", "bzip2-1.0.6"),
    ("zpl-2.1", "ZPL-2.1"),
    ("lgpl", "LicenseRef-LGPL"),
    ("gpl", "LicenseRef-GPL"),
];

/// GNU families: `GPL-2`, `GPL-2+`, `GPL-2.0-only`, `GPL-2.0+`, `GPLv2+`, `LGPL-2.1+` ...
fn gnu(id: &str) -> Option<String> {
    let lower = id.to_ascii_lowercase();
    for family in ["agpl", "lgpl", "gpl"] {
        let Some(rest) = lower.strip_prefix(family) else { continue };
        let rest = rest.trim_start_matches(['-', 'v']);
        let (rest, later) = if let Some(r) = rest.strip_suffix("-or-later") {
            (r, true)
        } else if let Some(r) = rest.strip_suffix("+") {
            (r, true)
        } else if let Some(r) = rest.strip_suffix("-only") {
            (r, false)
        } else {
            (rest, false)
        };
        let version = match rest {
            "2" | "2.0" => "2.0",
            "2.1" => "2.1",
            "3" | "3.0" => "3.0",
            _ => return None,
        };
        let name = family.to_ascii_uppercase();
        let valid =
            matches!((name.as_str(), version), ("GPL", "2.0") | ("GPL", "3.0") | ("LGPL", "2.1") | ("LGPL", "3.0") | ("AGPL", "3.0"))
                || (name == "LGPL" && version == "2.0");
        if !valid {
            return None;
        }
        return Some(format!("{name}-{version}-{}", if later { "or-later" } else { "only" }));
    }
    None
}

/// Exceptions that may follow `WITH`.
const EXCEPTIONS: &[&str] = &[
    "Classpath-exception-2.0",
    "LLVM-exception",
    "GCC-exception-3.1",
    "GCC-exception-2.0",
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "OpenSSL-exception",
    "Font-exception-2.0",
    "Linux-syscall-note",
];

/// A `LicenseRef-` id for a name nothing maps: idstring characters only, bounded length.
pub fn license_ref(name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    let clean = clean.trim_matches('-');
    if clean.len() <= 64 && !clean.is_empty() {
        format!("LicenseRef-{clean}")
    } else {
        format!("LicenseRef-{}-{:016x}", &clean[..clean.len().min(40)].trim_end_matches('-'), crate::spdx::fnv(name.as_bytes()))
    }
}

fn id(token: &str) -> String {
    if let Some(rest) = token.strip_prefix("LicenseRef-") {
        return license_ref(rest);
    }
    let lower = token.to_ascii_lowercase();
    if let Some((_, spdx)) = TABLE.iter().find(|(alias, _)| *alias == lower) {
        return spdx.to_string();
    }
    gnu(token).unwrap_or_else(|| license_ref(token))
}

/// A valid SPDX expression for one licence string; the `LicenseRef-` ids it used are pushed to `refs`
/// with the original string they stand for.
pub fn to_spdx(text: &str, refs: &mut Vec<(String, String)>) -> String {
    let whole = text.trim();
    // Whole-string aliases first (`MIT License`, `Apache Software License`).
    let lower = whole.to_ascii_lowercase();
    if let Some((_, spdx)) = TABLE.iter().find(|(alias, _)| *alias == lower) {
        note(spdx, whole, refs);
        return spdx.to_string();
    }
    if let Some(expr) = expression(whole) {
        for part in expr.split([' ', '(', ')']) {
            if part.starts_with("LicenseRef-") {
                note(part, part.trim_start_matches("LicenseRef-"), refs);
            }
        }
        return expr;
    }
    let r = license_ref(whole);
    note(&r, whole, refs);
    r
}

fn note(id: &str, original: &str, refs: &mut Vec<(String, String)>) {
    if id.starts_with("LicenseRef-") && !refs.iter().any(|(i, _)| i == id) {
        refs.push((id.to_string(), original.to_string()));
    }
}

/// Tokenizes and checks `operand (op operand)*` with balanced parentheses; `None` when malformed.
fn expression(text: &str) -> Option<String> {
    let spaced = text.replace('(', " ( ").replace(')', " ) ").replace(',', " ");
    let mut out: Vec<String> = Vec::new();
    let mut depth = 0i32;
    let mut want_operand = true;
    let mut after_with = false;
    for tok in spaced.split_whitespace() {
        let upper = tok.to_ascii_uppercase();
        match tok {
            "(" if want_operand && !after_with => {
                depth += 1;
                out.push("(".into());
            }
            ")" if !want_operand => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
                out.push(")".into());
            }
            _ if matches!(upper.as_str(), "AND" | "OR" | "WITH") => {
                if want_operand {
                    return None;
                }
                want_operand = true;
                after_with = upper == "WITH";
                out.push(upper);
            }
            _ if want_operand => {
                if after_with {
                    let e = EXCEPTIONS.iter().find(|e| e.eq_ignore_ascii_case(tok))?;
                    out.push(e.to_string());
                } else {
                    out.push(id(tok));
                }
                want_operand = false;
                after_with = false;
            }
            _ => return None,
        }
    }
    if want_operand || depth != 0 {
        return None;
    }
    Some(out.join(" ").replace("( ", "(").replace(" )", ")"))
}

/// The `licenseDeclared` value for a package's licences: `NOASSERTION` when none, else each mapped
/// and joined with `AND` (every stated licence applies to some part of the package).
pub fn declared(licenses: &[String], refs: &mut Vec<(String, String)>) -> String {
    let mut parts: Vec<String> = licenses.iter().map(|l| to_spdx(l, refs)).collect();
    parts.sort();
    parts.dedup();
    match parts.len() {
        0 => "NOASSERTION".into(),
        1 => parts.remove(0),
        _ => parts.iter().map(|p| if p.contains(' ') { format!("({p})") } else { p.clone() }).collect::<Vec<_>>().join(" AND "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_map_to_spdx() {
        let mut refs = Vec::new();
        assert_eq!(to_spdx("GPL-2+", &mut refs), "GPL-2.0-or-later");
        assert_eq!(to_spdx("Expat", &mut refs), "MIT");
        assert_eq!(to_spdx("MIT License", &mut refs), "MIT");
        assert_eq!(to_spdx("(MIT OR Apache-2.0)", &mut refs), "(MIT OR Apache-2.0)");
        assert_eq!(to_spdx("GPL-2+ or Artistic", &mut refs), "GPL-2.0-or-later OR LicenseRef-Artistic");
        assert_eq!(to_spdx("GPL-3+ with Autoconf-exception-3.0", &mut refs), "GPL-3.0-or-later WITH Autoconf-exception-3.0");
        assert_eq!(to_spdx("public-domain", &mut refs), "LicenseRef-public-domain");
        assert_eq!(to_spdx("MIT AND (", &mut refs), "LicenseRef-MIT-AND");
        assert_eq!(
            refs.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
            ["LicenseRef-Artistic", "LicenseRef-public-domain", "LicenseRef-MIT-AND"]
        );
        assert_eq!(
            declared(&["Expat".into(), "GPL-2+ or Artistic".into()], &mut refs),
            "(GPL-2.0-or-later OR LicenseRef-Artistic) AND MIT"
        );
        assert_eq!(declared(&[], &mut refs), "NOASSERTION");
    }
}
