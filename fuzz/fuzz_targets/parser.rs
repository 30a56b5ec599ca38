//! Fuzz target: any bytes must parse or fail with an error, never panic; a successful parse must
//! dump, and every instruction's line range must be ordered and inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    // Most mutations break UTF-8, which the parser rejects up front; the lossy copy keeps the
    // fuzzer exploring the text paths too.
    if std::str::from_utf8(data).is_err() {
        check(String::from_utf8_lossy(data).as_bytes());
    }
});

fn check(data: &[u8]) {
    if let Ok(ast) = kiln_dockerfile::parse(data) {
        let dump = ast.dump();
        assert_eq!(dump.lines().count(), ast.children.len());
        let lines = data.split(|b| *b == b'\n').count();
        let mut prev_end = 0;
        for child in &ast.children {
            assert!(child.start_line > prev_end && child.start_line <= child.end_line);
            assert!(child.end_line <= lines);
            prev_end = child.end_line;
        }
    }
}
