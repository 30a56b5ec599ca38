//! Shell-word expansion, as BuildKit's Dockerfile lexer does it.
//!
//! A Dockerfile never runs a shell to expand `$VAR` in `FROM`, `COPY`, `ENV`
//! and friends: the frontend does it with a small lexer that imitates POSIX
//! `sh` closely but not exactly. kiln must agree with BuildKit byte for byte,
//! quirks included, because the expanded words feed cache keys and image
//! configs. The rules:
//!
//! * `$NAME`, `${NAME}`; a name is letters, digits and `_`, or a run of
//!   digits (`$1`, never set), or one special parameter (`$@ $* $# $? $- $$
//!   $! $0`, never set). A `$` not followed by a name stays a literal `$`.
//! * `${V:-w}`/`${V-w}` default, `${V:+w}`/`${V+w}` alternative,
//!   `${V:?msg}`/`${V?msg}` required; the `:` forms treat an empty value as
//!   unset. `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}` trim the shortest or
//!   longest prefix or suffix matching the glob `p` (`*`, `?`, `\` escapes);
//!   `${V/p/r}` replaces the first, `${V//p/r}` every longest match of `p`.
//! * `'…'` is literal; `"…"` expands `$` and honours the escape character
//!   before `"`, `$` and itself only. Outside quotes the escape character
//!   (`\`, or `` ` `` under `# escape=`` ` ``) makes the next character
//!   literal; a trailing one is dropped.
//! * [`Lexer::process_words`] also splits into words on unquoted white
//!   space; white space that comes out of a variable splits too, but not
//!   when the variable is inside double quotes.
//!
//! Every expansion reports which variables it read and which it found
//! unset ([`Expansion::used`], [`Expansion::unset`]): the build engine keys
//! its cache on exactly the variables a step used.

pub(crate) mod nfa;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use nfa::{Nfa, Piece, Pred};

/// The escape character of a Dockerfile without an `# escape=` directive.
pub const DEFAULT_ESCAPE: char = '\\';

/// Nested `${…}` deeper than this is refused, so that hostile input cannot
/// exhaust the stack. Real Dockerfiles nest two or three levels.
pub const MAX_NESTING: usize = 64;

/// Where variable values come from.
pub trait Env {
    /// The value of `name`, or `None` if it is unset (an empty value is set).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// An ordered list of `(name, value)` pairs; the last pair for a name wins.
impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// Builds a map from `KEY=VALUE` strings as BuildKit's `BuildEnvs` does: a
/// string without `=` sets the key to the empty value, later keys win.
pub fn env_from_list<S: AsRef<str>>(list: &[S]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for item in list {
        let item = item.as_ref();
        match item.split_once('=') {
            Some((k, v)) => map.insert(k.to_string(), v.to_string()),
            None => map.insert(item.to_string(), String::new()),
        };
    }
    map
}

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The word with quotes removed and variables expanded, as one string
    /// (white space kept): what `ENV`, `WORKDIR`, `FROM` … use.
    pub word: String,
    /// The same, split into words: what `EXPOSE`, `VOLUME`, `COPY`
    /// sources … use.
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub used: BTreeSet<String>,
    /// Variables that were referenced and unset.
    pub unset: BTreeSet<String>,
}

/// What went wrong while expanding a word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    #[error("invalid pattern ({pattern}) in substitution: invalid escape '\\{escaped}'")]
    InvalidPattern { pattern: String, escaped: String },
    #[error("substitutions are nested more than {MAX_NESTING} deep")]
    TooDeep,
}

/// An expansion error. Callers add the file and line; `column` is the
/// 1-based character position inside the word where the lexer stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind} (at character {column} of the word)")]
pub struct ExpandError {
    pub word: String,
    pub column: usize,
    pub kind: ExpandErrorKind,
}

/// The expansion rules of one Dockerfile (its escape character) plus the
/// switches BuildKit uses for special cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output (BuildKit's `RawQuotes`).
    pub raw_quotes: bool,
    /// Keep escape characters in the output (BuildKit's `RawEscapes`).
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (used for heredoc bodies).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new(DEFAULT_ESCAPE)
    }
}

impl Lexer {
    /// A lexer for a Dockerfile whose escape character is `escape`.
    pub fn new(escape: char) -> Lexer {
        Lexer { escape, raw_quotes: false, raw_escapes: false, skip_process_quotes: false, skip_unset_env: false }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` once, giving both the single-word and the split form
    /// and the variables it touched.
    pub fn expand<E: Env + ?Sized>(&self, word: &str, env: &E) -> Result<Expansion, ExpandError> {
        let mut chars: Vec<char> = word.chars().collect();
        // Go's text/scanner skips a byte-order mark at the very start.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        let mut sw = ShellWord {
            lexer: self,
            env,
            chars,
            pos: 0,
            raw_escapes: self.raw_escapes,
            depth: 0,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        };
        match sw.process_stop_on(None, self.raw_escapes) {
            Ok((word_out, words)) => Ok(Expansion { word: word_out, words, used: sw.used, unset: sw.unset }),
            Err(kind) => Err(ExpandError { word: word.to_string(), column: sw.pos + 1, kind }),
        }
    }

    /// Single-word mode (BuildKit's `ProcessWord`).
    pub fn process_word<E: Env + ?Sized>(&self, word: &str, env: &E) -> Result<String, ExpandError> {
        self.expand(word, env).map(|e| e.word)
    }

    /// Multi-word mode (BuildKit's `ProcessWords`).
    pub fn process_words<E: Env + ?Sized>(&self, word: &str, env: &E) -> Result<Vec<String>, ExpandError> {
        self.expand(word, env).map(|e| e.words)
    }
}

/// Accumulates the split form. `in_word` stays true after an empty quoted
/// string so that `""` glues neighbours but never makes a word by itself,
/// exactly as BuildKit's `wordsStruct` does.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct ShellWord<'a, E: ?Sized> {
    lexer: &'a Lexer,
    env: &'a E,
    chars: Vec<char>,
    pos: usize,
    raw_escapes: bool,
    depth: usize,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

type Kind = ExpandErrorKind;

impl<E: Env + ?Sized> ShellWord<'_, E> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.used.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unset.insert(name.to_string());
                None
            }
        }
    }

    /// Reads up to `stop` (consumed) or the end of the word. `raw_escapes`
    /// is in force for the duration, as in BuildKit, where pattern words
    /// keep their escapes for the glob compiler to see.
    fn process_stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), Kind> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Kind> {
        let mut result = String::new();
        let mut words = Words::default();
        let escape = self.lexer.escape;
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if quotes && ch == '\'' {
                let tmp = self.process_single_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if quotes && ch == '"' {
                let tmp = self.process_double_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                self.pos += 1;
                let mut ch = ch;
                if ch == escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            words.add_raw_char(c);
                        }
                        None => break,
                    }
                } else {
                    words.add_char(ch);
                }
                result.push(ch);
            }
        }
        match stop {
            Some('}') => Err(Kind::Unterminated("}")),
            Some('/') => Err(Kind::Unterminated("/")),
            Some(_) => Err(Kind::Unterminated("delimiter")),
            None => Ok((result, words.finish())),
        }
    }

    fn process_single_quote(&mut self) -> Result<String, Kind> {
        let raw = self.lexer.raw_quotes;
        let mut result = String::new();
        self.pos += 1;
        if raw {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(Kind::Unterminated("single-quote")),
                Some('\'') => {
                    if raw {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, Kind> {
        let raw = self.lexer.raw_quotes;
        let escape = self.lexer.escape;
        let mut result = String::new();
        self.pos += 1;
        if raw {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(Kind::Unterminated("double-quote")),
                Some('"') => {
                    self.pos += 1;
                    if raw {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // A trailing escape is dropped; the loop then
                            // reports the missing closing quote.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == escape => {
                                self.pos += 1;
                                ch = c;
                            }
                            // Before any other character the escape is kept.
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, Kind> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(Kind::MissingBrace),
            Some('{' | '}' | ':') => return Err(Kind::BadSubstitution),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(Kind::TooDeep);
        }
        self.depth += 1;
        let r = self.process_braced();
        self.depth -= 1;
        r
    }

    /// The part of `${…}` after the opening brace.
    fn process_braced(&mut self) -> Result<String, Kind> {
        let name = self.process_name();
        let ch = self.next();
        // BuildKit shows an end of input as U+FFFD in its messages.
        let mut chs = ch.unwrap_or('\u{fffd}').to_string();
        match ch {
            None => Err(Kind::MissingBrace),
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let mut null_is_unset = false;
                let mut op = ch;
                if ch == Some(':') {
                    null_is_unset = true;
                    op = self.next();
                    chs.push(op.unwrap_or('\u{fffd}'));
                }
                let raw = matches!(op, Some('#' | '%'));
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(_) if self.at_end() => return Err(Kind::MissingBrace),
                    Err(e) => return Err(e),
                };
                let value = self.get_env(&name);
                if self.lexer.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty_or_unset = match &value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    Some('-') => Ok(if empty_or_unset { word } else { value.unwrap_or_default() }),
                    Some('+') => Ok(if empty_or_unset { String::new() } else { word }),
                    Some('?') => match value {
                        Some(v) if !(null_is_unset && v.is_empty()) => Ok(v),
                        v => {
                            let message = if !word.is_empty() {
                                word
                            } else if v.is_none() {
                                "is not allowed to be unset".to_string()
                            } else {
                                "is not allowed to be empty".to_string()
                            };
                            Err(Kind::Required { name, message })
                        }
                    },
                    Some(c @ ('%' | '#')) => {
                        let value = value.unwrap_or_default();
                        let (greedy, pattern) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        trim(&value, pattern, greedy, c == '%')
                    }
                    _ => Err(Kind::UnsupportedModifier(chs)),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(_) if self.at_end() => return Err(Kind::MissingSlash),
                    Err(e) => return Err(e),
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(_) if self.at_end() => return Err(Kind::MissingBrace),
                    Err(e) => return Err(e),
                };
                let Some(value) = self.get_env(&name) else {
                    if self.lexer.skip_unset_env {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return substitute("", &pattern, &replacement, replace_all);
                };
                substitute(&value, &pattern, &replacement, replace_all)
            }
            Some(_) => Err(Kind::UnsupportedModifier(chs)),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(c) = self.peek().filter(|c| is_digit(*c)) {
                    self.pos += 1;
                    name.push(c);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            self.pos += 1;
            name.push(ch);
        }
        name
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsLetter`: general category L.
fn is_letter(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(get_general_category(c), G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter)
}

/// Go's `unicode.IsDigit`: general category Nd.
fn is_digit(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    get_general_category(c) == G::DecimalNumber
}

/// Compiles a substitution pattern: `*` and `?` are wildcards (never
/// crossing a newline, as Go's `.` does not), `\` escapes `*`, `?` and `\`,
/// and a `\` before `}` or `/` is dropped because it only kept the lexer
/// from ending the `${…}` there. Any other escape is an error.
fn compile_pattern(pattern: &str) -> Result<Vec<Piece>, Kind> {
    let mut pieces = Vec::new();
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => pieces.push(Piece::Star(Pred::AnyBut('\n'))),
            '?' => pieces.push(Piece::One(Pred::AnyBut('\n'))),
            '\\' => {
                if matches!(it.peek(), Some('}' | '/')) {
                    continue;
                }
                match it.next() {
                    Some(e @ ('*' | '?' | '\\')) => pieces.push(Piece::One(Pred::Char(e))),
                    other => {
                        return Err(Kind::InvalidPattern {
                            pattern: pattern.to_string(),
                            escaped: other.map(String::from).unwrap_or_default(),
                        })
                    }
                }
            }
            c => pieces.push(Piece::One(Pred::Char(c))),
        }
    }
    Ok(pieces)
}

/// `${V#p}` (prefix) and `${V%p}` (suffix); `greedy` picks the longest
/// match. A suffix match runs the reversed pattern over the reversed value.
fn trim(value: &str, pattern: &str, greedy: bool, suffix: bool) -> Result<String, Kind> {
    let mut pieces = compile_pattern(pattern)?;
    let mut text: Vec<char> = value.chars().collect();
    if suffix {
        pieces.reverse();
        text.reverse();
    }
    let nfa = Nfa::new(&pieces);
    let Some(end) = nfa.match_at(&text, 0, greedy) else {
        return Ok(value.to_string());
    };
    let rest = text.get(end..).unwrap_or_default();
    Ok(if suffix { rest.iter().rev().collect() } else { rest.iter().collect() })
}

/// `${V/p/r}` and `${V//p/r}`: leftmost-longest matches, replaced as Go's
/// `regexp.ReplaceAllString` does (an empty match right after a match is
/// skipped, and `$0` in the replacement means the match).
fn substitute(value: &str, pattern: &str, replacement: &str, all: bool) -> Result<String, Kind> {
    let nfa = Nfa::new(&compile_pattern(pattern)?);
    let text: Vec<char> = value.chars().collect();
    let find = |from: usize| nfa.find_leftmost_longest(&text, from);
    let slice = |a: usize, b: usize| text.get(a..b).unwrap_or_default().iter().collect::<String>();
    if !all {
        return Ok(match find(0) {
            Some((s, e)) => format!("{}{}{}", slice(0, s), replacement, slice(e, text.len())),
            None => value.to_string(),
        });
    }
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((s, e)) = find(search) else { break };
        out.push_str(&slice(last_end, s));
        if e > last_end || s == 0 {
            expand_template(&mut out, replacement, &slice(s, e));
        }
        last_end = e;
        search = if search + 1 > e { search + 1 } else { e };
    }
    out.push_str(&slice(last_end, text.len()));
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern without groups: `$$` is a `$`, `$0`
/// or `${0}` the whole match, any other well-formed reference empty, and a
/// malformed one a literal `$`.
fn expand_template(out: &mut String, template: &str, whole: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let name_len: usize = body.chars().take_while(|c| is_letter(*c) || is_digit(*c) || *c == '_').map(char::len_utf8).sum();
        if name_len == 0 || (braced && !body[name_len..].starts_with('}')) {
            out.push('$');
            continue;
        }
        if &body[..name_len] == "0" {
            out.push_str(whole);
        }
        rest = &body[name_len + usize::from(braced)..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_expansion_follows_go() {
        let mut s = String::new();
        expand_template(&mut s, "<$0|${0}|$$|$1x|${x|$.>", "M");
        assert_eq!(s, "<M|M|$||${x|$.>");
    }
}
