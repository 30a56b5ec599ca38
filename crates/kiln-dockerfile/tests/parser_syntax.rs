//! Instruction-level parsing: flags, JSON and shell forms, key/value pairs, ONBUILD, HEALTHCHECK,
//! unknown instructions, dump quoting, errors with file:line:column, and inputs that must not panic.

use kiln_dockerfile::{parse, parse_file, parse_str, ParseErrorKind};

fn dump(src: &str) -> String {
    parse_str(src).unwrap_or_else(|e| panic!("parse failed: {e}\n{src}")).dump()
}

#[test]
fn builder_flags_are_extracted_unquoted() {
    let d = parse_str(
        "FROM --platform=$BUILDPLATFORM golang AS build\n\
         RUN --mount=type=cache,target=/root/.cache --network=none --security=insecure make\n\
         COPY --from=build --chown=1000:1000 --chmod=755 --link --parents --exclude=*.md a b /dst/\n\
         ADD --checksum=sha256:abc --keep-git-dir=true https://x/y.tar /z\n\
         COPY --from=\"my stage\" x y\n",
    )
    .expect("parses");
    let flags: Vec<Vec<&str>> = d.children.iter().map(|c| c.flags.iter().map(String::as_str).collect()).collect();
    assert_eq!(flags[0], ["--platform=$BUILDPLATFORM"]);
    assert_eq!(flags[1], ["--mount=type=cache,target=/root/.cache", "--network=none", "--security=insecure"]);
    assert_eq!(flags[2], ["--from=build", "--chown=1000:1000", "--chmod=755", "--link", "--parents", "--exclude=*.md"]);
    assert_eq!(flags[3], ["--checksum=sha256:abc", "--keep-git-dir=true"]);
    assert_eq!(flags[4], ["--from=my stage"]);
    assert_eq!(d.children[2].flag("from"), Some("build"));
    assert_eq!(d.children[2].flag("link"), Some(""));
    assert_eq!(d.children[2].flag("nope"), None);
    let args: Vec<&str> = d.children[0].arg_values().collect();
    assert_eq!(args, ["golang", "AS", "build"]);
}

#[test]
fn json_and_shell_forms() {
    let d = parse_str("CMD [\"a\", \"b c\"]\nCMD a [\"b\"]\nRUN [ \"x\"\nENTRYPOINT []\nSHELL [\"pwsh\", \"-c\"]\n").expect("parses");
    assert!(d.children[0].json);
    assert!(!d.children[1].json);
    assert!(!d.children[2].json, "unterminated JSON falls back to shell form");
    assert!(d.children[3].json && d.children[3].args.is_empty());
    assert_eq!(d.dump(), "(cmd \"a\" \"b c\")\n(cmd \"a [\\\"b\\\"]\")\n(run \"[ \\\"x\\\"\")\n(entrypoint)\n(shell \"pwsh\" \"-c\")\n");
}

#[test]
fn json_with_non_string_elements_is_an_error() {
    let e = parse_str("FROM a\n  CMD [\"a\", 1]\n").expect_err("not strings");
    assert_eq!(e.kind, ParseErrorKind::JsonNotStringArray);
    assert_eq!((e.line, e.column), (2, 3));
}

#[test]
fn env_label_arg_forms() {
    assert_eq!(
        dump("ENV A=1 B=\"two words\" C=\nENV OLD value with spaces\nLABEL a=b \"c d\"=e\nARG X Y=1\n"),
        "(env \"A\" \"1\" \"=\" \"B\" \"\\\"two words\\\"\" \"=\" \"C\" \"\" \"=\")\n\
         (env \"OLD\" \"value with spaces\" \"\")\n\
         (label \"a\" \"b\" \"=\" \"\\\"c d\\\"\" \"e\" \"=\")\n\
         (arg \"X\" \"Y=1\")\n"
    );
    let e = parse_str("FROM a\nENV A=1 B\n").expect_err("missing =");
    assert_eq!(e.kind, ParseErrorKind::MissingEquals("B".into()));
    let e = parse_str("FROM a\nLABEL lonely\n").expect_err("missing value");
    assert_eq!(e.kind, ParseErrorKind::MissingValue("LABEL".into()));
}

#[test]
fn onbuild_nests_and_healthcheck_maintainer_parse() {
    assert_eq!(
        dump("ONBUILD RUN --mount=type=tmpfs,target=/t echo hi\nONBUILD\nHEALTHCHECK NONE\nHEALTHCHECK --interval=5s --start-period=1s CMD curl -f x\nMAINTAINER Jane <j@x>\nSTOPSIGNAL SIGTERM\n"),
        "(onbuild (run [\"--mount=type=tmpfs,target=/t\"] \"echo hi\"))\n(onbuild)\n(healthcheck \"NONE\")\n\
         (healthcheck [\"--interval=5s\" \"--start-period=1s\"] \"CMD\" \"curl -f x\")\n\
         (maintainer \"Jane <j@x>\")\n(stopsignal \"SIGTERM\")\n"
    );
    let d = parse_str("ONBUILD ONBUILD COPY a b\n").expect("parser accepts nesting, as BuildKit's does");
    let inner = d.children[0].onbuild_inner().and_then(|n| n.onbuild_inner()).expect("two levels");
    assert_eq!(inner.value, "copy");
}

#[test]
fn deep_onbuild_nesting_is_refused_not_a_stack_overflow() {
    let src = "ONBUILD ".repeat(1_000) + "RUN x\n";
    let e = parse_str(&src).expect_err("too deep");
    assert!(matches!(e.kind, ParseErrorKind::TooDeep(_)));
}

#[test]
fn unknown_instructions_parse_with_one_empty_argument() {
    assert_eq!(dump("FROM a\nFOO bar baz\nfrob\n"), "(from \"a\")\n(foo \"\")\n(frob \"\")\n");
}

#[test]
fn keywords_are_case_insensitive_and_values_raw() {
    assert_eq!(dump("from A\nRun echo $HOME \"q\" 'x'\n"), "(from \"A\")\n(run \"echo $HOME \\\"q\\\" 'x'\")\n");
}

#[test]
fn dump_quotes_like_go() {
    assert_eq!(
        dump("FROM a\nLABEL k=\"é ♥ 한\" t=a\u{7f}b z=\"\u{a0}x\"\n"),
        "(from \"a\")\n(label \"k\" \"\\\"é ♥ 한\\\"\" \"=\" \"t\" \"a\\x7fb\" \"=\" \"z\" \"\\\"\\u00a0x\\\"\" \"=\")\n"
    );
    // BuildKit reads flags byte by byte: non-ASCII bytes come out as Latin-1 characters.
    assert_eq!(dump("COPY --from=é a b\n"), "(copy [\"--from=Ã©\"] \"a\" \"b\")\n");
}

#[test]
fn every_instruction_has_a_line_range() {
    let d = parse_str("# c\n\nFROM a\n\nRUN a \\\n  b \\\n\n  c\nCOPY <<EOF /x\nbody\nEOF\nCMD x\n").expect("parses");
    let r: Vec<(usize, usize)> = d.children.iter().map(|c| (c.start_line, c.end_line)).collect();
    assert_eq!(r, vec![(3, 3), (5, 8), (9, 11), (12, 12)]);
    assert_eq!((d.start_line, d.end_line), (3, 12));
}

#[test]
fn errors_carry_file_line_column_and_what_was_expected() {
    let e = parse_file("build/Dockerfile.dev", b"FROM a\n\n    ENV NOVALUE\n").expect_err("fails");
    assert_eq!(e.file, "build/Dockerfile.dev");
    assert_eq!((e.line, e.column), (3, 5));
    let msg = e.to_string();
    assert!(msg.starts_with("build/Dockerfile.dev:3:5: ENV must have two arguments"), "{msg}");
    assert!(msg.contains("expected"), "{msg}");

    let e = parse(b"# only a comment\n\n").expect_err("empty");
    assert_eq!(e.kind, ParseErrorKind::NoInstructions);
    assert!(e.to_string().starts_with("Dockerfile:"), "{e}");

    let e = parse(b"FROM a\nRUN \xff\n").expect_err("not UTF-8");
    assert_eq!((e.kind, e.line, e.column), (ParseErrorKind::InvalidUtf8, 2, 5));
}

#[test]
fn lines_longer_than_buildkit_reads_are_rejected() {
    let ok = format!("FROM a\nRUN {}\n", "x".repeat(65_531));
    assert!(parse_str(&ok).is_ok(), "a 65535-byte line plus its newline fits");
    let long = format!("FROM a\nRUN {}\n", "x".repeat(65_536));
    let e = parse_str(&long).expect_err("too long");
    assert!(matches!(e.kind, ParseErrorKind::LineTooLong(65_535)));
    assert_eq!(e.line, 2);
}

/// A small deterministic generator (xorshift) of hostile inputs: every one must parse or fail
/// cleanly. The fuzz target explores much further; this keeps the property in the test suite.
#[test]
fn arbitrary_inputs_never_panic() {
    let pieces: &[&str] = &[
        "FROM",
        "RUN",
        "COPY",
        "ONBUILD",
        "HEALTHCHECK",
        "ENV",
        "LABEL",
        "ARG",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\\",
        "`",
        "#",
        "# escape=`",
        "# syntax=x",
        "<<",
        "<<-",
        "EOF",
        "'",
        "\"",
        "[",
        "]",
        ",",
        "=",
        "--",
        "--a=",
        "${",
        "}",
        "$x",
        ":-",
        "é",
        "\u{a0}",
        "\u{feff}",
        "\u{85}",
        "0",
        "3<<",
        "{",
        "}",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let mut src = String::new();
        let n = (state % 24) as usize;
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            src.push_str(pieces[(state % pieces.len() as u64) as usize]);
        }
        state = state.wrapping_add(1);
        if let Ok(d) = parse_str(&src) {
            let _ = d.dump();
        }
    }
}
