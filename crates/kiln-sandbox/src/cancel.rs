//! Stopping running sandboxes from another thread.
//!
//! A [`Cancel`] is a shared registry of the outer init processes currently running under it,
//! plus a flag. [`Cancel::cancel`] sets the flag and SIGKILLs every registered pid under the
//! same lock that [`Cancel::register`] takes, so a run either registers before the flag is set
//! (and is killed by `cancel`) or sees the flag when it registers (and kills its child itself):
//! none slips between the check and the registration.
//!
//! A pid is only ever signalled while it is registered, and [`crate::Sandbox::run`] registers it
//! after spawning and unregisters it *before* reaping it. Until it is reaped an exited child
//! stays a zombie that holds its pid, so the number cannot have been reused by an unrelated
//! process by the time `kill` uses it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::sys;

/// Stops running sandboxes from another thread (kiln's signal-handling thread).
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    cancelled: bool,
    /// Outer init processes of runs in progress (spawned, not yet reaped).
    running: Vec<libc::pid_t>,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// SIGKILLs the outer init of every sandbox running with this handle (the namespace's PID 1
    /// dies with it, and the kernel kills the rest of the namespace), and makes every later run
    /// fail at once with [`crate::Error::Cancelled`]. Idempotent; callable from any thread.
    pub fn cancel(&self) {
        let mut state = self.lock();
        state.cancelled = true;
        for &pid in &state.running {
            kill(pid);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Records a freshly spawned, not yet reaped, outer init; kills it at once if the handle
    /// has already fired.
    pub(crate) fn register(&self, pid: libc::pid_t) -> Registration<'_> {
        let mut state = self.lock();
        if state.cancelled {
            kill(pid);
        }
        state.running.push(pid);
        Registration { cancel: self, pid, done: false }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; and the state stays consistent if it did.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn kill(pid: libc::pid_t) {
    if let Err(e) = sys::kill(pid, libc::SIGKILL) {
        tracing::warn!(pid, error = %e, "could not kill a sandbox init process");
    }
}

/// One registered run. Must be finished (or dropped) before the child is reaped.
pub(crate) struct Registration<'a> {
    cancel: &'a Cancel,
    pid: libc::pid_t,
    done: bool,
}

impl Registration<'_> {
    /// Unregisters the pid; true when the handle fired while it was registered, i.e. when the
    /// process was SIGKILLed by it (the flag never goes back, so "fired by now" is the same).
    pub(crate) fn finish(mut self) -> bool {
        self.unregister()
    }

    fn unregister(&mut self) -> bool {
        let mut state = self.cancel.lock();
        if !self.done {
            if let Some(i) = state.running.iter().position(|&p| p == self.pid) {
                state.running.swap_remove(i);
            }
            self.done = true;
        }
        state.cancelled
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};

    fn sleeper() -> Child {
        Command::new("sleep").arg("1000").spawn().unwrap()
    }

    fn pid(c: &Child) -> libc::pid_t {
        c.id() as libc::pid_t
    }

    #[test]
    fn cancel_kills_what_is_registered_and_reports_it() {
        let cancel = Cancel::new();
        let mut child = sleeper();
        let reg = cancel.register(pid(&child));
        assert!(!cancel.is_cancelled());
        // A clone is the same handle.
        cancel.clone().cancel();
        assert!(cancel.is_cancelled());
        assert!(reg.finish(), "the run must learn that the cancel killed it");
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        // Idempotent, and harmless with nothing registered.
        cancel.cancel();
        assert!(cancel.is_cancelled());
    }

    #[test]
    fn registering_after_the_cancel_kills_at_once() {
        let cancel = Cancel::new();
        cancel.cancel();
        let mut child = sleeper();
        let reg = cancel.register(pid(&child));
        assert!(reg.finish());
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_finished_run_is_neither_killed_nor_reported_as_cancelled() {
        let cancel = Cancel::new();
        let mut child = sleeper();
        let reg = cancel.register(pid(&child));
        assert!(!reg.finish());
        // Dropping a registration unregisters too.
        drop(cancel.register(pid(&child)));
        cancel.cancel();
        // Give a wrongly sent SIGKILL time to land before looking.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(child.try_wait().unwrap(), None, "killed after unregistering");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
