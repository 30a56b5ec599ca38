//! `kiln dockerfile dump [FILE]`: parse a Dockerfile and print BuildKit's AST dump of it.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;

use crate::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print BuildKit's AST dump of a Dockerfile (`-` or no FILE reads stdin).
    Dump {
        /// The Dockerfile to read; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
}

pub fn run(cmd: Command, _g: &Global) -> anyhow::Result<()> {
    match cmd {
        Command::Dump { file } => dump(file),
    }
}

fn dump(file: Option<PathBuf>) -> anyhow::Result<()> {
    let (name, source) = match file {
        Some(p) if p.as_os_str() != "-" => {
            let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}: check the path and permissions", p.display()))?;
            (p.display().to_string(), bytes)
        }
        _ => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).context("cannot read the Dockerfile from standard input")?;
            ("<stdin>".to_string(), bytes)
        }
    };
    // The parse error already reads `FILE:LINE:COL: message`; main prints it after `error: `.
    let ast = kiln_dockerfile::parse_file(&name, &source)?;
    for w in &ast.warnings {
        tracing::warn!(line = w.line, "{}: {}", name, w.message);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(ast.dump().as_bytes()).context("cannot write the dump to standard output")?;
    out.flush().context("cannot write the dump to standard output")?;
    Ok(())
}
