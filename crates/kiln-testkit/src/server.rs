//! The accept loop shared by the in-process servers (token server, proxy).
//!
//! One thread accepts; each connection gets its own thread, up to a fixed
//! bound, so a test that opens many connections cannot exhaust the machine.
//! Connections over the bound wait in the kernel's backlog until a slot
//! frees. Dropping the [`Server`] stops accepting and joins the accept thread;
//! connection threads end when their peer goes away or their socket times out.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{net, Result};

pub(crate) type Handler = Arc<dyn Fn(TcpStream) + Send + Sync + 'static>;

pub(crate) struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    active: Arc<(Mutex<usize>, Condvar)>,
}

impl Server {
    pub(crate) fn start(name: &'static str, max_connections: usize, handler: Handler) -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(net(format!("bind {name} on 127.0.0.1:0")))?;
        let addr = listener.local_addr().map_err(net(format!("read the address of {name}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new((Mutex::new(0usize), Condvar::new()));
        let stop2 = Arc::clone(&stop);
        let active2 = Arc::clone(&active);
        let spawned = Arc::new(AtomicUsize::new(0));
        let accept = std::thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let stream = match conn {
                        Ok(s) => s,
                        Err(e) => {
                            // EMFILE and friends persist; back off instead of spinning.
                            tracing::debug!(server = name, error = %e, "accept failed");
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    };
                    // Wait for a free slot rather than refuse: refusing would look
                    // like a fault the test did not ask for.
                    {
                        let (lock, cv) = &*active2;
                        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while *n >= max_connections && !stop2.load(Ordering::SeqCst) {
                            n = cv.wait_timeout(n, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
                        }
                        *n += 1;
                    }
                    let handler = Arc::clone(&handler);
                    let active3 = Arc::clone(&active2);
                    let id = spawned.fetch_add(1, Ordering::Relaxed);
                    let res = std::thread::Builder::new().name(format!("{name}-conn-{id}")).spawn(move || {
                        let _slot = Slot(active3);
                        handler(stream);
                    });
                    if let Err(e) = res {
                        tracing::warn!(server = name, error = %e, "could not spawn a connection thread");
                        let (lock, cv) = &*active2;
                        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
                        *n = n.saturating_sub(1);
                        cv.notify_all();
                    }
                }
            })
            .map_err(|e| crate::Error::Net { what: format!("spawn the accept thread of {name}"), source: e })?;
        Ok(Server { addr, stop, accept: Some(accept), active })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections being served right now.
    pub(crate) fn active(&self) -> usize {
        *self.active.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Releases a connection slot when the connection thread ends, even by panic.
struct Slot(Arc<(Mutex<usize>, Condvar)>);

impl Drop for Slot {
    fn drop(&mut self) {
        let (lock, cv) = &*self.0;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        cv.notify_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept thread is blocked in accept(); a throwaway connection wakes it.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}
