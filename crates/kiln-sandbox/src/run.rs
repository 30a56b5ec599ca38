//! The caller's side: start the init process, feed it the spec, stream output, collect the
//! outcome and clean the mount points.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::cleanup::{remove_created, MountPoint};
use crate::error::Error;
use crate::output::{LineSplitter, Stream, Tail};
use crate::protocol::{Report, INIT_ARG, INIT_ENV, PARENT_ENV, PROTOCOL_VERSION, REPORT_FD, SPEC_FD};
use crate::spec::{Mount, SecretSource, Spec};
use crate::sys;

/// How many trailing output lines a failure carries.
pub const TAIL_LINES: usize = 20;

/// How long a run whose outer init was killed waits for the rest of the sandbox to be gone.
/// SIGKILL is normally handled at once; only a process stuck in the kernel (a hung FUSE or NFS
/// mount) takes longer, and then the run returns anyway, with a warning.
const NAMESPACE_EXIT_WAIT: Duration = Duration::from_secs(10);

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// The result of a run that got as far as executing the command.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: ExitStatus,
    /// The last [`TAIL_LINES`] lines of stdout and stderr, interleaved as received.
    pub tail: Vec<String>,
    /// Mount points the sandbox created in the root, and whether each was removed again.
    /// Entries with `removed == false` are the caller's to drop from the layer.
    pub mount_points: Vec<MountPoint>,
    /// The command line, for messages.
    pub command: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == ExitStatus::Code(0)
    }

    /// `Ok` on exit code 0, else [`Error::Failed`] naming the command, its status and the last
    /// lines of its output.
    pub fn check(self) -> Result<Outcome, Error> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::Failed { command: self.command, status: self.status, tail: self.tail })
        }
    }
}

/// Runs processes in sandboxes by re-executing a binary that calls
/// [`crate::init::maybe_run`] first thing in `main`.
#[derive(Debug, Clone)]
pub struct Sandbox {
    init_binary: PathBuf,
    cancel: Cancel,
}

impl Sandbox {
    /// Re-executes the current program (`std::env::current_exe()`), i.e. kiln itself.
    pub fn new() -> Result<Sandbox, Error> {
        let exe = std::env::current_exe().map_err(|source| Error::Spawn { binary: PathBuf::from("/proc/self/exe"), source })?;
        Ok(Sandbox { init_binary: exe, cancel: Cancel::default() })
    }

    /// Re-executes `binary` instead (tests use the built `kiln` binary).
    pub fn with_init_binary(binary: impl Into<PathBuf>) -> Sandbox {
        Sandbox { init_binary: binary.into(), cancel: Cancel::default() }
    }

    /// Runs of this sandbox stop when `cancel` fires.
    pub fn with_cancel(self, cancel: Cancel) -> Sandbox {
        Sandbox { cancel, ..self }
    }

    pub fn init_binary(&self) -> &Path {
        &self.init_binary
    }

    /// Runs `spec` to completion. Each line of output goes to `sink` as it arrives. Returns the
    /// outcome whatever the exit status (see [`Outcome::check`]); errors mean the command could
    /// not be run at all, or, for [`Error::Cancelled`], that the handle given to
    /// [`Sandbox::with_cancel`] stopped it (or had fired before: then nothing is started). Mount
    /// points the sandbox created are removed before returning, and no process of the run is
    /// left.
    pub fn run(&self, spec: &Spec, sink: &mut dyn FnMut(Stream, &[u8])) -> Result<Outcome, Error> {
        let command = spec.command_line();
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled { command });
        }
        let mut spec = spec.clone();
        validate(&mut spec)?;
        let io_err = |source| Error::Io { command: command.clone(), source };
        let json = serde_json::to_vec(&spec).map_err(|e| Error::InvalidSpec(format!("cannot encode the spec: {e}")))?;

        let (spec_r, spec_w) = sys::pipe().map_err(io_err)?;
        let (report_r, report_w) = sys::pipe().map_err(io_err)?;
        let mut cmd = Command::new(&self.init_binary);
        cmd.arg(INIT_ARG)
            .env_clear()
            .env(INIT_ENV, PROTOCOL_VERSION)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Out of kiln's process group from the fork on, so that a Ctrl-C reaches kiln only
            // (the init repeats it itself; see `init::outer_main`).
            .process_group(0);
        sys::pass_fds(&mut cmd, [(spec_r.as_raw_fd(), SPEC_FD), (report_w.as_raw_fd(), REPORT_FD)]);
        // This thread forks the init and then blocks until it has reaped it: the init's
        // parent-death signal, which is tied to the forking thread, fires only if kiln dies.
        let mut child = cmd.spawn().map_err(|source| Error::Spawn { binary: self.init_binary.clone(), source })?;
        // Kills the child at once if the handle fired since the check above.
        let registration = self.cancel.register(child.id() as libc::pid_t);
        // Our copies must go, or EOF never comes.
        drop(spec_r);
        drop(report_w);
        tracing::debug!(command = %command, root = %spec.root.display(), "sandbox started");

        // The init reads the whole spec before doing anything else, so this cannot deadlock;
        // if it died early, the reports below say why.
        let write_result = File::from(spec_w).write_all(&json);

        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut tail = Tail::new(TAIL_LINES);
        let (reports, panicked) = std::thread::scope(|s| {
            let (tx, rx) = mpsc::sync_channel::<(Stream, Vec<u8>)>(256);
            for (stream, pipe) in [
                (Stream::Stdout, stdout.map(|p| Box::new(p) as Box<dyn Read + Send>)),
                (Stream::Stderr, stderr.map(|p| Box::new(p) as Box<dyn Read + Send>)),
            ] {
                let Some(mut pipe) = pipe else { continue };
                let tx = tx.clone();
                s.spawn(move || {
                    let mut splitter = LineSplitter::default();
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut send = |l: &[u8]| {
                        let _ = tx.send((stream, l.to_vec()));
                    };
                    loop {
                        match pipe.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => splitter.push(&buf[..n], &mut send),
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    splitter.finish(&mut send);
                });
            }
            drop(tx);
            let reports = s.spawn(move || {
                let mut out = Vec::new();
                for line in BufReader::new(File::from(report_r)).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Report>(&line) {
                        Ok(r) => out.push(r),
                        Err(e) => tracing::warn!(error = %e, "unreadable sandbox report"),
                    }
                }
                out
            });
            let mut panicked = None;
            for (stream, line) in rx {
                tail.push(&line);
                if panicked.is_some() {
                    continue;
                }
                // A panicking sink must not leave the step running: the scope would wait for
                // the readers, which wait for the command. Kill the init process (its child
                // dies with it, and the namespace with that) and re-raise once all is joined.
                let call = std::panic::AssertUnwindSafe(|| sink(stream, &line));
                if let Err(p) = std::panic::catch_unwind(call) {
                    let _ = child.kill();
                    panicked = Some(p);
                }
            }
            (reports.join().unwrap_or_default(), panicked)
        });
        // Before reaping: until then the pid cannot be reused, so a cancel can only hit ours.
        let cancelled = registration.finish();
        let waited = child.wait();

        let mut created = Vec::new();
        let mut setup_failure = None;
        let mut status = None;
        let mut pid1 = None;
        for r in reports {
            match r {
                Report::Started { pid } => pid1 = Some(pid),
                Report::Created(c) => created.extend(c),
                Report::SetupFailed { stage, message } => {
                    setup_failure.get_or_insert((stage, message));
                }
                Report::Exit { code, signal } => {
                    status = match (code, signal) {
                        (Some(c), _) => Some(ExitStatus::Code(c)),
                        (None, Some(s)) => Some(ExitStatus::Signal(s)),
                        (None, None) => None,
                    }
                }
            }
        }
        if status.is_none() {
            if let Some(pid) = pid1 {
                wait_for_namespace(pid, &command);
            }
        }
        let mount_points = remove_created(&spec.root, &created);
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
        // Killed by the handle before it could report how the command ended. (A command that
        // ended on its own just as the handle fired still gets its outcome.)
        if cancelled && status.is_none() {
            tracing::debug!(command = %command, "sandbox cancelled");
            return Err(Error::Cancelled { command });
        }
        let waited = waited.map_err(io_err)?;
        if let Some((stage, message)) = setup_failure {
            return Err(Error::Setup { command, stage, message });
        }
        if let Err(source) = write_result {
            return Err(Error::Io { command, source });
        }
        let Some(status) = status else {
            return Err(Error::InitDied { binary: self.init_binary.clone(), command, status: waited.to_string() });
        };
        tracing::debug!(command = %command, %status, "sandbox finished");
        Ok(Outcome { status, tail: tail.into_vec(), mount_points, command })
    }
}

/// The outer init died without waiting for PID 1 (killed by a cancel, or after a panicking
/// sink): PID 1 gets its parent-death signal, and the kernel kills and reaps everything else in
/// the namespace before PID 1's own exit completes. Waiting for that exit means that nothing of
/// the step still runs, holds the root busy or writes into it once `run` returns, and that the
/// sandbox's mount namespace is gone, whatever the caller does next (remove the mount points,
/// unmount the root).
///
/// The pid came from the outer init, which was PID 1's parent: if PID 1 has been reaped since,
/// `pidfd_open` fails with ESRCH (gone, fine); a reuse of the number in between would need the
/// whole pid space to wrap within moments, and costs at most the bounded wait.
fn wait_for_namespace(pid: libc::pid_t, command: &str) {
    match sys::pidfd_open(pid) {
        Ok(fd) => {
            if !sys::wait_readable(fd.as_fd(), NAMESPACE_EXIT_WAIT) {
                tracing::warn!(command = %command, pid, "the sandbox's PID 1 was killed but has not exited yet");
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => {
            tracing::warn!(command = %command, pid, error = %e, "cannot wait for the sandbox's PID 1")
        }
    }
}

/// Checks what can be checked before starting anything, canonicalises the root, and creates
/// cache directories.
fn validate(spec: &mut Spec) -> Result<(), Error> {
    let uid = sys::geteuid();
    if uid != 0 {
        return Err(Error::NeedRoot { uid });
    }
    if spec.argv.is_empty() {
        return Err(Error::InvalidSpec("the command (argv) is empty".into()));
    }
    let root =
        std::fs::canonicalize(&spec.root).map_err(|e| Error::InvalidSpec(format!("root file system {}: {e}", spec.root.display())))?;
    if !root.is_dir() || root == Path::new("/") {
        return Err(Error::InvalidSpec(format!("root file system {} must be a directory other than /", root.display())));
    }
    spec.root = root;
    if spec.hostname.len() > 64 {
        return Err(Error::InvalidSpec(format!("host name {:?} is longer than 64 bytes", spec.hostname)));
    }
    if !spec.workdir.is_absolute() {
        return Err(Error::InvalidSpec(format!("working directory {} must be absolute", spec.workdir.display())));
    }
    // A name or address with a blank or a newline would write other lines into /etc/hosts.
    for h in &spec.extra_hosts {
        if h.name.is_empty() || h.name.contains(char::is_whitespace) || h.ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidSpec(format!("host entry {}:{} needs a name without blanks and an IP address", h.name, h.ip)));
        }
    }
    for s in &spec.secret_env {
        if s.name.is_empty() || s.name.contains(['=', '\0']) {
            return Err(Error::InvalidSpec(format!("secret environment variable name {:?} is empty or holds '=' or NUL", s.name)));
        }
    }
    for m in &spec.mounts {
        let target = m.target();
        if !target.is_absolute() {
            return Err(Error::InvalidSpec(format!("mount target {} must be an absolute path", target.display())));
        }
        match m {
            Mount::Bind { source, .. } | Mount::Secret { source: SecretSource::File(source), .. } => {
                std::fs::metadata(source)
                    .map_err(|e| Error::InvalidSpec(format!("mount source {} for {}: {e}", source.display(), target.display())))?;
            }
            Mount::Secret { source: SecretSource::Value(_), .. } => {}
            Mount::Cache { source, .. } => {
                std::fs::create_dir_all(source).map_err(|e| Error::InvalidSpec(format!("cache directory {}: {e}", source.display())))?
            }
            Mount::Tmpfs { .. } => {}
            Mount::Ssh { id, socket, .. } => {
                use std::os::unix::fs::FileTypeExt;
                let md = std::fs::metadata(socket)
                    .map_err(|e| Error::InvalidSpec(format!("ssh agent {id} socket {} for {}: {e}", socket.display(), target.display())))?;
                if !md.file_type().is_socket() {
                    return Err(Error::InvalidSpec(format!("ssh agent {id} source {} is not a socket", socket.display())));
                }
            }
        }
        if let Mount::Secret { source: SecretSource::File(source), .. } = m {
            if !source.is_file() {
                return Err(Error::InvalidSpec(format!("secret source {} is not a regular file", source.display())));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_run_after_cancel_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spawned = dir.path().join("spawned");
        // An "init" that only leaves a trace: if the run started anything, it would be this.
        let init = dir.path().join("init");
        std::fs::write(&init, format!("#!/bin/sh\ntouch '{}'\n", spawned.display())).unwrap();
        std::fs::set_permissions(&init, PermissionsExt::from_mode(0o755)).unwrap();
        let cancel = Cancel::new();
        cancel.cancel();
        let sandbox = Sandbox::with_init_binary(&init).with_cancel(cancel.clone());
        // Validation (which creates cache dirs) does not happen either.
        let cache = dir.path().join("cache");
        let mut spec = Spec::new(dir.path(), vec!["echo".into(), "a b".into()]);
        spec.mounts = vec![Mount::Cache { source: cache.clone(), target: "/cache".into() }];
        let err = sandbox.run(&spec, &mut |_, _| panic!("a cancelled run has no output")).unwrap_err();
        assert!(matches!(&err, Error::Cancelled { command } if command == "echo 'a b'"), "{err:?}");
        assert_eq!(err.to_string(), "echo 'a b': cancelled");
        assert!(!spawned.exists(), "the init binary was started");
        assert!(!cache.exists(), "the spec was acted upon");
        // A clone of the sandbox keeps the handle.
        let again = sandbox.clone().run(&spec, &mut |_, _| {});
        assert!(matches!(again, Err(Error::Cancelled { .. })), "{again:?}");
        assert!(!spawned.exists());
    }
}
