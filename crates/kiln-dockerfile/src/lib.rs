//! kiln-dockerfile (being built).
