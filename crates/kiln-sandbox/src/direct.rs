//! `--isolation none`: running a step's command straight in the root kiln itself runs in.
//!
//! Inside an unprivileged container (a Kubernetes pod, a CI job's container) kiln can neither
//! unshare namespaces nor mount: Docker's default seccomp profile refuses both without
//! `CAP_SYS_ADMIN`. There, kiln *is* the container: the build's root file system is the
//! container's own `/`, and a [`Direct`] run is a plain fork and exec with the step's argv,
//! environment, working dir, rlimits and user. Nothing is mounted and no namespace is made, so a
//! [`Spec`] that asks for a mount, a private network, extra hosts or a `/dev/shm` size is refused
//! by name instead of being run without it.
//!
//! The user is resolved from the root's `/etc/passwd` and `/etc/group`, as in the sandbox, and
//! switched to (groups, gid, uid) only when it is not the identity kiln already has: a root
//! kiln switches freely (the container's default `CAP_SETUID`/`CAP_SETGID`); an unprivileged
//! kiln (`docker run --user 1000 --cap-drop=ALL`) stands for the image's root, so the image's
//! uid 0 runs as kiln's own ids and any other user is an error that says why.
//!
//! The command runs in a process group of its own: when it ends, or when the build is
//! cancelled, the whole group is SIGKILLed, which is the nearest thing to the sandbox's "the
//! namespace dies with PID 1" that needs no privilege. A daemon that calls `setsid` escapes it;
//! it would escape a Docker `RUN` only by outliving the container.
//!
//! Where the kernel has Landlock and the seccomp profile lets it through, each command is
//! confined by a ruleset from [`crate::landlock`] that keeps it from removing, renaming or
//! truncating kiln's own files (its binary, store and work dirs): see that module for what
//! Landlock can and cannot say.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::cancel::Cancel;
use crate::error::Error;
use crate::init::{find_executable, make_workdir, normalize, read_optional, Failure, DEFAULT_PATH};
use crate::output::{LineSplitter, Stream, Tail};
use crate::spec::{Mount, Network, Spec};
use crate::{ExitStatus, Outcome, TAIL_LINES};

/// Runs commands directly in `/` (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Direct {
    cancel: Cancel,
    /// Paths a command may not remove, rename or truncate (kiln's own files), when Landlock is
    /// there to say so.
    protect: Vec<PathBuf>,
}

/// What a [`Direct`] run could not do, for a caller that wants to say it once per build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confinement {
    /// A Landlock ruleset of this ABI version confines each command.
    Landlock { abi: u32 },
    /// No Landlock here (the kernel lacks it, or seccomp refuses its system calls): why.
    None { why: String },
}

impl Direct {
    pub fn new() -> Direct {
        Direct::default()
    }

    /// Runs stop when `cancel` fires.
    pub fn with_cancel(self, cancel: Cancel) -> Direct {
        Direct { cancel, ..self }
    }

    /// Paths (kiln's binary, its root, its work dirs) that commands may not damage.
    pub fn protecting(self, protect: Vec<PathBuf>) -> Direct {
        Direct { protect, ..self }
    }

    /// Whether commands will be confined by Landlock here.
    pub fn confinement(&self) -> Confinement {
        match crate::landlock::abi() {
            Ok(abi) => Confinement::Landlock { abi },
            Err(why) => Confinement::None { why },
        }
    }

    /// Runs `spec` (whose root must be `/`) to completion, streaming its output lines to `sink`;
    /// the outcome is returned whatever the exit status, as [`crate::Sandbox::run`] does.
    pub fn run(&self, spec: &Spec, sink: &mut dyn FnMut(Stream, &[u8])) -> Result<Outcome, Error> {
        let command = spec.command_line();
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled { command });
        }
        refuse_what_needs_isolation(spec)?;
        let setup = |f: Failure| Error::Setup { command: command.clone(), stage: f.stage.to_string(), message: f.message };
        let passwd = read_optional("/etc/passwd").map_err(setup)?;
        let group = read_optional("/etc/group").map_err(setup)?;
        let id = crate::user::resolve(&spec.user, passwd.as_deref(), group.as_deref()).map_err(|e| Error::Setup {
            command: command.clone(),
            stage: "resolve the user".into(),
            message: e.to_string(),
        })?;
        let me = (crate::sys::geteuid(), getegid());
        let switch = plan_switch(&spec.user, &id, me).map_err(|message| Error::Setup {
            command: command.clone(),
            stage: "switch to the user".into(),
            message,
        })?;
        let (owner_uid, owner_gid) = match &switch {
            Some(s) => (s.uid, s.gid),
            None => me,
        };
        let workdir = normalize(&spec.workdir);
        make_workdir(&workdir, owner_uid, owner_gid).map_err(setup)?;

        let mut env = spec.env.clone();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", id.home));
        }
        let path_var = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH).to_string();
        let program = spec.argv.first().map(String::as_str).unwrap_or_default();
        let exe = find_executable(program, &path_var).map_err(setup)?;
        let secret_names: Vec<String> = spec.secret_env.iter().map(|s| format!("{}=", s.name)).collect();

        let ruleset: Option<OwnedFd> = match crate::landlock::ruleset(&self.protect) {
            Ok(r) => r,
            Err(e) => {
                return Err(Error::Setup { command, stage: "make the Landlock ruleset".into(), message: e.to_string() });
            }
        };
        let rlimits = spec.rlimits.clone();
        let mut cmd = Command::new(std::ffi::OsStr::from_bytes(exe.as_bytes()));
        cmd.arg0(program)
            .args(spec.argv.iter().skip(1))
            .env_clear()
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for e in env.iter().filter(|e| !secret_names.iter().any(|n| e.starts_with(n.as_str()))) {
            match e.split_once('=') {
                Some((k, v)) => cmd.env(k, v),
                None => cmd.env(e, ""),
            };
        }
        for s in &spec.secret_env {
            cmd.env(&s.name, std::ffi::OsStr::from_bytes(s.value.as_bytes()));
        }
        let ruleset_fd = ruleset.as_ref().map(|f| f.as_raw_fd());
        let groups: Vec<libc::gid_t> = switch.as_ref().map(|s| s.groups.clone()).unwrap_or_default();
        let ids = switch.as_ref().map(|s| (s.uid, s.gid));
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // on data prepared above (no allocation, no lock).
        unsafe {
            cmd.pre_exec(move || {
                for r in &rlimits {
                    crate::sys::setrlimit(r.resource, r.soft, r.hard)?;
                }
                if let Some((uid, gid)) = ids {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setresgid(gid, gid, gid) != 0
                        || libc::setresuid(uid, uid, uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(fd) = ruleset_fd {
                    crate::landlock::restrict_self(fd)?;
                }
                crate::sys::reset_signals();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            let stage = if e.raw_os_error() == Some(libc::EPERM) && ids.is_some() { "switch to the user" } else { "start the command" };
            let mut message = format!("{}: {e}", exe.to_string_lossy());
            if stage == "switch to the user" {
                message = format!("{message}; kiln (uid {}, gid {}) lacks CAP_SETUID/CAP_SETGID here: run the container as root with Docker's default capabilities, or build without this USER", me.0, me.1);
            }
            Error::Setup { command: command.clone(), stage: stage.into(), message }
        })?;
        drop(ruleset);
        let pgid = child.id() as libc::pid_t;
        // A negative pid names the process group: a cancel kills everything the command started.
        let registration = self.cancel.register(-pgid);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut tail = Tail::new(TAIL_LINES);
        std::thread::scope(|s| {
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
            // The readers end when every holder of the pipes is gone: the command, and anything
            // it left running in the background. Once the command itself has exited, its group
            // is killed so that a leftover process cannot hold the step open.
            // It waits without reaping (WNOWAIT): until the cancel registration is finished the
            // pid, and so the group id, must stay ours.
            let waiter = s.spawn(move || {
                // SAFETY: a zeroed siginfo_t for the kernel to fill; integer arguments.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                while unsafe { libc::waitid(libc::P_PID, pgid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) } != 0 {
                    if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                        break;
                    }
                }
                let _ = crate::sys::kill(-pgid, libc::SIGKILL);
            });
            for (stream, line) in rx {
                tail.push(&line);
                sink(stream, &line);
            }
            let _ = waiter.join();
            let cancelled = registration.finish();
            let status = child.wait().map_err(|source| Error::Io { command: command.clone(), source })?;
            if cancelled && status.code().is_none() {
                return Err(Error::Cancelled { command: command.clone() });
            }
            use std::os::unix::process::ExitStatusExt;
            let status = match (status.code(), status.signal()) {
                (Some(c), _) => ExitStatus::Code(c),
                (None, Some(sig)) => ExitStatus::Signal(sig),
                (None, None) => ExitStatus::Code(-1),
            };
            Ok(Outcome {
                status,
                tail: std::mem::replace(&mut tail, Tail::new(0)).into_vec(),
                mount_points: Vec::new(),
                command: command.clone(),
            })
        })
    }
}

fn getegid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::getegid() }
}

/// The ids to switch to, or `None` to run as kiln is. See the module doc for the rules.
struct Switch {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

fn plan_switch(user: &str, id: &crate::user::Identity, me: (u32, u32)) -> Result<Option<Switch>, String> {
    if me.0 == 0 {
        // Root switches even to root: the supplementary groups come from the image's group file.
        return Ok(Some(Switch { uid: id.uid, gid: id.gid, groups: id.groups.clone() }));
    }
    if id.uid == 0 && id.gid == 0 {
        // Unprivileged kiln stands for the image's root.
        return Ok(None);
    }
    let who = if user.is_empty() { "root".to_string() } else { user.to_string() };
    Err(format!(
        "USER {who} is uid {} gid {}, but kiln runs as uid {} gid {} without the right to switch users, and in an unprivileged \
         --isolation none build kiln's own ids stand for the image's root: only root steps can run. Run the container as root \
         (its default capabilities are enough), or build without this USER",
        id.uid, id.gid, me.0, me.1
    ))
}

/// What a [`Spec`] may ask that needs a namespace or a mount, refused by name.
fn refuse_what_needs_isolation(spec: &Spec) -> Result<(), Error> {
    if spec.root != Path::new("/") {
        return Err(Error::InvalidSpec(format!("--isolation none runs in / only, not in {}", spec.root.display())));
    }
    let refuse = |what: String| Err(Error::InvalidSpec(format!("{what} needs a mount or a namespace, which --isolation none cannot make")));
    if let Some(m) = spec.mounts.first() {
        let kind = match m {
            Mount::Bind { .. } => "bind",
            Mount::Tmpfs { .. } => "tmpfs",
            Mount::Cache { .. } => "cache",
            Mount::Secret { .. } => "secret (as a file; `env=` alone works)",
            Mount::Ssh { .. } => "ssh",
        };
        return refuse(format!("RUN --mount=type={kind}"));
    }
    if spec.network == Network::None {
        return refuse("--network none".into());
    }
    if !spec.extra_hosts.is_empty() {
        return refuse("--add-host".into());
    }
    if spec.shm_size.is_some() {
        return refuse("--shm-size".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::Identity;

    fn ident(uid: u32, gid: u32) -> Identity {
        Identity { uid, gid, groups: vec![gid], home: "/".into() }
    }

    #[test]
    fn unprivileged_kiln_runs_root_steps_as_itself_and_refuses_other_users() {
        assert!(plan_switch("", &ident(0, 0), (1000, 1000)).unwrap().is_none());
        let e = plan_switch("app", &ident(1000, 1000), (1000, 1000)).err().unwrap();
        assert!(e.contains("USER app is uid 1000") && e.contains("without the right to switch users"), "{e}");
        let s = plan_switch("app", &ident(1000, 1001), (0, 0)).unwrap().unwrap();
        assert_eq!((s.uid, s.gid, s.groups), (1000, 1001, vec![1001]));
    }

    #[test]
    fn specs_that_need_isolation_are_refused_by_name() {
        let mut spec = Spec::new("/", vec!["true".into()]);
        spec.network = Network::None;
        let e = refuse_what_needs_isolation(&spec).unwrap_err().to_string();
        assert!(e.contains("--network none needs a mount or a namespace"), "{e}");
        let mut spec = Spec::new("/", vec!["true".into()]);
        spec.mounts.push(Mount::Tmpfs { target: "/t".into(), size_bytes: None });
        let e = refuse_what_needs_isolation(&spec).unwrap_err().to_string();
        assert!(e.contains("RUN --mount=type=tmpfs"), "{e}");
        let e = refuse_what_needs_isolation(&Spec::new("/tmp/x", vec!["true".into()])).unwrap_err().to_string();
        assert!(e.contains("runs in / only"), "{e}");
    }

    #[test]
    fn runs_a_command_in_slash_with_env_workdir_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::new("/", vec!["sh".into(), "-c".into(), "echo \"$GREETING $(pwd)\"; echo err >&2; exit 3".into()]);
        spec.env = vec!["GREETING=hi".into(), "PATH=/usr/bin:/bin".into()];
        spec.workdir = dir.path().join("made/here");
        let mut lines = Vec::new();
        let out = Direct::new().run(&spec, &mut |s, l| lines.push((s, String::from_utf8_lossy(l).into_owned()))).unwrap();
        assert_eq!(out.status, ExitStatus::Code(3));
        let wd = dir.path().join("made/here").canonicalize().unwrap();
        assert!(lines.contains(&(Stream::Stdout, format!("hi {}", wd.display()))), "{lines:?}");
        assert!(lines.contains(&(Stream::Stderr, "err".to_string())), "{lines:?}");
    }

    #[test]
    fn a_cancelled_direct_run_kills_the_process_group() {
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            c2.cancel();
        });
        let spec = Spec::new("/", vec!["sh".into(), "-c".into(), "sleep 30 & sleep 30".into()]);
        let r = Direct::new().with_cancel(cancel).run(&spec, &mut |_, _| {});
        t.join().unwrap();
        assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");
    }
}
