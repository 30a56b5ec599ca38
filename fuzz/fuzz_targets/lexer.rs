//! Fuzz target for shell-word expansion: any word, under any escape
//! character and switch combination, must expand or fail with an error,
//! never panic or hang. The first byte picks the escape character and the
//! switches; text after the first NUL becomes the value of `$V`, so the
//! pattern operators (`${V#…}`, `${V//…/…}`) meet arbitrary values.
#![no_main]

use std::collections::BTreeMap;

use kiln_dockerfile::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let (word, value) = text.split_once('\0').unwrap_or((text, "a*b?c/d\\e}x"));
    let mut env = BTreeMap::new();
    env.insert("V".to_string(), value.to_string());
    env.insert("E".to_string(), String::new());
    env.insert("P".to_string(), "*".to_string());
    env.insert("S".to_string(), " a  b ".to_string());
    let mut lx = Lexer::new(if sel & 1 == 0 { '\\' } else { '`' });
    lx.raw_quotes = sel & 2 != 0;
    lx.raw_escapes = sel & 4 != 0;
    lx.skip_process_quotes = sel & 8 != 0;
    lx.skip_unset_env = sel & 16 != 0;
    match lx.expand(word, &env) {
        Ok(x) => {
            assert!(x.words.iter().all(|w| !w.is_empty()), "empty word from {word:?}");
            assert!(x.used.is_disjoint(&x.unset));
            let special = ['$', '\'', '"', lx.escape(), '\u{feff}'];
            if !word.contains(special) {
                assert_eq!(x.word, word, "a word without special characters must come back unchanged");
            }
        }
        Err(e) => {
            assert!(e.column >= 1 && e.column <= word.chars().count() + 1, "column {} out of range", e.column);
            let _ = e.to_string();
        }
    }
});
