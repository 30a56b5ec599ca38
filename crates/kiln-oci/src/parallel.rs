//! One bounded worker pool for every "do this to each of these" in kiln (blob transfers, layer
//! compression, cached-layer downloads): `n` scoped threads take the next item when they are done, so
//! one big item does not hold the small ones up, and the first error stops the rest from starting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `f` over `items` on up to `n` threads; the first error stops the rest from starting and is
/// returned once the running ones have finished.
pub fn run_parallel<T: Sync, E: Send>(items: &[T], n: usize, f: impl Fn(&T) -> Result<(), E> + Sync) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<E>> = Mutex::new(None);
    let workers = n.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                if let Err(e) = f(item) {
                    stop.store(true, Ordering::Relaxed);
                    let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some(e);
                    }
                    break;
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
