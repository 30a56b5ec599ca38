//! The line-level Dockerfile parser, following BuildKit's `parser.Parse` rule for rule.
//!
//! Reading happens in physical lines (each keeps its line ending until it is trimmed):
//! 1. parser directives are looked for on leading `#` lines until the first line that is not one;
//! 2. comment lines are dropped, a trailing escape character continues the instruction on the next
//!    line, and comment and blank lines inside a continued instruction are skipped;
//! 3. the joined logical line is split into keyword, `--flags` and arguments, and the arguments are
//!    parsed by the keyword's rule (JSON or shell form, key/value pairs, words, …);
//! 4. RUN, COPY and ADD (also under ONBUILD) in shell form may announce heredocs, whose bodies are
//!    the following lines up to each terminator.

use std::borrow::Cow;

use crate::ast::{Directive, Directives, Dockerfile, Heredoc, Node, Warning};
use crate::error::{ParseError, ParseErrorKind};
use crate::heredoc::heredocs_from_line;
use crate::json::{parse_json_array, JsonForm};
use crate::quote::{go_to_lower, is_go_space};

/// How deep `ONBUILD ONBUILD …` may nest before the parser refuses (BuildKit's instruction layer
/// rejects any nesting; the limit only keeps hostile input from exhausting the stack).
pub const MAX_ONBUILD_DEPTH: usize = 64;

/// Longest physical line, line ending included (Go's `bufio.MaxScanTokenSize`).
const MAX_LINE: usize = 64 * 1024;

/// Parses a Dockerfile read as bytes; errors name the file `Dockerfile`.
pub fn parse(source: &[u8]) -> Result<Dockerfile, ParseError> {
    parse_file("Dockerfile", source)
}

/// Parses a Dockerfile read as bytes; errors name the file `name`.
pub fn parse_file(name: &str, source: &[u8]) -> Result<Dockerfile, ParseError> {
    parse_inner(source).map_err(|e| e.in_file(name))
}

/// Parses a Dockerfile held as text; errors name the file `Dockerfile`.
pub fn parse_str(source: &str) -> Result<Dockerfile, ParseError> {
    parse(source.as_bytes())
}

fn parse_inner(source: &[u8]) -> Result<Dockerfile, ParseError> {
    let source = source.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(source);
    let text = match std::str::from_utf8(source) {
        Ok(t) => t,
        Err(e) => {
            let before = &source[..e.valid_up_to()];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
            return Err(ParseError::new(line, column, ParseErrorKind::InvalidUtf8));
        }
    };
    Parser::new(text).run()
}

/// The directive-scanning state (BuildKit's `directives` + `DirectiveParser`).
struct DirectiveState {
    escape: char,
    done: bool,
    line: usize,
    found: Directives,
}

impl DirectiveState {
    /// Looks at one line (newline trimmed; leading space trimmed on first lines) for a directive;
    /// true when the line was one.
    fn check(&mut self, token: &str) -> Result<bool, ParseErrorKind> {
        self.line += 1;
        if self.done {
            return Ok(false);
        }
        let Some(rest) = token.strip_prefix('#') else {
            self.done = true;
            return Ok(false);
        };
        let rest = rest.trim_start_matches(is_go_space);
        let Some((key, value)) = match_directive(rest) else {
            self.done = true;
            return Ok(false);
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if self.found.all.iter().any(|d| d.name == key) {
            return Err(ParseErrorKind::DuplicateDirective(key));
        }
        match key.as_str() {
            "escape" => {
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => return Err(ParseErrorKind::InvalidEscape(other.to_string())),
                };
                self.found.escape = Some(self.escape);
            }
            "syntax" => self.found.syntax = Some(value.to_string()),
            _ => self.found.check = Some(value.to_string()),
        }
        self.found.all.push(Directive { name: key, value: value.to_string(), line: self.line });
        Ok(true)
    }
}

/// Go regexp `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (with `\s` = `[\t\n\f\r ]`).
fn match_directive(s: &str) -> Option<(&str, &str)> {
    let is_re_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let first = s.chars().next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_len = s.bytes().take_while(u8::is_ascii_alphanumeric).count();
    let key = &s[..key_len];
    let after = s[key_len..].trim_start_matches(is_re_space).strip_prefix('=')?;
    if after.is_empty() {
        return None;
    }
    let trimmed = after.trim_matches(is_re_space);
    if !trimmed.is_empty() {
        return Some((key, trimmed));
    }
    // Only white space after `=`: the lazy group must still take one character, and the
    // greedy `\s*` before it gives back exactly the last one.
    let last = after.char_indices().last().map_or(0, |(i, _)| i);
    Some((key, &after[last..]))
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    pos: usize,
    current_line: usize,
    d: DirectiveState,
}

/// Go's `bytes.TrimRight(line, "\r\n")`.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

/// BuildKit's `isComment`: `#` after any leading white space.
fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start_matches(is_go_space).starts_with('#')
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            lines: {
                let mut v = Vec::with_capacity(text.bytes().filter(|b| *b == b'\n').count() + 1);
                v.extend(text.split_inclusive('\n'));
                v
            },
            pos: 0,
            current_line: 0,
            d: DirectiveState { escape: '\\', done: false, line: 0, found: Directives::default() },
        }
    }

    /// The next physical line, line ending included. Like BuildKit's line scanner (Go's
    /// `bufio.Scanner` with its 64 KiB token limit) a longer line stops the parse with an error.
    fn next_line(&mut self) -> Result<Option<&'a str>, ParseError> {
        let Some(l) = self.lines.get(self.pos).copied() else { return Ok(None) };
        if l.len() > MAX_LINE || (l.len() == MAX_LINE && !l.ends_with('\n')) {
            return Err(ParseError::new(self.current_line + 1, 1, ParseErrorKind::LineTooLong(MAX_LINE - 1)));
        }
        self.pos += 1;
        Ok(Some(l))
    }

    /// BuildKit's `processLine`: trim the newline (and leading space on first lines), look for a
    /// directive, and blank out a line that is a comment.
    fn process_line(&mut self, raw: &'a str, strip_left: bool) -> Result<(&'a str, bool), ParseErrorKind> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start_matches(is_go_space);
        }
        let directive = self.d.check(token)?;
        Ok((if is_comment(token) { "" } else { token }, directive))
    }

    /// Removes a trailing escape character (plus spaces and tabs after it) unless it is itself
    /// escaped; returns whether the logical line ends here.
    fn trim_continuation<'s>(&self, line: &'s str) -> (&'s str, bool) {
        let esc = self.d.escape;
        let t = line.trim_end_matches([' ', '\t']);
        if let Some(before) = t.strip_suffix(esc) {
            if before.is_empty() || !before.ends_with(esc) {
                return (before, false);
            }
        }
        (line, true)
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        // Sized up front: growing a vector of nodes means copying them all, again and again.
        let estimate = self.lines.iter().filter(|l| l.starts_with(|c: char| c.is_ascii_alphabetic())).count();
        let mut children: Vec<Node> = Vec::with_capacity(estimate);
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();

        while let Some(raw) = self.next_line()? {
            if is_comment(raw) {
                // BuildKit drops the first byte of the raw line, which is `#` unless the comment
                // is indented; an empty comment starts a new comment block.
                let rest = raw.get(1..).unwrap_or_else(|| raw.trim_start_matches(is_go_space).get(1..).unwrap_or(""));
                let c = rest.trim_matches(is_go_space);
                if c.is_empty() {
                    comments.clear();
                } else {
                    comments.push(c.to_string());
                }
            }
            let (processed, directive) = self.process_line(raw, true).map_err(|k| ParseError::new(self.current_line + 1, 1, k))?;
            if directive {
                comments.pop();
            }
            self.current_line += 1;
            let start_line = self.current_line;
            let start_col = column_of_text(raw);

            let (first, mut end_of_line) = self.trim_continuation(processed);
            if end_of_line && first.is_empty() {
                continue;
            }
            let mut line = String::from(first);
            let mut empty_continuation = false;
            while !end_of_line {
                let Some(raw) = self.next_line()? else { break };
                let (processed, _) = self.process_line(raw, false).map_err(|k| ParseError::new(self.current_line + 1, 1, k))?;
                self.current_line += 1;
                if is_comment(raw) {
                    continue;
                }
                if processed.trim_start_matches(is_go_space).is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, eol) = self.trim_continuation(processed);
                end_of_line = eol;
                line.push_str(part);
            }
            if empty_continuation {
                warnings.push(Warning { message: format!("Empty continuation line found in: {line}"), line: self.current_line });
            }

            let mut child = new_node_from_line(&line, self.d.escape, 0).map_err(|k| ParseError::new(start_line, start_col, k))?;
            child.prev_comment = std::mem::take(&mut comments);

            if can_contain_heredoc(&child) && line.contains("<<") {
                let specs = heredocs_from_line(&line)
                    .map_err(|(w, e)| ParseError::new(start_line, start_col, ParseErrorKind::HeredocDelimiter(w, e)))?;
                for spec in specs {
                    let mut content = String::new();
                    let mut terminated = false;
                    while let Some(body) = self.next_line()? {
                        self.current_line += 1;
                        let mut candidate = trim_newline(body);
                        if spec.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == spec.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(body);
                    }
                    if !terminated {
                        return Err(ParseError::new(start_line, start_col, ParseErrorKind::UnterminatedHeredoc(spec.name)));
                    }
                    child.heredocs.push(Heredoc {
                        name: spec.name,
                        file_descriptor: spec.file_descriptor,
                        expand: spec.expand,
                        chomp: spec.chomp,
                        content,
                    });
                }
            }

            child.start_line = start_line;
            child.end_line = self.current_line;
            child.original = line;
            children.push(child);
        }

        let (Some(first), Some(last)) = (children.first(), children.last()) else {
            return Err(ParseError::new(self.current_line.max(1), 1, ParseErrorKind::NoInstructions));
        };
        let (start_line, end_line) = (first.start_line, last.end_line);
        Ok(Dockerfile { children, directives: self.d.found, start_line, end_line, warnings })
    }
}

/// 1-based column of the first non-blank character of a physical line.
fn column_of_text(raw: &str) -> usize {
    raw.chars().take_while(|c| is_go_space(*c) || *c == '\u{feff}').count() + 1
}

/// BuildKit's `canContainHeredoc`: RUN, COPY, ADD in shell form, directly or under ONBUILD.
fn can_contain_heredoc(node: &Node) -> bool {
    let node = if node.value == "onbuild" {
        match node.onbuild_inner() {
            Some(inner) => inner,
            None => node,
        }
    } else {
        node
    };
    matches!(node.value.as_str(), "run" | "copy" | "add") && !node.json
}

/// Go's `regexp.MustCompile("[\t\v\f\r ]+")` character class.
fn is_token_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]`, at most `n` parts (`None` = all), like Go's `Regexp.Split`.
fn split_ws(s: &str, n: Option<usize>) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if n.is_some_and(|n| out.len() + 1 == n) {
            out.push(rest);
            return out;
        }
        match rest.find(is_token_ws) {
            None => {
                out.push(rest);
                return out;
            }
            Some(i) => {
                out.push(&rest[..i]);
                rest = rest[i..].trim_start_matches(is_token_ws);
            }
        }
    }
}

/// BuildKit's `newNodeFromLine`: keyword, flags and the keyword's argument rule.
fn new_node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, ParseErrorKind> {
    let trimmed = line.trim_matches(is_go_space);
    let mut parts = split_ws(trimmed, Some(2)).into_iter();
    let keyword = go_to_lower(parts.next().unwrap_or(""));
    let (args, flags) = match parts.next() {
        Some(rest) => extract_builder_flags(rest),
        None => (Cow::Borrowed(""), Vec::new()),
    };
    let args = args.trim_matches(is_go_space);

    let (args, json) = match keyword.as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(args)?,
        "arg" => (parse_words(args, escape).into_iter().map(Node::arg).collect(), false),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(args)?,
        "env" => (parse_name_val(args, "ENV", escape)?, false),
        "label" => (parse_name_val(args, "LABEL", escape)?, false),
        "expose" | "from" => (parse_strings_whitespace_delimited(args), false),
        "healthcheck" => parse_health_config(args)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => (parse_string(args), false),
        "onbuild" => (parse_sub_command(args, escape, depth)?, false),
        // Unknown instructions parse; BuildKit gives them one empty argument node.
        _ => (vec![Node::arg("")], false),
    };
    Ok(Node { value: keyword, args, flags, json, ..Node::default() })
}

/// BuildKit's `extractBuilderFlags`: leading `--words` (quotes removed, `\` escapes the next byte)
/// up to the first word without `--` or a bare `--`. BuildKit reads this part byte by byte, each
/// byte taken as a character, and so does this (non-ASCII bytes become Latin-1 characters).
fn extract_builder_flags(line: &str) -> (Cow<'_, str>, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    // `unicode.IsSpace(rune(b))` for one byte.
    fn byte_space(b: u8) -> bool {
        matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
    }
    let b = line.as_bytes();
    // Usually a char boundary; only a 0x85/0xA0 byte inside a character can split one.
    let rest_from = |pos: usize| match line.get(pos..) {
        Some(s) => Cow::Borrowed(s),
        None => String::from_utf8_lossy(&b[pos..]),
    };
    // One byte per character, as BuildKit's `rune(line[pos])`.
    let to_word = |bytes: &mut Vec<u8>| -> String {
        let w = bytes.iter().copied().map(char::from).collect();
        bytes.clear();
        w
    };
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= b.len() {
        let ch = b.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if byte_space(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (rest_from(pos), words);
            }
            if word.capacity() == 0 {
                word.reserve(b.len() - pos);
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                words.push(to_word(&mut word));
            }
            break;
        }
        if phase == Phase::Word {
            if byte_space(ch) {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (rest_from(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(to_word(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut ch = ch;
            if ch == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = b[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut ch = ch;
        if ch == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = b[pos];
        }
        word.push(ch);
        pos += 1;
    }
    (Cow::Borrowed(""), words)
}

/// BuildKit's `parseWords`: words split on white space, quotes and escapes kept as written.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::with_capacity(rest.len());
    let mut chars = rest.chars().peekable();
    loop {
        let Some(mut ch) = chars.next() else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Spaces {
            if is_go_space(ch) {
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if is_go_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    // Clone then clear keeps one right-sized allocation per word.
                    words.push(word.clone());
                    word.clear();
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                let Some(next) = chars.next() else { continue };
                word.push(ch);
                ch = next;
            }
            word.push(ch);
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            let Some(next) = chars.next() else {
                phase = Phase::Word;
                continue;
            };
            word.push(ch);
            ch = next;
        }
        word.push(ch);
    }
    words
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `name value` (old form, separator `""`) or a list
/// of `name=value` (separator `"="`); every pair becomes key, value, separator nodes.
fn parse_name_val(rest: &str, keyword: &str, escape: char) -> Result<Vec<Node>, ParseErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else { return Ok(Vec::new()) };
    if !first.contains('=') {
        let parts = split_ws(rest, Some(2));
        let [key, value] = parts.as_slice() else {
            return Err(ParseErrorKind::MissingValue(keyword.to_string()));
        };
        return Ok(vec![Node::arg(*key), Node::arg(*value), Node::arg("")]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals(word.clone()));
        };
        out.extend([Node::arg(k), Node::arg(v), Node::arg("=")]);
    }
    Ok(out)
}

fn parse_strings_whitespace_delimited(rest: &str) -> Vec<Node> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_ws(rest, None).into_iter().map(Node::arg).collect()
}

fn parse_string(rest: &str) -> Vec<Node> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![Node::arg(rest)]
    }
}

/// BuildKit's `parseJSON`: `Some` for a JSON array of strings, `None` when not JSON.
fn parse_json(rest: &str) -> Result<Option<Vec<Node>>, ParseErrorKind> {
    let t = rest.trim_start_matches(is_go_space);
    if !t.starts_with('[') {
        return Ok(None);
    }
    match parse_json_array(t) {
        JsonForm::Strings(v) => Ok(Some(v.into_iter().map(Node::arg).collect())),
        JsonForm::NotStrings => Err(ParseErrorKind::JsonNotStringArray),
        JsonForm::Invalid => Ok(None),
    }
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<Node>, bool), ParseErrorKind> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    Ok(match parse_json(rest)? {
        Some(nodes) => (nodes, true),
        None => (vec![Node::arg(rest)], false),
    })
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<Node>, bool), ParseErrorKind> {
    Ok(match parse_json(rest)? {
        Some(nodes) => (nodes, true),
        None => (parse_strings_whitespace_delimited(rest), false),
    })
}

/// HEALTHCHECK: a type word (`CMD`, `NONE`, …) then the command in JSON or shell form. BuildKit
/// finds the end of the type word testing single bytes for white space.
fn parse_health_config(rest: &str) -> Result<(Vec<Node>, bool), ParseErrorKind> {
    let b = rest.as_bytes();
    let is_space = |c: u8| matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0);
    let sep = b.iter().position(|c| is_space(*c)).unwrap_or(b.len());
    let next = b[sep..].iter().position(|c| !is_space(*c)).map_or(b.len(), |p| sep + p);
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let typ = String::from_utf8_lossy(&b[..sep]).into_owned();
    let cmd = String::from_utf8_lossy(&b[next..]).into_owned();
    let (mut cmd_nodes, json) = parse_maybe_json(&cmd)?;
    let mut out = vec![Node::arg(typ)];
    out.append(&mut cmd_nodes);
    Ok((out, json))
}

fn parse_sub_command(rest: &str, escape: char, depth: usize) -> Result<Vec<Node>, ParseErrorKind> {
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    if depth >= MAX_ONBUILD_DEPTH {
        return Err(ParseErrorKind::TooDeep(MAX_ONBUILD_DEPTH));
    }
    let mut child = new_node_from_line(rest, escape, depth + 1)?;
    child.original = rest.to_string();
    Ok(vec![Node { children: vec![child], ..Node::default() }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_regex() {
        assert_eq!(match_directive("escape=`"), Some(("escape", "`")));
        assert_eq!(match_directive("escape = ` \t"), Some(("escape", "`")));
        assert_eq!(match_directive("syntax= "), Some(("syntax", " ")));
        assert_eq!(match_directive("syntax="), None);
        assert_eq!(match_directive("1x=a"), None);
        assert_eq!(match_directive("a-b=c"), None);
    }

    #[test]
    fn flags() {
        let (rest, f) = extract_builder_flags("--a=b --c foo bar");
        assert_eq!((&*rest, f), ("foo bar", vec!["--a=b".to_string(), "--c".into()]));
        let (rest, f) = extract_builder_flags("--a=\"x y\" -- --b");
        assert_eq!((&*rest, f), (" --b", vec!["--a=x y".to_string()]));
    }

    #[test]
    fn words() {
        assert_eq!(parse_words(r#"abc="123 456" def"#, '\\'), vec![r#"abc="123 456""#, "def"]);
        assert_eq!(parse_words("a\\ b c\\", '\\'), vec!["a\\ b", "c"]);
    }
}
