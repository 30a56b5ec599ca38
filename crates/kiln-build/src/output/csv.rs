//! The field syntax of `--output` (and of buildx's other `KEY=VALUE,…` flags): buildx reads them
//! with Go's `encoding/csv`, so a field in double quotes may hold commas (`"name=a/x,b/x"`) and `""`
//! inside quotes is one quote. A quote anywhere else is an error, as it is for buildx.

/// Why a line does not split into fields; the byte offsets count from the start of the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("a double quote at byte {0} inside a field that does not start with one (quote the whole field: \"k=v,w\")")]
    BareQuote(usize),
    #[error("the quoted field starting at byte {0} is not closed")]
    Unclosed(usize),
    #[error("text after the closing quote at byte {0} (a quoted field ends at a comma)")]
    AfterQuote(usize),
}

/// Splits one line into its fields, unquoted.
pub fn fields(line: &str) -> Result<Vec<String>, CsvError> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if bytes.get(i) == Some(&b'"') {
            let start = i;
            i += 1;
            loop {
                match line[i..].find('"') {
                    None => return Err(CsvError::Unclosed(start)),
                    Some(q) => {
                        field.push_str(&line[i..i + q]);
                        i += q + 1;
                        if bytes.get(i) == Some(&b'"') {
                            field.push('"');
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            match bytes.get(i) {
                None | Some(b',') => {}
                Some(_) => return Err(CsvError::AfterQuote(i)),
            }
        } else {
            let end = line[i..].find(',').map_or(line.len(), |c| i + c);
            if let Some(q) = line[i..end].find('"') {
                return Err(CsvError::BareQuote(i + q));
            }
            field.push_str(&line[i..end]);
            i = end;
        }
        out.push(field);
        if i >= line.len() {
            return Ok(out);
        }
        i += 1; // the comma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_as_go_encoding_csv_does() {
        assert_eq!(fields("type=image,push=true").unwrap(), ["type=image", "push=true"]);
        assert_eq!(fields(r#"type=image,"name=a/x:1,b/x:1",push=true"#).unwrap(), ["type=image", "name=a/x:1,b/x:1", "push=true"]);
        assert_eq!(fields(r#""a""b",c"#).unwrap(), [r#"a"b"#, "c"]);
        assert_eq!(fields("a,,b,").unwrap(), ["a", "", "b", ""]);
        assert_eq!(fields("").unwrap(), [""]);
        assert_eq!(fields(r#"type=image,na"me=x"#), Err(CsvError::BareQuote(13)));
        assert_eq!(fields(r#"type=image,"name=x"#), Err(CsvError::Unclosed(11)));
        assert_eq!(fields(r#""name=x"y,b"#), Err(CsvError::AfterQuote(8)));
    }
}
