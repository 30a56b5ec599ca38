//! Explaining a miss: what changed against the closest cached record.
//!
//! A key is a hash, so a miss by itself says nothing. But a record keeps its parent key, its
//! instruction and its named inputs, and a step that missed has the same three things. The closest
//! record is one built on the same parent (the same image so far), preferring the same instruction
//! text, then the fewest differing inputs, then the newest. Diffing the two names the cause:
//! the instruction text, an arg or env value, a context file, the platform; and when no record builds
//! on the same parent at all, the cause is an earlier step (whose own explanation is the one to read).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kiln_oci::Digest;
use serde::Serialize;

use crate::local::Record;

/// One difference between a step that missed and the closest cached record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    /// No cached record builds on this step's parent: an earlier step changed.
    Parent,
    /// The instruction text differs.
    Instruction { cached: String, now: String },
    /// A named input (`arg:NAME`, `env:NAME`, `file:PATH`, `platform`, …) differs, appeared or went.
    Input { name: String, cached: Option<String>, now: Option<String> },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Parent => f.write_str("an earlier step changed (no cached record builds on the same parent)"),
            Change::Instruction { cached, now } => write!(f, "the instruction changed: was `{cached}`, now `{now}`"),
            Change::Input { name, cached, now } => {
                let (kind, what) = describe(name);
                // `env:N` inputs hold `KEY=value`: show the variable, not the position.
                let (what, cached, now) = match (kind, env_split(cached.as_deref()), env_split(now.as_deref())) {
                    ("env", Some((k, c)), Some((k2, n))) if k == k2 => (k.to_string(), Some(c.to_string()), Some(n.to_string())),
                    _ => (what.to_string(), cached.clone(), now.clone()),
                };
                match (&cached, &now) {
                    (Some(_), Some(_)) if kind == "file" => write!(f, "file {what} changed"),
                    (Some(c), Some(n)) => write!(f, "{kind} {what} changed: was {c:?}, now {n:?}"),
                    (None, Some(_)) if kind == "file" => write!(f, "file {what} is new"),
                    (None, Some(n)) => write!(f, "{kind} {what} is new: {n:?}"),
                    (Some(_), None) if kind == "file" => write!(f, "file {what} was removed"),
                    (Some(c), None) => write!(f, "{kind} {what} is no longer set (was {c:?})"),
                    (None, None) => write!(f, "{kind} {what} changed"),
                }
            }
        }
    }
}

/// What kind of input a name is, and what to call it: `file:PATH` and `src:N:PATH` are context
/// files, `arg:NAME` build args, `env:NAME` environment.
fn describe(name: &str) -> (&'static str, &str) {
    if let Some(rest) = name.strip_prefix("src:") {
        return match rest.split_once(':') {
            Some((_, path)) => ("file", path),
            None => ("source", rest),
        };
    }
    match name.split_once(':') {
        Some(("file", p)) => ("file", p),
        Some(("arg", a)) => ("build arg", a),
        Some(("env", e)) => ("env", e),
        _ => ("input", name),
    }
}

fn env_split(v: Option<&str>) -> Option<(&str, &str)> {
    v?.split_once('=')
}

/// Why a step missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The record compared against, if any builds on the same parent.
    pub closest: Option<Digest>,
    /// Empty only if the closest record has the same instruction and inputs (then the key differs in
    /// something the record does not name, e.g. a kiln upgrade that changed the key encoding).
    pub changes: Vec<Change>,
}

/// Explains the miss of a step (its `parent` key, expanded `instruction` and named `inputs`) against
/// `records` (the local cache and any imported refs, together).
pub fn explain_miss(parent: Option<&Digest>, instruction: &str, inputs: &BTreeMap<String, String>, records: &[Record]) -> Explanation {
    let best = records
        .iter()
        .filter(|r| r.parent.as_ref() == parent)
        .min_by_key(|r| (r.instruction != instruction, input_changes(&r.inputs, inputs).len(), Reverse(r.created)));
    let Some(best) = best else {
        return Explanation { closest: None, changes: vec![Change::Parent] };
    };
    let mut changes = Vec::new();
    let text_changed = best.instruction != instruction;
    if text_changed {
        changes.push(Change::Instruction { cached: best.instruction.clone(), now: instruction.to_string() });
    }
    // An `instruction` input restates the text; naming it again would say the same thing twice.
    changes.extend(
        input_changes(&best.inputs, inputs)
            .into_iter()
            .filter(|c| !(text_changed && matches!(c, Change::Input { name, .. } if name == "instruction"))),
    );
    Explanation { closest: Some(best.key.clone()), changes }
}

fn input_changes(cached: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<Change> {
    let names: BTreeSet<&String> = cached.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter(|n| cached.get(*n) != now.get(*n))
        .map(|n| Change::Input { name: n.clone(), cached: cached.get(n).cloned(), now: now.get(n).cloned() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn rec(name: &str, parent: &str, instruction: &str, inputs: &[(&str, &str)], created: u64) -> Record {
        Record {
            key: key(name),
            parent: Some(key(parent)),
            instruction: instruction.into(),
            inputs: inputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            layer: None,
            created,
        }
    }

    fn inputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn names_the_changed_file_of_a_copy() {
        let records = vec![
            rec("copy-old", "p", "COPY . /src", &[("file:src/main.c", "sha256:aa"), ("file:Makefile", "sha256:bb")], 10),
            rec("run", "p", "RUN make", &[], 20),
            rec("elsewhere", "q", "COPY . /src", &[("file:src/main.c", "sha256:cc")], 30),
        ];
        let now = inputs(&[("file:src/main.c", "sha256:dd"), ("file:Makefile", "sha256:bb"), ("file:new.h", "sha256:ee")]);
        let e = explain_miss(Some(&key("p")), "COPY . /src", &now, &records);
        assert_eq!(e.closest, Some(key("copy-old")));
        let lines: Vec<String> = e.changes.iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["file new.h is new", "file src/main.c changed"]);
    }

    #[test]
    fn names_an_arg_or_the_instruction_and_prefers_the_newest() {
        let records =
            vec![rec("v1", "p", "RUN build", &[("arg:VERSION", "1")], 10), rec("v2", "p", "RUN build", &[("arg:VERSION", "2")], 20)];
        let e = explain_miss(Some(&key("p")), "RUN build", &inputs(&[("arg:VERSION", "3")]), &records);
        assert_eq!(e.closest, Some(key("v2")), "ties go to the newest record");
        assert_eq!(e.changes[0].to_string(), "build arg VERSION changed: was \"2\", now \"3\"");

        let e = explain_miss(Some(&key("p")), "RUN build --fast", &inputs(&[("arg:VERSION", "2")]), &records);
        assert_eq!(e.changes, vec![Change::Instruction { cached: "RUN build".into(), now: "RUN build --fast".into() }]);
        assert_eq!(e.changes[0].to_string(), "the instruction changed: was `RUN build`, now `RUN build --fast`");
    }

    #[test]
    fn build_engine_input_names_read_well() {
        let cases = [
            ("src:0:app/main.go", Some("sha256:1"), Some("sha256:2"), "file app/main.go changed"),
            ("src:1", None, Some("heredoc x"), "source 1 is new: \"heredoc x\""),
            ("env:0003", Some("MODE=dev"), Some("MODE=prod"), "env MODE changed: was \"dev\", now \"prod\""),
            ("user", Some("root"), Some("app"), "input user changed: was \"root\", now \"app\""),
            ("arg:X", Some("1"), None, "build arg X is no longer set (was \"1\")"),
            ("file:gone.txt", Some("sha256:1"), None, "file gone.txt was removed"),
        ];
        for (name, cached, now, want) in cases {
            let c = Change::Input { name: name.into(), cached: cached.map(Into::into), now: now.map(Into::into) };
            assert_eq!(c.to_string(), want);
        }
        let records = vec![rec("r", "p", "RUN a", &[("instruction", "Run(a)")], 1)];
        let e = explain_miss(Some(&key("p")), "RUN b", &inputs(&[("instruction", "Run(b)")]), &records);
        assert_eq!(e.changes.len(), 1, "{:?}", e.changes);
    }

    #[test]
    fn a_new_parent_points_at_an_earlier_step() {
        let records = vec![rec("a", "p", "RUN a", &[], 1)];
        let e = explain_miss(Some(&key("other")), "RUN a", &BTreeMap::new(), &records);
        assert_eq!(e, Explanation { closest: None, changes: vec![Change::Parent] });
        assert!(e.changes[0].to_string().contains("earlier step"));
        let json = serde_json::to_value(&e.changes[0]).unwrap();
        assert_eq!(json["kind"], "parent");
    }
}
