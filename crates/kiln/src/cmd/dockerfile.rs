//! `kiln dockerfile dump [FILE]`.

use crate::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print BuildKit's AST dump of a Dockerfile (`-` or no FILE reads stdin).
    Dump {
        /// The Dockerfile to read; `-` or nothing reads standard input.
        file: Option<std::path::PathBuf>,
    },
}

pub fn run(cmd: Command, _g: &Global) -> anyhow::Result<()> {
    match cmd {
        Command::Dump { file } => {
            anyhow::bail!("dockerfile dump is being built (file {file:?})")
        }
    }
}
