//! Just enough HTTP/1.1 for a worker to answer `Hello world by <pid> (worker <id>)`.
//!
//! Explained in chapter 1. The bytes of the request line and headers are the
//! [`httparse`] crate's job: it is incremental, so the worker's event loop (chapter 0's `server`) can
//! hand it whatever has arrived so far and hear "not yet", "here is a request and how many
//! bytes it used", or "this is not HTTP". What this module adds is what a server has to
//! decide for itself: the limits (a head over [`MAX_HEAD`], a body over [`MAX_BODY`], too
//! many headers), which versions it speaks (HTTP/1.0 and 1.1, with their keep-alive
//! defaults and the `Connection` header), skipping a `Content-Length` body so pipelined
//! requests line up, refusing chunked bodies, and a reason a learner can read for every
//! refusal. A bad client gets a 400 with that reason and nothing else happens.

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

/// The most headers a request may have. (httparse fills a fixed array; 64 is several
/// times what a browser sends.)
const MAX_HEADERS: usize = 64;

/// Why a request line was refused, when there is nothing more precise to say.
const NOT_A_REQUEST_LINE: &str = "the request line is not 'METHOD /path HTTP/1.x'";

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    // A head that has not ended within MAX_HEAD bytes is too long, whatever follows; and
    // httparse then never looks past the limit, however many requests are queued behind.
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Bad(format!("request head over {MAX_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(error) => return Parsed::Bad(reason(error, window)),
    };
    // Complete means httparse filled in all three.
    let (Some(method), Some(path), Some(version)) = (head.method, head.path, head.version) else {
        return Parsed::Bad(NOT_A_REQUEST_LINE.into());
    };
    // httparse also takes `*` and `http://host/path`; a worker only serves its own paths.
    if !path.starts_with('/') {
        return Parsed::Bad(NOT_A_REQUEST_LINE.into());
    }
    // httparse takes any token; methods are case-sensitive and all upper case.
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Parsed::Bad(format!("'{method}' is not an HTTP method"));
    }
    // httparse reads only HTTP/1.x, and gives x.
    let mut keep_alive = match version {
        1 => true,
        0 => false,
        _ => return Parsed::Bad(format!("'HTTP/1.{version}' is not HTTP/1.0 or HTTP/1.1")),
    };
    let mut body = 0usize;
    for header in head.headers.iter() {
        let value = header.value.trim_ascii();
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = String::from_utf8_lossy(value);
            body = match text.parse() {
                Ok(n) if n <= MAX_BODY => n,
                Ok(_) => return Parsed::Bad(format!("body over {MAX_BODY} bytes")),
                Err(_) => return Parsed::Bad(format!("bad Content-Length '{text}'")),
            };
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad("chunked bodies are not supported here".into());
        } else if header.name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    if buf.len() < head_len + body {
        return Parsed::Partial;
    }
    Parsed::Request {
        request: Request {
            method: method.to_string(),
            path: path.to_string(),
            keep_alive,
        },
        used: head_len + body,
    }
}

/// httparse's error as one line for the 400's body. httparse names only the kind of
/// mistake, so for the request line this looks at the line itself.
fn reason(error: httparse::Error, head: &[u8]) -> String {
    use httparse::Error;
    match error {
        Error::HeaderName => {
            "malformed header: a header line is not 'Name: value' (no colon, or a space \
             or other character a name cannot have)"
                .into()
        }
        Error::HeaderValue => "malformed header: a value holds a control character".into(),
        Error::TooManyHeaders => format!("more than {MAX_HEADERS} headers"),
        Error::Token => NOT_A_REQUEST_LINE.into(),
        Error::Version | Error::NewLine => {
            // The first line, as far as it has arrived (httparse skips blank lines first).
            let rest = &head[head.iter().position(|b| !b"\r\n".contains(b)).unwrap_or(0)..];
            let line = rest
                .split(|b| b"\r\n".contains(b))
                .next()
                .unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                // httparse stops at the first byte that cannot be HTTP/1.0 or 1.1, which
                // can look like a bad line ending (`HTTP/1.10`) to it.
                [_, _, version] if !matches!(*version, "HTTP/1.0" | "HTTP/1.1") => {
                    format!("'{version}' is not HTTP/1.0 or HTTP/1.1")
                }
                [_, _, _] if error == Error::NewLine => "a line ends in CR without LF".into(),
                _ => NOT_A_REQUEST_LINE.into(),
            }
        }
        // Only a response has a status line: httparse never says this of a request.
        Error::Status => format!("malformed request: {error}"),
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

    /// The reason a refusal carries, or a panic saying what came instead.
    fn refused(buf: &[u8]) -> String {
        match parse(buf) {
            Parsed::Bad(why) => why,
            other => panic!(
                "{:?} should be refused, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    #[test]
    fn chunked_bodies_are_refused() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(refused(chunked), "chunked bodies are not supported here");
    }

    #[test]
    fn too_many_headers_are_refused() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for n in 0..=MAX_HEADERS {
            many.extend(format!("X-{n}: y\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(refused(&many), format!("more than {MAX_HEADERS} headers"));
        // As many as allowed is fine.
        let mut enough = b"GET / HTTP/1.1\r\n".to_vec();
        for n in 0..MAX_HEADERS {
            enough.extend(format!("X-{n}: y\r\n").bytes());
        }
        enough.extend(b"\r\n");
        assert!(matches!(parse(&enough), Parsed::Request { used, .. } if used == enough.len()));
    }

    #[test]
    fn only_http_1_0_and_1_1() {
        assert_eq!(
            refused(b"GET / HTTP/2.0\r\n\r\n"),
            "'HTTP/2.0' is not HTTP/1.0 or HTTP/1.1"
        );
        // Refused as soon as the version is wrong, without waiting for the rest.
        assert_eq!(
            refused(b"GET / HTTP/0.9\r\nHo"),
            "'HTTP/0.9' is not HTTP/1.0 or HTTP/1.1"
        );
        assert_eq!(
            refused(b"GET / FTP/1.1\r\n\r\n"),
            "'FTP/1.1' is not HTTP/1.0 or HTTP/1.1"
        );
        assert_eq!(
            refused(b"GET / HTTP/1.10\r\n\r\n"),
            "'HTTP/1.10' is not HTTP/1.0 or HTTP/1.1"
        );
    }

    #[test]
    fn malformed_request_lines_and_headers() {
        let line = "the request line is not 'METHOD /path HTTP/1.x'";
        assert_eq!(refused(b"hello\r\n\r\n"), line);
        assert_eq!(refused(b"GET /a b HTTP/1.1\r\n\r\n"), line);
        assert_eq!(refused(b"GET / HTTP/1.1 x\r\n\r\n"), line);
        assert_eq!(refused(b"GET  / HTTP/1.1\r\n\r\n"), line);
        assert_eq!(
            refused(b"GET / HTTP/1.1\rHost: x\r\n\r\n"),
            "a line ends in CR without LF"
        );
        assert_eq!(refused(b"GET * HTTP/1.1\r\n\r\n"), line);
        assert_eq!(refused(b"GET http://x/ HTTP/1.1\r\n\r\n"), line);
        assert_eq!(
            refused(b"get / HTTP/1.1\r\n\r\n"),
            "'get' is not an HTTP method"
        );
        let no_colon = refused(b"GET / HTTP/1.1\r\nHost x\r\n\r\n");
        assert!(no_colon.starts_with("malformed header: "), "{no_colon}");
        let no_colon = refused(b"GET / HTTP/1.1\r\nHost\r\n\r\n");
        assert!(no_colon.starts_with("malformed header: "), "{no_colon}");
        let control = refused(b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n");
        assert!(control.starts_with("malformed header: "), "{control}");
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: three\r\n\r\n"),
            "bad Content-Length 'three'"
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            format!("body over {MAX_BODY} bytes")
        );
    }

    #[test]
    fn head_limit_holds_with_and_without_an_end() {
        let over = format!("request head over {MAX_HEAD} bytes");
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD - 4, b'a');
        long.extend(b"\r\n\r\n");
        assert_eq!(long.len(), MAX_HEAD);
        assert!(matches!(parse(&long), Parsed::Request { used, .. } if used == MAX_HEAD));
        long.insert(20, b'a');
        assert_eq!(refused(&long), over);
        // Not ended yet, but already too long to be allowed.
        assert_eq!(refused(&long[..MAX_HEAD + 1]), over);
        assert_eq!(parse(&long[..MAX_HEAD]), Parsed::Partial);
    }

    #[test]
    fn connection_header_overrides_the_version_default() {
        let keep_alive = |buf: &[u8]| match parse(buf) {
            Parsed::Request { request, .. } => request.keep_alive,
            other => panic!("a request, got {other:?}"),
        };
        assert!(keep_alive(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep_alive(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!keep_alive(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(keep_alive(
            b"GET / HTTP/1.0\r\nconnection:  Keep-Alive \r\n\r\n"
        ));
    }
}
