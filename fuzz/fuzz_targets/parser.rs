//! Fuzz target: any bytes must parse or fail with an error, never panic; a successful parse must
//! dump, and every instruction's line range must be ordered and inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
