//! One module per subcommand: flags in, a library call, output out.

// The flags' doc comments are clap's `--help` text, written for a terminal (`[,key=value]`,
// `<root>`), not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

pub mod build;
pub mod buildx;
pub mod cache;
pub mod ci_report;
pub mod copy;
pub mod dockerfile;
pub mod images;
pub mod import;
pub mod inspect;
pub mod login;
pub mod manifest;
pub mod prune;
pub mod pull;
pub mod push;
pub mod rmi;
pub mod run;
