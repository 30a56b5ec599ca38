//! Finding heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`) in an instruction line.
//!
//! BuildKit splits the whole logical line into shell words with its lexer (quotes and escapes kept
//! raw, unset variables left as written, nothing expanded; an unquoted `<<` keeps the blanks after
//! it in its word, so `<< EOF` is one word) and treats every word shaped `[digits]<<[-] WORD` as a
//! heredoc. The body is expanded later only if no part of the delimiter was quoted; BuildKit finds
//! that out by lexing the delimiter with and without raw quotes and comparing the quote counts. This module has its own small copy of that word splitter with exactly those
//! settings, because the parser must not depend on the expansion lexer.

use std::iter::Peekable;
use std::str::Chars;

use unicode_general_category::{get_general_category, GeneralCategory as G};

use crate::quote::is_go_space;

/// A heredoc announced on an instruction line; its body is read from the lines that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocSpec {
    pub name: String,
    pub file_descriptor: u32,
    pub expand: bool,
    pub chomp: bool,
}

/// Every heredoc announced on `line`, in order. A line the lexer cannot split (an unmatched quote,
/// a broken `${`) announces none, as in BuildKit.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<HeredocSpec>, (String, String)> {
    let Ok(words) = process_words(line, true, true) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            out.push(h);
        }
    }
    Ok(out)
}

/// Reads one word as `^(\d*)<<(-?)\s*([^<]*)$`. Errors carry (word, lexer message).
fn parse_heredoc(word: &str) -> Result<Option<HeredocSpec>, (String, String)> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    let rest = rest.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    // Go's ParseUint fails on overflow and BuildKit ignores the error: the descriptor becomes 0.
    let file_descriptor = word[..digits].parse::<u32>().unwrap_or(0);

    let words = process_words(rest, false, false).map_err(|e| (word.to_string(), e))?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = process_words(rest, true, false).map_err(|e| (word.to_string(), e))?;
    if raw.len() != words.len() {
        return Err((word.to_string(), "lexing produced inconsistent results".to_string()));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(HeredocSpec { name, file_descriptor, expand, chomp }))
}

/// BuildKit's `Lex.ProcessWords` with an empty environment, `SkipUnsetEnv` set and `\` as escape.
pub(crate) fn process_words(input: &str, raw_quotes: bool, raw_escapes: bool) -> Result<Vec<String>, String> {
    // Go's text/scanner drops a byte-order mark at the very start of its input.
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let mut lx = Lexer { chars: input.chars().peekable(), raw_quotes, raw_escapes, depth: 0, hint: input.len() };
    let (_, words) = lx.process_stop_on(None, raw_escapes)?;
    Ok(words)
}

struct Lexer<'a> {
    chars: Peekable<Chars<'a>>,
    raw_quotes: bool,
    raw_escapes: bool,
    /// Nesting of `${…${…}}`; bounded so that no line can exhaust the stack.
    depth: usize,
    /// Capacity for the first word buffer (the input length).
    hint: usize,
}

/// Deeper `${` nesting than this makes the line unreadable (so it announces no heredoc).
const MAX_NESTING: usize = 256;

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if is_go_space(c) {
            if self.in_word && !self.word.is_empty() {
                self.words.push(self.word.clone());
                self.word.clear();
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
        for c in s.chars() {
            self.add_char(c);
        }
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

const ESCAPE: char = '\\';

impl Lexer<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn process_stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), String> {
        if self.depth >= MAX_NESTING {
            return Err("substitutions nested too deeply".into());
        }
        self.depth += 1;
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        // The outermost word buffer is sized once; nested `${…}` ones stay small.
        words.word.reserve(std::mem::take(&mut self.hint));
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.chars.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '\'' => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.chars.next();
                    let mut ch = ch;
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.chars.next() {
                            None => break,
                            Some(c) => ch = c,
                        }
                        words.add_raw_char(ch);
                    } else {
                        words.add_char(ch);
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(s) = stop {
            return Err(format!("unexpected end of statement while looking for matching {s}"));
        }
        Ok((result, words.finish()))
    }

    /// `<<` keeps the blanks after it in its word, so `<< EOF` is one word, as in BuildKit.
    fn process_possible_heredoc(&mut self) -> String {
        self.chars.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.chars.next();
        let mut out = String::from("<<");
        while let Some(c @ (' ' | '\t' | '\r' | '\n')) = self.peek() {
            self.chars.next();
            out.push(c);
        }
        out
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        self.chars.next();
        if self.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.chars.next() {
                None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        self.chars.next();
        if self.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                Some('"') => {
                    self.chars.next();
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(mut ch) => {
                    self.chars.next();
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c @ ('"' | '$' | ESCAPE)) => {
                                self.chars.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.chars.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(format!("${name}"));
        }
        self.chars.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(ch) = self.chars.next() else {
            return Err("unsupported modifier () in substitution".into());
        };
        match ch {
            '}' => Ok(format!("${{{name}}}")),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let mut chs = String::from(ch);
                let mut modifier = ch;
                if ch == ':' {
                    // Go appends the rune it read even at the end of input (as U+FFFD).
                    let next = self.chars.next();
                    chs.push(next.unwrap_or('\u{fffd}'));
                    modifier = next.unwrap_or('\u{fffd}');
                }
                let raw = modifier == '#' || modifier == '%';
                let (word, _) = self.process_stop_on(Some('}'), raw).map_err(|e| {
                    if self.chars.peek().is_none() {
                        "syntax error: missing '}'".to_string()
                    } else {
                        e
                    }
                })?;
                Ok(format!("${{{name}{chs}{word}}}"))
            }
            '/' => {
                if self.peek() == Some('/') {
                    self.chars.next();
                }
                let (pattern, _) = self.process_stop_on(Some('/'), true).map_err(|e| {
                    if self.chars.peek().is_none() {
                        "syntax error: missing '/' in ${}".to_string()
                    } else {
                        e
                    }
                })?;
                let (replacement, _) = self.process_stop_on(Some('}'), true).map_err(|e| {
                    if self.chars.peek().is_none() {
                        "syntax error: missing '}'".to_string()
                    } else {
                        e
                    }
                })?;
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(d) = self.peek().filter(|c| is_go_digit(*c)) {
                    self.chars.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.chars.next();
                return ch.to_string();
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.chars.next();
            name.push(ch);
        }
        name
    }
}

/// Go's `unicode.IsDigit` (category Nd).
fn is_go_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && get_general_category(c) == G::DecimalNumber)
}

/// Go's `unicode.IsLetter` (category L).
fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(get_general_category(c), G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, expand: bool, chomp: bool, fd: u32) -> HeredocSpec {
        HeredocSpec { name: name.into(), file_descriptor: fd, expand, chomp }
    }

    #[test]
    fn finds_heredocs() {
        assert_eq!(heredocs_from_line("RUN <<EOF").unwrap(), vec![h("EOF", true, false, 0)]);
        assert_eq!(heredocs_from_line("RUN <<-EOT").unwrap(), vec![h("EOT", true, true, 0)]);
        assert_eq!(heredocs_from_line("RUN <<'EOF'").unwrap(), vec![h("EOF", false, false, 0)]);
        assert_eq!(heredocs_from_line(r#"COPY <<"A" <<B /d"#).unwrap(), vec![h("A", false, false, 0), h("B", true, false, 0)]);
        assert_eq!(heredocs_from_line("RUN 3<<EOF cat").unwrap(), vec![h("EOF", true, false, 3)]);
        assert_eq!(heredocs_from_line("RUN cat<<EOF").unwrap(), vec![]);
        assert_eq!(heredocs_from_line("RUN <<EOF\"").unwrap(), vec![]);
        assert_eq!(heredocs_from_line("RUN <<").unwrap(), vec![]);
        assert_eq!(heredocs_from_line("RUN <<''").unwrap(), vec![]);
        assert_eq!(heredocs_from_line("RUN <<E\"O\"F").unwrap(), vec![h("EOF", false, false, 0)]);
    }

    #[test]
    fn words_like_buildkit() {
        let w = process_words(r#"a "b c" ${x:-d e} $y \ f"#, true, true).unwrap();
        assert_eq!(w, vec!["a", "\"b c\"", "${x:-d", "e}", "$y", "\\ f"]);
        assert!(process_words("${", true, true).is_err());
        assert!(process_words("'abc", true, true).is_err());
        assert_eq!(process_words("${a//b/c}", true, true).unwrap(), vec!["${a/b/c}"]);
        let deep = "${a:-".repeat(100_000);
        assert!(process_words(&deep, true, true).is_err());
    }
}
