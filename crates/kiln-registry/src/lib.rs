//! kiln-registry (being built).
