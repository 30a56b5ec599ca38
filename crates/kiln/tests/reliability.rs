//! What CI does to builds: cancels them (SIGINT, SIGTERM, a terminal's Ctrl-C, SIGKILL), runs them
//! on kernels whose overlayfs defaults differ, and fills their disks. Each test reproduces one
//! observed defect with the real binary, as root, and checks that kiln stops cleanly, keeps what
//! finished, leaves nothing behind, and never writes a wrong layer.

#[path = "support_build/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------------------------
// Overlayfs defaults
// ---------------------------------------------------------------------------------------------

const OVERLAY_PARAMS: &str = "/sys/module/overlay/parameters";

/// Sets overlay module parameters for the test and puts the old values back on drop, also when the
/// test fails. These are machine-wide defaults: nextest runs this test alone (.config/nextest.toml).
struct OverlayDefaults {
    saved: Vec<(PathBuf, String)>,
}

impl OverlayDefaults {
    fn set(values: &[(&str, &str)]) -> OverlayDefaults {
        let mut saved = Vec::new();
        for (name, value) in values {
            let p = Path::new(OVERLAY_PARAMS).join(name);
            let old = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e} (is the overlay module loaded?)", p.display()));
            saved.push((p.clone(), old.trim().to_string()));
            fs::write(&p, value).unwrap_or_else(|e| panic!("set {} to {value}: {e}", p.display()));
        }
        OverlayDefaults { saved }
    }
}

impl Drop for OverlayDefaults {
    fn drop(&mut self) {
        for (p, v) in self.saved.iter().rev() {
            if let Err(e) = fs::write(p, v) {
                eprintln!("could not restore {} to {v}: {e}", p.display());
            }
        }
    }
}

/// Every path of an unpacked root file system: type, mode, owner and content digest.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if md.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if md.is_file() {
                format!("file {}", kiln_oci::Digest::sha256_of(&fs::read(&p).unwrap()))
            } else {
                "other".to_string()
            };
            out.insert(rel, format!("{what} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid()));
        }
    }
    out
}

fn build_layout_and_unpack(k: &Kiln, ctx: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let layout = k.path(&format!("{name}.oci"));
    let out = format!("type=oci,dest={},tar=false", layout.display());
    let mut args = vec!["-t", "kiln.test/faithful:1", "--output", &out];
    args.extend_from_slice(extra);
    let o = k.build(ctx, &args);
    assert_ok(&o, &format!("kiln build ({name})"));
    let bundle = k.path(&format!("{name}.bundle"));
    let st =
        Command::new("umoci").args(["unpack", "--image", &format!("{}:1", layout.display())]).arg(&bundle).status().expect("run umoci");
    assert!(st.success(), "umoci unpack {name}");
    bundle.join("rootfs")
}

#[test]
fn overlay_layers_stay_faithful_with_redirect_dir_and_metacopy_on() {
    if !can_build() || !kiln_testkit::require_tool("umoci") {
        return;
    }
    let _defaults = OverlayDefaults::set(&[("redirect_dir", "Y"), ("metacopy", "Y")]);
    let k = Kiln::new();
    let ctx = k.path("ctx");
    let df = "ARG BASE\nFROM ${BASE}\n\
        RUN mkdir -p /data/sub && echo one > /data/sub/f && echo two > /data/g && echo three > /mod && echo four > /own\n\
        RUN mv /data /moved && chmod 600 /mod && chown 1:1 /own && echo five > /moved/sub/new\n";
    write_context(&ctx, &[("Dockerfile", df)]);
    let overlay = tree(&build_layout_and_unpack(&k, &ctx, "overlay", &["--snapshotter", "overlay"]));
    let native = tree(&build_layout_and_unpack(&k, &ctx, "native", &["--snapshotter", "native", "--no-cache"]));
    let content = |t: &BTreeMap<String, String>, p: &str| t.get(p).cloned().unwrap_or_else(|| format!("{p} missing"));
    let digest_of = |s: &str| format!("file {}", kiln_oci::Digest::sha256_of(s.as_bytes()));
    // What a faithful image holds, checked on its own (not only against the native build).
    assert!(
        content(&overlay, "moved/sub/f").starts_with(&digest_of("one\n")),
        "renamed dir lost its children: {}",
        content(&overlay, "moved/sub/f")
    );
    assert!(content(&overlay, "moved/g").starts_with(&digest_of("two\n")));
    assert_eq!(content(&overlay, "mod"), format!("{} 600 0:0", digest_of("three\n")));
    assert_eq!(content(&overlay, "own"), format!("{} 644 1:1", digest_of("four\n")));
    assert!(!overlay.contains_key("data"), "the renamed dir is still there");
    let diffs: Vec<String> = overlay
        .keys()
        .chain(native.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| overlay.get(*p) != native.get(*p))
        .map(|p| format!("{p}: overlay {:?} native {:?}", overlay.get(p), native.get(p)))
        .collect();
    assert!(diffs.is_empty(), "overlay and native images differ:\n{}", diffs.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// A `kiln build` running in the background, its stderr collected line by line.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(k: &Kiln, ctx: &Path, extra: &[&str], setup: impl FnOnce(&mut Command)) -> Running {
        let base_arg = format!("BASE={BASE}");
        let mut cmd = Command::new(KILN);
        cmd.arg("--root").arg(&k.root).args(["build", path_str(ctx), "--build-arg", &base_arg, "--progress", "plain"]);
        cmd.args(extra).env_remove("CI").env_remove("SOURCE_DATE_EPOCH").stdout(Stdio::null()).stderr(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("start kiln build");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Running { child, lines }
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until a process whose command line holds `marker` runs.
    fn wait_for_process(&mut self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while pids_with(marker).is_empty() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("kiln ended ({st}) before the step started:\n{}", self.stderr());
            }
            assert!(Instant::now() < deadline, "the step with {marker} never started:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for the exit; returns the exit code (None: killed by a signal).
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kiln did not exit within {limit:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of processes whose command line contains `marker` (not this test's own).
fn pids_with(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            out.push(pid);
        }
    }
    out
}

/// Waits (bounded) until no process holds `marker`; returns those still there.
fn processes_gone(marker: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = pids_with(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points under `dir` in this mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

fn send(pid: i32, sig: i32) {
    // SAFETY: kill(2) with integer arguments.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// A Dockerfile with two quick steps, then one that runs until it is stopped (a backgrounded child
/// and its parent, both carrying `marker` in their command lines).
fn long_dockerfile(marker: &str) -> String {
    format!(
        "ARG BASE\nFROM ${{BASE}}\nRUN echo one > /one\nRUN echo two > /two\n\
         RUN sh -c 'sleep 1000; : {marker}-child' & sh -c 'sleep 1000; : {marker}-main'\n"
    )
}

/// The cancel path users meet: a signal during a long RUN with a registry cache. kiln exits with the
/// signal's shell code and one line on what it kept, no process or mount of the build is left, and
/// a warm build on a wiped machine hits the two steps that finished before the signal.
fn cancel_keeps_finished_steps(sig: i32, code: i32, name: &str, setup: impl FnOnce(&mut Command), to_group: bool) {
    if !can_build() || !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = kiln_testkit::Registry::start_plain().expect("registry");
    let cache = format!("{}/cache/app:{}", reg.host(), name.to_lowercase());
    let k = Kiln::reproducible();
    let ctx = k.path("ctx");
    let marker = format!("kiln-cancel-{}", unique());
    write_context(&ctx, &[("Dockerfile", &long_dockerfile(&marker))]);
    let to = format!("type=registry,ref={cache},mode=max");
    let mut run = Running::start(&k, &ctx, &["--cache-to", &to, "--cache-policy", "read-write"], setup);
    run.wait_for_process(&marker);
    let pid = run.child.id() as i32;
    send(if to_group { -pid } else { pid }, sig);
    let exit = run.wait_exit(Duration::from_secs(30));
    let err = run.stderr();
    assert_eq!(exit, Some(code), "exit code after {name}:\n{err}");
    let last = err.lines().filter(|l| l.starts_with("kiln: cancelled by")).collect::<Vec<_>>();
    assert_eq!(last.len(), 1, "one line on what was kept:\n{err}");
    assert!(last[0].contains(name) && last[0].contains("2 finished layer steps kept") && last[0].contains("records exported to"), "{err}");
    assert_eq!(processes_gone(&marker), Vec::<u32>::new(), "processes of the cancelled RUN are left:\n{err}");
    assert_eq!(mounts_under(&k.root), Vec::<String>::new(), "mounts left under the root after {name}");

    // The next run of the job, on a fresh machine, starts from the finished steps.
    let warm = Kiln::reproducible();
    let wctx = warm.path("ctx");
    write_context(&wctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo one > /one\nRUN echo two > /two\nRUN cat /one /two\n")]);
    let from = format!("type=registry,ref={cache}");
    let md = warm.build_md(&wctx, &["--cache-from", &from]);
    let cached: Vec<String> = layer_steps(&md).into_iter().map(|s| format!("{} {}", s.cache, s.instruction)).collect();
    assert_eq!(
        cached,
        ["hit-registry RUN echo one > /one", "hit-registry RUN echo two > /two", "miss RUN cat /one /two"],
        "cancelled build:\n{err}\nwarm build: {md:#}"
    );
}

#[test]
fn sigterm_during_a_run_stops_it_and_exports_the_finished_steps() {
    cancel_keeps_finished_steps(libc::SIGTERM, 143, "SIGTERM", |_| {}, false);
}

#[test]
fn sigint_to_kiln_alone_cancels_even_when_inherited_as_ignored() {
    // A background job of a non-interactive shell starts with SIGINT ignored; kiln must still act on it.
    cancel_keeps_finished_steps(
        libc::SIGINT,
        130,
        "SIGINT",
        |c| {
            // SAFETY: signal(2) between fork and exec, async-signal-safe.
            unsafe {
                c.pre_exec(|| {
                    libc::signal(libc::SIGINT, libc::SIG_IGN);
                    Ok(())
                });
            }
        },
        false,
    );
}

#[test]
fn ctrl_c_to_the_process_group_cancels_cleanly() {
    // A terminal's Ctrl-C: SIGINT to every process of the foreground process group.
    cancel_keeps_finished_steps(
        libc::SIGINT,
        130,
        "SIGINT",
        |c| {
            c.process_group(0);
        },
        true,
    );
}

#[test]
fn sigkill_leaves_no_process_and_the_next_build_reclaims_the_mounts() {
    if !can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    let marker = format!("kiln-kill-{}", unique());
    write_context(&ctx, &[("Dockerfile", &long_dockerfile(&marker))]);
    let mut run = Running::start(&k, &ctx, &[], |_| {});
    run.wait_for_process(&marker);
    let dead_pid = run.child.id();
    send(dead_pid as i32, libc::SIGKILL);
    assert_eq!(run.wait_exit(Duration::from_secs(10)), None);
    assert_eq!(processes_gone(&marker), Vec::<u32>::new(), "a RUN outlived kiln's SIGKILL");
    // SIGKILL cannot be cleaned up after by kiln itself: its step's overlay is still mounted.
    let tmp = k.root.join("snapshots/tmp");
    assert!(!mounts_under(&tmp).is_empty(), "expected the killed build's overlay to be left mounted");

    let next = k.path("next");
    write_context(&next, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo next > /next\n")]);
    k.build_md(&next, &[]);
    assert_eq!(mounts_under(&k.root), Vec::<String>::new(), "the next build left the dead one's mounts");
    let left: Vec<String> =
        fs::read_dir(&tmp).map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    assert!(!left.iter().any(|n| n.contains(&format!("-{dead_pid}-"))), "temp dirs of the dead kiln are left: {left:?}");
    // What the killed build finished is still in the local cache.
    let md = k.build_md(&ctx_with(&k, "again", "ARG BASE\nFROM ${BASE}\nRUN echo one > /one\nRUN echo two > /two\n"), &[]);
    assert!(layer_steps(&md).iter().all(|s| s.cache == "hit-local"), "{md:#}");
}

fn ctx_with(k: &Kiln, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = k.path(name);
    write_context(&ctx, &[("Dockerfile", dockerfile)]);
    ctx
}

/// A registry that accepts connections and never answers: an export to it hangs.
fn stalled_registry() -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(90);
        while Instant::now() < end {
            match l.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, h)
}

/// The grace bounds a cancel whose export hangs, and a second signal cuts it short; both still
/// unmount and kill the step's processes.
#[test]
fn a_hanging_export_is_cut_short_by_the_grace_or_a_second_signal() {
    if !can_build() {
        return;
    }
    let (addr, _server) = stalled_registry();
    for (grace, second) in [("1", false), ("60", true)] {
        let k = Kiln::new();
        let ctx = k.path("ctx");
        let marker = format!("kiln-grace-{}", unique());
        write_context(&ctx, &[("Dockerfile", &long_dockerfile(&marker))]);
        let to = format!("type=registry,ref={addr}/cache:x,mode=max");
        let mut run = Running::start(&k, &ctx, &["--cache-to", &to, "--cache-policy", "read-write"], |c| {
            c.env("KILN_CANCEL_GRACE", grace);
        });
        run.wait_for_process(&marker);
        let pid = run.child.id() as i32;
        let sent = Instant::now();
        send(pid, libc::SIGINT);
        if second {
            std::thread::sleep(Duration::from_millis(500));
            send(pid, libc::SIGINT);
        }
        assert_eq!(run.wait_exit(Duration::from_secs(20)), Some(130), "{}", run.stderr());
        let took = sent.elapsed();
        let err = run.stderr();
        if second {
            assert!(err.contains("received again"), "{err}");
            assert!(took < Duration::from_secs(30), "a second signal must not wait for the grace: {took:?}");
        } else {
            assert!(err.contains("took longer than 1.0 s"), "{err}");
        }
        assert_eq!(processes_gone(&marker), Vec::<u32>::new(), "{err}");
        assert_eq!(mounts_under(&k.root), Vec::<String>::new(), "mounts left after the forced exit:\n{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------------

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status().unwrap();
        assert!(st.success(), "mount a tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_names_the_step_the_operation_and_the_path_once() {
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(&tmp.path().join("small"), "48m");
    let k = Kiln::with_root(tmp.path().join("small/root"));
    let ctx = k.path("ctx");
    // 30 MB fit in the step's upper dir; writing them again as the layer does not.
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo small > /s\nRUN head -c 31457280 /dev/zero > /big\n")]);
    let before = k.store_snapshot();
    let o = k.build(&ctx, &["-t", "kiln.test/full:1"]);
    assert_exit_1(&o, "a build on a full disk");
    let err = stderr(&o);
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line:\n{err}"));
    assert_eq!(line.matches("No space left on device").count(), 1, "the cause once: {line}");
    assert!(line.contains("Dockerfile:4"), "the step's file:line: {line}");
    assert!(line.contains("RUN head -c 31457280"), "the step: {line}");
    assert!(line.contains(&k.root.join("store").display().to_string()), "the path that is full: {line}");
    // Nothing half-written: the store holds what it held (the first RUN's layer may be new).
    let after = k.store_snapshot();
    assert_eq!(after.1, before.1, "the store's index changed");
    assert!(list_files(&k.root.join("store/ingest")).is_empty(), "temp files left in the store");
}

/// `kiln run` is cancelled the same way: the command's processes and the run's overlay go.
#[test]
fn sigterm_stops_kiln_run_and_its_command() {
    if !can_build() {
        return;
    }
    let k = Kiln::new();
    let marker = format!("kiln-run-{}", unique());
    let script = format!("sleep 1000 & sleep 1000; : {marker}");
    let mut child = Command::new(KILN)
        .arg("--root")
        .arg(&k.root)
        .args(["run", BASE, "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln run");
    let deadline = Instant::now() + Duration::from_secs(30);
    // kiln's own command line holds the marker too: wait for a process kiln started, or the signal
    // can arrive before kiln has its handlers and the default action kills it.
    while !pids_with(&marker).iter().any(|&p| p != child.id()) {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    send(child.id() as i32, libc::SIGTERM);
    let st = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(st.code(), Some(143), "{err}");
    assert!(err.contains("kiln: cancelled by SIGTERM"), "{err}");
    assert_eq!(processes_gone(&marker), Vec::<u32>::new(), "{err}");
    assert_eq!(mounts_under(&k.root), Vec::<String>::new(), "{err}");
}
