//! A `dockerd` private to one test: its own data root, exec root and socket (`--iptables=false
//! --bridge=none`, the vfs storage driver, so it needs nothing of the host's network or file
//! systems); stopped by its PID when dropped (SIGTERM, then SIGKILL if it hangs).

use std::fs;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Dockerd {
    child: Child,
    sock: String,
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// Starts dockerd and waits until it answers. `Err` says why it could not start.
    pub fn start() -> Result<Dockerd, String> {
        // Short paths: the socket path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new().prefix("kd").tempdir_in("/tmp").map_err(|e| e.to_string())?;
        let p = |n: &str| dir.path().join(n).display().to_string();
        let sock = format!("unix://{}", p("d.sock"));
        let log = fs::File::create(dir.path().join("log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=vfs"])
            .args(["--data-root", &p("data"), "--exec-root", &p("exec"), "--pidfile", &p("pid"), "-H", &sock])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn dockerd: {e}"))?;
        let mut d = Dockerd { child, sock, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                let log = fs::read_to_string(d.dir.path().join("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                return Err(format!("dockerd exited ({status}) before answering; last log lines:\n{}", tail.join("\n")));
            }
            if d.docker(&["version"]).status.success() {
                return Ok(d);
            }
            if Instant::now() > deadline {
                return Err("dockerd did not answer within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts dockerd, or, when it cannot start, fails in CI and skips (printing why) elsewhere.
    pub fn start_or_skip() -> Option<Dockerd> {
        match Dockerd::start() {
            Ok(d) => Some(d),
            Err(why) => {
                if crate::in_ci() {
                    panic!("dockerd is needed for this test and could not start: {why}");
                }
                eprintln!("skipping: dockerd could not start here: {why}");
                None
            }
        }
    }

    /// `DOCKER_HOST` for this engine (`unix://…`).
    pub fn host(&self) -> &str {
        &self.sock
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker").arg("-H").arg(&self.sock).args(args).output().unwrap_or_else(|e| panic!("run docker: {e}"))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM first so dockerd stops its containerd and unmounts; SIGKILL if it hangs.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
