//! Shared helpers of the kiln-sbom integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Validates an SPDX JSON document with pyspdxtools (installed with pip when missing). `Err` with the
/// reason when the validator cannot be had (PyPI not answering); panics when it rejects the document.
pub fn validate_spdx(doc: &serde_json::Value, dir: &Path) -> Result<(), String> {
    let have = Command::new("pyspdxtools").arg("--help").output().is_ok_and(|o| o.status.success());
    if !have {
        let pip = Command::new("pip").args(["install", "-q", "spdx-tools"]).status();
        if !pip.is_ok_and(|s| s.success()) {
            return Err("pyspdxtools is missing and `pip install spdx-tools` failed (PyPI not answering?)".into());
        }
    }
    let file = dir.join("doc.spdx.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = Command::new("pyspdxtools").arg("-i").arg(&file).output().expect("run pyspdxtools");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("ValidationMessage"), "pyspdxtools rejects the document:\n{text}");
    Ok(())
}

pub fn doc_info() -> kiln_sbom::DocumentInfo {
    kiln_sbom::DocumentInfo {
        name: "test-image".into(),
        namespace: "https://kiln.invalid/spdx/test-image-1".into(),
        created: "2026-12-03T10:00:00Z".into(),
        tool: "kiln-0.1.0".into(),
    }
}
