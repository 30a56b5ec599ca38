//! Expansion cases that BuildKit keeps in Go code rather than data files:
//! pattern operators, `?` messages, used/unset tracking, the backtick escape
//! directive, and hostile inputs.

use std::collections::BTreeMap;

use kiln_dockerfile::shell::{ExpandErrorKind, Lexer};

/// (input, environment, expected value or error text)
type Case = (&'static str, &'static [(&'static str, &'static str)], &'static str);

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn word(input: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
    Lexer::new('\\').process_word(input, &env(pairs)).map_err(|e| e.to_string())
}

#[test]
fn pattern_operators() {
    let cases: &[Case] = &[
        (r"${FOO#()[]{\}^$.\*\?|\\}", &[("FOO", r"()[]{}^$.*?|\x")], "x"),
        (r"${FOO%%\**}", &[("FOO", "xx**")], "xx"),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], "y"),
        ("${FOO#*}", &[("FOO", "xxyy")], "xxyy"),
        ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], "xyy"),
        ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy"),
        ("${FOO#}", &[("FOO", "xxyy")], "xxyy"),
        ("${FOO##*x}", &[("FOO", "xxyy")], "yy"),
        ("${FOO##}", &[("FOO", "xxyy")], "xxyy"),
        (r"${FOO#?\?}", &[("FOO", "???y")], "?y"),
        ("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")], ".xxyy."),
        (r"${FOO%%\**\*}", &[("FOO", "a***yy*")], "a"),
        ("${FOO%}", &[("FOO", "xxyy")], "xxyy"),
        ("${FOO%%$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy"),
        ("${FOO%y*}", &[("FOO", "xxyy")], "xxy"),
        ("${FOO%%y*}", &[("FOO", "xxyy")], "xx"),
        ("${FOO%.*}", &[("FOO", "archive.tar.gz")], "archive.tar"),
        ("${FOO%%.*}", &[("FOO", "archive.tar.gz")], "archive"),
        ("${FOO#*/}", &[("FOO", "a/b/c")], "b/c"),
        ("${FOO##*/}", &[("FOO", "a/b/c")], "c"),
        ("${FOO:#a}", &[("FOO", "abc")], "bc"),
        ("${UNSET#a}", &[], ""),
        ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")], "/foo.*/*.txt - /foo..*.txt"),
        ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")], "/tmp/bar.txt - /bar.txt"),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")],
            "/foo/b/c.txt - /foo/c.txt",
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[("FOO", "http://google.de"), ("NEEDLE", "http://"), ("REPLACEMENT", "https://")],
            "https://google.de",
        ),
        (r"${FOO//\//\/}", &[("FOO", "/tmp/foo.txt")], r"\/tmp\/foo.txt"),
        ("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], "wwxxyy"),
        ("${FOO//$BAR/-}", &[("FOO", "ab"), ("BAR", "")], "-a-b-"),
        ("${FOO///}", &[("FOO", "xxyy")], "xxyy"),
        ("${FOO///}", &[], ""),
        ("${FOO/x*/Z}", &[("FOO", "axbxc")], "aZ"),
        ("${FOO//x?/Z}", &[("FOO", "axbxcx")], "aZZx"),
        // The replacement of a replace-all is a Go template after expansion:
        // a `$0` that comes out of a variable means the match.
        ("${FOO//b/$R}", &[("FOO", "abcb"), ("R", "[$0]")], "a[b]c[b]"),
        ("${FOO/b/$R}", &[("FOO", "abcb"), ("R", "[$0]")], "a[$0]cb"),
        // Wildcards never cross a newline (Go's `.`).
        ("${FOO#*b}", &[("FOO", "a\nb")], "a\nb"),
        ("${FOO:?msg}", &[("FOO", "plain")], "plain"),
        ("${FOO?msg}", &[("FOO", "")], ""),
    ];
    for (input, pairs, expected) in cases {
        assert_eq!(word(input, pairs).as_deref(), Ok(*expected), "input {input:?}");
    }
}

#[test]
fn pattern_and_modifier_errors() {
    let cases: &[Case] = &[
        ("${FOO//ww}", &[("FOO", "xxyy")], "missing '/'"),
        ("${FOO//}", &[("FOO", "xxyy")], "missing '/'"),
        ("${FOO=aaa}", &[("FOO", "xxx")], "unsupported modifier (=)"),
        ("${FOO=:aaa}", &[("FOO", "xxx")], "unsupported modifier (=)"),
        ("${FOO=}", &[], "unsupported modifier"),
        (r"${FOO#\x}", &[("FOO", "x")], "invalid pattern"),
        (r"${FOO#a\\\}", &[("FOO", "x")], "missing '}'"),
        ("${VAR:?message here$ARG}", &[("VAR", ""), ("ARG", "x")], "VAR: message herex"),
        ("${VAR:?message here$ARG}", &[("ARG", "x")], "VAR: message herex"),
        ("${VAR?message here$ARG}", &[("ARG", "x")], "VAR: message herex"),
        ("${VAR?}", &[], "VAR: is not allowed to be unset"),
        ("${VAR:?}", &[("VAR", "")], "VAR: is not allowed to be empty"),
    ];
    for (input, pairs, needle) in cases {
        match word(input, pairs) {
            Ok(w) => panic!("{input:?} should fail, gave {w:?}"),
            Err(msg) => assert!(msg.contains(needle), "{input:?}: {msg:?} lacks {needle:?}"),
        }
    }
}

#[test]
fn error_carries_word_and_column() {
    let err = Lexer::new('\\').process_word("ab${X", &env(&[])).unwrap_err();
    assert_eq!(err.kind, ExpandErrorKind::MissingBrace);
    assert_eq!(err.word, "ab${X");
    assert_eq!(err.column, 6);
    assert_eq!(err.to_string(), "failed to process \"ab${X\": syntax error: missing '}' (at character 6 of the word)");
}

#[test]
fn used_and_unset_variables_are_reported() {
    let e = env(&[("FOO", "xxx"), ("BAR", "")]);
    let x = Lexer::new('\\').expand("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc} $1 '$NOPE'", &e).unwrap();
    assert_eq!(x.word, "xxx bbb ccc  $NOPE");
    assert_eq!(x.used.iter().collect::<Vec<_>>(), ["BAR", "FOO"]);
    assert_eq!(x.unset.iter().collect::<Vec<_>>(), ["1", "BAZ"]);
    let p = Lexer::new('\\')
        .expand(
            "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
            &env(&[("VERSION", "v1.2.3"), ("TARGETOS", "linux"), ("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]),
        )
        .unwrap();
    assert_eq!(p.word, "something-v1.2.3.linux-arm-v7.tar.gz");
    assert_eq!(p.used.len(), 4);
    assert!(p.unset.is_empty());
}

#[test]
fn backtick_escape_directive() {
    let lx = Lexer::new('`');
    let e = env(&[("PWD", "/home"), ("SP", "a b")]);
    // The backtick escapes; a backslash is an ordinary character.
    assert_eq!(lx.process_word(r"C:\path\to", &e).unwrap(), r"C:\path\to");
    assert_eq!(lx.process_word("he`$PWD", &e).unwrap(), "he$PWD");
    assert_eq!(lx.process_word(r"he\$PWD", &e).unwrap(), r"he\/home");
    assert_eq!(lx.process_word("he``$PWD", &e).unwrap(), "he`/home");
    assert_eq!(lx.process_word("a`'b", &e).unwrap(), "a'b");
    assert_eq!(lx.process_word("\"q`\"x\"", &e).unwrap(), "q\"x");
    assert_eq!(lx.process_word("\"a`tb\"", &e).unwrap(), "a`tb");
    assert_eq!(lx.process_word("\"a\\\"", &e).unwrap(), "a\\");
    assert_eq!(lx.process_word("hello`", &e).unwrap(), "hello");
    assert_eq!(lx.process_words("one` two three", &e).unwrap(), ["one two", "three"]);
    assert_eq!(lx.process_words("x$SP", &e).unwrap(), ["xa", "b"]);
    assert!(lx.process_word("\"hello`\"", &e).is_err());
}

#[test]
fn switches_match_buildkit() {
    let e = env(&[("A", "1")]);
    let mut lx = Lexer::new('\\');
    lx.skip_unset_env = true;
    assert_eq!(lx.process_word("$A $B ${C} ${D:-x} ${E/a/b}", &e).unwrap(), "1 $B ${C} ${D:-x} ${E/a/b}");
    let mut lx = Lexer::new('\\');
    lx.raw_quotes = true;
    assert_eq!(lx.process_word(r#"'a'"$A""#, &e).unwrap(), r#"'a'"1""#);
    let mut lx = Lexer::new('\\');
    lx.skip_process_quotes = true;
    assert_eq!(lx.process_word(r#"'$A' "x""#, &e).unwrap(), r#"'1' "x""#);
}

#[test]
fn hostile_inputs_do_not_panic() {
    let e = env(&[("A", "aaaa")]);
    let deep = "${A:-".repeat(10_000);
    let err = Lexer::new('\\').process_word(&deep, &e).unwrap_err();
    assert_eq!(err.kind, ExpandErrorKind::TooDeep);
    let ok = format!("{}x{}", "${A:+".repeat(60), "}".repeat(60));
    assert_eq!(Lexer::new('\\').process_word(&ok, &e).unwrap(), "x");
    for input in ["$", "${", "${A", "${A:", "${A/", "${A//", "${A/x", "\\", "\"\\", "'", "${A#\\", "${A%\\}", "\u{feff}$A"] {
        let _ = Lexer::new('\\').expand(input, &e);
        let _ = Lexer::new('`').expand(input, &e);
    }
    // Many stars against a long value stay polynomial.
    let value = "a".repeat(2000);
    let e = env(&[("V", &value)]);
    assert_eq!(Lexer::new('\\').process_word("${V##*a*a*a*a*a*b}", &e).unwrap(), value);
}
