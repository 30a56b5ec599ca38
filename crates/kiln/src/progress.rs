//! The terminal side of a build: one line per step as it starts and ends, the output of RUN steps
//! indented beneath, and a one-screen summary at the end. Plain lines work the same in CI logs and
//! on a terminal; `--progress quiet` keeps only errors and the summary. On a terminal (outside CI)
//! `auto` is the live view of [`tty`]; `rawjson` writes the events as JSON lines ([`rawjson`]).

mod rawjson;
mod tty;

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
    Rawjson,
}

impl Mode {
    /// `auto` made definite: the live view when stderr is a terminal that can draw it and this is
    /// not CI (`CI` set to anything but `false`/`0`), plain lines otherwise.
    pub fn resolve(self) -> Mode {
        if self != Mode::Auto {
            return self;
        }
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !ci && !dumb {
            Mode::Tty
        } else {
            Mode::Plain
        }
    }
}

pub struct Printer {
    mode: Mode,
    started: Instant,
    n: Mutex<usize>,
    live: Option<tty::Live>,
    /// rawjson: the running steps (number, stage, instruction), to number their output and end
    /// them when the build fails.
    open: Mutex<Vec<(usize, String, String, Instant)>>,
}

impl Printer {
    /// A printer for `mode` (resolved: see [`Mode::resolve`]).
    pub fn new(mode: Mode) -> Printer {
        let mode = mode.resolve();
        let live = (mode == Mode::Tty).then(|| tty::Live::new(tty::colour_from_env()));
        Printer { mode, started: Instant::now(), n: Mutex::new(0), live, open: Mutex::new(Vec::new()) }
    }

    /// The build is over: the live view draws its final frame (running steps end in ERROR when it
    /// failed), rawjson ends the running steps with `error`. Call before printing anything else.
    pub fn finish(&self, ok: bool) {
        if let Some(live) = &self.live {
            live.finish(ok);
        }
        if self.mode == Mode::Rawjson && !ok {
            let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()));
            for (step, stage, instruction, started) in &open {
                rawjson::emit(&rawjson::Event::StepEnd {
                    step: *step,
                    stage,
                    platform: None,
                    instruction,
                    status: "error",
                    cache: None,
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
        }
    }

    /// A line after the build (the summary, the cache policy): an `info` event in rawjson.
    pub fn line(&self, text: &str) {
        if self.mode == Mode::Rawjson {
            rawjson::emit(&rawjson::Event::Info { message: text });
        } else {
            eprintln!("{text}");
        }
    }

    fn next(&self) -> usize {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        *n
    }

    fn open_step(&self, instruction: &str) -> Option<usize> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().rev().find(|s| s.2 == instruction).map(|s| s.0)
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
        if let Some(live) = &self.live {
            let id = self.next();
            live.with(|st, _, _| st.start(id, stage, instruction, Instant::now()));
            return;
        }
        if self.mode == Mode::Rawjson {
            let step = self.next();
            self.open.lock().unwrap_or_else(|e| e.into_inner()).push((step, stage.into(), instruction.into(), Instant::now()));
            rawjson::emit(&rawjson::Event::StepStart { step, stage, instruction });
            return;
        }
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        eprintln!("#{} [{stage}] {instruction}", *n);
    }

    fn output(&self, instruction: &str, line: &[u8]) {
        if self.quiet() {
            return;
        }
        if let Some(live) = &self.live {
            live.with(|st, above, colour| {
                if !st.output(instruction, line) {
                    above.push(tty::orphan_line(line, colour));
                }
            });
            return;
        }
        if self.mode == Mode::Rawjson {
            let text = String::from_utf8_lossy(line);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            rawjson::emit(&rawjson::Event::StepOutput { step: self.open_step(instruction), instruction, line: text });
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
        if let Some(live) = &self.live {
            live.with(|st, _, _| st.end(r));
            return;
        }
        if self.mode == Mode::Rawjson {
            // A report of a step that never started (a stage's FROM) is no event: plain prints
            // nothing for it either.
            let step = {
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                let i = open.iter().position(|s| s.1 == r.stage && s.2 == r.instruction);
                i.map(|i| open.remove(i).0)
            };
            let Some(step) = step else {
                return;
            };
            let (status, cache) = match r.cache {
                CacheStatus::HitLocal => ("cached", Some("local")),
                CacheStatus::HitRegistry => ("cached", Some("registry")),
                CacheStatus::Miss | CacheStatus::None => ("done", None),
            };
            rawjson::emit(&rawjson::Event::StepEnd {
                step,
                stage: &r.stage,
                platform: Some(&r.platform),
                instruction: &r.instruction,
                status,
                cache,
                seconds: r.seconds,
            });
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
        if let Some(live) = &self.live {
            live.with(|_, above, colour| above.push(tty::message("warning:", message, colour)));
        } else if self.mode == Mode::Rawjson {
            rawjson::emit(&rawjson::Event::Warn { message });
        } else {
            eprintln!("warning: {message}");
        }
    }

    fn info(&self, message: &str) {
        if let Some(live) = &self.live {
            live.with(|_, above, _| above.push(message.to_string()));
        } else if self.mode == Mode::Rawjson {
            rawjson::emit(&rawjson::Event::Info { message });
        } else if !self.quiet() {
            eprintln!("{message}");
        }
    }

    fn transfer(&self, what: &str, done: u64, total: Option<u64>) {
        if let Some(live) = &self.live {
            live.with(|st, _, _| st.transfer(what, done, total));
        } else if self.mode == Mode::Rawjson {
            rawjson::emit(&rawjson::Event::Transfer { what, done, total });
        }
    }
}
