//! BuildKit's own parser test data and 40 real-world Dockerfiles with BuildKit's answers.
//! The data lives in `../shared` beside the repository; missing data fails the tests.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::parse_file;

const BUILDKIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/buildkit/frontend/dockerfile/parser");
const REAL_WORLD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/real-world/files");

fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("shared conformance data missing at {}: {e}", dir.display()))
        .map(|e| e.expect("read dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Shows the first differing line, which is what one needs to fix a mismatch.
fn first_difference(want: &str, got: &str) -> String {
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            return format!("line {}:\n  want {w}\n  got  {g}", i + 1);
        }
    }
    format!("line counts differ: want {}, got {}", want.lines().count(), got.lines().count())
}

#[test]
fn buildkit_testfiles_dump_identically() {
    let dirs = case_dirs(&Path::new(BUILDKIT).join("testfiles"));
    assert!(dirs.len() >= 30, "expected BuildKit's testfiles, found {}", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let src = read(&dir.join("Dockerfile"));
        let want = String::from_utf8(read(&dir.join("result"))).expect("result is UTF-8");
        match parse_file("Dockerfile", &src) {
            Ok(ast) => {
                let got = ast.dump();
                if got != want {
                    failures.push(format!("{}: {}", dir.display(), first_difference(&want, &got)));
                }
            }
            Err(e) => failures.push(format!("{}: parse failed: {e}", dir.display())),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), dirs.len(), failures.join("\n"));
}

#[test]
fn buildkit_negative_testfiles_fail() {
    let dirs = case_dirs(&Path::new(BUILDKIT).join("testfiles-negative"));
    assert!(dirs.len() >= 4, "expected BuildKit's negative testfiles, found {}", dirs.len());
    for dir in &dirs {
        let src = read(&dir.join("Dockerfile"));
        let r = parse_file("Dockerfile", &src);
        assert!(r.is_err(), "{} parsed but BuildKit rejects it: {:?}", dir.display(), r.map(|a| a.dump()));
    }
}

#[test]
fn buildkit_testfile_line_ranges() {
    let src = read(&Path::new(BUILDKIT).join("testfile-line/Dockerfile"));
    let ast = parse_file("Dockerfile", &src).expect("testfile-line parses");
    assert_eq!((ast.start_line, ast.end_line), (5, 31));
    let ranges: Vec<(usize, usize)> = ast.children.iter().map(|c| (c.start_line, c.end_line)).collect();
    assert_eq!(ranges, vec![(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn real_world_dockerfiles_match_buildkit() {
    let dir = Path::new(REAL_WORLD);
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("shared real-world data missing at {}: {e}", dir.display()))
        .map(|e| e.expect("read dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "Dockerfile"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 40, "expected the 40 real-world Dockerfiles");
    let mut failures = Vec::new();
    let mut rejected = 0;
    for file in &files {
        let src = read(file);
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("Dockerfile");
        let expected = file.with_extension("expected");
        let reject = file.with_extension("reject");
        let result = parse_file(name, &src);
        if reject.exists() {
            rejected += 1;
            if let Ok(ast) = result {
                failures.push(format!("{name}: parsed but BuildKit rejects it:\n{}", ast.dump()));
            }
            continue;
        }
        let want = String::from_utf8(read(&expected)).expect("expected is UTF-8");
        match result {
            Ok(ast) => {
                let got = ast.dump();
                if got != want {
                    failures.push(format!("{name}: {}", first_difference(&want, &got)));
                }
            }
            Err(e) => failures.push(format!("{name}: parse failed: {e}")),
        }
    }
    assert!(rejected >= 1, "expected at least one .reject case");
    assert!(failures.is_empty(), "{} of {} files differ:\n{}", failures.len(), files.len(), failures.join("\n"));
}
