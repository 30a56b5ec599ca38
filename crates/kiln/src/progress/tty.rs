//! The live view of a build on a terminal (`--progress tty`, and `auto` when stderr is a terminal
//! outside CI).
//!
//! The model is a state table and a frame drawn from it. Build events ([`State::start`],
//! [`State::output`], [`State::end`], [`State::transfer`]) only update the table; they never write.
//! A ticker thread redraws at most every 100 ms: it moves the cursor up over the frame it drew last
//! (`ESC[nA`), clears each line it rewrites (`ESC[2K`) and what is left below (`ESC[J`), and writes
//! the new frame. Finished steps leave the table as one collapsed line (`#3 [stage] RUN … DONE 2.1s`)
//! written *above* the frame, where the cursor never goes back, so the frame only ever spans the
//! running steps and live transfers and stays shorter than the terminal (cursor-up cannot reach
//! lines that scrolled away). Warnings and other messages are written above the frame the same way,
//! whole. The last draw, when the build ends, leaves only permanent lines: the final view stays on
//! screen and the summary follows it.
//!
//! [`frame`] is a pure function of the table, the terminal width and the time, so the view is
//! tested without a terminal. Every line it returns fits the width (counted in characters; output
//! is stripped of control sequences first), and a width of zero or one still gives lines, never a
//! panic. Colour is ANSI SGR, off when `NO_COLOR` is set; widths are measured before it is added.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_build::{CacheStatus, StepReport};

/// Lines of output kept (and shown) per running step.
pub const TAIL: usize = 6;
/// How often the ticker redraws.
const TICK: Duration = Duration::from_millis(100);

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Reused from the local store's cache or a registry cache ("local", "registry").
    Cached(&'static str),
    Done,
    Error,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: usize,
    pub stage: String,
    pub instruction: String,
    pub started: Instant,
    /// How it ended and how long it took, in seconds.
    pub end: Option<(Status, f64)>,
    pub tail: VecDeque<String>,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub what: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// What the frame is drawn from: steps in the order they started, transfers in the order seen.
#[derive(Debug, Default)]
pub struct State {
    pub steps: Vec<Step>,
    pub transfers: Vec<Transfer>,
}

impl State {
    /// A step began; `id` is its number in the build (as `--progress plain` prints it after `#`).
    pub fn start(&mut self, id: usize, stage: &str, instruction: &str, now: Instant) {
        self.steps.push(Step {
            id,
            stage: stage.to_string(),
            instruction: instruction.to_string(),
            started: now,
            end: None,
            tail: VecDeque::new(),
        });
    }

    /// A line of output of the running step `instruction` (the newest such, when parallel stages
    /// run the same text). `false` when no running step has that text (e.g. `--test` output).
    pub fn output(&mut self, instruction: &str, line: &[u8]) -> bool {
        let Some(s) = self.steps.iter_mut().rev().find(|s| s.end.is_none() && s.instruction == instruction) else {
            return false;
        };
        if s.tail.len() == TAIL {
            s.tail.pop_front();
        }
        s.tail.push_back(clean(line));
        true
    }

    /// The oldest running step of `r.stage` with `r.instruction` ended.
    pub fn end(&mut self, r: &StepReport) {
        if let Some(s) = self.steps.iter_mut().find(|s| s.end.is_none() && s.stage == r.stage && s.instruction == r.instruction) {
            let status = match r.cache {
                CacheStatus::HitLocal => Status::Cached("local"),
                CacheStatus::HitRegistry => Status::Cached("registry"),
                CacheStatus::Miss | CacheStatus::None => Status::Done,
            };
            s.end = Some((status, r.seconds));
        }
    }

    /// The build failed: every step still running ends in ERROR after the time it ran.
    pub fn fail_running(&mut self, now: Instant) {
        for s in self.steps.iter_mut().filter(|s| s.end.is_none()) {
            s.end = Some((Status::Error, now.saturating_duration_since(s.started).as_secs_f64()));
        }
    }

    pub fn transfer(&mut self, what: &str, done: u64, total: Option<u64>) {
        match self.transfers.iter_mut().find(|t| t.what == what) {
            Some(t) => (t.done, t.total) = (done, total),
            None => self.transfers.push(Transfer { what: what.to_string(), done, total }),
        }
    }

    /// Removes the ended steps (returned, to be written above the frame) and the finished
    /// transfers (dropped: the "pushed" line that follows says it).
    pub fn take_ended(&mut self) -> State {
        let (ended, running) = std::mem::take(&mut self.steps).into_iter().partition(|s| s.end.is_some());
        self.steps = running;
        self.transfers.retain(|t| !matches!(t.total, Some(total) if t.done >= total));
        State { steps: ended, transfers: Vec::new() }
    }
}

/// The frame for `state` at `now`, `width` characters wide: each step's header (collapsed to one
/// line with its outcome when it ended; with a timer and the tail of its output while it runs),
/// then a line per transfer with a bar when the size is known.
pub fn frame(state: &State, width: usize, now: Instant, colour: bool) -> Vec<String> {
    let paint = |s: &str, sgr: &str| if colour && !s.is_empty() { format!("\x1b[{sgr}m{s}\x1b[0m") } else { s.to_string() };
    let mut lines = Vec::new();
    for s in &state.steps {
        let head = format!("#{} [{}] {}", s.id, s.stage, s.instruction);
        match s.end {
            Some((status, secs)) => {
                let (word, sgr) = match status {
                    Status::Cached(_) => ("CACHED".to_string(), "34"),
                    Status::Done => (format!("DONE {secs:.1}s"), "34"),
                    Status::Error => (format!("ERROR {secs:.1}s"), "31"),
                };
                let (l, r) = fit(&head, &word, width);
                lines.push(format!("{}{}", paint(&l, sgr), paint(&r, sgr)));
            }
            None => {
                let timer = format!("{:.1}s", now.saturating_duration_since(s.started).as_secs_f64());
                let (l, r) = fit(&head, &timer, width);
                lines.push(format!("{}{}", paint(&l, "1"), r));
                for t in &s.tail {
                    lines.push(paint(&truncate(&format!("    {t}"), width), "2"));
                }
            }
        }
    }
    for t in &state.transfers {
        let amount = match t.total {
            Some(total) => format!("{} / {}", bytes(t.done), bytes(total)),
            None => bytes(t.done),
        };
        // The bar goes first when the line is short of room: the numbers say the same.
        let room = width.saturating_sub(amount.chars().count() + 1);
        let bar = match t.total {
            Some(total) if total > 0 && room >= 22 + 12 => {
                let filled = ((t.done.min(total) as u128 * 20) / total as u128) as usize;
                format!("[{}{}] ", "=".repeat(filled), " ".repeat(20 - filled))
            }
            _ => String::new(),
        };
        let (l, r) = fit(&t.what, &format!("{bar}{amount}"), width);
        lines.push(format!("{l}{}", paint(&r, "36")));
    }
    lines
}

/// Splits `width` between `left` and a right part (` ` + `right`), shortening `left` first so the
/// right part (a timer, an outcome) stays visible; on a terminal too narrow for both, the right part
/// is cut too. The two parts together are at most `width` characters.
fn fit(left: &str, right: &str, width: usize) -> (String, String) {
    let right = format!(" {right}");
    let rn = right.chars().count();
    if rn >= width {
        return (String::new(), truncate(&right, width));
    }
    (truncate(left, width - rn), right)
}

/// `s` cut to `width` characters, the last one an ellipsis when something was cut.
fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut t: String = s.chars().take(width - 1).collect();
    t.push('…');
    t
}

/// A line of a step's output, made safe to place on the frame: what a carriage return overwrote
/// is dropped, escape sequences and other control characters removed, tabs made spaces.
fn clean(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    let text = text.rsplit('\r').next().unwrap_or("");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte (0x40..=0x7e); other escapes: ESC and one char.
                if chars.next_if_eq(&'[').is_some() {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Output that belongs to no running step (a `--test` command's), as a line above the frame.
pub fn orphan_line(line: &[u8], colour: bool) -> String {
    let l = format!("    {}", clean(line));
    if colour {
        format!("\x1b[2m{l}\x1b[0m")
    } else {
        l
    }
}

/// A message above the frame, its `label` coloured (yellow) when colour is on.
pub fn message(label: &str, text: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[33m{label}\x1b[0m {text}")
    } else {
        format!("{label} {text}")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Columns and rows of the terminal on stderr; 80×24 when it does not say.
fn terminal_size() -> (usize, usize) {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct it is given and nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    let cols = if ok && ws.ws_col > 0 { ws.ws_col as usize } else { 80 };
    let rows = if ok && ws.ws_row > 0 { ws.ws_row as usize } else { 24 };
    (cols, rows)
}

/// Whether colour is wanted: `NO_COLOR` (any non-empty value) turns it off, <https://no-color.org>.
pub fn colour_from_env() -> bool {
    std::env::var_os("NO_COLOR").filter(|v| !v.is_empty()).is_none()
}

struct Screen {
    state: State,
    /// Whole lines to write above the frame at the next draw (messages, unmatched output).
    above: Vec<String>,
    /// The frame on screen now (the cursor is on the line below it).
    drawn: Vec<String>,
    colour: bool,
    finished: bool,
}

impl Screen {
    fn draw(&mut self, now: Instant) {
        let (cols, rows) = terminal_size();
        // One column spare: a line exactly as wide as the terminal wraps early on some terminals.
        let width = cols.saturating_sub(1);
        let ended = self.state.take_ended();
        let mut permanent = std::mem::take(&mut self.above);
        permanent.extend(frame(&ended, width, now, self.colour));
        let mut lines = frame(&self.state, width, now, self.colour);
        let max = rows.saturating_sub(2).max(1);
        if lines.len() > max {
            let hidden = lines.len() - (max - 1);
            lines.truncate(max - 1);
            lines.push(truncate(&format!("… {hidden} more lines"), width));
        }
        if permanent.is_empty() && lines == self.drawn {
            return;
        }
        let mut out = String::new();
        if !self.drawn.is_empty() {
            out.push_str(&format!("\r\x1b[{}A", self.drawn.len()));
        }
        for l in permanent.iter().chain(lines.iter()) {
            out.push_str("\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("\x1b[J");
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
        self.drawn = lines;
    }
}

/// The live view: the state table behind a lock, and the ticker that draws it.
pub struct Live {
    screen: Arc<Mutex<Screen>>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl Live {
    pub fn new(colour: bool) -> Live {
        let screen =
            Arc::new(Mutex::new(Screen { state: State::default(), above: Vec::new(), drawn: Vec::new(), colour, finished: false }));
        let s = screen.clone();
        let ticker = std::thread::Builder::new()
            .name("kiln-progress".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                let mut sc = s.lock().unwrap_or_else(|e| e.into_inner());
                if sc.finished {
                    break;
                }
                sc.draw(Instant::now());
            })
            .ok();
        Live { screen, ticker: Mutex::new(ticker) }
    }

    /// Updates the table (drawn at the next tick).
    pub fn with(&self, f: impl FnOnce(&mut State, &mut Vec<String>, bool)) {
        let mut sc = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        let sc = &mut *sc;
        f(&mut sc.state, &mut sc.above, sc.colour);
    }

    /// Stops the ticker and draws the final view; steps still running end in ERROR when the build
    /// failed. Later calls do nothing.
    pub fn finish(&self, ok: bool) {
        {
            let mut sc = self.screen.lock().unwrap_or_else(|e| e.into_inner());
            if sc.finished {
                return;
            }
            sc.finished = true;
            let now = Instant::now();
            if !ok {
                sc.state.fail_running(now);
            }
            sc.draw(now);
        }
        if let Some(t) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stage: &str, instruction: &str, cache: CacheStatus, seconds: f64) -> StepReport {
        StepReport { stage: stage.into(), platform: "linux/amd64".into(), instruction: instruction.into(), cache, seconds }
    }

    fn strip(lines: &[String]) -> Vec<String> {
        lines.iter().map(|l| clean(l.as_bytes())).collect()
    }

    #[test]
    fn running_steps_show_timers_and_the_tail_of_their_output_side_by_side() {
        let t0 = Instant::now();
        let mut st = State::default();
        st.start(1, "a", "RUN make", t0);
        st.start(2, "b", "RUN test", t0 + Duration::from_millis(500));
        for i in 0..10 {
            assert!(st.output("RUN make", format!("line {i}\n").as_bytes()));
        }
        assert!(st.output("RUN test", b"ok\n"));
        assert!(!st.output("RUN other", b"x\n"));
        let lines = frame(&st, 80, t0 + Duration::from_millis(2300), false);
        let mut want = vec!["#1 [a] RUN make 2.3s".to_string()];
        want.extend((4..10).map(|i| format!("    line {i}")));
        want.extend(["#2 [b] RUN test 1.8s".to_string(), "    ok".to_string()]);
        assert_eq!(lines, want);
    }

    #[test]
    fn an_ended_step_collapses_to_one_line_with_its_outcome() {
        let t0 = Instant::now();
        let mut st = State::default();
        st.start(1, "a", "RUN make", t0);
        st.start(2, "a", "COPY x /", t0);
        st.start(3, "b", "RUN fail", t0);
        st.start(4, "b", "RUN later", t0);
        st.output("RUN make", b"compiling\n");
        st.end(&report("a", "RUN make", CacheStatus::Miss, 2.04));
        st.end(&report("a", "COPY x /", CacheStatus::HitRegistry, 0.0));
        st.output("RUN fail", b"oops\n");
        st.fail_running(t0 + Duration::from_secs(1));
        let lines = frame(&st, 80, t0 + Duration::from_secs(3), false);
        assert_eq!(
            lines,
            ["#1 [a] RUN make DONE 2.0s", "#2 [a] COPY x / CACHED", "#3 [b] RUN fail ERROR 1.0s", "#4 [b] RUN later ERROR 1.0s"]
        );
        let ended = st.take_ended();
        assert_eq!(ended.steps.len(), 4);
        assert!(st.steps.is_empty() && frame(&st, 80, t0, false).is_empty());
    }

    #[test]
    fn long_lines_are_cut_to_the_width_keeping_the_timer_and_narrow_terminals_do_not_panic() {
        let t0 = Instant::now();
        let mut st = State::default();
        st.start(12, "build", &format!("RUN {}", "x".repeat(200)), t0);
        st.output(&format!("RUN {}", "x".repeat(200)), "é".repeat(300).as_bytes());
        st.transfer("push 127.0.0.1:5000/app sha256:0123456789ab", 3 << 20, Some(4 << 20));
        let lines = frame(&st, 40, t0 + Duration::from_millis(1500), false);
        assert_eq!(lines[0], format!("#12 [build] RUN {}… 1.5s", "x".repeat(18)));
        assert_eq!(lines[1], format!("    {}…", "é".repeat(35)));
        assert_eq!(lines[2], "push 127.0.0.1:5000/a… 3.0 MiB / 4.0 MiB");
        let wide = frame(&st, 90, t0, false);
        assert_eq!(wide[2], "push 127.0.0.1:5000/app sha256:0123456789ab [===============     ] 3.0 MiB / 4.0 MiB");
        for l in &lines {
            assert!(l.chars().count() <= 40, "{l:?} is wider than 40");
        }
        for w in 0..12 {
            for l in frame(&st, w, t0, false) {
                assert!(l.chars().count() <= w, "{l:?} is wider than {w}");
            }
        }
    }

    #[test]
    fn colour_is_added_only_when_asked_and_outside_the_measured_width() {
        let t0 = Instant::now();
        let mut st = State::default();
        st.start(1, "a", "RUN ok", t0);
        st.start(2, "a", "RUN bad", t0);
        st.output("RUN bad", b"\x1b[31mred\x1b[0m\tout\r\n");
        st.end(&report("a", "RUN ok", CacheStatus::Miss, 1.0));
        let plain = frame(&st, 30, t0, false);
        assert!(plain.iter().all(|l| !l.contains('\x1b')), "{plain:?}");
        assert_eq!(plain[2], "    red    out");
        let coloured = frame(&st, 30, t0, true);
        assert_eq!(coloured[0], "\x1b[34m#1 [a] RUN ok\x1b[0m\x1b[34m DONE 1.0s\x1b[0m");
        assert_eq!(coloured[2], "\x1b[2m    red    out\x1b[0m");
        assert_eq!(strip(&coloured), plain);
        st.fail_running(t0);
        assert!(frame(&st, 30, t0, true)[1].starts_with("\x1b[31m#2 [a] RUN bad"));
    }

    #[test]
    fn finished_transfers_leave_the_frame_and_unknown_sizes_show_bytes_only() {
        let mut st = State::default();
        st.transfer("push a", 10, Some(10));
        st.transfer("pull b", 2048, None);
        assert_eq!(frame(&st, 80, Instant::now(), false)[1], "pull b 2.0 KiB");
        st.take_ended();
        assert_eq!(st.transfers.len(), 1);
        assert_eq!(st.transfers[0].what, "pull b");
    }
}
