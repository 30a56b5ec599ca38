//! The in-toto Statement v0.1 envelope every attestation is (BuildKit writes v0.1 for both SLSA
//! versions; readers such as `docker buildx imagetools inspect` expect it).

use serde_json::{json, Value};

/// The statement type BuildKit writes.
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";

/// What a statement is about: one image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The image's name: `pkg:docker/<repo>@<tag>?platform=…` for a named image, as BuildKit
    /// names it, or the digest when the image has no name.
    pub name: String,
    pub digest: kiln_oci::Digest,
}

/// One in-toto statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub predicate_type: String,
    pub subjects: Vec<Subject>,
    pub predicate: Value,
}

impl Statement {
    /// The statement as JSON.
    pub fn to_value(&self) -> Value {
        let subjects: Vec<Value> =
            self.subjects.iter().map(|s| json!({ "name": s.name, "digest": { s.digest.algorithm().as_str(): s.digest.hex() } })).collect();
        json!({
            "_type": STATEMENT_V01,
            "predicateType": self.predicate_type,
            "subject": subjects,
            "predicate": self.predicate,
        })
    }

    /// The bytes of the blob (serde_json sorts keys: the same statement gives the same digest).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_names_its_subject_by_sha256() {
        let d = kiln_oci::Digest::sha256_of(b"m");
        let s = Statement {
            predicate_type: crate::SLSA_V02.into(),
            subjects: vec![Subject { name: "pkg:docker/x@1".into(), digest: d.clone() }],
            predicate: json!({}),
        };
        let v: Value = serde_json::from_slice(&s.to_bytes()).unwrap();
        assert_eq!(v["_type"], STATEMENT_V01);
        assert_eq!(v["predicateType"], crate::SLSA_V02);
        assert_eq!(v["subject"][0]["digest"]["sha256"], d.hex());
        assert_eq!(v["subject"][0]["name"], "pkg:docker/x@1");
    }
}
