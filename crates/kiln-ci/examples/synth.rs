//! Write the synthetic two-architecture history from issue 7 as `gh api` output, to try
//! `kiln ci-report` without a GitHub token:
//!
//! ```text
//! cargo run -p kiln-ci --example synth -- /tmp/ci-history [SEED]
//! kiln ci-report /tmp/ci-history --format html -o report.html
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: synth DIR [SEED]");
        return ExitCode::from(2);
    };
    let seed = match args.next().map(|s| s.parse::<u64>()) {
        None => 7,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("SEED must be a number: {e}");
            return ExitCode::from(2);
        }
    };
    match kiln_ci::synth::Synth::two_arch(seed).write_dir(&dir, 30) {
        Ok(()) => {
            println!("wrote {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}
