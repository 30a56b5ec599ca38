//! kiln-sandbox (being built).
