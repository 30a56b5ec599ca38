//! Parser directives and the escape directive, as BuildKit documents them: directives are
//! `# name=value` lines at the very top; the first comment, blank line or instruction ends the
//! directive block; each may appear once; `escape` picks `\` or `` ` `` for escaping and
//! line continuation.

use kiln_dockerfile::{parse_str, ParseErrorKind};

#[test]
fn syntax_escape_and_check_are_recorded() {
    let d = parse_str("# syntax=docker/dockerfile:1.7\n# escape=`\n#check=skip=JSONArgsRecommended;error=true\nFROM a\n").expect("parses");
    assert_eq!(d.directives.syntax.as_deref(), Some("docker/dockerfile:1.7"));
    assert_eq!(d.directives.escape, Some('`'));
    assert_eq!(d.directives.check.as_deref(), Some("skip=JSONArgsRecommended;error=true"));
    let lines: Vec<(&str, usize)> = d.directives.all.iter().map(|x| (x.name.as_str(), x.line)).collect();
    assert_eq!(lines, vec![("syntax", 1), ("escape", 2), ("check", 3)]);
    assert_eq!(d.escape_char(), '`');
}

#[test]
fn directive_names_are_case_insensitive_and_spacing_is_free() {
    let d = parse_str("#  ESCAPE =  `  \n# Syntax\t=\tfoo/bar  \nFROM a\n").expect("parses");
    assert_eq!(d.directives.escape, Some('`'));
    assert_eq!(d.directives.syntax.as_deref(), Some("foo/bar"));
}

#[test]
fn duplicate_directive_is_an_error_naming_the_line() {
    let e = parse_str("# syntax=a\n# syntax=b\nFROM x\n").expect_err("duplicate");
    assert_eq!(e.kind, ParseErrorKind::DuplicateDirective("syntax".into()));
    assert_eq!(e.line, 2);
    let e = parse_str("# escape=`\n# ESCAPE=\\\nFROM x\n").expect_err("duplicate escape");
    assert_eq!(e.kind, ParseErrorKind::DuplicateDirective("escape".into()));
}

#[test]
fn invalid_escape_token_is_an_error() {
    let e = parse_str("# escape=x\nFROM a\n").expect_err("bad escape");
    assert_eq!(e.kind, ParseErrorKind::InvalidEscape("x".into()));
    assert_eq!((e.line, e.column), (1, 1));
}

#[test]
fn directives_end_at_a_comment_a_blank_line_or_an_instruction() {
    // After an ordinary comment, `# escape=` is just a comment, so `\` still continues lines.
    let d = parse_str("# hello\n# escape=`\nFROM a\nRUN x \\\n  y\n").expect("parses");
    assert_eq!(d.directives.escape, None);
    assert_eq!(d.dump(), "(from \"a\")\n(run \"x   y\")\n");
    // After a blank line.
    let d = parse_str("\n# escape=`\nFROM a\n").expect("parses");
    assert_eq!(d.directives.escape, None);
    // After an instruction a repeated directive is a plain comment, not a duplicate.
    let d = parse_str("# syntax=a\nFROM a\n# syntax=b\n").expect("parses");
    assert_eq!(d.directives.syntax.as_deref(), Some("a"));
    // An unknown directive also ends the block.
    let d = parse_str("# foo=bar\n# escape=`\nFROM a\n").expect("parses");
    assert_eq!(d.directives.escape, None);
}

#[test]
fn directive_comment_lines_are_not_instruction_comments() {
    let d = parse_str("# syntax=x\n# about FROM\nFROM a\n").expect("parses");
    assert_eq!(d.children[0].prev_comment, vec!["about FROM".to_string()]);
}

#[test]
fn backtick_escape_continues_lines_and_leaves_backslashes_alone() {
    let src = "# escape=`\nFROM mcr.microsoft.com/windows/servercore\nRUN dir c:\\ `\n    && echo done\nCOPY . c:\\app\\\nENV P=c:\\x` y\n";
    let d = parse_str(src).expect("parses");
    assert_eq!(
        d.dump(),
        "(from \"mcr.microsoft.com/windows/servercore\")\n(run \"dir c:\\\\     && echo done\")\n(copy \".\" \"c:\\\\app\\\\\")\n(env \"P\" \"c:\\\\x` y\" \"=\")\n"
    );
    assert_eq!((d.children[1].start_line, d.children[1].end_line), (3, 4));
}

#[test]
fn escaped_escape_does_not_continue() {
    let d = parse_str("FROM a\nRUN echo \\\\\nRUN next\n").expect("parses");
    assert_eq!(d.dump(), "(from \"a\")\n(run \"echo \\\\\\\\\")\n(run \"next\")\n");
    let d = parse_str("# escape=`\nFROM a\nRUN echo ``\nRUN next\n").expect("parses");
    assert_eq!(d.dump(), "(from \"a\")\n(run \"echo ``\")\n(run \"next\")\n");
}

#[test]
fn comments_and_blank_lines_inside_a_continued_instruction_are_skipped() {
    let d = parse_str("FROM a\nRUN one \\\n# comment\n   # indented comment\n\n  two\nRUN three\n").expect("parses");
    assert_eq!(d.dump(), "(from \"a\")\n(run \"one   two\")\n(run \"three\")\n");
    assert_eq!((d.children[1].start_line, d.children[1].end_line), (2, 6));
    assert_eq!(d.warnings.len(), 1, "BuildKit warns about the empty continuation line");
}

#[test]
fn byte_order_mark_and_crlf() {
    let d = parse_str("\u{feff}# escape=`\r\nFROM a\r\nRUN x `\r\n  y\r\n").expect("parses");
    assert_eq!(d.directives.escape, Some('`'));
    assert_eq!(d.dump(), "(from \"a\")\n(run \"x   y\")\n");
}

#[test]
fn continuation_at_end_of_file_ends_the_instruction() {
    let d = parse_str("FROM a\nRUN x \\").expect("parses");
    assert_eq!(d.dump(), "(from \"a\")\n(run \"x\")\n");
}
