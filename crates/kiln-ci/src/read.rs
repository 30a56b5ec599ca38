//! Reading `gh api` output: one file at a time, or a whole directory.
//!
//! A file is classified by its shape before it is parsed into types, so that a file of some other
//! kind (a check run, run timing, an artifact list) is refused with a sentence that says what it is,
//! while a file of the right kind with a broken field fails with the JSON path of that field.
//! `gh api --paginate` concatenates pages (`{..}{..}`) and `--slurp` wraps them in an array; both
//! are understood.
//!
//! An annotations response does not say which check run it belongs to, so its place on disk has to.
//! Three layouts are read, and may be mixed in one directory ([`ANNOTATION_LAYOUTS`]):
//! `annotations/<id>.json`, `check-runs/<id>/annotations.json` (the API path, which is also how
//! live mode names a response), and a file name with the id after `check-run(s)`, such as
//! `check-runs-<id>-annotations.json` (`--save` writes `check-runs-<id>-annotations-page-1.json`).
//! A job's check-run id is its job id.
//! Annotations that cannot be placed, by their name or because no job in the directory has that
//! check run, are listed in [`History::notes`], once per file.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ReadError;
use crate::model::{Annotation, FileNote, History, Job, Run};

/// What one JSON value in a file turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Runs(Vec<Run>),
    Jobs(Vec<Job>),
    /// Annotations carry no check-run id; it comes from where the file was saved (see the module
    /// doc), `None` when that says nothing.
    Annotations {
        check_run_id: Option<u64>,
        items: Vec<Annotation>,
    },
}

/// The ways of saving a check run's annotations that place them, as said to users.
pub const ANNOTATION_LAYOUTS: &str =
    "annotations/<JOB_ID>.json, check-runs/<JOB_ID>/annotations.json or check-runs-<JOB_ID>-annotations.json";

#[derive(Deserialize)]
struct RunsPage {
    workflow_runs: Vec<Run>,
}

#[derive(Deserialize)]
struct JobsPage {
    jobs: Vec<Job>,
}

#[derive(Deserialize)]
struct RunEvent {
    workflow_run: Run,
}

#[derive(Deserialize)]
struct JobEvent {
    workflow_job: Job,
}

enum Kind {
    RunsPage,
    JobsPage,
    RunEvent,
    JobEvent,
    Run,
    Job,
    JobList,
    Annotations,
    Empty,
    Slurped,
}

/// Read one file. A file that is valid JSON but not runs, jobs or annotations is
/// [`ReadError::NotCiData`]; a file of the right kind with a bad or missing field is
/// [`ReadError::Field`] or [`ReadError::Syntax`].
pub fn read_file(path: &Path) -> Result<Vec<Document>, ReadError> {
    let bytes = std::fs::read(path).map_err(|err| ReadError::Io { path: path.to_path_buf(), err })?;
    read_bytes(path, &bytes)
}

/// Read JSON already in memory; `path` names it in errors and gives the annotations' check-run id.
pub fn read_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<Document>, ReadError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ReadError::Empty { path: path.to_path_buf() });
    }
    let mut docs = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    loop {
        let start = skip_ws(bytes, stream.byte_offset());
        let value = match stream.next() {
            None => break,
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(syntax_error(path, bytes, start, e)),
        };
        let end = stream.byte_offset();
        classify_into(path, bytes, start, end, &value, &mut docs)?;
    }
    Ok(docs)
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

fn classify_into(path: &Path, bytes: &[u8], start: usize, end: usize, value: &Value, docs: &mut Vec<Document>) -> Result<(), ReadError> {
    let segment = &bytes[start..end];
    match classify(value).map_err(|what| ReadError::NotCiData { path: path.to_path_buf(), what })? {
        Kind::RunsPage => docs.push(Document::Runs(typed::<RunsPage>(path, bytes, start, segment)?.workflow_runs)),
        Kind::JobsPage => docs.push(Document::Jobs(typed::<JobsPage>(path, bytes, start, segment)?.jobs)),
        Kind::RunEvent => docs.push(Document::Runs(vec![typed::<RunEvent>(path, bytes, start, segment)?.workflow_run])),
        Kind::JobEvent => docs.push(Document::Jobs(vec![typed::<JobEvent>(path, bytes, start, segment)?.workflow_job])),
        Kind::Run => docs.push(Document::Runs(vec![typed::<Run>(path, bytes, start, segment)?])),
        Kind::Job => docs.push(Document::Jobs(vec![typed::<Job>(path, bytes, start, segment)?])),
        Kind::JobList => docs.push(Document::Jobs(typed::<Vec<Job>>(path, bytes, start, segment)?)),
        Kind::Annotations => docs.push(Document::Annotations {
            check_run_id: check_run_id_from_name(path),
            items: typed::<Vec<Annotation>>(path, bytes, start, segment)?,
        }),
        // An empty list page of any kind holds nothing to analyse; it is still a valid response.
        Kind::Empty => {}
        Kind::Slurped => {
            // `gh api --slurp` output: re-read each page from its own JSON so errors keep paths.
            let pages: Vec<Value> = match value {
                Value::Array(a) => a.clone(),
                _ => Vec::new(),
            };
            for (i, page) in pages.iter().enumerate() {
                let text = serde_json::to_vec(page).map_err(|e| ReadError::Field {
                    path: path.to_path_buf(),
                    field: format!("[{i}]"),
                    line: 0,
                    column: 0,
                    message: e.to_string(),
                })?;
                classify_into(path, &text, 0, text.len(), page, docs).map_err(|e| e.in_slurped_page(i))?;
            }
        }
    }
    Ok(())
}

/// Decide the kind from the keys present; `Err` carries a description of what the value is instead.
fn classify(v: &Value) -> Result<Kind, String> {
    match v {
        Value::Object(o) => {
            let has = |k: &str| o.contains_key(k);
            if has("workflow_runs") {
                Ok(Kind::RunsPage)
            } else if has("jobs") && !has("run_id") {
                Ok(Kind::JobsPage)
            } else if has("workflow_run") && has("action") {
                Ok(Kind::RunEvent)
            } else if has("workflow_job") && has("action") {
                Ok(Kind::JobEvent)
            } else if has("jobs_url") || (has("run_number") && has("workflow_id")) {
                Ok(Kind::Run)
            } else if has("run_id") && (has("steps") || has("runner_name") || has("check_run_url")) {
                Ok(Kind::Job)
            } else if has("billable") || has("run_duration_ms") {
                Err("a run usage (timing) response".into())
            } else if has("artifacts") {
                Err("an artifact list".into())
            } else if has("check_suite") && has("output") {
                Err("a single check run (its annotations are at .../check-runs/ID/annotations)".into())
            } else if has("check_runs") {
                Err("a check-run list".into())
            } else if has("workflows") {
                Err("a workflow list".into())
            } else if has("message") && has("documentation_url") {
                Err(format!("a GitHub error response: \"{}\"", o["message"].as_str().unwrap_or("")))
            } else {
                let mut keys: Vec<&str> = o.keys().map(String::as_str).take(6).collect();
                keys.sort_unstable();
                Err(format!("a JSON object with keys {}", keys.join(", ")))
            }
        }
        Value::Array(a) => match a.first() {
            None => Ok(Kind::Empty),
            Some(Value::Object(first)) => {
                if first.contains_key("annotation_level") {
                    Ok(Kind::Annotations)
                } else if first.contains_key("run_id") && first.contains_key("status") {
                    Ok(Kind::JobList)
                } else if first.contains_key("workflow_runs") || first.contains_key("jobs") {
                    Ok(Kind::Slurped)
                } else {
                    Err("a JSON array of objects that are neither jobs nor annotations".into())
                }
            }
            Some(_) => Err("a JSON array of non-objects".into()),
        },
        other => Err(format!("a bare JSON {}", json_type(other))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn typed<T: DeserializeOwned>(path: &Path, whole: &[u8], start: usize, segment: &[u8]) -> Result<T, ReadError> {
    let mut de = serde_json::Deserializer::from_slice(segment);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = clean_path(e.path().to_string());
        let inner = e.into_inner();
        let (line, column) = shift_position(whole, start, inner.line(), inner.column());
        ReadError::Field { path: path.to_path_buf(), field, line, column, message: without_position(&inner) }
    })
}

/// Turn a position inside a segment into one inside the whole file.
fn shift_position(whole: &[u8], start: usize, line: usize, column: usize) -> (usize, usize) {
    let before = &whole[..start.min(whole.len())];
    let lines_before = before.iter().filter(|b| **b == b'\n').count();
    if line <= 1 {
        let col_base = before.iter().rev().take_while(|b| **b != b'\n').count();
        (lines_before + 1, col_base + column)
    } else {
        (lines_before + line, column)
    }
}

/// A syntax error (usually a truncated download). To name the field, re-parse the broken value as
/// the type its text suggests; serde_path_to_error then reports where the parser stood.
fn syntax_error(path: &Path, whole: &[u8], start: usize, e: serde_json::Error) -> ReadError {
    let segment = &whole[start.min(whole.len())..];
    let text = String::from_utf8_lossy(segment);
    let field = if text.contains("\"workflow_runs\"") {
        field_at_failure::<RunsPage>(segment)
    } else if text.contains("\"jobs\"") && !text.trim_start().starts_with('[') {
        field_at_failure::<JobsPage>(segment)
    } else if text.contains("\"annotation_level\"") {
        field_at_failure::<Vec<Annotation>>(segment)
    } else if text.contains("\"run_id\"") {
        if text.trim_start().starts_with('[') {
            field_at_failure::<Vec<Job>>(segment)
        } else {
            field_at_failure::<Job>(segment)
        }
    } else {
        field_at_failure::<Run>(segment)
    };
    let (line, column) = (e.line(), e.column());
    ReadError::Syntax { path: path.to_path_buf(), field, line, column, message: without_position(&e) }
}

fn field_at_failure<T: DeserializeOwned>(segment: &[u8]) -> String {
    let mut de = serde_json::Deserializer::from_slice(segment);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => clean_path(e.path().to_string()),
        Ok(_) => ".".into(),
    }
}

/// serde_path_to_error writes `?` for a key it had not finished reading; the path up to it is
/// what helps.
fn clean_path(p: String) -> String {
    let trimmed = p.trim_end_matches(".?").trim_end_matches('?');
    if trimmed.is_empty() {
        ".".into()
    } else {
        trimmed.to_string()
    }
}

/// serde_json appends "at line L column C"; the error already leads with file:line:column.
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The check run a file's annotations belong to, from its path: `annotations/42.json`,
/// `check-runs/42/annotations.json` (or the API URL `…/check-runs/42/annotations?page=2`), or a
/// file name such as `zlx__check-run-42-annotations.json` or `check-runs_42.json`. Only the file
/// name and the directories just above it count: the folder the history sits in may be called
/// anything, `check-runs-2024` included.
fn check_run_id_from_name(path: &Path) -> Option<u64> {
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let (name, dirs) = parts.split_last()?;
    if let Some(id) = id_after_check_run(name) {
        return Some(id);
    }
    if dirs.last().is_some_and(|d| d == "annotations") {
        if let Some(id) = whole_number(name.strip_suffix(".json").unwrap_or(name)) {
            return Some(id);
        }
    }
    if let [.., grand, parent] = dirs {
        if grand == "check-runs" || grand == "check-run" {
            return whole_number(parent);
        }
    }
    None
}

/// `check-runs-42-annotations.json` → 42: the digits after the last `check-run`, `check-runs`.
fn id_after_check_run(name: &str) -> Option<u64> {
    let i = name.rfind("check-run")?;
    let rest = &name[i + "check-run".len()..];
    let rest = rest.strip_prefix('s').unwrap_or(rest);
    let rest = rest.trim_start_matches(['-', '_', '.']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn whole_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Read every `*.json` under `dir` (recursively, in path order) into one history.
///
/// Files of another kind are listed in [`History::notes`] and skipped, so a directory that also
/// holds, say, artifact lists still reports. So are annotations that cannot be placed: by a name
/// in none of the [`ANNOTATION_LAYOUTS`], or by a check-run id that no job in the directory has.
/// A file of the right kind that is broken stops the read: a report built on half a file would be
/// silently wrong.
pub fn read_dir(dir: &Path) -> Result<History, ReadError> {
    let mut files = Vec::new();
    collect_json(dir, &mut files)?;
    if files.is_empty() {
        return Err(ReadError::NoFiles { dir: dir.to_path_buf() });
    }
    let mut history = History::default();
    // (file, check-run id, annotations): whether a job owns the id is known only once all is read.
    let mut placed: Vec<(String, u64, usize)> = Vec::new();
    for file in files {
        let shown = file.strip_prefix(dir).unwrap_or(&file).display().to_string();
        match read_file(&file) {
            Ok(docs) => {
                for doc in &docs {
                    if let Document::Annotations { check_run_id: Some(id), items } = doc {
                        match placed.last_mut() {
                            Some((f, i, n)) if *f == shown && i == id => *n += items.len(),
                            _ => placed.push((shown.clone(), *id, items.len())),
                        }
                    }
                }
                add_documents(&mut history, &shown, docs);
            }
            Err(e @ (ReadError::NotCiData { .. } | ReadError::Empty { .. })) => {
                tracing::info!("skipping {}: {e}", file.display());
                history.notes.push(FileNote { file: shown, reason: e.short_reason() });
            }
            Err(e) => return Err(e),
        }
    }
    history.finish();
    let owned: BTreeSet<u64> = history.jobs.iter().map(Job::check_run_id).collect();
    for (file, id, n) in placed {
        if !owned.contains(&id) {
            tracing::info!("{file}: no job has check run {id}");
            history.notes.push(FileNote {
                file,
                reason: format!(
                    "{n} annotation(s) not used: no job in the input has check run {id}; save the jobs of \
                     its run (`gh api repos/OWNER/REPO/actions/runs/RUN_ID/jobs`) beside them, or check the id \
                     in the file name"
                ),
            });
        }
    }
    Ok(history)
}

/// Merge documents into a history; `source` names where they came from in notes. Annotations it
/// cannot place make one note for the whole `source`, however many pages they came in.
pub fn add_documents(history: &mut History, source: &str, docs: Vec<Document>) {
    let mut unplaced = None;
    for doc in docs {
        match doc {
            Document::Runs(r) => history.add_runs(r),
            Document::Jobs(j) => history.add_jobs(j),
            Document::Annotations { check_run_id: Some(id), items } => history.add_annotations(id, items),
            Document::Annotations { check_run_id: None, items } => *unplaced.get_or_insert(0) += items.len(),
        }
    }
    if let Some(n) = unplaced {
        history.notes.push(FileNote {
            file: source.to_string(),
            reason: format!(
                "{n} annotation(s) not used: the file name does not say which check run they belong to \
                 (save them as {ANNOTATION_LAYOUTS})"
            ),
        });
    }
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let entries = std::fs::read_dir(dir).map_err(|err| ReadError::Io { path: dir.to_path_buf(), err })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| ReadError::Io { path: dir.to_path_buf(), err })?;
        paths.push(entry.path());
    }
    paths.sort();
    for p in paths {
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_json(&p, out)?;
        } else if p.extension().and_then(|e| e.to_str()) == Some("json") {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_run_id_comes_from_the_file_name() {
        let id = |s: &str| check_run_id_from_name(Path::new(s));
        assert_eq!(id("zlx__check-run-112800869472-annotations.json"), Some(112800869472));
        assert_eq!(id("a/check-runs/42/annotations.json"), Some(42));
        assert_eq!(id("check-runs_7.json"), Some(7));
        assert_eq!(id("annotations.json"), None);
    }

    #[test]
    fn check_run_id_comes_from_every_accepted_layout() {
        let id = |s: &str| check_run_id_from_name(Path::new(s));
        assert_eq!(id("/h/annotations/112800869472.json"), Some(112800869472));
        assert_eq!(id("annotations/42.json"), Some(42));
        assert_eq!(id("Annotations/42.JSON"), Some(42));
        assert_eq!(id("/h/check-runs/42/annotations.json"), Some(42));
        assert_eq!(id("/h/annotations/check-runs-42-annotations.json"), Some(42));
        // Live mode hands over the URL, first page and later ones.
        assert_eq!(id("https://api.github.com/repos/o/r/check-runs/42/annotations?per_page=100"), Some(42));
        assert_eq!(id("https://api.github.com/repositories/1/check-runs/42/annotations?page=2"), Some(42));
        // The folders the history sits in say nothing about one file.
        assert_eq!(id("/data/check-runs-2024/annotations/42.json"), Some(42));
        assert_eq!(id("/data/check-runs-2024/probe-annotations.json"), None);
        assert_eq!(id("/data/check-runs/42/x/annotations.json"), None);
        assert_eq!(id("annotations/probe.json"), None);
        assert_eq!(id("annotations/4-2.json"), None);
        assert_eq!(id("42.json"), None);
        assert_eq!(id("annotations/99999999999999999999999.json"), None);
    }

    #[test]
    fn paginate_output_is_read_page_by_page() {
        let text = br#"{"total_count":2,"jobs":[{"id":1,"run_id":9,"name":"a","status":"completed"}]}
{"total_count":2,"jobs":[{"id":2,"run_id":9,"name":"b","status":"completed"}]}"#;
        let docs = read_bytes(Path::new("jobs.json"), text).unwrap();
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn slurp_output_is_read_page_by_page_and_errors_name_the_page() {
        let text = br#"[{"workflow_runs":[{"id":1,"created_at":"2024-01-01T00:00:00Z"}]},
                        {"workflow_runs":[{"id":2,"created_at":"2024-01-02T00:00:00Z"}]}]"#;
        let docs = read_bytes(Path::new("runs.json"), text).unwrap();
        let ids: Vec<u64> = docs
            .iter()
            .flat_map(|d| match d {
                Document::Runs(r) => r.iter().map(|r| r.id).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(ids, vec![1, 2]);
        let bad = br#"[{"workflow_runs":[]},{"workflow_runs":[{"id":2}]}]"#;
        let msg = read_bytes(Path::new("runs.json"), bad).unwrap_err().to_string();
        assert!(msg.contains("[1].workflow_runs[0]") && msg.contains("created_at"), "{msg}");
    }

    #[test]
    fn wrong_type_names_field_and_line() {
        let text = b"{\"jobs\":[\n{\"id\":1,\"run_id\":9,\"name\":\"a\",\"status\":\"completed\"},\n{\"id\":\"two\",\"run_id\":9,\"name\":\"b\",\"status\":\"completed\"}]}";
        let err = read_bytes(Path::new("jobs-9.json"), text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("jobs-9.json"), "{msg}");
        assert!(msg.contains("jobs[1].id"), "{msg}");
        assert!(msg.contains(":3:"), "{msg}");
    }
}
