//! Helpers every build and cache integration test shares: contexts, the metadata file's readers,
//! and process-output checks. Included by `support_build` and `support_cache` (`#[path]`), so each
//! test binary compiles one copy.

// Each test uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// Writes a build context: each `(relative path, content)` becomes a file.
pub fn write_context(dir: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("create context dir");
        }
        fs::write(&p, content).expect("write context file");
    }
}

pub fn read_json(p: &Path) -> Value {
    let bytes = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

/// One `kiln.steps` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub stage: String,
    pub platform: String,
    pub instruction: String,
    pub cache: String,
}

pub fn steps(md: &Value) -> Vec<Step> {
    let arr = md["kiln.steps"].as_array().unwrap_or_else(|| panic!("metadata has no kiln.steps array: {md:#}"));
    arr.iter()
        .map(|s| Step {
            stage: s["stage"].as_str().unwrap_or_default().to_string(),
            platform: s["platform"].as_str().unwrap_or_default().to_string(),
            instruction: s["instruction"].as_str().unwrap_or_default().to_string(),
            cache: s["cache"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// The steps that produce a layer (RUN, COPY, ADD): every step whose cache status is not `none`.
pub fn layer_steps(md: &Value) -> Vec<Step> {
    steps(md).into_iter().filter(|s| s.cache != "none").collect()
}

pub fn digest(md: &Value) -> String {
    md["containerimage.digest"].as_str().unwrap_or_else(|| panic!("no containerimage.digest in {md:#}")).to_string()
}

/// The image's config digest: its identity in the store whatever form its layers are kept in (the
/// layers a build makes are stored plain, those it took from a registry cache gzipped).
pub fn config_digest(md: &Value) -> String {
    md["containerimage.config.digest"].as_str().unwrap_or_else(|| panic!("no containerimage.config.digest in {md:#}")).to_string()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}", o.status, stdout(o), stderr(o));
}

/// Asserts the exit code is exactly 1 (a build/user error, per DESIGN.md).
pub fn assert_exit_1(o: &Output, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: expected exit code 1, got {}:\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// A value unique to this process and call, for file names and secrets.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed))
}
