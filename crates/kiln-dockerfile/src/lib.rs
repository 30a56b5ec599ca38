//! kiln-dockerfile: the Dockerfile frontend. Pure functions over text: no file system, no network.
//!
//! The model follows BuildKit in three layers:
//!
//! 1. **Parsing** ([`parse`], [`parse_file`]) turns bytes into a [`Dockerfile`]: a list of
//!    instruction [`Node`]s, each with its lowercased keyword, builder flags (`--mount=…`), raw
//!    arguments (nothing expanded, quotes kept), heredoc bodies and source line range, plus the
//!    parser directives (`# syntax=`, `# escape=`, `# check=`). It accepts exactly what BuildKit's
//!    parser accepts, unknown instructions included, and [`Dockerfile::dump`] prints BuildKit's
//!    `AST.Dump()` format byte for byte. Errors are [`ParseError`]s naming file:line:column.
//! 2. **Shell words** ([`shell`]) expand `$VAR` / `${VAR…}` and split words as BuildKit's lexer does,
//!    honouring the escape directive.
//! 3. **Typed instructions** ([`instructions`]) check each node (which flags an instruction takes,
//!    how many arguments), resolve ARG/ENV scoping and stages, and say which stages a target needs.
//!
//! [`dockerignore`] matches build-context paths with Docker's (not gitignore's) rules.

pub mod ast;
pub mod error;
mod heredoc;
mod json;
pub mod parser;
pub mod quote;

pub mod dockerignore;
pub mod instructions;
pub mod shell;

pub use ast::{Directive, Directives, Dockerfile, Heredoc, Node, Warning};
pub use error::{ParseError, ParseErrorKind};
pub use parser::{parse, parse_file, parse_str};
