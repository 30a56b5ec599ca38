//! Heredocs, as BuildKit documents them: `RUN <<EOF`, `COPY <<EOF /dst`, `<<-` (tab stripping),
//! quoted delimiters (no expansion), several heredocs in one instruction, and only on RUN, COPY and
//! ADD in shell form (also under ONBUILD).

use kiln_dockerfile::{parse_str, Dockerfile, Heredoc, Node, ParseErrorKind};

fn parse(src: &str) -> Dockerfile {
    parse_str(src).unwrap_or_else(|e| panic!("parse failed: {e}\n{src}"))
}

fn heredoc(name: &str, content: &str, expand: bool, chomp: bool, fd: u32) -> Heredoc {
    Heredoc { name: name.into(), content: content.into(), expand, chomp, file_descriptor: fd }
}

fn node(d: &Dockerfile, i: usize) -> &Node {
    &d.children[i]
}

#[test]
fn run_heredoc_body_is_kept_raw_and_not_parsed_as_instructions() {
    let d = parse("FROM alpine\nRUN <<EOF\n# not a comment here\necho hi \\\nFROM nope\nEOF\nRUN ls\n");
    assert_eq!(d.dump(), "(from \"alpine\")\n(run \"<<EOF\")\n(run \"ls\")\n");
    assert_eq!(node(&d, 1).heredocs, vec![heredoc("EOF", "# not a comment here\necho hi \\\nFROM nope\n", true, false, 0)]);
    assert_eq!((node(&d, 1).start_line, node(&d, 1).end_line), (2, 6));
    assert_eq!((node(&d, 2).start_line, node(&d, 2).end_line), (7, 7));
}

#[test]
fn copy_heredoc_with_destination() {
    let d = parse("FROM a\nCOPY <<EOF /usr/share/index.html\n<html>hi</html>\nEOF\n");
    assert_eq!(d.dump(), "(from \"a\")\n(copy \"<<EOF\" \"/usr/share/index.html\")\n");
    assert_eq!(node(&d, 1).heredocs, vec![heredoc("EOF", "<html>hi</html>\n", true, false, 0)]);
}

#[test]
fn several_heredocs_are_read_in_order_each_with_its_own_terminator() {
    let d = parse("FROM a\nCOPY <<X <<Y /dest\nY\nX\nX\nY\n");
    assert_eq!(node(&d, 1).heredocs, vec![heredoc("X", "Y\n", true, false, 0), heredoc("Y", "X\n", true, false, 0)]);
    assert_eq!(node(&d, 1).end_line, 6);
}

#[test]
fn dash_form_matches_a_tab_indented_terminator_and_strips_tabs_on_use() {
    let d = parse("FROM a\nRUN <<-EOT\n\tbaz\n\t\tquux\n\tEOT\nRUN ok\n");
    let h = &node(&d, 1).heredocs[0];
    assert_eq!(h, &heredoc("EOT", "\tbaz\n\t\tquux\n", true, true, 0));
    assert_eq!(h.effective_content(), "baz\nquux\n");
    assert_eq!(d.children.len(), 3);
}

#[test]
fn without_dash_a_tab_indented_terminator_is_body() {
    let r = parse_str("FROM a\nRUN <<EOT\n\tbaz\n\tEOT\n");
    let e = r.expect_err("terminator never comes");
    assert!(matches!(e.kind, ParseErrorKind::UnterminatedHeredoc(ref n) if n == "EOT"), "{e}");
    assert_eq!((e.line, e.column), (2, 1));
}

#[test]
fn quoting_the_delimiter_turns_off_expansion() {
    let src = "FROM a\nRUN <<'A'\n$x\nA\nRUN <<\"B\"\n$x\nB\nRUN <<C\n$x\nC\nRUN <<eo'f'\n$x\neof\nRUN <<eo\\'f\n$x\neo'f\n";
    let d = parse(src);
    let got: Vec<(String, bool)> = d.children[1..].iter().map(|n| (n.heredocs[0].name.clone(), n.heredocs[0].expand)).collect();
    let want = [("A", false), ("B", false), ("C", true), ("eof", false), ("eo'f", true)];
    assert_eq!(got, want.iter().map(|(n, e)| (n.to_string(), *e)).collect::<Vec<_>>());
}

#[test]
fn file_descriptor_spaces_and_names() {
    let d = parse("FROM a\nRUN 3<<EMPTY\nEMPTY\nRUN <<  EOF  > foo\nEOF\nRUN <<$EOF\n$EOF\nRUN <<'one two'\nx\none two\n");
    assert_eq!(node(&d, 1).heredocs, vec![heredoc("EMPTY", "", true, false, 3)]);
    assert_eq!(node(&d, 2).heredocs, vec![heredoc("EOF", "", true, false, 0)]);
    assert_eq!(node(&d, 3).heredocs, vec![heredoc("$EOF", "", true, false, 0)]);
    assert_eq!(node(&d, 4).heredocs, vec![heredoc("one two", "x\n", false, false, 0)]);
}

#[test]
fn heredocs_only_on_run_copy_add_in_shell_form() {
    // USER and JSON-form RUN never announce heredocs, so the next line is an instruction.
    let d = parse("FROM a\nUSER <<INVALID\nINVALID\nRUN [\"<<EOF\"]\nRUN \"<<NOHEREDOC\"\nRUN '<<EOF'\n");
    assert_eq!(
        d.dump(),
        "(from \"a\")\n(user \"<<INVALID\")\n(invalid \"\")\n(run \"<<EOF\")\n(run \"\\\"<<NOHEREDOC\\\"\")\n(run \"'<<EOF'\")\n"
    );
    assert!(d.children.iter().all(|n| n.heredocs.is_empty()));
}

#[test]
fn add_and_onbuild_take_heredocs() {
    let d = parse("FROM a\nADD <<-EOT /etc/x\n\tline\n\tEOT\nONBUILD RUN <<EOF\necho\nEOF\n");
    assert_eq!(node(&d, 1).heredocs.len(), 1);
    assert_eq!(node(&d, 2).heredocs, vec![heredoc("EOF", "echo\n", true, false, 0)]);
    assert_eq!(d.dump(), "(from \"a\")\n(add \"<<-EOT\" \"/etc/x\")\n(onbuild (run \"<<EOF\"))\n");
}

#[test]
fn heredoc_after_flags_and_continuation() {
    let d = parse("FROM a\nRUN --mount=type=cache,target=/c \\\n  <<EOT\nset -e\nEOT\n");
    assert_eq!(d.dump(), "(from \"a\")\n(run [\"--mount=type=cache,target=/c\"] \"<<EOT\")\n");
    assert_eq!(node(&d, 1).heredocs, vec![heredoc("EOT", "set -e\n", true, false, 0)]);
    assert_eq!((node(&d, 1).start_line, node(&d, 1).end_line), (2, 5));
}

#[test]
fn crlf_heredoc_terminator_and_body() {
    let d = parse("FROM a\r\nRUN <<EOF\r\necho hi\r\nEOF\r\nRUN x\r\n");
    assert_eq!(node(&d, 1).heredocs, vec![heredoc("EOF", "echo hi\r\n", true, false, 0)]);
    assert_eq!(d.children.len(), 3);
}

#[test]
fn unterminated_heredoc_is_an_error_with_its_place() {
    let e = parse_str("FROM a\n  RUN <<EOF\necho\n").expect_err("unterminated");
    assert_eq!((e.line, e.column), (2, 3));
    assert!(e.to_string().starts_with("Dockerfile:2:3: unterminated heredoc"), "{e}");
}

#[test]
fn unmatched_quote_on_the_line_announces_no_heredoc() {
    // BuildKit's lexer fails on the whole line, so it finds no heredoc and `EOF` is an instruction.
    let d = parse("FROM a\nRUN <<EOF \"oops\nEOF\n");
    assert_eq!(d.children.len(), 3);
    assert!(node(&d, 1).heredocs.is_empty());
}
