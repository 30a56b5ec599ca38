//! The sandbox, end to end: the real `kiln` binary re-executed as init, real namespaces and
//! mounts, over a busybox root file system built from Debian's busybox-static.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_sandbox::{Cancel, Error, ExitStatus, Mount, Network, Outcome, Sandbox, Spec, Stream};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0")))
        .unwrap_or(false)
}

/// Root and busybox are required in CI; elsewhere the test is skipped with the reason.
fn can_run() -> bool {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let busybox = Path::new("/bin/busybox").exists();
    if is_root() && busybox {
        return true;
    }
    let why = if busybox { "the sandbox needs root" } else { "/bin/busybox is missing (apt-get install busybox-static)" };
    assert!(!ci, "{why}, and CI=true requires this test to run");
    eprintln!("skipping: {why}");
    false
}

/// A busybox root: /bin with every applet, and a user database with `app` (uid 1000) in its
/// own group 1000 and in the supplementary group `extra` (2000). No /proc, /dev, /sys or
/// /etc/hosts: the sandbox has to create and then remove them.
fn busybox_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::set_permissions(root.join("bin/busybox"), PermissionsExt::from_mode(0o755)).unwrap();
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\nextra:x:2000:app\n").unwrap();
    dir
}

fn sandbox() -> Sandbox {
    Sandbox::with_init_binary(env!("CARGO_BIN_EXE_kiln"))
}

fn sh(root: &Path, script: &str) -> Spec {
    let mut spec = Spec::new(root, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    spec.env = vec!["PATH=/bin".into()];
    spec
}

struct Ran {
    outcome: Outcome,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

fn run(spec: &Spec) -> Result<Ran, Error> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let outcome = sandbox().run(spec, &mut |stream, line| {
        let line = String::from_utf8_lossy(line).into_owned();
        match stream {
            Stream::Stdout => stdout.push(line),
            Stream::Stderr => stderr.push(line),
        }
    })?;
    Ok(Ran { outcome, stdout, stderr })
}

fn run_ok(spec: &Spec) -> Ran {
    let ran = run(spec).unwrap();
    assert!(ran.outcome.success(), "{:?} failed: {}\nstdout: {:?}\nstderr: {:?}", spec.argv, ran.outcome.status, ran.stdout, ran.stderr);
    ran
}

/// Every path under `root`, for before/after comparisons.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Host processes whose command line contains `needle`.
fn host_processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// A host process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    pid: u32,
    state: char,
    ppid: u32,
    pgrp: u32,
    /// Clock ticks after boot: with the pid, names one process even if the pid is reused.
    start: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything; fields after it
    // are plain, starting with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Live (not zombie) children of `ppid` whose command line contains `needle`.
fn children_with(ppid: u32, needle: &str) -> Vec<ProcStat> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(st) = proc_stat(pid) else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if st.ppid == ppid && st.state != 'Z' && String::from_utf8_lossy(&cmd).contains(needle) {
            found.push(st);
        }
    }
    found
}

/// Whether the very process `p` names still runs (a zombie has finished running).
fn still_running(p: &ProcStat) -> bool {
    proc_stat(p.pid).is_some_and(|now| now.start == p.start && now.state != 'Z')
}

/// Polls `check` every 20 ms until it gives a value, for at most `limit`.
fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Host processes in the PID namespace `ns` (a `/proc/PID/ns/pid` link target) that still run.
/// A zombie does not: the sandbox's PID 1, re-parented to the host's reaper once the outer init
/// is killed, lingers as one until that reaper gets to it.
fn in_namespace(ns: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !matches!(proc_stat(pid), Some(st) if st.state != 'Z') {
            continue;
        }
        if std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|l| l == ns) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// SIGKILLs pids, for cleaning up after a failed test.
fn kill_all(pids: impl IntoIterator<Item = u32>) {
    let pids: Vec<String> = pids.into_iter().map(|p| p.to_string()).collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-9").args(&pids).status();
    }
}

fn pids_of(lines: &[String]) -> Vec<u32> {
    lines.iter().filter_map(|l| l.split(':').next()?.parse().ok()).collect()
}

#[test]
fn sandbox_streams_stdout_and_stderr() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let ran = run_ok(&sh(root.path(), "echo hello; echo oops >&2; printf 'no newline'"));
    assert_eq!(ran.stdout, vec!["hello", "no newline"]);
    assert_eq!(ran.stderr, vec!["oops"]);
    assert_eq!(ran.outcome.status, ExitStatus::Code(0));
}

#[test]
fn sandbox_exit_code_and_failure_message() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let ran = run(&sh(root.path(), "for i in $(seq 1 30); do echo line $i; done; exit 7")).unwrap();
    assert_eq!(ran.outcome.status, ExitStatus::Code(7));
    let msg = ran.outcome.check().unwrap_err().to_string();
    assert!(msg.contains("exit code 7"), "{msg}");
    assert!(msg.contains("/bin/sh -c 'for i in"), "{msg}");
    assert!(msg.contains("line 30") && msg.contains("line 11"), "{msg}");
    assert!(!msg.contains("line 10\n"), "more than 20 lines: {msg}");
}

#[test]
fn sandbox_command_is_pid_1_in_its_own_namespace() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let mut spec = sh(root.path(), "echo $$; ls /proc | grep -c '^[0-9]'; hostname");
    spec.hostname = "kiln-test-host".into();
    let ran = run_ok(&spec);
    assert_eq!(ran.stdout[0], "1");
    let visible: u32 = ran.stdout[1].parse().unwrap();
    assert!(visible <= 3, "sees {visible} processes");
    assert_eq!(ran.stdout[2], "kiln-test-host");
}

#[test]
fn sandbox_kills_what_the_command_leaves_running() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    // One background process keeps the output pipe open, the other detaches from it entirely:
    // both must die with the command.
    let ran = run_ok(&sh(root.path(), "sleep 987651 & (sleep 987652 >/dev/null 2>&1 </dev/null &); echo started"));
    assert_eq!(ran.stdout, vec!["started"]);
    for needle in ["sleep 987651", "sleep 987652"] {
        assert_eq!(host_processes_with(needle), Vec::<String>::new());
    }
}

#[test]
fn sandbox_env_workdir_and_home() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let mut spec = sh(root.path(), "echo $FOO; pwd; echo $HOME; touch made-here");
    spec.env.push("FOO=bar baz".into());
    spec.workdir = "/work/deep".into();
    spec.user = "app".into();
    let ran = run_ok(&spec);
    assert_eq!(ran.stdout, vec!["bar baz", "/work/deep", "/home/app"]);
    for d in ["work", "work/deep"] {
        let md = std::fs::metadata(root.path().join(d)).unwrap();
        assert!(md.is_dir());
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{d}");
    }
    assert!(root.path().join("work/deep/made-here").exists());
}

#[test]
fn sandbox_user_by_name_gets_groups() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let mut spec = sh(root.path(), "id -u; id -g; id -G");
    spec.user = "app".into();
    let ran = run_ok(&spec);
    assert_eq!(ran.stdout[0], "1000");
    assert_eq!(ran.stdout[1], "1000");
    let groups: Vec<&str> = ran.stdout[2].split_whitespace().collect();
    assert!(groups.contains(&"1000") && groups.contains(&"2000"), "{groups:?}");

    spec.user = "1000".into();
    let ran = run_ok(&spec);
    assert!(ran.stdout[2].split_whitespace().any(|g| g == "2000"), "{:?}", ran.stdout);
}

#[test]
fn sandbox_numeric_user_and_unknown_user() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let mut spec = sh(root.path(), "id -u; id -g; id -G");
    spec.user = "1234:5678".into();
    let ran = run_ok(&spec);
    assert_eq!(ran.stdout[..2], ["1234", "5678"]);
    assert!(!ran.stdout[2].contains("2000"), "{:?}", ran.stdout);

    spec.user = "nobody".into();
    let err = run(&spec).err().expect("unknown user must fail").to_string();
    assert!(err.contains("unknown user 'nobody'"), "{err}");
    assert!(err.contains("/etc/passwd"), "{err}");

    spec.user = "app:nogroup".into();
    let err = run(&spec).err().expect("unknown group must fail").to_string();
    assert!(err.contains("unknown group 'nogroup'"), "{err}");
}

#[test]
fn sandbox_missing_command_is_a_clear_error() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let mut spec = Spec::new(root.path(), vec!["no-such-tool".into(), "x".into()]);
    spec.env = vec!["PATH=/bin".into()];
    let err = run(&spec).err().expect("must fail").to_string();
    assert!(err.contains("no-such-tool") && err.contains("not found in $PATH"), "{err}");
}

#[test]
fn sandbox_network_none_has_only_loopback() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let mut spec = sh(root.path(), "ls /sys/class/net; ip -o link");
    spec.network = Network::None;
    let ran = run_ok(&spec);
    assert_eq!(ran.stdout[0], "lo", "{:?}", ran.stdout);
    assert_eq!(ran.stdout.len(), 2, "{:?}", ran.stdout);
    assert!(ran.stdout[1].contains("lo:") && ran.stdout[1].contains(",UP"), "{:?}", ran.stdout);
}

#[test]
fn sandbox_proc_dev_and_etc_hosts() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let before = tree(root.path());
    let mtime = |p: &str| {
        let md = std::fs::metadata(root.path().join(p)).unwrap();
        (md.mtime(), md.mtime_nsec())
    };
    let (etc_mtime, root_mtime) = (mtime("etc"), mtime("."));
    let ran = run_ok(&sh(
        root.path(),
        "echo x > /dev/null && head -c 5 /dev/zero | wc -c && test -c /dev/urandom && \
         test -e /dev/pts/ptmx && test -L /dev/stdout && test -d /dev/shm && echo ok; \
         cat /etc/hosts | wc -l; cat /etc/resolv.conf >/dev/null && echo resolv; \
         (echo hacked >> /etc/hosts) 2>/dev/null || echo hosts-ro; \
         (touch /sys/x) 2>/dev/null || echo sys-ro",
    ));
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert_eq!(ran.stdout[0], "5");
    assert_eq!(ran.stdout[1], "ok");
    assert_eq!(ran.stdout[2], host_hosts.lines().count().to_string());
    if Path::new("/etc/resolv.conf").exists() {
        assert!(ran.stdout.contains(&"resolv".to_string()), "{:?}", ran.stdout);
    }
    assert!(ran.stdout.contains(&"hosts-ro".to_string()), "{:?}", ran.stdout);
    assert!(ran.stdout.contains(&"sys-ro".to_string()), "{:?}", ran.stdout);
    // /proc, /dev, /sys, /etc/hosts and /etc/resolv.conf were made for the run and are gone.
    assert_eq!(tree(root.path()), before);
    let removed: Vec<_> = ran.outcome.mount_points.iter().map(|m| m.path.clone()).collect();
    for p in ["/proc", "/dev", "/sys", "/etc/hosts"] {
        assert!(removed.contains(&PathBuf::from(p)), "{p} not reported: {removed:?}");
    }
    assert!(ran.outcome.mount_points.iter().all(|m| m.removed));
    assert_eq!(mtime("etc"), etc_mtime, "/etc's mtime was not restored");
    assert_eq!(mtime("."), root_mtime, "/'s mtime was not restored");
    assert_eq!(std::fs::read_to_string("/etc/hosts").unwrap(), host_hosts);
}

#[test]
fn sandbox_bind_mounts_read_only_and_read_write() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from host\n").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let mut spec = sh(
        root.path(),
        "cat /data/f; (touch /data/new) 2>/dev/null && echo wrote-ro || echo ro-refused; \
         echo out > /out/result",
    );
    spec.mounts = vec![
        Mount::Bind { source: host.path().into(), target: "/data".into(), readonly: true },
        Mount::Bind { source: rw.path().into(), target: "/out".into(), readonly: false },
    ];
    let before = tree(root.path());
    let ran = run_ok(&spec);
    assert_eq!(ran.stdout, vec!["from host", "ro-refused"]);
    assert!(!host.path().join("new").exists());
    assert_eq!(std::fs::read_to_string(rw.path().join("result")).unwrap(), "out\n");
    assert_eq!(tree(root.path()), before);
}

#[test]
fn sandbox_tmpfs_mount() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let mut spec = sh(root.path(), "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; echo data > /scratch/file; cat /scratch/file");
    spec.mounts = vec![Mount::Tmpfs { target: "/scratch".into(), size_bytes: Some(1 << 20) }];
    let before = tree(root.path());
    let ran = run_ok(&spec);
    assert_eq!(ran.stdout, vec!["tmpfs", "data"]);
    assert_eq!(tree(root.path()), before);
}

#[test]
fn sandbox_cache_persists_across_runs() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache-id");
    let mut spec = sh(root.path(), "n=$(cat /var/cache/app/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /var/cache/app/n; echo $n");
    spec.mounts = vec![Mount::Cache { source: cache_dir.clone(), target: "/var/cache/app".into() }];
    let before = tree(root.path());
    assert_eq!(run_ok(&spec).stdout, vec!["1"]);
    assert_eq!(run_ok(&spec).stdout, vec!["2"]);
    assert_eq!(std::fs::read_to_string(cache_dir.join("n")).unwrap(), "2\n");
    assert_eq!(tree(root.path()), before, "the cache leaked into the root");
}

#[test]
fn sandbox_secret_is_readable_and_leaves_no_trace() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let secrets = tempfile::tempdir().unwrap();
    let src = secrets.path().join("token");
    std::fs::write(&src, "s3cr3t-value\n").unwrap();
    std::fs::set_permissions(&src, PermissionsExt::from_mode(0o644)).unwrap();
    let mut spec = sh(
        root.path(),
        "cat /run/secrets/tok; stat -c '%a %u' /run/secrets/tok; cat /home/app/.tok; \
         (echo x > /run/secrets/tok) 2>/dev/null || echo secret-ro; ls -a /dev | grep -c kiln-secret",
    );
    spec.mounts = vec![
        Mount::Secret { id: "tok".into(), source: src.clone().into(), target: None, mode: None, uid: 0, gid: 0 },
        Mount::Secret {
            id: "tok2".into(),
            source: src.clone().into(),
            target: Some("/home/app/.tok".into()),
            mode: Some(0o440),
            uid: 1000,
            gid: 1000,
        },
    ];
    let before = tree(root.path());
    // grep -c prints 0 and exits 1 when nothing matches.
    let ran = run(&spec).unwrap();
    assert_eq!(ran.stdout, vec!["s3cr3t-value", "400 0", "s3cr3t-value", "secret-ro", "0"], "{:?}", ran.stderr);
    assert_eq!(tree(root.path()), before);
    // The host file is untouched.
    assert_eq!(std::fs::metadata(&src).unwrap().mode() & 0o777, 0o644);
    let leaked = std::process::Command::new("grep").args(["-r", "-l", "s3cr3t-value"]).arg(root.path()).output().unwrap();
    assert!(leaked.stdout.is_empty(), "{}", String::from_utf8_lossy(&leaked.stdout));
}

#[test]
fn sandbox_existing_mount_targets_are_kept() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    // An image that already has these: they must survive the run, untouched.
    for d in ["proc", "dev", "tmp/cache"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    std::fs::write(root.path().join("etc/hosts"), "127.0.0.1 image\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut spec = sh(root.path(), "grep -c . /etc/hosts >/dev/null; ls /tmp/cache");
    spec.mounts = vec![Mount::Cache { source: cache.path().into(), target: "/tmp/cache".into() }];
    let before = tree(root.path());
    let ran = run_ok(&spec);
    assert_eq!(tree(root.path()), before);
    assert_eq!(std::fs::read_to_string(root.path().join("etc/hosts")).unwrap(), "127.0.0.1 image\n");
    let created: Vec<_> = ran.outcome.mount_points.iter().map(|m| m.path.clone()).collect();
    assert!(!created.contains(&PathBuf::from("/proc")), "{created:?}");
    assert!(!created.contains(&PathBuf::from("/etc/hosts")), "{created:?}");
}

#[test]
fn sandbox_symlinked_mount_target_stays_inside_the_root() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let outside = tempfile::tempdir().unwrap();
    // A hostile image: /mnt points at a host directory by absolute path.
    std::os::unix::fs::symlink(outside.path(), root.path().join("mnt")).unwrap();
    let mut spec = sh(root.path(), "echo inside > /mnt/x/file; cat /mnt/x/file");
    spec.mounts = vec![Mount::Tmpfs { target: "/mnt/x".into(), size_bytes: None }];
    let ran = run(&spec).unwrap();
    // Whatever happened inside, nothing may appear in the host directory.
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "{:?} {:?}", ran.stdout, ran.stderr);
}

/// Unmounts an overlay when the test ends, whatever happens.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn sandbox_over_overlay_leaves_only_the_step_changes_in_upper() {
    if !can_run() {
        return;
    }
    // The build engine's setup: the image as the lower dir, a fresh upper dir per step.
    let lower = busybox_root();
    let work = tempfile::tempdir().unwrap();
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir(work.path().join(d)).unwrap();
    }
    let (upper, merged) = (work.path().join("upper"), work.path().join("merged"));
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.path().display(), upper.display(), work.path().join("work").display());
    let status = std::process::Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&merged).status().unwrap();
    assert!(status.success(), "mount overlay failed");
    let _guard = Unmount(merged.clone());

    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "overlay-secret").unwrap();
    let mut spec = sh(&merged, "cat /run/secrets/s >/dev/null && echo done > /out.txt");
    spec.mounts = vec![
        Mount::Secret { id: "s".into(), source: secret.path().to_path_buf().into(), target: None, mode: None, uid: 0, gid: 0 },
        Mount::Tmpfs { target: "/var/tmp/scratch".into(), size_bytes: None },
    ];
    run_ok(&spec);
    // Creating /etc/hosts copied /etc up; it must be back to the lower dir's times, so that a
    // differ sees it unchanged. Everything else in upper is the step's own change.
    let got = tree(&upper);
    let want: BTreeSet<PathBuf> = ["etc", "out.txt"].iter().map(PathBuf::from).collect();
    assert_eq!(got, want);
    let (a, b) = (std::fs::metadata(upper.join("etc")).unwrap(), std::fs::metadata(lower.path().join("etc")).unwrap());
    assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
    assert_eq!((a.mode(), a.uid(), a.gid()), (b.mode(), b.uid(), b.gid()));
}

#[test]
fn sandbox_panicking_sink_stops_the_step() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let before = tree(root.path());
    let spec = sh(root.path(), "echo first; exec sleep 987653");
    let result = std::panic::catch_unwind(|| sandbox().run(&spec, &mut |_, _| panic!("sink gave up")));
    assert!(result.is_err(), "the sink's panic must reach the caller");
    assert_eq!(host_processes_with("sleep 987653"), Vec::<String>::new());
    assert_eq!(tree(root.path()), before);
}

#[test]
fn sandbox_supplementary_groups_include_the_primary_gid() {
    if !can_run() {
        return;
    }
    // busybox_root: app (1000) is named in no group but `extra` (2000); root in none.
    let root = busybox_root();
    let groups_of = |user: &str| -> String {
        let mut spec = sh(root.path(), "grep '^Groups:' /proc/self/status");
        spec.user = user.into();
        let ran = run_ok(&spec);
        let line = ran.stdout.first().cloned().unwrap_or_default();
        let groups: Vec<&str> = line.trim_start_matches("Groups:").split_whitespace().collect();
        groups.join(" ")
    };
    // What runc is given by Docker and BuildKit (and what buildah sets): the primary gid always,
    // the member groups only when the group was not given explicitly.
    for (user, want) in [
        ("app", "1000 2000"),
        ("1000", "1000 2000"),
        ("app:extra", "2000"),
        ("app:1000", "1000"),
        ("1234:5678", "5678"),
        ("4242", "0"),
        ("", "0"),
        ("root", "0"),
    ] {
        assert_eq!(groups_of(user), want, "USER {user:?}");
    }
}

/// Set for the copy of this test binary that `sandbox_dies_with_its_sigkilled_parent` starts as
/// the sandbox's parent process; names the root file system.
const PARENT_ROOT_ENV: &str = "KILN_TEST_SANDBOX_PARENT_ROOT";

/// The step under a parent that gets SIGKILLed: PID 1 (`sh`) waits for a long sleep, next to a
/// grandchild that left the session and every inherited fd. Each has the marker in its argv.
const ORPHAN_MARKER: &str = "98766";
const ORPHAN_SCRIPT: &str = "setsid sleep 987661 </dev/null >/dev/null 2>&1 & sleep 987662 & echo started; wait";

/// Not a test of its own: the parent process for `sandbox_dies_with_its_sigkilled_parent`, which
/// runs this test binary again, filtered to this function, with [`PARENT_ROOT_ENV`] set.
/// Everywhere else it returns at once.
#[test]
fn sandbox_sigkilled_parent_helper() {
    let Some(root) = std::env::var_os(PARENT_ROOT_ENV) else {
        return;
    };
    let result = sandbox().run(&sh(Path::new(&root), ORPHAN_SCRIPT), &mut |_, _| {});
    // Only reached if something went wrong: the test kills this process while the step runs.
    eprintln!("sandbox_sigkilled_parent_helper: the step ended: {result:?}");
}

#[test]
fn sandbox_dies_with_its_sigkilled_parent() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sandbox_sigkilled_parent_helper", "--nocapture", "--test-threads=1"])
        .env(PARENT_ROOT_ENV, root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let parent_pid = parent.id();
    // Running: sh and both sleeps, and the outer init as the parent's child.
    let started = poll(Duration::from_secs(30), || {
        let step = host_processes_with(ORPHAN_MARKER);
        let inits = children_with(parent_pid, "__kiln-sandbox-init");
        (step.len() == 3 && !inits.is_empty()).then_some(inits)
    });
    let Some(inits) = started else {
        let step = host_processes_with(ORPHAN_MARKER);
        let _ = parent.kill();
        let _ = parent.wait();
        kill_all(pids_of(&step));
        panic!("the step did not start under the helper process: {step:?}");
    };
    // Its own process group: a terminal's Ctrl-C to the caller's group does not reach it.
    let shared: Vec<&ProcStat> = inits.iter().filter(|p| p.pgrp != p.pid).collect();
    if !shared.is_empty() {
        let _ = parent.kill();
        let _ = parent.wait();
        kill_all(inits.iter().map(|p| p.pid));
        panic!("the outer init is not in a process group of its own: {shared:?}");
    }

    parent.kill().unwrap();
    parent.wait().unwrap();
    // SIGKILL leaves no chance to clean up: only the parent-death signals can do it.
    let left = || {
        let mut left = host_processes_with(ORPHAN_MARKER);
        for init in inits.iter().filter(|p| still_running(p)) {
            left.push(format!("{}: the outer init", init.pid));
        }
        left
    };
    if poll(Duration::from_secs(10), || left().is_empty().then_some(())).is_none() {
        let left = left();
        // Killing the outer init takes PID 1, and so the namespace, with it.
        kill_all(inits.iter().map(|p| p.pid).chain(pids_of(&left)));
        panic!("processes of the sandbox outlived their SIGKILLed parent: {left:?}");
    }
}

#[test]
fn sandbox_init_whose_parent_already_died_does_nothing() {
    if !can_run() {
        return;
    }
    // The init exactly as `Sandbox::run` starts it (markers from kiln-sandbox's protocol.rs),
    // but told that its parent is pid 1: what it sees when the caller died before the init armed
    // its parent-death signal, and it was re-parented. It must stop before doing anything.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("__kiln-sandbox-init")
        .env_clear()
        .env("_KILN_SANDBOX_INIT", "3")
        .env("_KILN_SANDBOX_PARENT", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(137),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn sandbox_cancel_stops_the_step_and_every_later_run() {
    if !can_run() {
        return;
    }
    let root = busybox_root();
    let before = tree(root.path());
    let marker = "98767";
    // The trailing `:` keeps sh (and the marker in its argv) from exec'ing into `sleep 1000`.
    let mut spec = sh(
        root.path(),
        "setsid sleep 987671 </dev/null >/dev/null 2>&1 & sleep 987672 & echo started; \
         sleep 1000; : 987670",
    );
    // A mount point that does not exist in the image: created for the run, removed after it.
    spec.mounts = vec![Mount::Tmpfs { target: "/scratch/deep".into(), size_bytes: None }];
    let cancel = Cancel::new();
    let sandbox = sandbox().with_cancel(cancel.clone());
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let (sb, sp) = (sandbox.clone(), spec.clone());
    std::thread::spawn(move || {
        let result = sb.run(&sp, &mut |_, line| {
            if line == b"started" {
                let _ = started_tx.send(());
            }
        });
        let _ = done_tx.send(result);
    });
    started_rx.recv_timeout(Duration::from_secs(30)).expect("the step did not start");
    let all_up = poll(Duration::from_secs(10), || {
        let step = host_processes_with(marker);
        (step.len() == 3).then_some(step)
    });
    let step = all_up.unwrap_or_else(|| panic!("{:?}", host_processes_with(marker)));
    // `sleep 1000` has no marker: it is found by its PID namespace, the sandbox's.
    let ns =
        pids_of(&step).into_iter().find_map(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok()).expect("the step's PID namespace");
    let all_four = poll(Duration::from_secs(10), || (in_namespace(&ns).len() == 4).then_some(()));
    assert!(all_four.is_some(), "want sh, two sleeps and sleep 1000: {:?}", in_namespace(&ns));

    // From this (test) thread, as kiln's signal-handling thread would.
    cancel.cancel();
    let Ok(result) = done_rx.recv_timeout(Duration::from_secs(30)) else {
        kill_all(pids_of(&host_processes_with(marker)));
        panic!("the run did not return after the cancel");
    };
    let err = result.expect_err("a cancelled run is an error");
    assert!(matches!(&err, Error::Cancelled { command } if command.contains("sleep 1000")), "{err:?}");
    assert!(err.to_string().ends_with(": cancelled"), "{err}");
    assert!(cancel.is_cancelled());
    // At once: the run waits until the namespace is gone before returning.
    assert_eq!(host_processes_with(marker), Vec::<String>::new());
    assert_eq!(in_namespace(&ns), Vec::<String>::new());
    assert_eq!(tree(root.path()), before, "mount points were left behind");

    // Any later run fails at once, without starting anything.
    let err = sandbox.run(&sh(root.path(), "touch /ran-987673"), &mut |_, _| {}).expect_err("a run after the cancel");
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    assert_eq!(tree(root.path()), before);
}
