//! SIGINT and SIGTERM, as DESIGN.md's house rule says: the first one cancels, a second one exits at
//! once, still unmounting.
//!
//! Both signals are blocked in every thread (the mask is set in `main` before any thread exists, and
//! threads inherit it) and taken by one thread with `sigwait`, so no code runs in a signal handler
//! and a disposition inherited as "ignore" (a background job of a non-interactive shell ignores
//! SIGINT) cannot swallow them. Child processes start with an empty mask: std's `Command` resets it.
//!
//! For `kiln build` and `kiln run` the first signal cancels through [`kiln_build::Cancel`] (the steps'
//! processes are killed, the finished steps' cache is exported, the build unwinds and `main` exits
//! 130/143 with one line saying what was kept); the signal thread gives that the grace period, then,
//! or at a second signal, detaches this process's mounts and exits. Other commands hold no mounts
//! and keep nothing half-done worth waiting for: they exit at the first signal.

use std::time::Duration;

use kiln_build::Cancel;

/// What the first signal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Cancel and give the command the grace period to finish cleanly.
    Graceful,
    /// Exit at once.
    Immediate,
}

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset takes valid signal numbers.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        libc::sigaddset(&mut s, libc::SIGINT);
        libc::sigaddset(&mut s, libc::SIGTERM);
        s
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread spawned after it).
/// Must run before any other thread starts.
pub fn block() {
    let s = set();
    // SAFETY: a valid, initialised set; a null old-set pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &s, std::ptr::null_mut());
    }
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Starts the signal thread. `grace` bounds a graceful cancel.
pub fn watch(cancel: Cancel, mode: Mode, grace: Duration) {
    let spawned = std::thread::Builder::new().name("kiln-signals".into()).spawn(move || {
        let s = set();
        let first = wait(&s, None).unwrap_or(libc::SIGTERM);
        if mode == Mode::Immediate {
            exit_now(first);
        }
        cancel.cancel(first);
        eprintln!(
            "kiln: {} received: stopping; the finished steps' cache gets {:.1} s to be exported (send it again to exit at once)",
            name(first),
            grace.as_secs_f64()
        );
        match wait(&s, Some(grace)) {
            Some(second) => eprintln!("kiln: {} received again: exiting without waiting", name(second)),
            None => eprintln!("kiln: the cancel took longer than {:.1} s (KILN_CANCEL_GRACE): exiting", grace.as_secs_f64()),
        }
        exit_now(first);
    });
    if let Err(e) = spawned {
        eprintln!("kiln: cannot start the signal thread ({e}); a signal will end kiln at once");
        // SAFETY: a valid, initialised set.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set(), std::ptr::null_mut());
        }
    }
}

/// Detaches the mounts this process holds, then exits with the shell's code for `sig`.
fn exit_now(sig: i32) -> ! {
    kiln_build::snapshot::unmount_all_now();
    std::process::exit(128 + sig)
}

/// The next signal of `s`, waiting at most `timeout` (forever when `None`).
fn wait(s: &libc::sigset_t, timeout: Option<Duration>) -> Option<i32> {
    loop {
        match timeout {
            None => {
                let mut sig = 0;
                // SAFETY: `s` is a valid set and `sig` a valid out pointer.
                let rc = unsafe { libc::sigwait(s, &mut sig) };
                match rc {
                    0 => return Some(sig),
                    libc::EINTR => continue,
                    _ => return None,
                }
            }
            Some(t) => {
                let ts = libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as libc::c_long };
                // SAFETY: valid set and timespec; a null siginfo pointer is allowed.
                let got = unsafe { libc::sigtimedwait(s, std::ptr::null_mut(), &ts) };
                if got > 0 {
                    return Some(got);
                }
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return None;
                }
            }
        }
    }
}
