//! A fault-injecting HTTP/1.1 forwarding proxy.
//!
//! Clients use the proxy's `127.0.0.1:PORT` as the registry address. Every
//! request is forwarded to the upstream on a fresh upstream connection (so
//! upstream framing never leaks between requests) and its answer streamed
//! back; bodies are never buffered whole, so 1 GB blobs pass with flat memory.
//!
//! Before forwarding, a seeded RNG decides whether this request fails, and
//! how ([`FaultKind`]). Faults never leave the upstream in a state the client
//! cannot know about:
//! - [`FaultKind::ServerError`] / [`FaultKind::TooManyRequests`] are answered
//!   by the proxy itself; the upstream never sees the request. The request
//!   body is drained (up to 1 MiB; a larger body is cut, and the client may
//!   see a reset instead of the status) and the connection is closed.
//! - [`FaultKind::ResetMidBody`]: a request with a body is read part way and
//!   the client connection reset (RST), before anything reaches upstream. A
//!   `GET` is forwarded and the response cut after its headers and about
//!   half its body, then reset. Other body-less requests are reset before
//!   they are forwarded.
//!
//! Keep-alive: by default client connections are kept alive between
//! requests (`Connection: keep-alive` answers), as a registry would;
//! [`FaultProxyOptions::keep_alive`] = false answers every response with
//! `Connection: close` and closes, which exercises a client's reconnect path.
//!
//! Rewrites, and only these: hop-by-hop headers (`Connection`, `Keep-Alive`,
//! `Proxy-Connection`) are replaced, `Expect: 100-continue` is answered by the
//! proxy (so a client waiting for it does not stall), and a `Location` header
//! that names the upstream host is rewritten to the proxy's host so the client
//! stays on the proxy. The `Host` header is forwarded unchanged, so
//! docker-registry already builds its upload URLs with the proxy's address.
//!
//! Bandwidth: an optional limit in bytes per second applies to each
//! direction separately, shared by all connections (so parallel layer
//! transfers split it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::http::{header_of, parse_header_lines, read_head_lines};
use crate::server::Server;

const BUF: usize = 64 * 1024;
/// Largest request body drained before answering an injected error status.
const DRAIN_LIMIT: u64 = 1024 * 1024;
/// Largest part of a body sent (or read) before an injected reset.
const CUT_LIMIT: u64 = 4 * 1024 * 1024;
const CLIENT_IDLE: Duration = Duration::from_secs(60);
/// Upstream may think for a long time, e.g. hashing a 1 GB blob on the final PUT.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// How an injected fault looks to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `500 Internal Server Error` with a distribution-style JSON error body.
    ServerError,
    /// The connection is reset in the middle of a request or response body.
    ResetMidBody,
    /// `429 Too Many Requests` with `Retry-After: 1`.
    TooManyRequests,
}

impl FaultKind {
    /// All kinds, in a fixed order (the RNG indexes into the configured list).
    pub const ALL: [FaultKind; 3] = [FaultKind::ServerError, FaultKind::ResetMidBody, FaultKind::TooManyRequests];

    fn index(self) -> usize {
        match self {
            FaultKind::ServerError => 0,
            FaultKind::ResetMidBody => 1,
            FaultKind::TooManyRequests => 2,
        }
    }
}

/// Configuration of a [`FaultProxy`].
#[derive(Debug, Clone)]
pub struct FaultProxyOptions {
    /// Probability in `[0, 1]` that a request is failed; 0 forwards everything.
    pub fault_rate: f64,
    /// RNG seed: the same seed and request order give the same faults.
    pub seed: u64,
    /// Kinds to choose from (uniformly). Empty means no faults.
    pub kinds: Vec<FaultKind>,
    /// Bytes per second in each direction, shared by all connections.
    pub bandwidth: Option<u64>,
    /// Keep client connections alive between requests (default true).
    pub keep_alive: bool,
    /// Client connections served at once; more wait in the accept backlog.
    pub max_connections: usize,
}

impl Default for FaultProxyOptions {
    fn default() -> Self {
        FaultProxyOptions {
            fault_rate: 0.0,
            seed: 1,
            kinds: FaultKind::ALL.to_vec(),
            bandwidth: None,
            keep_alive: true,
            max_connections: 64,
        }
    }
}

/// splitmix64: tiny, seedable, good enough to spread faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A shared virtual clock: each byte reserves `1/rate` seconds after the
/// previous reservation, and the reserving thread sleeps until its slot.
/// No burst credit accumulates while idle.
struct Limiter {
    rate: u64,
    next: Mutex<Instant>,
}

impl Limiter {
    fn take(&self, n: usize) {
        let until = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = if *next > now { *next } else { now };
            *next = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
            *next
        };
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }

    /// Copy granularity: about 1/20 s of traffic, so the rate is smooth.
    fn chunk(&self) -> usize {
        ((self.rate / 20) as usize).clamp(1024, BUF)
    }
}

struct Shared {
    upstream: String,
    /// Our own `127.0.0.1:PORT`, for Location rewriting.
    me: Mutex<String>,
    rate_bits: AtomicU64,
    kinds: Vec<FaultKind>,
    rng: Mutex<Rng>,
    keep_alive: bool,
    up: Option<Limiter>,
    down: Option<Limiter>,
    requests: AtomicU64,
    faults: [AtomicU64; 3],
    upstream_errors: AtomicU64,
}

impl Shared {
    fn draw(&self) -> Option<FaultKind> {
        let rate = f64::from_bits(self.rate_bits.load(Ordering::SeqCst));
        if self.kinds.is_empty() || rate <= 0.0 {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.unit() >= rate {
            return None;
        }
        let i = (rng.next() % self.kinds.len() as u64) as usize;
        self.kinds.get(i).copied()
    }
}

/// A running fault-injecting proxy; stops accepting on drop.
pub struct FaultProxy {
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("host", &self.host())
            .field("upstream", &self.shared.upstream)
            .field("requests", &self.requests())
            .field("faults", &self.faults())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream`
    /// (`host:port`, e.g. [`crate::Registry::host`]).
    pub fn start(upstream: &str, options: FaultProxyOptions) -> Result<FaultProxy> {
        let limiter = |rate: u64| Limiter { rate: rate.max(1), next: Mutex::new(Instant::now()) };
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            me: Mutex::new(String::new()),
            rate_bits: AtomicU64::new(options.fault_rate.clamp(0.0, 1.0).to_bits()),
            kinds: options.kinds.clone(),
            rng: Mutex::new(Rng(options.seed)),
            keep_alive: options.keep_alive,
            up: options.bandwidth.map(limiter),
            down: options.bandwidth.map(limiter),
            requests: AtomicU64::new(0),
            faults: Default::default(),
            upstream_errors: AtomicU64::new(0),
        });
        let handler_shared = Arc::clone(&shared);
        let server =
            Server::start("fault-proxy", options.max_connections.max(1), Arc::new(move |stream| serve_client(&handler_shared, stream)))?;
        *shared.me.lock().unwrap_or_else(|e| e.into_inner()) = server.addr().to_string();
        Ok(FaultProxy { shared, server })
    }

    /// `127.0.0.1:PORT`: give this to clients as the registry host.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The upstream `host:port`.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Changes the fault rate from now on (e.g. 0 while setting up, then 0.1).
    pub fn set_fault_rate(&self, rate: f64) {
        self.shared.rate_bits.store(rate.clamp(0.0, 1.0).to_bits(), Ordering::SeqCst);
    }

    /// Requests received from clients (faulted ones included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Faults injected so far, all kinds.
    pub fn faults(&self) -> u64 {
        self.shared.faults.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// Faults of one kind injected so far.
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.shared.faults[kind.index()].load(Ordering::SeqCst)
    }

    /// Requests answered 502 because the upstream could not be reached or
    /// broke the protocol (not injected faults).
    pub fn upstream_errors(&self) -> u64 {
        self.shared.upstream_errors.load(Ordering::SeqCst)
    }

    /// Client connections open right now.
    pub fn active_connections(&self) -> usize {
        self.server.active()
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn request_framing(headers: &[(String, String)]) -> std::io::Result<Framing> {
    if header_of(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Ok(Framing::Chunked);
    }
    match header_of(headers, "content-length") {
        Some(v) => {
            let n: u64 = v.trim().parse().map_err(|_| invalid(format!("bad Content-Length {v:?}")))?;
            Ok(if n == 0 { Framing::None } else { Framing::Length(n) })
        }
        None => Ok(Framing::None),
    }
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection", "expect"].iter().any(|h| name.eq_ignore_ascii_case(h))
}

fn reset(stream: &TcpStream) {
    // SO_LINGER 0 makes close() send RST instead of FIN: a real reset.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn serve_client(shared: &Shared, client: TcpStream) {
    let _ = client.set_read_timeout(Some(CLIENT_IDLE));
    let _ = client.set_write_timeout(Some(UPSTREAM_TIMEOUT));
    let _ = client.set_nodelay(true);
    let Ok(read_half) = client.try_clone() else { return };
    let mut reader = BufReader::with_capacity(BUF, read_half);
    let mut writer = client;
    loop {
        match serve_one(shared, &mut reader, &mut writer) {
            Ok(true) => continue,
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(error = %e, "fault proxy: connection ended");
                return;
            }
        }
    }
}

/// Serves one request; `Ok(true)` when the connection may carry another.
fn serve_one(shared: &Shared, reader: &mut BufReader<TcpStream>, client: &mut TcpStream) -> std::io::Result<bool> {
    // Clients told a registry is "insecure" (skopeo --tls-verify=false) try
    // TLS first and fall back to plain HTTP once the connection fails. A TLS
    // handshake record starts with 0x16; closing at once makes that fast.
    match reader.fill_buf()?.first() {
        None => return Ok(false),
        Some(0x16) => return Ok(false),
        Some(_) => {}
    }
    let Some(lines) = read_head_lines(reader)? else {
        return Ok(false);
    };
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target), version) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line {:?}", lines[0])));
    };
    let method = method.to_string();
    let target = target.to_string();
    let http10 = version == Some("HTTP/1.0");
    let headers = parse_header_lines(&lines[1..]);
    let framing = request_framing(&headers)?;
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let client_close = http10 || header_of(&headers, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    let keep = shared.keep_alive && !client_close;

    let fault = shared.draw();
    if let Some(kind) = fault {
        shared.faults[kind.index()].fetch_add(1, Ordering::SeqCst);
        tracing::debug!(?kind, %method, %target, "fault proxy: injecting fault");
    }
    match fault {
        Some(kind @ (FaultKind::ServerError | FaultKind::TooManyRequests)) => {
            send_continue_if_expected(&headers, client)?;
            let _ = skip_body(reader, framing, DRAIN_LIMIT);
            let (status, code, extra) =
                if kind == FaultKind::ServerError { (500, "UNKNOWN", "") } else { (429, "TOOMANYREQUESTS", "Retry-After: 1\r\n") };
            let body =
                format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"fault injected by kiln-testkit proxy\",\"detail\":null}}]}}");
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                crate::http::reason(status),
                body.len()
            );
            client.write_all(head.as_bytes())?;
            client.write_all(body.as_bytes())?;
            client.flush()?;
            return Ok(false);
        }
        Some(FaultKind::ResetMidBody) => {
            if framing != Framing::None {
                send_continue_if_expected(&headers, client)?;
                let part = match framing {
                    Framing::Length(n) => (n / 2).min(CUT_LIMIT),
                    _ => BUF as u64,
                };
                let _ = skip_body(reader, framing, part);
                reset(client);
                return Ok(false);
            }
            if method != "GET" {
                reset(client);
                return Ok(false);
            }
        }
        None => {}
    }
    let cut = fault == Some(FaultKind::ResetMidBody);
    forward(shared, reader, client, &method, &target, &headers, framing, keep, cut)
}

fn send_continue_if_expected(headers: &[(String, String)], client: &mut TcpStream) -> std::io::Result<()> {
    if header_of(headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn forward(
    shared: &Shared,
    reader: &mut BufReader<TcpStream>,
    client: &mut TcpStream,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    framing: Framing,
    keep: bool,
    cut: bool,
) -> std::io::Result<bool> {
    let upstream = match TcpStream::connect(&shared.upstream) {
        Ok(s) => s,
        Err(e) => {
            shared.upstream_errors.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(upstream = %shared.upstream, error = %e, "fault proxy: upstream unreachable");
            let _ = skip_body(reader, framing, DRAIN_LIMIT);
            bad_gateway(client, &format!("upstream {} unreachable: {e}", shared.upstream))?;
            return Ok(false);
        }
    };
    upstream.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    upstream.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
    let _ = upstream.set_nodelay(true);
    let mut up_w = upstream.try_clone()?;
    let mut up_r = BufReader::with_capacity(BUF, upstream);

    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in headers {
        if !is_hop_by_hop(k) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    up_w.write_all(head.as_bytes())?;
    send_continue_if_expected(headers, client)?;
    match framing {
        Framing::None => {}
        Framing::Length(n) => copy_exact(reader, &mut up_w, n, shared.up.as_ref())?,
        Framing::Chunked => copy_chunked(reader, &mut up_w, shared.up.as_ref())?,
        Framing::UntilClose => {}
    }
    up_w.flush()?;

    let lines = loop {
        let lines = match read_head_lines(&mut up_r) {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => {
                shared.upstream_errors.fetch_add(1, Ordering::SeqCst);
                bad_gateway(client, "upstream closed without a response")?;
                return Ok(false);
            }
        };
        // A stray 1xx from upstream is not forwarded: we already answered Expect.
        if lines[0].split_whitespace().nth(1).is_some_and(|s| s.starts_with('1')) {
            continue;
        }
        break lines;
    };
    let status: u16 = lines[0]
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad upstream status line {:?}", lines[0])))?;
    let resp_headers = parse_header_lines(&lines[1..]);
    let resp_framing = if method == "HEAD" || status == 204 || status == 304 {
        Framing::None
    } else {
        match request_framing(&resp_headers)? {
            Framing::None if header_of(&resp_headers, "content-length").is_none() => Framing::UntilClose,
            f => f,
        }
    };
    // A body delimited by close forces us to close too.
    let keep = keep && resp_framing != Framing::UntilClose;
    let me = shared.me.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut out = format!("{}\r\n", lines[0]);
    for (k, v) in &resp_headers {
        if is_hop_by_hop(k) {
            continue;
        }
        if k.eq_ignore_ascii_case("location") {
            out.push_str(&format!("{k}: {}\r\n", v.replace(&shared.upstream, &me)));
        } else {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str(if keep { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });

    if cut {
        match resp_framing {
            Framing::Length(n) if n >= 2 => {
                client.write_all(out.as_bytes())?;
                copy_exact(&mut up_r, client, (n / 2).min(CUT_LIMIT), shared.down.as_ref())?;
            }
            Framing::Chunked | Framing::UntilClose => {
                client.write_all(out.as_bytes())?;
                let mut part = (&mut up_r).take(BUF as u64);
                std::io::copy(&mut part, client)?;
            }
            // Nothing to cut into: the connection dies before the answer.
            _ => {}
        }
        client.flush()?;
        reset(client);
        return Ok(false);
    }

    client.write_all(out.as_bytes())?;
    match resp_framing {
        Framing::None => {}
        Framing::Length(n) => copy_exact(&mut up_r, client, n, shared.down.as_ref())?,
        Framing::Chunked => copy_chunked(&mut up_r, client, shared.down.as_ref())?,
        Framing::UntilClose => copy_to_eof(&mut up_r, client, shared.down.as_ref())?,
    }
    client.flush()?;
    Ok(keep)
}

fn bad_gateway(client: &mut TcpStream, msg: &str) -> std::io::Result<()> {
    let body = format!("{{\"errors\":[{{\"code\":\"UNAVAILABLE\",\"message\":{}}}]}}", serde_json::Value::String(msg.into()));
    let head = format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes())?;
    client.write_all(body.as_bytes())?;
    client.flush()
}

/// Reads and discards up to `limit` bytes of a body (for faults).
fn skip_body(reader: &mut impl BufRead, framing: Framing, limit: u64) -> std::io::Result<()> {
    let n = match framing {
        Framing::None => return Ok(()),
        Framing::Length(n) => n.min(limit),
        // Chunk framing is not worth parsing for a body we throw away; the
        // connection is closed afterwards anyway.
        Framing::Chunked | Framing::UntilClose => limit,
    };
    std::io::copy(&mut reader.take(n), &mut std::io::sink())?;
    Ok(())
}

fn copy_exact(r: &mut impl Read, w: &mut impl Write, mut n: u64, limiter: Option<&Limiter>) -> std::io::Result<()> {
    let step = limiter.map_or(BUF, Limiter::chunk);
    let mut buf = vec![0u8; step];
    while n > 0 {
        let want = (n as usize).min(step);
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("body ended {n} bytes early")));
        }
        if let Some(l) = limiter {
            l.take(got);
        }
        w.write_all(&buf[..got])?;
        n -= got as u64;
    }
    Ok(())
}

fn copy_to_eof(r: &mut impl Read, w: &mut impl Write, limiter: Option<&Limiter>) -> std::io::Result<()> {
    let step = limiter.map_or(BUF, Limiter::chunk);
    let mut buf = vec![0u8; step];
    loop {
        let got = r.read(&mut buf)?;
        if got == 0 {
            return Ok(());
        }
        if let Some(l) = limiter {
            l.take(got);
        }
        w.write_all(&buf[..got])?;
    }
}

/// Forwards a chunked body verbatim, parsing only the chunk sizes so we know
/// where it ends (and can keep the connection alive after it).
fn copy_chunked(r: &mut impl BufRead, w: &mut impl Write, limiter: Option<&Limiter>) -> std::io::Result<()> {
    loop {
        let mut line = Vec::new();
        if r.by_ref().take(4096).read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "chunked body cut"));
        }
        w.write_all(&line)?;
        let text = String::from_utf8_lossy(&line);
        let size_str = text.trim().split(';').next().unwrap_or("").trim().to_string();
        let size = u64::from_str_radix(&size_str, 16).map_err(|_| invalid(format!("bad chunk size {size_str:?}")))?;
        if size == 0 {
            // Trailers, then the final empty line.
            loop {
                let mut t = Vec::new();
                if r.by_ref().take(4096).read_until(b'\n', &mut t)? == 0 {
                    return Ok(());
                }
                w.write_all(&t)?;
                if t == b"\r\n" || t == b"\n" {
                    return Ok(());
                }
            }
        }
        copy_exact(r, w, size + 2, limiter)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_spreads() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        let mut r = Rng(42);
        let hits = (0..10_000).filter(|_| r.unit() < 0.1).count();
        assert!((800..1200).contains(&hits), "{hits} of 10000 below 0.1");
    }

    #[test]
    fn chunked_copy_is_verbatim_and_stops_at_end() {
        let input = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: y\r\n\r\nNEXT";
        let mut r = std::io::BufReader::new(&input[..]);
        let mut out = Vec::new();
        copy_chunked(&mut r, &mut out, None).expect("copy");
        assert_eq!(out, &input[..input.len() - 4]);
        let mut rest = String::new();
        r.read_to_string(&mut rest).expect("rest");
        assert_eq!(rest, "NEXT");
    }
}
