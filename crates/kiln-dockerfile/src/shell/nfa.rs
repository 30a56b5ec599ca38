//! A tiny Thompson NFA shared by the shell-pattern operators (`${V#pat}`,
//! `${V/pat/rep}`) and `.dockerignore` matching.
//!
//! Both BuildKit and moby translate their globs into Go regular expressions.
//! The subset they generate (literals, "any char but X", stars, one optional
//! group, character classes) is small, so kiln compiles it straight into an
//! NFA instead of pulling in a regex engine. Simulating the NFA visits every
//! (node, position) pair at most once, so no pattern can make matching
//! exponential, and the simulation can report *every* end position of a
//! match, which gives shortest and longest matches without regex laziness.

/// What one input character must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pred {
    /// Exactly this character.
    Char(char),
    /// Any character except this one (Go's `.` is "anything but `\n`",
    /// a path glob's `*` is "anything but `/`").
    AnyBut(char),
    /// A bracket expression.
    Class(Class),
}

impl Pred {
    fn test(&self, c: char) -> bool {
        match self {
            Pred::Char(x) => *x == c,
            Pred::AnyBut(x) => *x != c,
            Pred::Class(class) => class.test(c),
        }
    }
}

/// A bracket expression such as `[a-z_]` or `[^/]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Class {
    pub negated: bool,
    pub items: Vec<ClassItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClassItem {
    Range(char, char),
    /// A Perl class (`\d`, `\s`, `\w`), ASCII-only as in Go; `true` negates.
    Perl(PerlClass, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PerlClass {
    Digit,
    Space,
    Word,
}

impl PerlClass {
    pub(crate) fn test(self, c: char) -> bool {
        match self {
            PerlClass::Digit => c.is_ascii_digit(),
            PerlClass::Space => matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' '),
            PerlClass::Word => c.is_ascii_alphanumeric() || c == '_',
        }
    }
}

impl Class {
    fn test(&self, c: char) -> bool {
        let hit = self.items.iter().any(|item| match item {
            ClassItem::Range(lo, hi) => *lo <= c && c <= *hi,
            ClassItem::Perl(p, negated) => p.test(c) != *negated,
        });
        hit != self.negated
    }
}

/// One element of a pattern, in the order it must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Exactly one character satisfying the predicate.
    One(Pred),
    /// Zero or more characters each satisfying the predicate.
    Star(Pred),
    /// Go's `(.*/)?`: optionally, any run of non-newline characters ending
    /// in `/`. This is how `**/` reaches any depth, including none.
    AnyDirs,
}

#[derive(Debug, Clone)]
enum Node {
    Test(Pred, usize),
    Split(usize, usize),
    Match,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Nfa {
    nodes: Vec<Node>,
    start: usize,
}

impl Nfa {
    pub(crate) fn new(pieces: &[Piece]) -> Nfa {
        let mut nodes = vec![Node::Match];
        let mut next = 0;
        for piece in pieces.iter().rev() {
            match piece {
                Piece::One(p) => {
                    nodes.push(Node::Test(p.clone(), next));
                    next = nodes.len() - 1;
                }
                Piece::Star(p) => {
                    let split = nodes.len();
                    nodes.push(Node::Split(split + 1, next));
                    nodes.push(Node::Test(p.clone(), split));
                    next = split;
                }
                Piece::AnyDirs => {
                    let slash = nodes.len();
                    nodes.push(Node::Test(Pred::Char('/'), next));
                    let group = nodes.len();
                    nodes.push(Node::Split(group + 1, slash));
                    nodes.push(Node::Test(Pred::AnyBut('\n'), group));
                    nodes.push(Node::Split(group, next));
                    next = nodes.len() - 1;
                }
            }
        }
        Nfa { nodes, start: next }
    }

    fn add(&self, set: &mut StateSet, node: usize) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if !set.insert(n) {
                continue;
            }
            if let Some(Node::Split(a, b)) = self.nodes.get(n) {
                stack.push(*b);
                stack.push(*a);
            }
        }
    }

    fn step(&self, from: &StateSet, c: char, to: &mut StateSet) {
        to.clear();
        for &n in &from.list {
            if let Some(Node::Test(pred, next)) = self.nodes.get(n) {
                if pred.test(c) {
                    self.add(to, *next);
                }
            }
        }
    }

    /// Calls `f` with every position `end` (in increasing order) such that
    /// `text[start..end]` matches the whole pattern; stops when `f` returns
    /// false.
    pub(crate) fn each_end(&self, text: &[char], start: usize, mut f: impl FnMut(usize) -> bool) {
        let mut cur = StateSet::new(self.nodes.len());
        let mut next = StateSet::new(self.nodes.len());
        self.add(&mut cur, self.start);
        let mut pos = start;
        loop {
            if cur.contains(0) && !f(pos) {
                return;
            }
            let Some(&c) = text.get(pos) else { return };
            if cur.list.is_empty() {
                return;
            }
            self.step(&cur, c, &mut next);
            std::mem::swap(&mut cur, &mut next);
            pos += 1;
        }
    }

    /// The shortest (`longest == false`) or longest match starting at `start`.
    pub(crate) fn match_at(&self, text: &[char], start: usize, longest: bool) -> Option<usize> {
        let mut found = None;
        self.each_end(text, start, |end| {
            found = Some(end);
            longest
        });
        found
    }

    /// Whether the whole of `text` matches.
    pub(crate) fn is_full_match(&self, text: &[char]) -> bool {
        self.match_at(text, 0, true) == Some(text.len())
    }

    /// Whether some string that starts with `prefix` could still match,
    /// i.e. the NFA is not dead after reading `prefix`. Every node of a
    /// pattern built from [`Piece`]s can reach the match state (except
    /// through an empty class), so a live state means a possible match.
    pub(crate) fn alive_after(&self, prefix: &[char]) -> bool {
        let mut cur = StateSet::new(self.nodes.len());
        let mut next = StateSet::new(self.nodes.len());
        self.add(&mut cur, self.start);
        for &c in prefix {
            if cur.list.is_empty() {
                return false;
            }
            self.step(&cur, c, &mut next);
            std::mem::swap(&mut cur, &mut next);
        }
        !cur.list.is_empty()
    }
}

/// A set of NFA nodes with O(1) insert and clear.
struct StateSet {
    mark: Vec<bool>,
    list: Vec<usize>,
}

impl StateSet {
    fn new(n: usize) -> StateSet {
        StateSet { mark: vec![false; n], list: Vec::new() }
    }
    fn insert(&mut self, n: usize) -> bool {
        match self.mark.get_mut(n) {
            Some(m) if !*m => {
                *m = true;
                self.list.push(n);
                true
            }
            _ => false,
        }
    }
    fn contains(&self, n: usize) -> bool {
        self.mark.get(n).copied().unwrap_or(false)
    }
    fn clear(&mut self) {
        for &n in &self.list {
            if let Some(m) = self.mark.get_mut(n) {
                *m = false;
            }
        }
        self.list.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn star_shortest_and_longest() {
        let nfa = Nfa::new(&[Piece::Star(Pred::AnyBut('\n')), Piece::One(Pred::Char('x'))]);
        let t = chars("axbxc");
        assert_eq!(nfa.match_at(&t, 0, false), Some(2));
        assert_eq!(nfa.match_at(&t, 0, true), Some(4));
        assert_eq!(nfa.match_at(&t, 4, true), None);
    }

    #[test]
    fn any_dirs_is_optional_and_needs_a_slash() {
        let nfa = Nfa::new(&[Piece::AnyDirs, Piece::One(Pred::Char('f'))]);
        assert!(nfa.is_full_match(&chars("f")));
        assert!(nfa.is_full_match(&chars("a/b/f")));
        assert!(!nfa.is_full_match(&chars("af")));
        assert!(nfa.alive_after(&chars("zz/")));
    }
}
