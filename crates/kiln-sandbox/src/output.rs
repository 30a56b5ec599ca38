//! Turning the command's byte streams into lines, and keeping the last few for error messages.

use std::collections::VecDeque;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A line longer than this is delivered in pieces, so one newline-less stream cannot grow memory
/// without bound.
pub const MAX_LINE: usize = 64 * 1024;

/// Splits a byte stream into lines (without the `\n`); a final unterminated line is flushed by
/// [`LineSplitter::finish`].
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                emit(&data[..i]);
            } else {
                self.pending.extend_from_slice(&data[..i]);
                emit(&self.pending);
                self.pending.clear();
            }
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            emit(&self.pending);
            self.pending = rest;
        }
    }

    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// The last `cap` lines of output, for failure messages.
pub(crate) struct Tail {
    cap: usize,
    lines: VecDeque<String>,
}

/// Lines in an error message are cut to this many characters.
const TAIL_LINE_CHARS: usize = 500;

impl Tail {
    pub(crate) fn new(cap: usize) -> Tail {
        Tail { cap, lines: VecDeque::with_capacity(cap) }
    }

    pub(crate) fn push(&mut self, line: &[u8]) {
        if self.cap == 0 {
            return;
        }
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        let text = String::from_utf8_lossy(line);
        let text: String = if text.chars().count() > TAIL_LINE_CHARS {
            text.chars().take(TAIL_LINE_CHARS).chain("…".chars()).collect()
        } else {
            text.into_owned()
        };
        self.lines.push_back(text);
    }

    pub(crate) fn into_vec(self) -> Vec<String> {
        self.lines.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l.to_vec()));
        }
        s.finish(&mut |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_across_chunks() {
        let out = split(&[b"a\nb", b"c\n\nd"]);
        assert_eq!(out, vec![b"a".to_vec(), b"bc".to_vec(), b"".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn long_lines_are_cut() {
        let big = vec![b'x'; MAX_LINE * 2 + 5];
        let out = split(&[&big]);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![MAX_LINE, MAX_LINE, 5]);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Tail::new(3);
        for i in 0..10 {
            t.push(format!("line {i}").as_bytes());
        }
        t.push(&[0xff, b'a']);
        assert_eq!(t.into_vec(), vec!["line 8", "line 9", "\u{fffd}a"]);
    }
}
