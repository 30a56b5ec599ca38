//! The node tree the parser produces, shaped like BuildKit's `parser.Node` so that its dump matches
//! BuildKit's `AST.Dump()` byte for byte.
//!
//! BuildKit keeps arguments as a singly linked `Next` chain; here that chain is the `args` vector.
//! Only one kind of argument ever has children: the argument of `ONBUILD`, which holds the nested
//! instruction (`ONBUILD RUN x` is `onbuild` → arg node with one child `run` → `"x"`).

use std::fmt::{self, Write as _};

/// The result of parsing one Dockerfile: the instructions in source order plus what the parser
/// learned from the parser directives at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// One node per instruction, in source order (BuildKit's root `Children`).
    pub children: Vec<Node>,
    /// The parser directives found at the top of the file (`# syntax=`, `# escape=`, `# check=`).
    pub directives: Directives,
    /// First source line (1-based) of the first instruction.
    pub start_line: usize,
    /// Last source line (1-based) of the last instruction, heredoc bodies included.
    pub end_line: usize,
    /// Non-fatal findings, e.g. empty lines inside a continued instruction (BuildKit warns and
    /// says they will become errors).
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// BuildKit's `AST.Dump()`: one `(keyword …)` line per instruction, each ending in `\n`.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            out.push('(');
            child.dump_into(&mut out);
            out.push_str(")\n");
        }
        out
    }

    /// The escape character in force: `\` unless an `# escape=` directive chose the backtick.
    pub fn escape_char(&self) -> char {
        self.directives.escape_char()
    }
}

/// The parser directives of a Dockerfile. Each can appear once, only before the first instruction,
/// comment line or blank line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directives {
    /// `# escape=` value, `\` or `` ` ``; `None` when absent (then `\` applies).
    pub escape: Option<char>,
    /// `# syntax=` value (the frontend image reference and any options), if present.
    pub syntax: Option<String>,
    /// `# check=` value (build-check configuration such as `skip=…;error=true`), if present.
    pub check: Option<String>,
    /// Every directive in the order it appeared, with its line.
    pub all: Vec<Directive>,
}

impl Directives {
    /// The escape character in force.
    pub fn escape_char(&self) -> char {
        self.escape.unwrap_or('\\')
    }
}

/// One parser directive as written (`# name=value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased directive name: `syntax`, `escape` or `check`.
    pub name: String,
    /// The value with surrounding whitespace removed.
    pub value: String,
    /// 1-based source line.
    pub line: usize,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What was found, in BuildKit's words.
    pub message: String,
    /// 1-based line where the instruction it concerns ends.
    pub line: usize,
}

/// One node of the tree.
///
/// For an instruction node, `value` is the lowercased keyword (`run`, `copy`, or any unknown word:
/// like BuildKit, unknown instructions parse and are left for later stages to reject), `flags`
/// holds the `--name=value` builder flags, and `args` the parsed arguments. Argument nodes only
/// use `value` (raw text: quotes and escapes kept, nothing expanded) and, for ONBUILD, `children`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Keyword (instruction nodes, lowercased) or argument text.
    pub value: String,
    /// The arguments that follow (BuildKit's `Next` chain).
    pub args: Vec<Node>,
    /// Nested instructions; only the argument node of `ONBUILD` has one.
    pub children: Vec<Node>,
    /// Builder flags exactly as BuildKit extracts them: unquoted, `--name` or `--name=value`.
    pub flags: Vec<String>,
    /// Heredoc bodies attached to this instruction (RUN, COPY, ADD; also inside ONBUILD).
    pub heredocs: Vec<Heredoc>,
    /// The arguments were written in JSON (exec) form, e.g. `CMD ["a", "b"]`.
    pub json: bool,
    /// The logical line the instruction came from: continuations joined, comments removed.
    pub original: String,
    /// First source line (1-based) of the instruction; 0 for argument nodes.
    pub start_line: usize,
    /// Last source line (1-based) of the instruction including heredoc bodies; 0 for arguments.
    pub end_line: usize,
    /// Comment lines directly above the instruction (text after `#`, trimmed).
    pub prev_comment: Vec<String>,
}

impl Node {
    /// A plain argument node holding `value`.
    pub fn arg(value: impl Into<String>) -> Node {
        Node { value: value.into(), ..Node::default() }
    }

    /// The instruction nested in an `ONBUILD`, if this is one.
    pub fn onbuild_inner(&self) -> Option<&Node> {
        self.args.first().and_then(|a| a.children.first())
    }

    /// The argument values as strings (ONBUILD's nested instruction contributes nothing).
    pub fn arg_values(&self) -> impl Iterator<Item = &str> {
        self.args.iter().filter(|a| a.children.is_empty()).map(|a| a.value.as_str())
    }

    /// The value of the builder flag `--name` (`Some("")` for a bare `--name`), last one wins.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find_map(|f| {
            let rest = f.strip_prefix("--")?;
            match rest.split_once('=') {
                Some((n, v)) if n == name => Some(v),
                None if rest == name => Some(""),
                _ => None,
            }
        })
    }

    /// BuildKit's `Node.Dump()` for this node, without the surrounding parentheses.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        self.dump_into(&mut out);
        out
    }

    fn dump_into(&self, out: &mut String) {
        // BuildKit builds the string and then trims white space at both ends; that trim is what
        // drops the leading space before an ONBUILD argument (whose own value is empty) and the
        // newline after its nested instruction.
        let start = out.len();
        out.push_str(&crate::quote::go_to_lower(&self.value));
        if !self.flags.is_empty() {
            out.push_str(" [");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_quote_into(f, out);
            }
            out.push(']');
        }
        for child in &self.children {
            out.push('(');
            child.dump_into(out);
            out.push_str(")\n");
        }
        for arg in &self.args {
            out.push(' ');
            if arg.children.is_empty() {
                go_quote_into(&arg.value, out);
            } else {
                arg.dump_into(out);
            }
        }
        let trimmed = go_trim_space(&out[start..]).to_string();
        out.truncate(start);
        out.push_str(&trimmed);
    }
}

/// A heredoc attached to an instruction (`<<EOF … EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word with quotes removed.
    pub name: String,
    /// File descriptor written before `<<` (`3<<EOF`); 0 when absent.
    pub file_descriptor: u32,
    /// Variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines and from the terminator.
    pub chomp: bool,
    /// The body, every line with its original line ending, tabs not yet stripped.
    pub content: String,
}

impl Heredoc {
    /// The body as the instruction sees it: with `<<-`, leading tabs removed from every line.
    pub fn effective_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// Go's `strings.TrimSpace`: trims Unicode white space at both ends.
fn go_trim_space(s: &str) -> &str {
    s.trim_matches(crate::quote::is_go_space)
}

fn go_quote_into(s: &str, out: &mut String) {
    crate::quote::go_quote_into(s, out);
}

impl fmt::Display for Dockerfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dump())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.dump_into(&mut s);
        f.write_char('(')?;
        f.write_str(&s)?;
        f.write_char(')')
    }
}
