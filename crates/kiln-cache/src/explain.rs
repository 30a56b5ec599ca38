//! Explaining a miss: what changed against the closest cached record.
//!
//! A key is a hash, so a miss by itself says nothing. But a record keeps its parent key, its
//! instruction and its named inputs, and a step that missed has the same three things. The closest
//! record is one built on the same parent (the same image so far), preferring the same instruction
//! text, then the same instruction keyword, then the fewest differing inputs, then the newest. Diffing the two names the cause:
//! the instruction text, an arg or env value, a context file, the platform; and when no record builds
//! on the same parent at all, the cause is an earlier step (whose own explanation is the one to read).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kiln_oci::Digest;
use serde::Serialize;

use crate::inputs::{describe_change, is_current, Input, StepInputs};
use crate::local::Record;

/// One difference between a step that missed and the closest cached record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    /// No cached record builds on this step's parent: an earlier step changed.
    Parent,
    /// The instruction text differs.
    Instruction { cached: String, now: String },
    /// A named input ([`Input`]: a context file, a build arg, an env var, the platform, …) differs,
    /// appeared or went.
    Input { input: Input, cached: Option<String>, now: Option<String> },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Parent => f.write_str("an earlier step changed (no cached record builds on the same parent)"),
            Change::Instruction { cached, now } => write!(f, "the instruction changed: was `{cached}`, now `{now}`"),
            Change::Input { input, cached, now } => f.write_str(&describe_change(input, cached.as_deref(), now.as_deref())),
        }
    }
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
///
/// Only records of this key version ([`is_current`]: its key is the hash of its parent and inputs,
/// every name one [`Input::parse`] knows) are candidates: diffing against another version's record
/// would name inputs no build of this kiln has.
pub fn explain_miss(parent: Option<&Digest>, instruction: &str, inputs: &StepInputs, records: &[Record]) -> Explanation {
    let now = inputs.as_map();
    let best = records.iter().filter(|r| r.parent.as_ref() == parent && is_current(r)).min_by_key(|r| {
        (
            r.instruction != instruction,
            keyword(&r.instruction) != keyword(instruction),
            input_changes(&r.inputs, now).len(),
            Reverse(r.created),
        )
    });
    let Some(best) = best else {
        return Explanation { closest: None, changes: vec![Change::Parent] };
    };
    let mut changes = Vec::new();
    let text_changed = best.instruction != instruction;
    if text_changed {
        changes.push(Change::Instruction { cached: best.instruction.clone(), now: instruction.to_string() });
    }
    // The `instruction` input restates the text; naming it again would say the same thing twice.
    changes.extend(
        input_changes(&best.inputs, now)
            .into_iter()
            .filter(|c| !(text_changed && matches!(c, Change::Input { input: Input::Instruction, .. }))),
    );
    Explanation { closest: Some(best.key.clone()), changes }
}

fn keyword(text: &str) -> String {
    text.split_whitespace().next().unwrap_or("").to_ascii_uppercase()
}

fn input_changes(cached: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<Change> {
    let names: BTreeSet<&String> = cached.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter(|n| cached.get(*n) != now.get(*n))
        .filter_map(|n| Some(Change::Input { input: Input::parse(n)?, cached: cached.get(n).cloned(), now: now.get(n).cloned() }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::list;

    fn key(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn platform() -> kiln_oci::Platform {
        kiln_oci::Platform::parse("linux/amd64").unwrap()
    }

    /// Inputs as the build engine makes them: always `instruction` and `platform`, then `extra`.
    fn inputs(instruction: &str, extra: &[(Input, &str)]) -> StepInputs {
        let mut s = StepInputs::new(instruction.to_string(), &platform());
        for (i, v) in extra {
            s.set(i.clone(), *v);
        }
        s
    }

    /// A record as a build writes it: its key is the hash of its parent and inputs (`_name` only
    /// says which record it is in the test).
    fn rec(_name: &str, parent: &str, instruction: &str, inputs: StepInputs, created: u64) -> Record {
        Record {
            key: inputs.key(&key(parent)),
            parent: Some(key(parent)),
            instruction: instruction.into(),
            inputs: inputs.into_map(),
            layer: None,
            created,
        }
    }

    fn src(i: usize, p: &str) -> Input {
        Input::Source(i, p.into())
    }

    #[test]
    fn names_the_changed_file_of_a_copy() {
        let copy = |files: &[(Input, &str)]| inputs("COPY sources=[1:.,] dest=4:/src", files);
        let records = vec![
            rec("copy-old", "p", "COPY . /src", copy(&[(src(0, "src/main.c"), "sha256:aa"), (src(0, "Makefile"), "sha256:bb")]), 10),
            rec("run", "p", "RUN make", inputs("RUN", &[(Input::Run, &list(&["make"]))]), 20),
            rec("elsewhere", "q", "COPY . /src", copy(&[(src(0, "src/main.c"), "sha256:cc")]), 30),
        ];
        let now = copy(&[(src(0, "src/main.c"), "sha256:dd"), (src(0, "Makefile"), "sha256:bb"), (src(0, "new.h"), "sha256:ee")]);
        let e = explain_miss(Some(&key("p")), "COPY . /src", &now, &records);
        assert_eq!(e.closest.as_ref(), Some(&records[0].key));
        let lines: Vec<String> = e.changes.iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["file new.h is new", "file src/main.c changed"]);
    }

    #[test]
    fn names_an_arg_or_the_instruction_and_prefers_the_newest() {
        let run = |text: &str, v: &str| inputs(&format!("RUN command={text}"), &[(Input::Arg("VERSION".into()), v)]);
        let records = vec![rec("v1", "p", "RUN build", run("build", "1"), 10), rec("v2", "p", "RUN build", run("build", "2"), 20)];
        let e = explain_miss(Some(&key("p")), "RUN build", &run("build", "3"), &records);
        assert_eq!(e.closest.as_ref(), Some(&records[1].key), "ties go to the newest record");
        assert_eq!(e.changes.len(), 1, "{:?}", e.changes);
        assert_eq!(e.changes[0].to_string(), "build arg VERSION changed: was \"2\", now \"3\"");

        // A new instruction text says it all: its `instruction` input is not named a second time.
        let e = explain_miss(Some(&key("p")), "RUN build --fast", &run("build --fast", "2"), &records);
        assert_eq!(e.changes, vec![Change::Instruction { cached: "RUN build".into(), now: "RUN build --fast".into() }]);
        assert_eq!(e.changes[0].to_string(), "the instruction changed: was `RUN build`, now `RUN build --fast`");
    }

    #[test]
    fn the_same_text_with_another_expansion_names_the_expanded_instruction() {
        let records = vec![rec("r", "p", "COPY $SRC /x", inputs("COPY sources=[5:a.txt,]", &[]), 1)];
        let e = explain_miss(Some(&key("p")), "COPY $SRC /x", &inputs("COPY sources=[5:b.txt,]", &[]), &records);
        assert_eq!(
            e.changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["the expanded instruction changed: was `COPY sources=[5:a.txt,]`, now `COPY sources=[5:b.txt,]`"]
        );
    }

    #[test]
    fn records_of_another_key_version_are_never_the_closest() {
        let now = inputs("COPY", &[(src(0, "a.txt"), "sha256:bb")]);
        let current = rec("cur", "p", "COPY . /src", inputs("COPY", &[(src(0, "a.txt"), "sha256:aa")]), 1);
        // Version 1 wrote names this version does not make (`file:PATH`)…
        let mut unknown_name = current.clone();
        unknown_name.inputs.insert("file:a.txt".into(), "sha256:aa".into());
        unknown_name.created = 99;
        // … and names it does, hashed otherwise: its key is not the hash of its inputs.
        let mut other_hash = rec("v1", "p", "COPY . /src", inputs("COPY", &[(src(0, "a.txt"), "sha256:bb")]), 99);
        other_hash.key = key("kiln-cache-v1 …");
        let old = [unknown_name, other_hash];
        for r in &old {
            assert!(!is_current(r), "{r:?}");
        }
        assert!(is_current(&current));
        let mut all = old.to_vec();
        all.push(current.clone());
        let e = explain_miss(Some(&key("p")), "COPY . /src", &now, &all);
        assert_eq!(e.closest.as_ref(), Some(&current.key));
        assert_eq!(e.changes.iter().map(ToString::to_string).collect::<Vec<_>>(), ["file a.txt changed"]);
        let e = explain_miss(Some(&key("p")), "COPY . /src", &now, &old);
        assert_eq!(e.changes, vec![Change::Parent]);
    }

    #[test]
    fn a_new_parent_points_at_an_earlier_step() {
        let records = vec![rec("a", "p", "RUN a", inputs("RUN", &[]), 1)];
        let e = explain_miss(Some(&key("other")), "RUN a", &inputs("RUN", &[]), &records);
        assert_eq!(e, Explanation { closest: None, changes: vec![Change::Parent] });
        assert!(e.changes[0].to_string().contains("earlier step"));
        let json = serde_json::to_value(&e.changes[0]).unwrap();
        assert_eq!(json["kind"], "parent");
        let c = Change::Input { input: Input::Env("MODE".into()), cached: None, now: Some("x".into()) };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"kind": "input", "input": "env:MODE", "cached": null, "now": "x"})
        );
    }
}
