//! The JSON (exec) form of an instruction, read the way Go's `encoding/json` reads it into a
//! `[]any`: the whole text must be valid JSON (Go's grammar, nesting at most 10000 deep), and only
//! then are the elements looked at. Iterative on purpose: no input can exhaust the stack.

/// What the text of an instruction turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonForm {
    /// A valid JSON array whose elements are all strings.
    Strings(Vec<String>),
    /// A valid JSON array with at least one element that is not a string (an error in BuildKit).
    NotStrings,
    /// Not a JSON array at all: the instruction is in shell form.
    Invalid,
}

const MAX_DEPTH: usize = 10_000;

/// Reads `text` as a JSON array of strings.
pub(crate) fn parse_json_array(text: &str) -> JsonForm {
    let mut p = Reader { b: text.as_bytes(), i: 0, overflow: false };
    p.ws();
    if !p.eat(b'[') {
        return JsonForm::Invalid;
    }
    let mut out = Vec::new();
    let mut all_strings = true;
    p.ws();
    if !p.eat(b']') {
        loop {
            p.ws();
            if p.peek() == Some(b'"') {
                match p.string() {
                    Some(s) => out.push(s),
                    None => return JsonForm::Invalid,
                }
            } else {
                if !p.skip_value() {
                    return JsonForm::Invalid;
                }
                all_strings = false;
            }
            p.ws();
            if p.eat(b',') {
                continue;
            }
            if p.eat(b']') {
                break;
            }
            return JsonForm::Invalid;
        }
    }
    p.ws();
    if p.i != p.b.len() {
        return JsonForm::Invalid;
    }
    // Go decodes every number into a float64; one out of range fails the whole decode, and
    // BuildKit then takes the text as shell form.
    if p.overflow {
        return JsonForm::Invalid;
    }
    if all_strings {
        JsonForm::Strings(out)
    } else {
        JsonForm::NotStrings
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    /// A number too large for a float64 was seen.
    overflow: bool,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, lit: &[u8]) -> bool {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> bool {
        let start = self.i;
        if !self.number_syntax() {
            return false;
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("0");
        if text.parse::<f64>().map_or(true, |v| v.is_infinite()) {
            self.overflow = true;
        }
        true
    }

    fn number_syntax(&mut self) -> bool {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        if self.eat(b'.') && self.digits() == 0 {
            return false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return false;
            }
        }
        true
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(s, 16).ok()
    }

    /// A JSON string starting at `"`, decoded as Go does (a lone surrogate becomes U+FFFD).
    fn string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let u = self.hex4()?;
                            if (0xD800..0xDC00).contains(&u) {
                                // A high surrogate pairs only with an immediately following low one.
                                let save = self.i;
                                let low = if self.b.get(self.i..self.i + 2) == Some(b"\\u") {
                                    self.i += 2;
                                    self.hex4()
                                } else {
                                    None
                                };
                                match low {
                                    Some(l) if (0xDC00..0xE000).contains(&l) => {
                                        let cp = 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00);
                                        char::from_u32(cp).unwrap_or('\u{fffd}')
                                    }
                                    _ => {
                                        self.i = save;
                                        '\u{fffd}'
                                    }
                                }
                            } else {
                                char::from_u32(u).unwrap_or('\u{fffd}')
                            }
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return None,
                _ => out.push(c),
            }
        }
        // The input is a &str and strings end at an ASCII quote, so the bytes stay valid UTF-8.
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// Skips one JSON value of any kind.
    fn skip_value(&mut self) -> bool {
        let mut stack: Vec<u8> = Vec::new();
        loop {
            // Expect a value.
            self.ws();
            match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    self.ws();
                    if !self.eat(b'}') {
                        stack.push(b'{');
                        if !self.object_key() {
                            return false;
                        }
                        if stack.len() >= MAX_DEPTH {
                            return false;
                        }
                        continue;
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    self.ws();
                    if !self.eat(b']') {
                        stack.push(b'[');
                        if stack.len() >= MAX_DEPTH {
                            return false;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    if self.string().is_none() {
                        return false;
                    }
                }
                Some(b't') => {
                    if !self.literal(b"true") {
                        return false;
                    }
                }
                Some(b'f') => {
                    if !self.literal(b"false") {
                        return false;
                    }
                }
                Some(b'n') => {
                    if !self.literal(b"null") {
                        return false;
                    }
                }
                Some(b'-' | b'0'..=b'9') => {
                    if !self.number() {
                        return false;
                    }
                }
                _ => return false,
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&top) = stack.last() else { return true };
                self.ws();
                if self.eat(b',') {
                    if top == b'{' && !self.object_key() {
                        return false;
                    }
                    break;
                }
                let close = if top == b'{' { b'}' } else { b']' };
                if self.eat(close) {
                    stack.pop();
                    continue;
                }
                return false;
            }
        }
    }

    fn object_key(&mut self) -> bool {
        self.ws();
        if self.peek() != Some(b'"') || self.string().is_none() {
            return false;
        }
        self.ws();
        self.eat(b':')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> JsonForm {
        JsonForm::Strings(v.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn arrays() {
        assert_eq!(parse_json_array("[]"), s(&[]));
        assert_eq!(parse_json_array(" [ \"a\" , \"b\" ] "), s(&["a", "b"]));
        assert_eq!(parse_json_array(r#"["\u0041\/\n"]"#), s(&["A/\n"]));
        assert_eq!(parse_json_array(r#"["\ud83d\ude00", "\ud800x"]"#), s(&["\u{1f600}", "\u{fffd}x"]));
        assert_eq!(parse_json_array(r#"["a", 1]"#), JsonForm::NotStrings);
        assert_eq!(parse_json_array(r#"["a", {"k": [1, 2.5e3, null]}]"#), JsonForm::NotStrings);
        assert_eq!(parse_json_array(r#"["a", [ "b" ] ]"#), JsonForm::NotStrings);
        assert_eq!(parse_json_array(r#"["a", 1e308, -1e-999]"#), JsonForm::NotStrings);
        assert_eq!(parse_json_array(r#"["a", 1e309]"#), JsonForm::Invalid);
        assert_eq!(parse_json_array(r#"["a", {"k": [-2e400]}]"#), JsonForm::Invalid);
    }

    #[test]
    fn invalid() {
        for t in ["[", "[\"a\"", "['a']", "[\"a\",]", "[\"a\"] x", "echo", "[01]", "[1.]", "[\"\t\"]", "[\"\\x\"]", "[{\"a\" 1}]", "[tru]"]
        {
            assert_eq!(parse_json_array(t), JsonForm::Invalid, "{t}");
        }
        let deep = "[".repeat(20_000);
        assert_eq!(parse_json_array(&deep), JsonForm::Invalid);
    }
}
