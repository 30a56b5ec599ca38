//! A deliberately tiny HTTP/1.1 client for tests.
//!
//! Tests need to poke services ("does `/v2/` answer 401 without credentials?")
//! without pulling in the client under test. [`request`] opens one connection
//! per call, sends `Connection: close`, and reads the whole response body into
//! memory — fine for API probes, not for blobs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;

use crate::error::{net, Error, Result};

/// How long a probe waits on a silent peer before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A fully read HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked transfer coding removed).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8, for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The value of an `Authorization` header for HTTP basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// `host:port` and path of a plain `http://` URL.
pub(crate) fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| Error::Http {
        what: format!("parse URL {url}"),
        detail: "only plain http:// URLs are supported by the test client".into(),
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.is_empty() {
        return Err(Error::Http { what: format!("parse URL {url}"), detail: "no host".into() });
    }
    let hostport = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:80") };
    Ok((hostport, path.to_string()))
}

/// Sends one request and reads the whole response.
///
/// `headers` are sent as given; `Host`, `Content-Length` (when there is a body
/// or the method normally carries one) and `Connection: close` are added.
///
/// ```no_run
/// let r = kiln_testkit::http::request("GET", "http://127.0.0.1:5000/v2/", &[], b"").unwrap();
/// assert_eq!(r.status, 200);
/// ```
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response> {
    let (hostport, path) = split_url(url)?;
    let mut stream = TcpStream::connect(&hostport).map_err(net(format!("connect to {hostport} for {method} {url}")))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(net(format!("set timeouts on {hostport}")))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let carries_body = matches!(method, "POST" | "PUT" | "PATCH");
    if !body.is_empty() || carries_body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).map_err(net(format!("send {method} {url}")))?;

    let mut reader = BufReader::new(stream);
    let (status, headers) = read_response_head(&mut reader, url)?;
    let resp_headers = headers;
    let no_body = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let mut out = Vec::new();
    if !no_body {
        let chunked = header_of(&resp_headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            read_chunked(&mut reader, &mut out).map_err(net(format!("read chunked body of {url}")))?;
        } else if let Some(len) = header_of(&resp_headers, "content-length") {
            let len: u64 = len
                .trim()
                .parse()
                .map_err(|_| Error::Http { what: format!("response of {method} {url}"), detail: format!("bad Content-Length {len:?}") })?;
            let got = reader.take(len).read_to_end(&mut out).map_err(net(format!("read body of {url}")))?;
            if (got as u64) < len {
                return Err(Error::Net {
                    what: format!("read body of {url}"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("connection closed after {got} of {len} body bytes"),
                    ),
                });
            }
        } else {
            reader.read_to_end(&mut out).map_err(net(format!("read body of {url}")))?;
        }
    }
    Ok(Response { status, headers: resp_headers, body: out })
}

pub(crate) fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Upper bound on one header block, so a broken peer cannot make us allocate forever.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Reads lines up to the blank line; returns the raw lines (without CRLF).
/// `Ok(None)` means the peer closed before sending anything (idle keep-alive end).
pub(crate) fn read_head_lines(r: &mut impl BufRead) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let n = r.by_ref().take((MAX_HEAD + 1) as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed inside the header block"));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "header block larger than 64 KiB"));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.is_empty() {
            if lines.is_empty() {
                // Tolerate stray CRLF between keep-alive requests (RFC 9112 §2.2).
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(String::from_utf8_lossy(&line).into_owned());
    }
}

pub(crate) fn parse_header_lines(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn read_response_head(r: &mut impl BufRead, url: &str) -> Result<(u16, Vec<(String, String)>)> {
    loop {
        let lines = read_head_lines(r).map_err(net(format!("read response head of {url}")))?.ok_or_else(|| Error::Http {
            what: format!("response of {url}"),
            detail: "server closed the connection without answering".into(),
        })?;
        let status_line = &lines[0];
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| Error::Http { what: format!("response of {url}"), detail: format!("bad status line {status_line:?}") })?;
        if status == 100 {
            continue;
        }
        return Ok((status, parse_header_lines(&lines[1..])));
    }
}

/// Decodes a chunked body into `out` (trailers are read and dropped).
fn read_chunked(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size_str = line.trim().split(';').next().unwrap_or("").trim().to_string();
        let size = u64::from_str_radix(&size_str, 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size {size_str:?}")))?;
        if size == 0 {
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let got = r.by_ref().take(size).read_to_end(out)?;
        if (got as u64) < size {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short chunk"));
        }
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
    }
}

/// A request read by one of the in-process servers (small bodies only).
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }
}

/// Largest body the token server reads; token requests are a few hundred bytes.
const MAX_SMALL_BODY: u64 = 1024 * 1024;

/// Reads one request with its (small) body. `Ok(None)`: peer closed first.
pub(crate) fn read_request(r: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let Some(lines) = read_head_lines(r)? else {
        return Ok(None);
    };
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad request line {:?}", lines[0])));
    };
    let headers = parse_header_lines(&lines[1..]);
    let mut body = Vec::new();
    if header_of(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        read_chunked(&mut r.by_ref().take(MAX_SMALL_BODY), &mut body)?;
    } else if let Some(len) = header_of(&headers, "content-length") {
        let len: u64 = len.trim().parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad Content-Length"))?;
        if len > MAX_SMALL_BODY {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request body too large"));
        }
        r.by_ref().take(len).read_to_end(&mut body)?;
    }
    Ok(Some(Request { method: method.to_string(), target: target.to_string(), headers, body }))
}

/// The reason phrase for the statuses the testkit sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Splits a `WWW-Authenticate` value such as
/// `Bearer realm="http://…/token",service="x",scope="repository:a:pull"`
/// into its scheme and parameters (quotes removed). Enough for the single
/// challenge docker-registry sends; not a general RFC 9110 parser.
pub fn parse_challenge(value: &str) -> Option<(String, Vec<(String, String)>)> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (val, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((key, val));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_string(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_with_commas_inside_quotes() {
        let (s, p) =
            parse_challenge(r#"Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull,push""#).expect("parse");
        assert_eq!(s, "Bearer");
        assert_eq!(p[0], ("realm".into(), "http://127.0.0.1:1/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
    }

    #[test]
    fn url_split() {
        assert_eq!(split_url("http://127.0.0.1:9/v2/").expect("split"), ("127.0.0.1:9".to_string(), "/v2/".to_string()));
        assert!(split_url("https://x/").is_err());
    }
}
