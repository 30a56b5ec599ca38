//! `RUN --mount=type=ssh`: a socket of kiln's own that forwards each connection to an ssh agent,
//! for as long as one step runs.
//!
//! Why not bind-mount the agent's socket itself: its owner and mode are the agent's (usually
//! 0600, the user kiln runs as), while BuildKit gives the step a socket with the mount's `uid`,
//! `gid` and `mode` (default 0, 0, 0600); changing the agent's own socket would change it for
//! every other client of the agent. kiln's socket is a fresh one, in a private temp dir, with the
//! owner and mode the mount asks for; the bytes of the agent protocol pass through unread.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// A listening socket that forwards to `agent`; stops listening when dropped. Connections
/// already open go on until either side closes them (the step's processes die with the step).
pub(crate) struct AgentProxy {
    listener: UnixListener,
    accept: Option<JoinHandle<()>>,
}

impl AgentProxy {
    /// Listens at `dir/name` (`dir` must exist and be private to kiln), owned by `uid:gid` with
    /// `mode`, forwarding to the socket `agent`.
    pub(crate) fn start(dir: &Path, name: &str, agent: PathBuf, uid: u32, gid: u32, mode: u32) -> io::Result<(AgentProxy, PathBuf)> {
        let path = dir.join(name);
        // A socket's path is limited to 108 bytes and kiln's root may be deeper than that: bind
        // through the dir's descriptor, whose /proc path is short whatever the dir's is.
        let d = std::fs::File::open(dir)?;
        let listener = UnixListener::bind(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        let accepting = listener.try_clone()?;
        let accept = std::thread::Builder::new().name("kiln-ssh-agent".into()).spawn(move || {
            for client in accepting.incoming() {
                match client {
                    Ok(client) => forward(client, &agent),
                    // Shut down by `drop` (or broken): nothing more to accept.
                    Err(_) => break,
                }
            }
        })?;
        Ok((AgentProxy { listener, accept: Some(accept) }, path))
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes the accept(2) blocked on it, which then fails.
        // SAFETY: a plain syscall on a descriptor this value owns; no memory is passed.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Pipes one client connection to a new connection to the agent, both ways, on two threads.
fn forward(client: UnixStream, agent: &Path) {
    let upstream = match UnixStream::connect(agent) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("ssh agent {}: cannot connect: {e}", agent.display());
            return;
        }
    };
    let pipe = |from: &UnixStream, to: &UnixStream| -> io::Result<JoinHandle<()>> {
        let (mut from, mut to) = (from.try_clone()?, to.try_clone()?);
        std::thread::Builder::new().name("kiln-ssh-pipe".into()).spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            // The other direction sees the end of this one, as it would talking to the agent.
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    if let Err(e) = pipe(&client, &upstream).and_then(|_| pipe(&upstream, &client)) {
        tracing::warn!("ssh agent {}: cannot forward a connection: {e}", agent.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn forwards_both_ways_with_the_owner_and_mode_asked_for() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let dir = tempfile::tempdir().unwrap();
        let agent_path = dir.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        // An "agent" that answers each request with its bytes reversed.
        let server = std::thread::spawn(move || {
            let (mut c, _) = agent.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            buf.reverse();
            c.write_all(&buf).unwrap();
        });
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let uid = unsafe { libc::geteuid() };
        let gid = unsafe { libc::getegid() };
        let (proxy, path) = AgentProxy::start(&private, "ssh-0", agent_path, uid, gid, 0o640).unwrap();
        let md = std::fs::metadata(&path).unwrap();
        assert!(md.file_type().is_socket());
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o640, uid, gid));

        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"olleh", "the reply, then the end when the agent closed");
        server.join().unwrap();

        drop(proxy);
        assert!(UnixStream::connect(&path).is_err(), "a dropped proxy no longer listens");
    }
}
