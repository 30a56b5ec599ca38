//! Is this process inside a container? `--isolation none` overwrites `/`, which is only safe when
//! `/` is a container's own throwaway root.
//!
//! No single file says so reliably: `/.dockerenv` is left behind in root file systems made from
//! Docker images (virtual machines booted from one have it, and so does this project's CI
//! machine), and `container=` is set by some runtimes only. So kiln weighs two kinds of evidence:
//! * the one that rules a container *out*: the kernel's `kthreadd` is visible as PID 2 with
//!   parent 0. It lives in the initial PID namespace only, so a process that sees it shares the
//!   host's process tree (a host, a VM, or a container run with `--pid=host`, which is too close
//!   to the host to wipe its root);
//! * the ones that rule it *in*, of which one is needed: `/.dockerenv`, `/run/.containerenv`
//!   (Podman), `container=` in PID 1's or kiln's environment, a cgroup path that names a runtime
//!   (docker, kubepods, containerd, libpod, lxc), `KUBERNETES_SERVICE_HOST`, or an `overlay` root
//!   mount.
//!
//! [`Verdict::reasons`] lists what was seen, for the error message.

use std::path::Path;

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub in_container: bool,
    /// Each piece of evidence, in words ("/.dockerenv exists", "PID 2 is kthreadd").
    pub reasons: Vec<String>,
}

/// Looks at this machine from `/` and `/proc`.
pub fn inspect() -> Verdict {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let pid1_env = std::fs::read("/proc/1/environ").unwrap_or_default();
    let stat2 = read("/proc/2/stat");
    judge(&Evidence {
        kthreadd: read("/proc/2/comm").trim() == "kthreadd" && stat2.split_whitespace().nth(3) == Some("0"),
        dockerenv: Path::new("/.dockerenv").exists(),
        containerenv: Path::new("/run/.containerenv").exists(),
        container_env: pid1_env
            .split(|b| *b == 0)
            .find_map(|e| e.strip_prefix(b"container=").map(|v| String::from_utf8_lossy(v).into_owned()))
            .or_else(|| std::env::var("container").ok())
            .filter(|v| !v.is_empty()),
        cgroup: read("/proc/self/cgroup"),
        kubernetes: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        root_fstype: root_fstype(&read("/proc/self/mountinfo")),
    })
}

struct Evidence {
    kthreadd: bool,
    dockerenv: bool,
    containerenv: bool,
    container_env: Option<String>,
    cgroup: String,
    kubernetes: bool,
    root_fstype: Option<String>,
}

fn root_fstype(mountinfo: &str) -> Option<String> {
    // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER`; the last
    // mount on `/` is the one in effect.
    mountinfo
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some("/"))
        .filter_map(|l| l.split(" - ").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_string))
        .next_back()
}

fn judge(e: &Evidence) -> Verdict {
    let mut reasons = Vec::new();
    let mut hints = 0;
    let mut hint = |yes: bool, what: String| {
        if yes {
            hints += 1;
            reasons.push(what);
        }
    };
    hint(e.dockerenv, "/.dockerenv exists".into());
    hint(e.containerenv, "/run/.containerenv exists".into());
    if let Some(v) = &e.container_env {
        hint(true, format!("container={v} is set"));
    }
    let runtime = ["docker", "kubepods", "containerd", "libpod", "lxc"].into_iter().find(|r| e.cgroup.contains(r));
    if let Some(r) = runtime {
        hint(true, format!("the cgroup path names {r}"));
    }
    hint(e.kubernetes, "KUBERNETES_SERVICE_HOST is set".into());
    if e.root_fstype.as_deref() == Some("overlay") {
        hint(true, "/ is an overlay mount".into());
    }
    if e.kthreadd {
        reasons.push("PID 2 is the kernel's kthreadd: this process shares the host's PID namespace".into());
        return Verdict { in_container: false, reasons };
    }
    if hints == 0 {
        reasons
            .push("no sign of a container runtime (no /.dockerenv, /run/.containerenv, container=, runtime cgroup or overlay root)".into());
    }
    Verdict { in_container: hints > 0, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Evidence {
        Evidence {
            kthreadd: false,
            dockerenv: false,
            containerenv: false,
            container_env: None,
            cgroup: "0::/\n".into(),
            kubernetes: false,
            root_fstype: Some("ext4".into()),
        }
    }

    #[test]
    fn kthreadd_rules_a_container_out_even_with_a_dockerenv() {
        let v = judge(&Evidence { kthreadd: true, dockerenv: true, ..ev() });
        assert!(!v.in_container, "{v:?}");
        assert!(v.reasons.iter().any(|r| r.contains("kthreadd")) && v.reasons.iter().any(|r| r.contains("/.dockerenv")), "{v:?}");
    }

    #[test]
    fn one_runtime_hint_in_a_private_pid_namespace_is_a_container() {
        assert!(judge(&Evidence { dockerenv: true, ..ev() }).in_container);
        assert!(judge(&Evidence { cgroup: "0::/kubepods/besteffort/pod1/abc\n".into(), ..ev() }).in_container);
        assert!(judge(&Evidence { root_fstype: Some("overlay".into()), ..ev() }).in_container);
        let none = judge(&ev());
        assert!(!none.in_container && none.reasons[0].contains("no sign"), "{none:?}");
    }

    #[test]
    fn the_root_mount_type_is_the_last_mount_on_slash() {
        let mi =
            "22 1 0:21 / / rw - ext4 /dev/vda rw\n30 22 0:40 / / rw - overlay overlay rw,lowerdir=a\n31 30 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(root_fstype(mi).as_deref(), Some("overlay"));
    }

    /// On this machine (a host, as far as this test knows), the real check finds kthreadd.
    #[test]
    fn this_machine_shares_the_host_pid_namespace() {
        let v = inspect();
        if std::fs::read_to_string("/proc/2/comm").map(|c| c.trim() == "kthreadd").unwrap_or(false) {
            assert!(!v.in_container, "{v:?}");
        }
    }
}
