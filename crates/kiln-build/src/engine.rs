//! The local Docker engine, for `--load` (and `type=docker` without `dest`): the image goes in as a
//! docker archive through the engine's API, `POST /images/load`, exactly what `docker load` sends,
//! so the engine keeps the archive's tags.
//!
//! The engine is found as the docker CLI finds it: `DOCKER_HOST` (`unix://PATH` or plain
//! `tcp://HOST:PORT`), else `/var/run/docker.sock`. What kiln cannot speak is refused by name rather
//! than silently answered by another engine: TLS (`DOCKER_TLS_VERIFY`), `ssh://` and `npipe://`
//! hosts, and a docker context other than `default` (`DOCKER_CONTEXT`, or `currentContext` in the
//! CLI's `config.json`) when `DOCKER_HOST` does not say where to go.
//!
//! The request is plain HTTP/1.1 with a chunked body, so the archive streams from the store into the
//! socket without a temporary file; the reply is the engine's JSON message stream, whose
//! `errorDetail` is the error to report.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The socket the docker CLI uses when nothing says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Why the image could not go into the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("DOCKER_HOST={0:?}: kiln speaks to a Docker engine over unix:// or plain tcp:// only")]
    UnsupportedHost(String),
    #[error("DOCKER_TLS_VERIFY is set: kiln does not speak TLS to the Docker engine; use its unix socket (DOCKER_HOST=unix:///var/run/docker.sock)")]
    Tls,
    #[error("the docker context {0:?} is in use ({1}): kiln does not read docker contexts; set DOCKER_HOST to that engine's address")]
    Context(String, &'static str),
    #[error("no Docker engine answers at {at}: {source} (start dockerd, or point DOCKER_HOST at one)")]
    Unreachable {
        at: String,
        #[source]
        source: io::Error,
    },
    #[error("talking to the Docker engine at {at}: {source}")]
    Io {
        at: String,
        #[source]
        source: io::Error,
    },
    #[error("the Docker engine at {at} refused the image (HTTP {status}): {message}")]
    Http { at: String, status: u16, message: String },
    #[error("the Docker engine at {at} could not load the image: {message}")]
    Load { at: String, message: String },
    #[error("the Docker engine at {at} sent a reply kiln cannot read: {what}")]
    BadReply { at: String, what: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Unix(PathBuf),
    Tcp(String),
}

/// Where the engine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    address: Address,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.address {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl Engine {
    /// The engine this process's environment names.
    pub fn from_env() -> Result<Engine, EngineError> {
        let config = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
            .map(|d| d.join("config.json"));
        let current_context = config
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("currentContext").and_then(|c| c.as_str()).map(str::to_string));
        Engine::from_vars(&|k| std::env::var(k).ok(), current_context.as_deref())
    }

    /// [`Engine::from_env`] over given variables and the CLI config's `currentContext`.
    fn from_vars(var: &dyn Fn(&str) -> Option<String>, current_context: Option<&str>) -> Result<Engine, EngineError> {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        if set("DOCKER_TLS_VERIFY").is_some() {
            return Err(EngineError::Tls);
        }
        let Some(host) = set("DOCKER_HOST") else {
            if let Some(c) = set("DOCKER_CONTEXT").filter(|c| c != "default") {
                return Err(EngineError::Context(c, "DOCKER_CONTEXT"));
            }
            if let Some(c) = current_context.filter(|c| !c.is_empty() && *c != "default") {
                return Err(EngineError::Context(c.to_string(), "currentContext in the docker CLI's config.json"));
            }
            return Ok(Engine { address: Address::Unix(PathBuf::from(DEFAULT_SOCKET)) });
        };
        if let Some(path) = host.strip_prefix("unix://") {
            if !path.is_empty() {
                return Ok(Engine { address: Address::Unix(PathBuf::from(path)) });
            }
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if !addr.is_empty() && !addr.contains('/') {
                let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:2375") };
                return Ok(Engine { address: Address::Tcp(addr) });
            }
        }
        Err(EngineError::UnsupportedHost(host))
    }

    /// Loads the docker archive `write` writes into the engine; returns the engine's messages
    /// (`Loaded image: NAME`). `write` gets the request body; an error it returns ends the upload.
    pub fn load<E>(&self, write: impl FnOnce(&mut dyn Write) -> Result<(), E>) -> Result<Result<Vec<String>, EngineError>, E> {
        let at = self.to_string();
        let mut stream: Box<dyn Stream> = match self.connect() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let head = "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: kiln\r\nContent-Type: application/x-tar\r\n\
                    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        if let Err(source) = stream.write_all(head.as_bytes()) {
            return Ok(Err(EngineError::Io { at, source }));
        }
        let mut body = io::BufWriter::with_capacity(1 << 16, Chunked { inner: &mut *stream, broken: None });
        let written = write(&mut body);
        let finished = body.into_inner().map_err(|e| e.into_error()).and_then(|c| c.finish());
        // The engine may have answered (an error) before taking the whole body: its reply says why.
        let reply = read_reply(&mut *stream, &at);
        match (written, finished, reply) {
            (_, _, Err(e @ (EngineError::Http { .. } | EngineError::Load { .. }))) => Ok(Err(e)),
            (Err(e), _, _) => Err(e),
            (Ok(()), Err(source), _) => Ok(Err(EngineError::Io { at, source })),
            (Ok(()), Ok(()), reply) => Ok(reply),
        }
    }

    /// Whether something answers at the engine's address (checked before a build that loads).
    pub fn reachable(&self) -> Result<(), EngineError> {
        self.connect().map(drop)
    }

    fn connect(&self) -> Result<Box<dyn Stream>, EngineError> {
        let at = self.to_string();
        match &self.address {
            Address::Unix(p) => UnixStream::connect(p).map(|s| Box::new(s) as Box<dyn Stream>),
            Address::Tcp(a) => TcpStream::connect(a).map(|s| Box::new(s) as Box<dyn Stream>),
        }
        .map_err(|source| EngineError::Unreachable { at, source })
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// HTTP/1.1 chunked transfer coding over `inner`.
struct Chunked<'a> {
    inner: &'a mut dyn Stream,
    broken: Option<io::ErrorKind>,
}

impl Write for Chunked<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(k) = self.broken {
            return Err(k.into());
        }
        let r =
            write!(self.inner, "{:x}\r\n", buf.len()).and_then(|()| self.inner.write_all(buf)).and_then(|()| self.inner.write_all(b"\r\n"));
        if let Err(e) = r {
            self.broken = Some(e.kind());
            return Err(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Chunked<'_> {
    fn finish(self) -> io::Result<()> {
        self.inner.write_all(b"0\r\n\r\n")?;
        self.inner.flush()
    }
}

/// Reads the reply to the end (the request said `Connection: close`).
fn read_reply(stream: &mut dyn Stream, at: &str) -> Result<Vec<String>, EngineError> {
    let mut raw = Vec::new();
    if let Err(source) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(EngineError::Io { at: at.to_string(), source });
        }
    }
    parse_reply(&raw, at)
}

/// The status, then the body (de-chunked) as the engine's JSON message stream.
fn parse_reply(raw: &[u8], at: &str) -> Result<Vec<String>, EngineError> {
    let bad = |what: &str| EngineError::BadReply { at: at.to_string(), what: what.to_string() };
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status: u16 =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no HTTP status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body).ok_or_else(|| bad("a broken chunked body"))? } else { body.to_vec() };
    let messages: Vec<serde_json::Value> =
        serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>().take_while(Result::is_ok).flatten().collect();
    if !(200..300).contains(&status) {
        let message = messages
            .iter()
            .find_map(|m| m.get("message").and_then(|v| v.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(EngineError::Http { at: at.to_string(), status, message });
    }
    let mut said = Vec::new();
    for m in &messages {
        let error = m.get("errorDetail").and_then(|d| d.get("message")).or_else(|| m.get("error")).and_then(|v| v.as_str());
        if let Some(message) = error {
            return Err(EngineError::Load { at: at.to_string(), message: message.to_string() });
        }
        if let Some(s) = m.get("stream").and_then(|v| v.as_str()) {
            said.extend(s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string));
        }
    }
    Ok(said)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(vars: &[(&str, &str)], context: Option<&str>) -> Result<Engine, EngineError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Engine::from_vars(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()), context)
    }

    #[test]
    fn the_engine_is_found_as_the_docker_cli_finds_it() {
        assert_eq!(engine(&[], None).unwrap().to_string(), "unix:///var/run/docker.sock");
        assert_eq!(engine(&[("DOCKER_HOST", "unix:///tmp/d.sock")], None).unwrap().to_string(), "unix:///tmp/d.sock");
        assert_eq!(engine(&[("DOCKER_HOST", "tcp://127.0.0.1:2375")], None).unwrap().to_string(), "tcp://127.0.0.1:2375");
        assert_eq!(engine(&[("DOCKER_HOST", "tcp://127.0.0.1")], None).unwrap().to_string(), "tcp://127.0.0.1:2375");
        assert_eq!(engine(&[("DOCKER_HOST", "unix:///x"), ("DOCKER_CONTEXT", "remote")], Some("other")).unwrap().to_string(), "unix:///x");
        assert_eq!(engine(&[("DOCKER_CONTEXT", "default")], Some("default")).unwrap().to_string(), "unix:///var/run/docker.sock");
        for host in ["ssh://me@box", "npipe:////./pipe/docker_engine", "unix://", "fd://", "/var/run/docker.sock"] {
            let e = engine(&[("DOCKER_HOST", host)], None).unwrap_err();
            assert_eq!(e.to_string(), format!("DOCKER_HOST={host:?}: kiln speaks to a Docker engine over unix:// or plain tcp:// only"));
        }
        assert!(matches!(engine(&[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_HOST", "tcp://h:2376")], None), Err(EngineError::Tls)));
        assert!(matches!(engine(&[("DOCKER_CONTEXT", "remote")], None), Err(EngineError::Context(c, "DOCKER_CONTEXT")) if c == "remote"));
        assert!(matches!(engine(&[], Some("desktop-linux")), Err(EngineError::Context(c, _)) if c == "desktop-linux"));
    }

    #[test]
    fn replies_are_read_as_the_engine_writes_them() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                   2c\r\n{\"stream\":\"Loaded image: kiln.test/x:v1\\n\"}\n\r\n0\r\n\r\n";
        assert_eq!(parse_reply(ok, "e").unwrap(), ["Loaded image: kiln.test/x:v1"]);
        let failed = b"HTTP/1.1 200 OK\r\n\r\n{\"errorDetail\":{\"message\":\"unexpected EOF\"},\"error\":\"unexpected EOF\"}\n";
        let e = parse_reply(failed, "e").unwrap_err();
        assert_eq!(e.to_string(), "the Docker engine at e could not load the image: unexpected EOF");
        let refused = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{\"message\":\"bad archive\"}";
        assert_eq!(parse_reply(refused, "e").unwrap_err().to_string(), "the Docker engine at e refused the image (HTTP 400): bad archive");
        assert!(matches!(parse_reply(b"garbage", "e"), Err(EngineError::BadReply { .. })));
        assert!(matches!(
            parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "e"),
            Err(EngineError::BadReply { .. })
        ));
    }

    #[test]
    fn a_missing_engine_is_named() {
        let e = Engine { address: Address::Unix(PathBuf::from("/nonexistent/kiln-test.sock")) };
        let r = e.load(|_w| Ok::<(), io::Error>(())).unwrap().unwrap_err();
        assert!(r.to_string().starts_with("no Docker engine answers at unix:///nonexistent/kiln-test.sock: "), "{r}");
    }
}
