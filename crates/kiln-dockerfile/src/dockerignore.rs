//! `.dockerignore` reading and matching, with Docker's rules (those of
//! moby/patternmatcher and the dockerignore reader), not gitignore's.
//!
//! Reading ([`read_patterns`]): a line that *starts* with `#` is a comment;
//! other lines are trimmed, blank ones skipped; a leading `!` marks an
//! exception; the rest is cleaned like Go's `filepath.Clean` (`a/./b/../c`
//! → `a/c`, trailing `/` dropped) and a leading `/` is removed, so every
//! pattern is anchored at the context root.
//!
//! Matching ([`Matcher`]): `*` and `?` never cross `/`, `**` crosses any
//! number of directories (`**/x` also matches `x` at the root), `[…]` is a
//! character class, `\` escapes. A pattern that matches a parent directory
//! matches everything below it. Patterns are applied in order and the last
//! one that matches decides, so `!keep.txt` after `*.txt` takes it back.
//! Unlike gitignore, a plain name such as `foo` only matches at the root.
//!
//! For walking a context, [`Matcher::matches_with_parent`] reuses the
//! parent directory's results, and [`Matcher::can_skip_dir`] says whether an
//! excluded directory can be skipped whole because no later `!` exception
//! could take back anything inside it.

use crate::shell::nfa::{Class, ClassItem, Nfa, PerlClass, Piece, Pred};

/// A `.dockerignore` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("{} bad pattern {pattern:?}: {reason}; fix the pattern or escape the character with '\\'", line_prefix(*.line))]
    BadPattern { line: Option<usize>, pattern: String, reason: String },
    #[error("{} illegal exclusion pattern \"!\": write the path to keep after the '!'", line_prefix(*.line))]
    LoneExclamation { line: Option<usize> },
}

fn line_prefix(line: Option<usize>) -> String {
    match line {
        Some(n) => format!(".dockerignore:{n}:"),
        None => ".dockerignore:".to_string(),
    }
}

/// Reads a `.dockerignore` file into cleaned patterns, as Docker's
/// `ReadAll` does. Returns each pattern with its 1-based line number.
pub fn read_patterns(contents: &str) -> Vec<(usize, String)> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut out = Vec::new();
    for (i, line) in contents.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut p = String::new();
        if !pattern.is_empty() {
            p = clean(pattern);
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
        }
        if invert {
            p.insert(0, '!');
        }
        out.push((i + 1, p));
    }
    out
}

/// Go's `path.Clean`: the shortest equivalent path, purely lexically.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    /// `dir/**` and `abc**`: a plain prefix (the pattern minus `**`).
    Prefix,
    /// `**/name` and `**name`: a plain suffix (the pattern minus `**`).
    Suffix,
    Glob,
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    exclusion: bool,
    kind: Kind,
    nfa: Nfa,
}

impl Pattern {
    /// The cleaned pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is a `!` exception.
    pub fn is_exception(&self) -> bool {
        self.exclusion
    }

    /// Whether the pattern itself (no parent logic) matches `path`.
    pub fn matches(&self, path: &str) -> bool {
        match self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix => path.starts_with(&self.text[..self.text.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.text[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Glob => self.nfa.is_full_match(&path.chars().collect::<Vec<_>>()),
        }
    }

    /// Whether the pattern matches `path` or one of its parent directories.
    fn matches_or_parent(&self, path: &str) -> bool {
        self.matches(path) || parents(path).iter().any(|p| self.matches(p))
    }

    /// Whether some path strictly inside `dir` could match this pattern by
    /// itself (not through a parent).
    fn could_match_inside(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        match self.kind {
            Kind::Exact => self.text.starts_with(&dir_slash),
            Kind::Prefix => {
                let prefix = &self.text[..self.text.len() - 2];
                prefix.starts_with(&dir_slash) || dir_slash.starts_with(prefix)
            }
            Kind::Suffix => true,
            Kind::Glob => self.nfa.alive_after(&dir_slash.chars().collect::<Vec<_>>()),
        }
    }
}

/// The parent directories of a relative slash path, outermost first
/// (`a/b/c` → `a`, `a/b`), as moby derives them with `filepath.Dir` and a
/// split on `/`.
fn parents(path: &str) -> Vec<String> {
    let parent = match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => return Vec::new(),
    };
    if parent == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = parent.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

/// What a walker keeps for a directory so its children are matched
/// without re-checking the parents (moby's `MatchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of patterns.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Matcher {
    /// Compiles patterns as moby's `patternmatcher.New` does: each is
    /// trimmed and cleaned, blanks are skipped, a bad one is an error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, IgnoreError> {
        Self::build(patterns.iter().map(|p| (None, p.as_ref())))
    }

    /// Reads and compiles the contents of a `.dockerignore` file; errors
    /// name the line.
    pub fn from_dockerignore(contents: &str) -> Result<Matcher, IgnoreError> {
        let lines = read_patterns(contents);
        Self::build(lines.iter().map(|(n, p)| (Some(*n), p.as_str())))
    }

    fn build<'a>(items: impl Iterator<Item = (Option<usize>, &'a str)>) -> Result<Matcher, IgnoreError> {
        let mut m = Matcher::default();
        for (line, raw) in items {
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(IgnoreError::LoneExclamation { line });
                }
                p.remove(0);
                m.exclusions = true;
            }
            let bad = |reason: String| IgnoreError::BadPattern { line, pattern: raw.to_string(), reason };
            validate(&p).map_err(|r| bad(r.to_string()))?;
            let (kind, pieces) = compile(&p).map_err(bad)?;
            m.patterns.push(Pattern { nfa: Nfa::new(&pieces), text: p, exclusion, kind });
        }
        Ok(m)
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.exclusions
    }

    /// Whether `path` (relative, slash-separated, already clean) is
    /// excluded: the last pattern that matches it or a parent decides
    /// (moby's `MatchesOrParentMatches`).
    pub fn matches(&self, path: &str) -> bool {
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            if p.matches_or_parent(path) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Like [`Matcher::matches`], but cleans `path` first and never
    /// excludes the context root itself.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let path = path.strip_prefix('/').unwrap_or(&path);
        if path.is_empty() || path == "." {
            return false;
        }
        self.matches(path)
    }

    /// Matching during a walk: `parent` is what this returned for the
    /// directory that holds `path` (or the default for a top-level entry).
    /// A pattern that matched the parent matches the child without being
    /// evaluated (moby's `MatchesUsingParentResults`).
    pub fn matches_with_parent(&self, path: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        let known = parent.parent_matched.len() == self.patterns.len();
        let mut info = MatchInfo { parent_matched: vec![false; self.patterns.len()] };
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = known && parent.parent_matched.get(i).copied().unwrap_or(false);
            if !m {
                if p.exclusion != matched {
                    continue;
                }
                m = if known { p.matches(path) } else { p.matches_or_parent(path) };
            }
            if let Some(slot) = info.parent_matched.get_mut(i) {
                *slot = m;
            }
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }

    /// Whether a walker may skip directory `dir` entirely: everything
    /// inside is excluded and no later `!` exception could take any of it
    /// back. A `false` answer only means "walk it and match each entry".
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        // The last plain pattern that covers the whole subtree: it matches
        // the directory (so every entry below via the parent rule), or it
        // is a `dir/**`-style prefix that every entry below starts with.
        let dir_slash = format!("{dir}/");
        let cover = self.patterns.iter().rposition(|p| {
            !p.exclusion && (p.matches_or_parent(dir) || (p.kind == Kind::Prefix && dir_slash.starts_with(&p.text[..p.text.len() - 2])))
        });
        let Some(cover) = cover else { return false };
        // Exceptions before the cover are overridden by it; only later ones
        // can take something back.
        !self.patterns.iter().skip(cover + 1).any(|p| p.exclusion && (p.matches_or_parent(dir) || p.could_match_inside(dir)))
    }
}

/// The syntax check of Go's `filepath.Match`, which moby runs on every
/// pattern: classes must be closed and non-empty, ranges complete, and a
/// `\` must escape something.
fn validate(p: &str) -> Result<(), &'static str> {
    let c: Vec<char> = p.chars().collect();
    let mut i = 0;
    let get_esc = |i: &mut usize| -> Result<(), &'static str> {
        match c.get(*i) {
            None => return Err("unterminated character class '['"),
            Some('-' | ']') => return Err("'-' or ']' out of place in a character class"),
            Some('\\') => {
                *i += 1;
                if *i >= c.len() {
                    return Err("unterminated character class '['");
                }
            }
            Some(_) => {}
        }
        *i += 1;
        if *i >= c.len() {
            return Err("unterminated character class '['");
        }
        Ok(())
    };
    while i < c.len() {
        match c[i] {
            '[' => {
                i += 1;
                if c.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut nrange = 0;
                loop {
                    if c.get(i) == Some(&']') && nrange > 0 {
                        i += 1;
                        break;
                    }
                    get_esc(&mut i)?;
                    if c.get(i) == Some(&'-') {
                        i += 1;
                        get_esc(&mut i)?;
                    }
                    nrange += 1;
                }
            }
            '\\' => {
                i += 1;
                if i >= c.len() {
                    return Err("trailing '\\' escapes nothing");
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Go regexp's meaning of `\c` for a character `c` that moby passes
/// through after a backslash.
fn escape_item(c: char) -> Result<ClassItem, String> {
    let lit = |x: char| Ok(ClassItem::Range(x, x));
    match c {
        'd' => Ok(ClassItem::Perl(PerlClass::Digit, false)),
        'D' => Ok(ClassItem::Perl(PerlClass::Digit, true)),
        's' => Ok(ClassItem::Perl(PerlClass::Space, false)),
        'S' => Ok(ClassItem::Perl(PerlClass::Space, true)),
        'w' => Ok(ClassItem::Perl(PerlClass::Word, false)),
        'W' => Ok(ClassItem::Perl(PerlClass::Word, true)),
        't' => lit('\t'),
        'n' => lit('\n'),
        'r' => lit('\r'),
        'f' => lit('\x0c'),
        'v' => lit('\x0b'),
        'a' => lit('\x07'),
        c if c.is_ascii_punctuation() => lit(c),
        c => Err(format!("unsupported escape '\\{c}'")),
    }
}

fn item_pred(item: ClassItem) -> Pred {
    match item {
        ClassItem::Range(a, b) if a == b => Pred::Char(a),
        item => Pred::Class(Class { negated: false, items: vec![item] }),
    }
}

/// Translates a cleaned pattern the way moby builds its regular
/// expression, and classifies it exactly as moby does, since the exact,
/// prefix and suffix kinds do not behave like their regex would.
fn compile(p: &str) -> Result<(Kind, Vec<Piece>), String> {
    let mut kind = Kind::Exact;
    let mut pieces = Vec::new();
    let mut it = p.chars().peekable();
    let mut i = 0;
    while let Some(ch) = it.next() {
        match ch {
            '*' if it.peek() == Some(&'*') => {
                it.next();
                if it.peek() == Some(&'/') {
                    it.next();
                }
                if it.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        pieces.push(Piece::Star(Pred::AnyBut('\n')));
                        kind = Kind::Glob;
                    }
                } else {
                    pieces.push(Piece::AnyDirs);
                    kind = Kind::Glob;
                }
                if i == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                pieces.push(Piece::Star(Pred::AnyBut('/')));
                kind = Kind::Glob;
            }
            '?' => {
                pieces.push(Piece::One(Pred::AnyBut('/')));
                kind = Kind::Glob;
            }
            '\\' => match it.next() {
                Some(c) => {
                    pieces.push(Piece::One(item_pred(escape_item(c)?)));
                    kind = Kind::Glob;
                }
                None => pieces.push(Piece::One(Pred::Char('\\'))),
            },
            '[' => {
                pieces.push(Piece::One(Pred::Class(parse_class(&mut it)?)));
                kind = Kind::Glob;
            }
            ']' => {
                pieces.push(Piece::One(Pred::Char(']')));
                kind = Kind::Glob;
            }
            c => pieces.push(Piece::One(Pred::Char(c))),
        }
        i += 1;
    }
    Ok((kind, pieces))
}

/// A class body after `[`, with Go regexp's rules for what moby emits.
fn parse_class(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Class, String> {
    let mut class = Class::default();
    if it.peek() == Some(&'^') {
        it.next();
        class.negated = true;
    }
    let mut first = true;
    let one = |it: &mut std::iter::Peekable<std::str::Chars<'_>>, c: char| -> Result<ClassItem, String> {
        match c {
            '\\' => match it.next() {
                Some(e) => escape_item(e),
                None => Err("unterminated character class '['".to_string()),
            },
            // moby turns these into regex syntax inside the brackets, which
            // no sensible pattern relies on.
            '*' | '?' => Err(format!("wildcard '{c}' inside a character class is not supported")),
            c => Ok(ClassItem::Range(c, c)),
        }
    };
    loop {
        let Some(c) = it.next() else {
            return Err("unterminated character class '['".to_string());
        };
        if c == ']' && !first {
            return Ok(class);
        }
        first = false;
        let lo = one(it, c)?;
        let mut ahead = it.clone();
        if let (ClassItem::Range(lo, _), Some('-')) = (&lo, ahead.next()) {
            if let Some(hc) = ahead.next().filter(|c| *c != ']') {
                it.next();
                it.next();
                let hi = match one(it, hc)? {
                    ClassItem::Range(h, _) => h,
                    ClassItem::Perl(..) => return Err("a class like '\\d' cannot end a range".to_string()),
                };
                if hi < *lo {
                    return Err(format!("invalid character class range '{lo}-{hi}'"));
                }
                class.items.push(ClassItem::Range(*lo, hi));
                continue;
            }
        }
        class.items.push(lo);
    }
}
