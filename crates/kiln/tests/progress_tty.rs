//! The live view in a real terminal: `kiln build` runs inside a detached tmux session (100×30, on
//! the test's own tmux server: its socket is in the test's temp dir, so no other tmux is touched and
//! nothing is left behind), and the pane is read while a slow RUN runs and after the build.
//!
//! Needs root (overlayfs, namespaces), busybox-static and tmux (all in scripts/deps).

mod support_build;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support_build::{path_str, write_context, Kiln, BASE, KILN};

/// The test's tmux server, killed on drop (so also when an assertion fails).
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(socket: PathBuf) -> Tmux {
        Tmux { socket }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().expect("run tmux")
    }

    fn pane(&self) -> String {
        let o = self.run(&["capture-pane", "-p", "-t", "kiln"]);
        assert!(o.status.success(), "tmux capture-pane: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Reads the pane until `done` holds for it; fails with the pane after a minute.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pane = self.pane();
            if done(&pane) {
                return pane;
            }
            assert!(Instant::now() < deadline, "no {what} within a minute; the pane:\n{pane}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The line of the pane that shows the slow RUN step.
fn run_line(pane: &str) -> Option<&str> {
    pane.lines().map(str::trim_end).find(|l| l.starts_with('#') && l.contains("RUN echo tail-before"))
}

/// Whether `line` ends in a timer such as `1.3s`.
fn ends_with_timer(line: &str) -> bool {
    line.rsplit(' ').next().and_then(|t| t.strip_suffix('s')).is_some_and(|n| n.contains('.') && n.parse::<f64>().is_ok())
}

#[test]
fn the_live_view_shows_running_steps_with_timers_and_output_then_collapses_them() {
    assert!(
        support_build::can_build() && kiln_testkit::require_tool("tmux"),
        "this test needs root, busybox-static and tmux: run scripts/deps as root"
    );
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", &format!("FROM {BASE}\nRUN echo tail-before; sleep 3; echo tail-after\nENV DONE=1\n"))]);
    // `auto` on a terminal outside CI is the live view; a shell after kiln keeps the pane open.
    let script = format!(
        "env -u CI -u NO_COLOR {KILN} --root {} build {} --progress auto; echo kiln-exit=$?; sleep 600",
        path_str(&k.root),
        path_str(&ctx)
    );
    let tmux = Tmux::new(k.path("tmux.sock"));
    let o = tmux.run(&["new-session", "-d", "-s", "kiln", "-x", "100", "-y", "30", &script]);
    assert!(o.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&o.stderr));

    let running = tmux.wait_for("running RUN step with its output", |p| {
        p.lines().any(|l| l.trim_end() == "    tail-before") && run_line(p).is_some_and(ends_with_timer)
    });
    eprintln!("while running:\n{running}");
    let line = run_line(&running).unwrap_or_default();
    assert!(!line.contains("DONE"), "the step is still running: {line}\n{running}");
    assert!(!running.contains("tail-after\n"), "the RUN had not printed its last line yet:\n{running}");
    assert!(!running.contains("kiln: built"), "{running}");
    for l in running.lines() {
        assert!(l.chars().count() <= 100, "a line wider than the terminal: {l:?}");
    }

    let done = tmux.wait_for("end of the build", |p| p.contains("kiln-exit="));
    eprintln!("after:\n{done}");
    assert!(done.contains("kiln-exit=0"), "{done}");
    let line = run_line(&done).unwrap_or_default();
    let outcome = line.rsplit_once(" DONE ").map(|(_, secs)| secs);
    assert!(outcome.is_some_and(|s| s.ends_with('s') && s.trim_end_matches('s').parse::<f64>().is_ok()), "collapsed: {line:?}\n{done}");
    assert!(
        done.lines().all(|l| l.trim_end() != "    tail-before" && l.trim_end() != "    tail-after"),
        "a finished step keeps only its one line:\n{done}"
    );
    assert!(done.lines().any(|l| l.starts_with('#') && l.contains("ENV DONE=1") && l.contains(" DONE ")), "{done}");
    assert!(done.contains("kiln: built sha256:"), "the summary follows the final view:\n{done}");
}
