//! Cancelling a build: what CI does to builds all day.
//!
//! GitHub Actions cancels a job (`cancel-in-progress`, a timeout, the cancel button) by sending
//! SIGINT, then SIGTERM 7.5 s later, then SIGKILL 2.5 s after that. A cancelled kiln must stop at
//! once, keep the work it finished, and leave nothing behind, so the next run of the job starts
//! from the steps this one finished:
//!
//! 1. The first signal calls [`Cancel::cancel`]: every running RUN's process tree is killed (the
//!    sandbox's [`kiln_sandbox::Cancel`]), and each solver stops before its next step with
//!    [`BuildError::Cancelled`]. Every step that finished already has its record in the local cache.
//! 2. [`crate::build`] then exports the records of the finished steps to each `--cache-to` the
//!    policy allows (a cancelled build has no final image, so `mode=min` exports the chain the
//!    target stage had reached, and `mode=max` every finished step), unmounts as its frames unwind,
//!    and returns `Cancelled` saying what was kept.
//! 3. The CLI gives all of that [`grace`] (default 5 s, `KILN_CANCEL_GRACE`: inside the 7.5 s before
//!    SIGTERM). A second signal, or the end of the grace, skips what is left: the CLI detaches the
//!    mounts this process holds ([`crate::snapshot::unmount_all_now`]) and exits.
//! 4. SIGKILL cannot be caught: the sandbox's init processes die with kiln (parent-death signal),
//!    and the next build reclaims the dead process's mounts and temp dirs ([`crate::reclaim`]).

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::BuildError;

/// The default time a cancelled build gets to export its cache and clean up.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// A handle that cancels a build from another thread (the CLI's signal thread). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    /// The signal that cancelled the build (0 while it runs).
    signal: Arc<AtomicI32>,
    sandbox: kiln_sandbox::Cancel,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels the build because of `signal` (kills every running step's processes). The first
    /// call wins; later ones change nothing.
    pub fn cancel(&self, signal: i32) {
        let _ = self.signal.compare_exchange(0, signal.max(1), Ordering::SeqCst, Ordering::SeqCst);
        self.sandbox.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.signal.load(Ordering::SeqCst) != 0
    }

    /// The signal that cancelled the build, if it was.
    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    /// The handle the sandbox runs of this build are stopped with.
    pub fn sandbox(&self) -> kiln_sandbox::Cancel {
        self.sandbox.clone()
    }

    /// `Err(Cancelled)` once the build was cancelled: checked before each step.
    pub(crate) fn check(&self) -> Result<(), BuildError> {
        if self.is_cancelled() {
            Err(BuildError::Cancelled { kept: String::new() })
        } else {
            Ok(())
        }
    }
}

/// How long a cancelled build may take to export its cache and clean up: `KILN_CANCEL_GRACE`
/// (seconds, fractions allowed), else [`DEFAULT_GRACE`].
pub fn grace() -> Result<Duration, String> {
    match std::env::var("KILN_CANCEL_GRACE") {
        Err(_) => Ok(DEFAULT_GRACE),
        Ok(v) => parse_grace(&v),
    }
}

fn parse_grace(v: &str) -> Result<Duration, String> {
    let secs: f64 =
        v.trim().trim_end_matches('s').parse().map_err(|_| format!("KILN_CANCEL_GRACE={v:?}: expected seconds, e.g. 5 or 2.5"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("KILN_CANCEL_GRACE={v:?}: expected 0 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_is_the_one_reported() {
        let c = Cancel::new();
        assert!(!c.is_cancelled() && c.signal().is_none() && c.check().is_ok());
        let other = c.clone();
        other.cancel(2);
        c.cancel(15);
        assert_eq!(c.signal(), Some(2));
        assert!(matches!(c.check(), Err(BuildError::Cancelled { .. })));
        assert!(c.sandbox().is_cancelled(), "the sandbox handle must be cancelled too");
    }

    #[test]
    fn grace_reads_seconds() {
        assert_eq!(parse_grace("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_grace("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_grace("0").unwrap(), Duration::ZERO);
        assert!(parse_grace("soon").unwrap_err().contains("KILN_CANCEL_GRACE"));
        assert!(parse_grace("-1").is_err());
    }
}
