//! Just enough HTTP/1.1 for a worker to answer `Hello world by <pid> (worker <id>)`.
//!
//! Explained in chapter 1. The parser is incremental: the event loop in
//! [`crate::server`] hands it whatever bytes have arrived so far, and it answers "not yet",
//! "here is a request and how many bytes it used", or "this is not HTTP". It reads the
//! request line and the headers it needs (`Content-Length`, `Connection`), skips a body,
//! and refuses anything malformed or oversized, so a bad client gets a 400 and nothing else
//! happens.

/// The most a request's head (request line and headers) may take.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most a request's body may take; we read and ignore it.
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request: what the handler needs to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Whether the client wants the connection kept open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// The path without its query string: `/leak` for `/leak?mb=50`.
    pub fn route(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(&self.path, |(route, _)| route)
    }

    /// The value of `name` in the query string: `Some("50")` for `mb` in `/leak?mb=50`.
    /// (Not decoded: the chapters only pass numbers.)
    pub fn query(&self, name: &str) -> Option<&str> {
        let (_, query) = self.path.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find_map(|(key, value)| (key == name).then_some(value))
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet: wait for more bytes.
    Partial,
    /// A whole request, which took the first `used` bytes.
    Request { request: Request, used: usize },
    /// Not a request we will serve; answer 400 and close.
    Bad(String),
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let head_end = match find(buf, b"\r\n\r\n") {
        Some(at) => at + 4,
        None if buf.len() > MAX_HEAD => {
            return Parsed::Bad(format!("request head over {MAX_HEAD} bytes"))
        }
        None => return Parsed::Partial,
    };
    if head_end > MAX_HEAD {
        return Parsed::Bad(format!("request head over {MAX_HEAD} bytes"));
    }
    let head = match std::str::from_utf8(&buf[..head_end - 4]) {
        Ok(head) => head,
        Err(_) => return Parsed::Bad("request head is not text".into()),
    };
    let mut lines = head.split("\r\n");
    let mut words = lines.next().unwrap_or_default().split(' ');
    let (method, path, version) = match (words.next(), words.next(), words.next(), words.next()) {
        (Some(m), Some(p), Some(v), None) if !m.is_empty() && p.starts_with('/') => (m, p, v),
        _ => return Parsed::Bad("the request line is not 'METHOD /path HTTP/1.x'".into()),
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Parsed::Bad(format!("'{method}' is not an HTTP method"));
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Parsed::Bad(format!("'{version}' is not HTTP/1.0 or HTTP/1.1")),
    };
    let mut body = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad(format!("header line without a colon: '{line}'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body = match value.parse() {
                Ok(n) if n <= MAX_BODY => n,
                Ok(_) => return Parsed::Bad(format!("body over {MAX_BODY} bytes")),
                Err(_) => return Parsed::Bad(format!("bad Content-Length '{value}'")),
            };
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad("chunked bodies are not supported here".into());
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    if buf.len() < head_end + body {
        return Parsed::Partial;
    }
    Parsed::Request {
        request: Request {
            method: method.to_string(),
            path: path.to_string(),
            keep_alive,
        },
        used: head_end + body,
    }
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// A 200 with `body` as plain text.
    pub fn ok(body: impl Into<String>) -> Response {
        Response {
            status: 200,
            body: body.into(),
        }
    }

    /// The bytes on the wire, with `Connection: close` when we are closing afterwards.
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Unknown",
        };
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
            self.status,
            reason,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
            self.body
        )
        .into_bytes()
    }
}

/// The answer every worker gives: who served this request.
// ANCHOR: hello
pub fn hello(worker: u32) -> Response {
    Response::ok(format!("Hello world by {} (worker {worker})\n", pid()))
}
// ANCHOR_END: hello

/// This process's id, asked of the kernel once rather than once per request. (A child
/// made by a bare `fork()` would inherit the cached value; chapter 0's process model, the
/// one place that forks without exec, never asks in the parent.)
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_partial_and_pipelined() {
        let two = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        let Parsed::Request { request, used } = parse(two) else {
            panic!("first request")
        };
        assert_eq!(request.path, "/");
        assert!(request.keep_alive);
        let Parsed::Request { request, .. } = parse(&two[used..]) else {
            panic!("second request")
        };
        assert_eq!(request.path, "/b");
        assert!(!request.keep_alive);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHo"), Parsed::Partial);
    }

    #[test]
    fn route_and_query() {
        let Parsed::Request { request, .. } = parse(b"GET /leak?mb=50&x=1 HTTP/1.1\r\n\r\n") else {
            panic!("a request")
        };
        assert_eq!(request.route(), "/leak");
        assert_eq!(request.query("mb"), Some("50"));
        assert_eq!(request.query("x"), Some("1"));
        assert_eq!(request.query("y"), None);
        let Parsed::Request { request, .. } = parse(b"GET /crash HTTP/1.1\r\n\r\n") else {
            panic!("a request")
        };
        assert_eq!((request.route(), request.query("mb")), ("/crash", None));
    }

    #[test]
    fn body_is_skipped_and_limits_hold() {
        let post = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert!(matches!(parse(post), Parsed::Request { used, .. } if used == post.len()));
        assert_eq!(parse(&post[..post.len() - 1]), Parsed::Partial);
        assert!(matches!(parse(b"hello\r\n\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse(&vec![b'a'; MAX_HEAD + 1]), Parsed::Bad(_)));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            Parsed::Bad(_)
        ));
    }
}
