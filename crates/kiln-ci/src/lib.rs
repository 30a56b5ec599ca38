//! kiln-ci (being built).
