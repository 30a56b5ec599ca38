//! The terminal side of a build: one line per step as it starts and ends, the output of RUN steps
//! indented beneath, and a one-screen summary at the end. Plain lines work the same in CI logs and
//! on a terminal; `--progress quiet` keeps only errors and the summary.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use kiln_build::{CacheStatus, Progress, StepReport};

/// How much to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Auto,
    Tty,
    Plain,
    Quiet,
}

pub struct Printer {
    mode: Mode,
    started: Instant,
    n: Mutex<usize>,
}

impl Printer {
    pub fn new(mode: Mode) -> Printer {
        Printer { mode, started: Instant::now(), n: Mutex::new(0) }
    }

    fn quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }

    /// The one-screen summary: steps, cache hits, time.
    pub fn summary(&self, steps: &[StepReport], digest: &str) -> String {
        let count = |s: CacheStatus| steps.iter().filter(|r| r.cache == s).count();
        let (hl, hr, miss) = (count(CacheStatus::HitLocal), count(CacheStatus::HitRegistry), count(CacheStatus::Miss));
        let run_secs: f64 = 0.0 + steps.iter().filter(|r| r.cache == CacheStatus::Miss).map(|r| r.seconds).sum::<f64>();
        format!(
            "kiln: built {digest} in {:.2}s — {} steps: {} cached ({} local, {} registry), {} executed ({:.2}s), {} config-only",
            self.started.elapsed().as_secs_f64(),
            steps.len(),
            hl + hr,
            hl,
            hr,
            miss,
            run_secs,
            count(CacheStatus::None)
        )
    }
}

impl Progress for Printer {
    fn step_started(&self, stage: &str, instruction: &str) {
        if self.quiet() {
            return;
        }
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        eprintln!("#{} [{stage}] {instruction}", *n);
    }

    fn output(&self, _instruction: &str, line: &[u8]) {
        if self.quiet() {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"    ");
        let _ = err.write_all(line);
        if !line.ends_with(b"\n") {
            let _ = err.write_all(b"\n");
        }
    }

    fn step_done(&self, r: &StepReport) {
        if self.quiet() {
            return;
        }
        match r.cache {
            CacheStatus::HitLocal => eprintln!("    CACHED (local)"),
            CacheStatus::HitRegistry => eprintln!("    CACHED (registry)"),
            CacheStatus::Miss => eprintln!("    DONE {:.2}s", r.seconds),
            CacheStatus::None => {}
        }
    }

    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }

    fn info(&self, message: &str) {
        if !self.quiet() {
            eprintln!("{message}");
        }
    }
}
