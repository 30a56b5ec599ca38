//! `--progress rawjson`: one JSON object per line on stderr for each build event, for tools that
//! read a build's progress. The schema is stable: fields are only ever added.
//!
//! Every object has `time` (RFC 3339, UTC, milliseconds) and `event`, then:
//!
//! | `event` | fields |
//! | --- | --- |
//! | `step-start` | `step` (number, as `--progress plain` prints it after `#`), `stage`, `instruction` |
//! | `step-output` | `step` (number, or `null` for output that is no step's, e.g. `--test`), `instruction`, `line` (text, UTF-8 with invalid bytes replaced, without its newline) |
//! | `step-end` | `step`, `stage`, `platform` (`null` when the step failed), `instruction`, `status` (`cached`, `done`, `error`), `cache` (`local`, `registry`, `null`), `seconds` |
//! | `transfer` | `what` (`push REF sha256:…`), `done` and `total` (bytes; `total` is `null` when unknown) |
//! | `info`, `warn` | `message` |
//!
//! A failed build ends its running steps with `status: "error"`; the error itself follows as
//! text on stderr, as in every mode.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One event, as written.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event<'a> {
    StepStart {
        step: usize,
        stage: &'a str,
        instruction: &'a str,
    },
    StepOutput {
        step: Option<usize>,
        instruction: &'a str,
        line: &'a str,
    },
    StepEnd {
        step: usize,
        stage: &'a str,
        platform: Option<&'a str>,
        instruction: &'a str,
        status: &'static str,
        cache: Option<&'static str>,
        seconds: f64,
    },
    Transfer {
        what: &'a str,
        done: u64,
        total: Option<u64>,
    },
    Info {
        message: &'a str,
    },
    Warn {
        message: &'a str,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

/// The line (without its newline) for `event` at `time`.
pub fn encode(time: SystemTime, event: &Event<'_>) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = kiln_build::time::rfc3339(since.as_secs());
    let time = format!("{}.{:03}Z", secs.trim_end_matches('Z'), since.subsec_millis());
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&Line { time, event }).unwrap_or_default()
}

/// Writes `event` as one line on stderr (a single write, so lines from threads never mix).
pub fn emit(event: &Event<'_>) {
    use std::io::Write;
    let mut line = encode(SystemTime::now(), event);
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::Duration;

    #[test]
    fn each_event_is_one_line_of_json_with_the_documented_fields() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_042);
        let events = [
            Event::StepStart { step: 1, stage: "build", instruction: "RUN make" },
            Event::StepOutput { step: Some(1), instruction: "RUN make", line: "cc -o \"a\"\tb\u{fffd}" },
            Event::StepOutput { step: None, instruction: "./test.sh", line: "ok" },
            Event::StepEnd {
                step: 1,
                stage: "build",
                platform: Some("linux/amd64"),
                instruction: "RUN make",
                status: "done",
                cache: None,
                seconds: 2.5,
            },
            Event::StepEnd {
                step: 2,
                stage: "build",
                platform: Some("linux/amd64"),
                instruction: "COPY . /",
                status: "cached",
                cache: Some("registry"),
                seconds: 0.0,
            },
            Event::Transfer { what: "push r/x sha256:0123", done: 5, total: Some(10) },
            Event::Transfer { what: "pull y", done: 5, total: None },
            Event::Info { message: "pushed r/x" },
            Event::Warn { message: "cache ref missing" },
        ];
        let want: [(&str, &[&str]); 9] = [
            ("step-start", &["step", "stage", "instruction"]),
            ("step-output", &["step", "instruction", "line"]),
            ("step-output", &["step", "instruction", "line"]),
            ("step-end", &["step", "stage", "platform", "instruction", "status", "cache", "seconds"]),
            ("step-end", &["step", "stage", "platform", "instruction", "status", "cache", "seconds"]),
            ("transfer", &["what", "done", "total"]),
            ("transfer", &["what", "done", "total"]),
            ("info", &["message"]),
            ("warn", &["message"]),
        ];
        for (e, (name, fields)) in events.iter().zip(want) {
            let line = encode(t, e);
            assert!(!line.contains('\n'), "{line}");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("{line}: {err}"));
            let obj = v.as_object().expect("an object");
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut expected = vec!["time", "event"];
            expected.extend(fields);
            expected.sort_unstable();
            assert_eq!(keys, expected, "{line}");
            assert_eq!(v["time"], "2023-11-14T22:13:20.042Z");
            assert_eq!(v["event"], name);
        }
        let output: Value = serde_json::from_str(&encode(t, &events[1])).expect("json");
        assert_eq!(output["line"], "cc -o \"a\"\tb\u{fffd}");
        assert_eq!(serde_json::from_str::<Value>(&encode(t, &events[2])).expect("json")["step"], Value::Null);
        let end: Value = serde_json::from_str(&encode(t, &events[4])).expect("json");
        assert_eq!((end["status"].as_str(), end["cache"].as_str(), end["seconds"].as_f64()), (Some("cached"), Some("registry"), Some(0.0)));
        let tr: Value = serde_json::from_str(&encode(t, &events[6])).expect("json");
        assert_eq!((tr["done"].as_u64(), tr["total"].clone()), (Some(5), Value::Null));
    }
}
