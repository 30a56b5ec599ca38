//! `.dockerignore` matching with Docker's rules. Rows are (patterns, path,
//! expected): `Some(excluded)` or `None` when the patterns must be rejected.
//! Most rows come from moby/patternmatcher's and Go's `filepath.Match`
//! behaviour; the rest pin Docker's reading rules.

use kiln_dockerfile::dockerignore::{clean, read_patterns, IgnoreError, MatchInfo, Matcher};

type Row = (&'static [&'static str], &'static str, Option<bool>);

const T: Option<bool> = Some(true);
const F: Option<bool> = Some(false);
const ERR: Option<bool> = None;

const ROWS: &[Row] = &[
    // plain names are anchored at the context root
    (&["*"], "fileutils.go", T),
    (&["*.go"], "fileutils.go", T),
    (&["*.go"], "dir/fileutils.go", F),
    (&["foo"], "foo", T),
    (&["foo"], "dir/foo", F),
    (&["foo"], "foobar", F),
    // a pattern matching a parent directory excludes its children
    (&["foo"], "foo/bar/baz.txt", T),
    (&["docs/"], "docs/README.md", T),
    (&["a*/b"], "abc/b/c", T),
    // `**`
    (&["**"], "file", T),
    (&["**"], "dir/file", T),
    (&["**/"], "file", T),
    (&["**/**"], "dir/file", T),
    (&["dir/**"], "dir/file", T),
    (&["dir/**"], "dir/dir2/file", T),
    (&["dir/**"], "dir", F),
    (&["**/dir"], "dir", T),
    (&["**/dir"], "dir/file", T),
    (&["**/dir2/*"], "dir/dir2/file", T),
    (&["**/dir2/*"], "dir/dir2/file/", T),
    (&["**/dir2/**"], "dir/dir2/dir3/file", T),
    (&["**file"], "dir/dir/file", T),
    (&["**file"], "dir/myfile", T),
    (&["**/file"], "dir/myfile", F),
    (&["**/file*.txt"], "dir/dir/file.txt", T),
    (&["**/**/*.txt"], "dir/dir/file.txt", T),
    (&["**/**/*.txt2"], "dir/dir/file.txt", F),
    (&["**/*.txt"], "file.txt", T),
    (&["a**/*.txt"], "a/dir/dir/file.txt", T),
    (&["a/*.txt"], "a/dir/file.txt", F),
    (&["a/*.txt**"], "a/file.txt", T),
    (&["**/foo/bar"], "dir/dir2/foo/bar", T),
    (&["**/.foo"], "bar.foo", F),
    // `*` and `?` never cross `/`
    (&["a*/b"], "a/c/b", F),
    (&["a?b"], "a/b", F),
    (&["a*b"], "a/b", F),
    (&["a?b"], "a☺b", T),
    (&["a???b"], "a☺b", F),
    (&["a*b*c*d*e*/f"], "axbxcxdxexxx/f", T),
    (&["a*b*c*d*e*/f"], "axbxcxdxe/xxx/f", F),
    (&["a*b?c*x"], "abxbbxdbxebxczzx", T),
    (&["a*b?c*x"], "abxbbxdbxebxczzy", F),
    // classes and escapes
    (&["a[b-d]e"], "ace", T),
    (&["a[b-d]e"], "aae", F),
    (&["a[^b-d]e"], "aze", T),
    (&["[a-ζ]*"], "α", T),
    (&["*[a-ζ]"], "A", F),
    (&["[\\]a]"], "]", T),
    (&["[x\\-]"], "-", T),
    (&["[x\\-]"], "z", F),
    (&["a\\*b"], "a*b", T),
    (&["a\\*b"], "ab", F),
    (&["a\\\\"], "a\\", T),
    // regex metacharacters are literal
    (&[".*"], ".foo", T),
    (&[".*"], "foo", F),
    (&["abc.def"], "abcZdef", F),
    (&["a(b)c/def"], "a(b)c/def", T),
    (&["a.|)$(}+{bc"], "a.|)$(}+{bc", T),
    (&["dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", T),
    // cleaning: `./`, `..`, doubled and trailing slashes
    (&["./foo/../bar//baz/"], "bar/baz", T),
    (&["a/./b"], "a/b/c", T),
    // exceptions: last match wins
    (&["*.go", "!fileutils.go"], "fileutils.go", F),
    (&["!fileutils.go", "*.go"], "fileutils.go", T),
    (&["docs", "!docs/README.md"], "docs/README.md", F),
    (&["docs", "!docs/README.md"], "docs/other.md", T),
    (&["docs/*", "!docs/README.md"], "docs/README.md", F),
    (&["**", "!util/docker/web"], "util/docker/web/foo", F),
    (&["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", T),
    (&["**", "!dist/*.whl"], "dist/x-1.0-py3-none-any.whl", F),
    (&["*.md", "!README*.md", "README-secret.md"], "README-secret.md", T),
    (&["*.md", "!README*.md", "README-secret.md"], "README-public.md", F),
    (&["  docs  ", "  !docs/README.md  "], "docs/README.md", F),
    // bad patterns are errors
    (&["["], "a", ERR),
    (&["a["], "a", ERR),
    (&["[^bc"], "a", ERR),
    (&["[]a]"], "]", ERR),
    (&["[-]"], "-", ERR),
    (&["[x-]"], "x", ERR),
    (&["[a-b-c]"], "a", ERR),
    (&["\\"], "a", ERR),
    (&["!"], "a", ERR),
    (&["ok", "[z-a]"], "a", ERR),
];

#[test]
fn table() {
    assert!(ROWS.len() >= 60, "{} rows", ROWS.len());
    let mut failures = Vec::new();
    for (patterns, path, expected) in ROWS {
        let got = Matcher::new(patterns).map(|m| m.matches(path)).ok();
        if got != *expected {
            failures.push(format!("{patterns:?} on {path:?}: expected {expected:?}, got {got:?}"));
        }
        // Walking with parent results must agree with the direct answer.
        if let (Ok(m), Some(want)) = (Matcher::new(patterns), expected) {
            let mut info = MatchInfo::default();
            // The parents as moby derives them: `filepath.Dir`, then split.
            let parent = path.rfind('/').map(|i| clean(&path[..=i])).unwrap_or_else(|| ".".into());
            let parts: Vec<&str> = if parent == "." { Vec::new() } else { parent.split('/').collect() };
            for n in 1..=parts.len() {
                info = m.matches_with_parent(&parts[..n].join("/"), &info).1;
            }
            let walked = m.matches_with_parent(path, &info).0;
            if walked != *want {
                failures.push(format!("{patterns:?} walking to {path:?}: expected {want}, got {walked}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn reading_rules() {
    let content = "\u{feff}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n  # not a comment\n! /inverted/abs/path\n!\n! \nwin\\path\r\n\t spaced \t\n";
    let got: Vec<String> = read_patterns(content).into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        got,
        ["test1", "test2", "a/file/here", "lastfile", "# not a comment", "!inverted/abs/path", "!", "!", "win\\path", "spaced"]
    );
    let lines: Vec<usize> = read_patterns(content).into_iter().map(|(n, _)| n).collect();
    assert_eq!(lines, [1, 2, 3, 5, 7, 8, 9, 10, 11, 12]);
}

#[test]
fn dockerignore_file_end_to_end() {
    let m = Matcher::from_dockerignore("# build output\n/target\nnode_modules\n**/*.log\n!important.log\n").unwrap();
    assert!(m.is_excluded("target/debug/kiln"));
    assert!(m.is_excluded("./node_modules/x/index.js"));
    assert!(!m.is_excluded("src/node_modules"));
    assert!(m.is_excluded("logs/a.log"));
    assert!(!m.is_excluded("important.log"));
    assert!(m.is_excluded("sub/important.log"));
    assert!(!m.is_excluded("."));
    assert!(!m.is_excluded(""));
    assert!(m.has_exceptions());
}

#[test]
fn bad_pattern_error_names_the_line() {
    let err = Matcher::from_dockerignore("ok\n\n# c\nbad[\n").unwrap_err();
    match &err {
        IgnoreError::BadPattern { line, pattern, .. } => {
            assert_eq!(*line, Some(4));
            assert_eq!(pattern, "bad[");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().starts_with(".dockerignore:4: bad pattern \"bad[\""), "{err}");
    let err = Matcher::from_dockerignore("a\n!\n").unwrap_err();
    assert_eq!(err, IgnoreError::LoneExclamation { line: Some(2) });
}

#[test]
fn skipping_excluded_directories_during_a_walk() {
    let m = |p: &[&str]| Matcher::new(p).unwrap();
    // No exceptions: an excluded directory is skipped whole.
    assert!(m(&["node_modules"]).can_skip_dir("node_modules"));
    assert!(m(&["node_modules"]).can_skip_dir("node_modules/a"));
    assert!(!m(&["node_modules"]).can_skip_dir("src"));
    // `dir/**` excludes the contents, not the directory, yet allows skipping.
    assert!(m(&["dir/**"]).can_skip_dir("dir"));
    // An exception pointing inside forces a walk …
    assert!(!m(&["docs", "!docs/README.md"]).can_skip_dir("docs"));
    assert!(m(&["docs", "!docs/README.md"]).can_skip_dir("docs/sub"));
    assert!(!m(&["a", "!a/*/keep"]).can_skip_dir("a/b"));
    assert!(m(&["a", "!a/*/keep"]).can_skip_dir("a/b/c"));
    assert!(!m(&["a", "!**/keep"]).can_skip_dir("a/b/c"));
    assert!(!m(&["a", "!a/b/**"]).can_skip_dir("a/b/c"));
    // … unless a later plain pattern overrides it again.
    assert!(m(&["docs", "!docs/README.md", "docs"]).can_skip_dir("docs"));
    // An exception elsewhere does not matter.
    assert!(m(&["docs", "!src/x"]).can_skip_dir("docs"));
}

#[test]
fn clean_is_go_path_clean() {
    for (input, want) in [
        ("", "."),
        ("a/b/", "a/b"),
        ("a//b", "a/b"),
        ("./a", "a"),
        ("a/../..", ".."),
        ("/../a", "/a"),
        ("/", "/"),
        ("a/./b/../c", "a/c"),
        ("../../x/..", "../.."),
    ] {
        assert_eq!(clean(input), want, "clean({input:?})");
    }
}
