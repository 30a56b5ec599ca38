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

    /// The leftmost match starting at or after `from`, and for that start
    /// the longest one (Go's leftmost-first with greedy stars gives the
    /// same for these patterns). One pass over the text: each thread
    /// carries its start, and where two threads meet in one node the
    /// earlier start wins, since their futures are the same.
    pub(crate) fn find_leftmost_longest(&self, text: &[char], from: usize) -> Option<(usize, usize)> {
        let n = self.nodes.len();
        let mut cur = StateSet::new(n);
        let mut next = StateSet::new(n);
        let mut cur_start = vec![0usize; n];
        let mut next_start = vec![0usize; n];
        let mut best: Option<(usize, usize)> = None;
        self.add_with_start(&mut cur, &mut cur_start, self.start, from);
        let mut pos = from;
        loop {
            // Threads are kept in order of increasing start, so the first
            // one in the match state has the leftmost start.
            for &node in &cur.list {
                if node == 0 {
                    let start = cur_start[node];
                    match best {
                        Some((s, _)) if s < start => {}
                        _ => best = Some((start, pos)),
                    }
                }
            }
            let Some(&c) = text.get(pos) else { break };
            next.clear();
            for &node in &cur.list {
                let start = cur_start[node];
                if best.is_some_and(|(s, _)| start > s) {
                    continue;
                }
                if let Some(Node::Test(pred, to)) = self.nodes.get(node) {
                    if pred.test(c) {
                        self.add_with_start(&mut next, &mut next_start, *to, start);
                    }
                }
            }
            pos += 1;
            if best.is_none() {
                self.add_with_start(&mut next, &mut next_start, self.start, pos);
            }
            std::mem::swap(&mut cur, &mut next);
            std::mem::swap(&mut cur_start, &mut next_start);
            if cur.list.is_empty() {
                break;
            }
        }
        best
    }

    fn add_with_start(&self, set: &mut StateSet, starts: &mut [usize], node: usize, start: usize) {
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if !set.insert(n) {
                continue;
            }
            if let Some(slot) = starts.get_mut(n) {
                *slot = start;
            }
            if let Some(Node::Split(a, b)) = self.nodes.get(n) {
                stack.push(*b);
                stack.push(*a);
            }
        }
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
    fn leftmost_longest_agrees_with_trying_every_start() {
        let star = || Piece::Star(Pred::AnyBut('\n'));
        let ch = |c| Piece::One(Pred::Char(c));
        let patterns = [
            vec![ch('x'), star()],
            vec![star(), ch('b')],
            vec![ch('a'), star(), ch('a')],
            vec![],
            vec![ch('b'), Piece::One(Pred::AnyBut('\n')), ch('b')],
        ];
        for text in ["axbxc", "abab", "aaa", "", "b\nb", "bbbb", "zz"] {
            let t = chars(text);
            for p in &patterns {
                let nfa = Nfa::new(p);
                for from in 0..=t.len() {
                    let slow = (from..=t.len()).find_map(|s| nfa.match_at(&t, s, true).map(|e| (s, e)));
                    assert_eq!(nfa.find_leftmost_longest(&t, from), slow, "{p:?} on {text:?} from {from}");
                }
            }
        }
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
