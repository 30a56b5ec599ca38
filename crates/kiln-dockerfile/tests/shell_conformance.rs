//! BuildKit's own expansion tables (`envVarTest`, `wordsTest`), read from the
//! shared conformance data. A missing file fails the test.

use kiln_dockerfile::shell::{env_from_list, Lexer};

const SHELL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/buildkit/frontend/dockerfile/shell");

fn read(name: &str) -> String {
    let path = format!("{SHELL_DIR}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

#[test]
fn env_var_test_single_word() {
    let env = env_from_list(&["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let lexer = Lexer::new('\\');
    let (mut run, mut windows_only, mut failures) = (0, 0, Vec::new());
    for (n, line) in read("envVarTest").lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(parts.len(), 3, "line {}: {line:?}", n + 1);
        let (plat, source, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        match plat {
            "W" => {
                windows_only += 1;
                continue;
            }
            "A" | "U" => {}
            other => panic!("line {}: unknown platform tag {other:?}", n + 1),
        }
        run += 1;
        let got = lexer.process_word(source, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(w), exp) if exp != "error" => w == exp,
            _ => false,
        };
        if !ok {
            failures.push(format!("line {}: {source:?} expected {expected:?}, got {got:?}", n + 1));
        }
    }
    eprintln!("envVarTest: {run} lines run, {windows_only} Windows-only lines skipped");
    assert_eq!(run, 228, "A and U lines run");
    assert_eq!(windows_only, 2);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn words_test_multi_word() {
    let lexer = Lexer::new('\\');
    let mut envs: Vec<String> = Vec::new();
    let (mut run, mut failures) = (0, Vec::new());
    for (n, line) in read("wordsTest").lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            envs.push(rest.trim_start_matches(' ').to_string());
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "line {}: {line:?}", n + 1);
        let test = parts[0].trim();
        let expected: Vec<String> = parts[1].trim_start_matches(' ').split(',').map(String::from).collect();
        run += 1;
        let got = match lexer.process_words(test, &env_from_list(&envs)) {
            Ok(words) => words,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!("line {}: {test:?} expected {expected:?}, got {got:?}", n + 1));
        }
    }
    assert_eq!(run, 24, "lines run");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
