//! Config-only steps (ENV, USER, LABEL, EXPOSE, CMD, …): they change the image config and make no
//! layer, but still get a record, so that a miss can be explained and `--cache-to` exports them.

use std::collections::BTreeMap;

use kiln_cache::{Record, StepInputs};
use kiln_dockerfile::instructions::{CommandLine, Healthcheck, Instruction, Step};
use kiln_oci::History;

use super::Solver;
use crate::state::{set_env, ImageState};
use crate::CacheStatus;

impl Solver<'_> {
    /// A config-only step: applied to the config, keyed, explained like any miss (and its record
    /// kept locally when the stage is done).
    pub(super) fn meta_step(&mut self, step: &Step, state: &mut ImageState, inputs: StepInputs, text: &str) -> CacheStatus {
        apply_meta(step, state);
        let key = inputs.key(&state.key);
        // A config-only step can be the first thing that changed (an ENV, a LABEL).
        if !self.shared.opts.no_cache && !self.shared.sources.iter().any(|c| c.lookup(&key).is_some()) {
            self.note_miss(&state.key.clone(), text, &inputs);
        }
        let mut rec = Record::new(key.clone(), Some(state.key.clone()), text.to_string(), inputs.into_map(), None);
        rec.created = state.created;
        self.collected.used.push(rec);
        state.key = key;
        state.history.push(History {
            created: Some(crate::time::rfc3339(state.created)),
            created_by: Some(text.to_string()),
            empty_layer: Some(true),
            ..History::default()
        });
        CacheStatus::None
    }
}

/// Applies an instruction that only changes the image config.
pub(super) fn apply_meta(step: &Step, state: &mut ImageState) {
    match &step.instruction {
        Instruction::Env(pairs) => {
            let mut env = state.env();
            for (k, v) in pairs {
                set_env(&mut env, k, v);
            }
            state.runtime().env = Some(env);
        }
        Instruction::User(u) => state.runtime().user = Some(u.clone()),
        Instruction::Label(pairs) => {
            let rt = state.runtime();
            let labels = rt.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in pairs {
                labels.insert(k.clone(), v.clone());
            }
        }
        Instruction::Expose(ports) => {
            let rt = state.runtime();
            let map = rt.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in ports {
                let p = if p.contains('/') { p.to_lowercase() } else { format!("{p}/tcp") };
                map.insert(p, serde_json::json!({}));
            }
        }
        Instruction::Volume(vols) => {
            let rt = state.runtime();
            let map = rt.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                map.insert(v.clone(), serde_json::json!({}));
            }
        }
        Instruction::StopSignal(s) => state.runtime().stop_signal = Some(s.clone()),
        Instruction::Healthcheck(h) => state.runtime().healthcheck = Some(healthcheck_json(h, &state.shell)),
        Instruction::Maintainer(m) => state.config.author = Some(m.clone()),
        Instruction::Shell(s) => {
            state.shell = s.clone();
            state.runtime().shell = Some(s.clone());
        }
        Instruction::Entrypoint(cl) => {
            let argv = command_argv(cl, &state.shell);
            let rt = state.runtime();
            rt.entrypoint = Some(argv);
            // Docker: an ENTRYPOINT resets a CMD inherited from the base (not one set in this stage).
            if !state.cmd_set {
                state.runtime().cmd = None;
            }
        }
        Instruction::Cmd(cl) => {
            state.cmd_set = true;
            state.runtime().cmd = Some(command_argv(cl, &state.shell));
        }
        Instruction::Onbuild(text, _) => {
            state.runtime().on_build.get_or_insert_with(Vec::new).push(text.clone());
        }
        Instruction::Arg(_) | Instruction::From(_) | Instruction::Run(_) | Instruction::Copy(_) | Instruction::Workdir(_) => {}
    }
}

fn command_argv(cl: &CommandLine, shell: &[String]) -> Vec<String> {
    match cl {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

fn healthcheck_json(h: &Healthcheck, shell: &[String]) -> serde_json::Value {
    let test: Vec<String> = match &h.test {
        None => vec!["NONE".to_string()],
        Some(CommandLine::Exec(v)) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v.iter().cloned());
            t
        }
        Some(CommandLine::Shell(s)) => {
            let _ = shell;
            vec!["CMD-SHELL".to_string(), s.clone()]
        }
    };
    let mut obj = serde_json::Map::new();
    obj.insert("Test".into(), serde_json::json!(test));
    let ns = |d: &std::time::Duration| serde_json::json!(d.as_nanos() as u64);
    if let Some(d) = &h.interval {
        obj.insert("Interval".into(), ns(d));
    }
    if let Some(d) = &h.timeout {
        obj.insert("Timeout".into(), ns(d));
    }
    if let Some(d) = &h.start_period {
        obj.insert("StartPeriod".into(), ns(d));
    }
    if let Some(d) = &h.start_interval {
        obj.insert("StartInterval".into(), ns(d));
    }
    if let Some(r) = h.retries {
        obj.insert("Retries".into(), serde_json::json!(r));
    }
    serde_json::Value::Object(obj)
}
