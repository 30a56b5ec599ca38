//! kiln-dockerfile (being built): the Dockerfile frontend.

pub mod dockerignore;
pub mod instructions;
pub mod shell;
