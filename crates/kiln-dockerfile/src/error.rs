//! Parse errors. Each one carries the file name, a 1-based line and column, and says what the
//! parser expected, so that `kiln` can print `FILE:LINE:COL: message` and the user can fix it.

/// A Dockerfile that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {kind}")]
pub struct ParseError {
    /// The file name as the caller named it (`Dockerfile` unless told otherwise).
    pub file: String,
    /// 1-based line of the problem (for an instruction: the line it starts on).
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(line: usize, column: usize, kind: ParseErrorKind) -> Self {
        ParseError { file: "Dockerfile".to_string(), line, column, kind }
    }

    /// The same error, attributed to the file `name`.
    pub fn in_file(mut self, name: impl Into<String>) -> Self {
        self.file = name.into();
        self
    }
}

/// What went wrong while parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Nothing but comments, blank lines and directives.
    #[error("file with no instructions: expected at least one instruction such as `FROM image`")]
    NoInstructions,
    /// The same parser directive twice.
    #[error("only one {0} parser directive can be used: remove the repeated `# {0}=` line")]
    DuplicateDirective(String),
    /// `# escape=` with something other than a backslash or a backtick.
    #[error("invalid escape token '{0}' does not match ` or \\: expected `# escape=\\` or `# escape=``")]
    InvalidEscape(String),
    /// `ENV name` / `LABEL name` with no value.
    #[error("{0} must have two arguments: expected `{0} name=value` (or the old `{0} name value`)")]
    MissingValue(String),
    /// A word without `=` in an `ENV a=b c` / `LABEL a=b c` list.
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
    /// JSON form whose array holds something other than strings.
    #[error("when using JSON array syntax, arrays must be comprised of strings only: expected [\"executable\", \"arg\", …]")]
    JsonNotStringArray,
    /// A heredoc whose terminator line never came.
    #[error("unterminated heredoc: expected a line `{0}` to end it before the end of the file")]
    UnterminatedHeredoc(String),
    /// A heredoc delimiter the shell lexer could not read (e.g. an unmatched quote).
    #[error("invalid heredoc delimiter {0:?}: {1}")]
    HeredocDelimiter(String, String),
    /// The file is not UTF-8 text.
    #[error("invalid UTF-8: expected a UTF-8 text file (re-save the Dockerfile as UTF-8)")]
    InvalidUtf8,
    /// A physical line longer than BuildKit's line reader accepts.
    #[error("dockerfile line greater than max allowed size of {0}: split it with line continuations")]
    LineTooLong(usize),
    /// `ONBUILD ONBUILD …` nested deeper than anyone needs; refused so no input can exhaust the stack.
    #[error("ONBUILD nested more than {0} levels deep: expected `ONBUILD INSTRUCTION …`")]
    TooDeep(usize),
}
