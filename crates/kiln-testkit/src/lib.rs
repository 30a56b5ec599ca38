//! kiln-testkit (being built).
