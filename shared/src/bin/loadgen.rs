//! `loadgen`: send many HTTP requests to a chapter's server and show who answered.
//!
//! Used from chapter 4 on. Every chapter's workers answer `Hello world by <pid> (worker
//! <id>)`, so counting bodies tells how the master spread the load. By default each request
//! opens a new connection (that is what the master balances); `-k` reuses one connection
//! per client thread instead (then the balancing happens once per thread).
//!
//! ```text
//! cargo run --release -p shared --bin loadgen -- http://127.0.0.1:8000 -n 2000 -c 8
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Options {
    addr: SocketAddr,
    host: String,
    path: String,
    requests: usize,
    clients: usize,
    keep_alive: bool,
    timeout: Duration,
}

/// What one client thread saw.
#[derive(Default)]
struct Tally {
    /// Responses per (worker id, pid).
    by_worker: BTreeMap<(String, String), usize>,
    errors: BTreeMap<String, usize>,
    latencies: Vec<Duration>,
}

const USAGE: &str = "Usage: loadgen URL [-n REQUESTS] [-c CLIENTS] [-k] [--timeout SECS]

Sends REQUESTS (default 1000) GET requests to URL from CLIENTS threads at once (default 8),
each on a new connection, or with -k on one kept-alive connection per thread. Prints the
rate, the errors, and how many requests each worker answered.";

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("loadgen: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    let options = Arc::new(options);
    let started = Instant::now();
    let threads: Vec<_> = (0..options.clients)
        .map(|_| {
            let (next, options) = (next.clone(), options.clone());
            std::thread::spawn(move || client(&options, &next))
        })
        .collect();
    let mut total = Tally::default();
    for thread in threads {
        let tally = thread.join().unwrap_or_default();
        for (worker, n) in tally.by_worker {
            *total.by_worker.entry(worker).or_default() += n;
        }
        for (error, n) in tally.errors {
            *total.errors.entry(error).or_default() += n;
        }
        total.latencies.extend(tally.latencies);
    }
    report(&options, &total, started.elapsed());
    match total.by_worker.is_empty() {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

fn parse(words: Vec<String>) -> Result<Options, String> {
    let mut url = None;
    let (mut requests, mut clients, mut keep_alive, mut timeout) = (1000, 8, false, 5.0);
    let mut rest = words.into_iter();
    while let Some(word) = rest.next() {
        let mut value = |name: &str| rest.next().ok_or(format!("{name} needs a value"));
        match word.as_str() {
            "-h" | "--help" => return Err("help".into()),
            "-n" => requests = value("-n")?.parse().map_err(|_| "-n takes a number")?,
            "-c" => clients = value("-c")?.parse().map_err(|_| "-c takes a number")?,
            "--timeout" => {
                timeout = value("--timeout")?
                    .parse()
                    .map_err(|_| "--timeout takes seconds")?
            }
            "-k" => keep_alive = true,
            _ if url.is_none() && !word.starts_with('-') => url = Some(word),
            _ => return Err(format!("unknown argument '{word}'")),
        }
    }
    let url = url.ok_or("give the URL to load, e.g. http://127.0.0.1:8000")?;
    let rest = url
        .strip_prefix("http://")
        .ok_or(format!("'{url}' is not an http:// URL"))?;
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .next()
        .ok_or(format!("'{host}' has no address"))?;
    if clients == 0 || requests == 0 {
        return Err("-n and -c must be at least 1".into());
    }
    Ok(Options {
        addr,
        host: host.to_string(),
        path: path.to_string(),
        requests,
        clients,
        keep_alive,
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// One client thread: takes request numbers until all are taken.
fn client(options: &Options, next: &AtomicUsize) -> Tally {
    let mut tally = Tally::default();
    let mut kept: Option<TcpStream> = None;
    while next.fetch_add(1, Ordering::Relaxed) < options.requests {
        let started = Instant::now();
        let stream = match kept.take() {
            Some(stream) => Ok(stream),
            None => connect(options),
        };
        let result = stream.and_then(|mut stream| {
            let body = request(options, &mut stream)?;
            if options.keep_alive {
                kept = Some(stream);
            }
            Ok(body)
        });
        match result {
            Ok(body) => {
                tally.latencies.push(started.elapsed());
                *tally.by_worker.entry(who(&body)).or_default() += 1;
            }
            Err(e) => *tally.errors.entry(e.to_string()).or_default() += 1,
        }
    }
    tally
}

fn connect(options: &Options) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&options.addr, options.timeout)?;
    stream.set_read_timeout(Some(options.timeout))?;
    stream.set_write_timeout(Some(options.timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one GET and returns the response body.
fn request(options: &Options, stream: &mut TcpStream) -> io::Result<String> {
    let connection = if options.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\n\r\n",
        options.path, options.host
    )?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            if !head.starts_with("HTTP/1.1 200") {
                let status = head.lines().next().unwrap_or_default().to_string();
                return Err(io::Error::other(format!("answer '{status}'")));
            }
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| io::Error::other("answer without Content-Length"))?;
            if buf.len() >= head_end + 4 + length {
                let body = &buf[head_end + 4..head_end + 4 + length];
                return Ok(String::from_utf8_lossy(body).to_string());
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a whole answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `Hello world by 4125 (worker 2)` -> ("2", "4125").
fn who(body: &str) -> (String, String) {
    let pid = body
        .split("by ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?");
    let id = body
        .split("(worker ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or("?");
    (id.to_string(), pid.to_string())
}

fn report(options: &Options, total: &Tally, elapsed: Duration) {
    // One write at the end; a closed stdout (`loadgen ... | head`) is not an error.
    let mut out = String::new();
    let ok: usize = total.by_worker.values().sum();
    let errors: usize = total.errors.values().sum();
    let mode = match options.keep_alive {
        true => "one kept-alive connection per client",
        false => "a new connection per request",
    };
    let _ = writeln!(
        out,
        "{} requests to http://{}{} from {} clients, {mode}",
        options.requests, options.addr, options.path, options.clients
    );
    let mut latencies = total.latencies.clone();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let _ = writeln!(
        out,
        "{ok} answered, {errors} errors in {:.2} s: {:.0} requests/s; latency p50 {:.2} ms, p99 {:.2} ms",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99)
    );
    for (error, n) in &total.errors {
        let _ = writeln!(out, "  {n:>6} x {error}");
    }
    out.push('\n');
    let _ = writeln!(out, "  worker  pid       answered  share");
    let most = total.by_worker.values().copied().max().unwrap_or(1);
    for ((id, pid), n) in &total.by_worker {
        let share = *n as f64 * 100.0 / ok.max(1) as f64;
        let bar = "#".repeat((n * 40).div_ceil(most));
        let _ = writeln!(out, "  {id:<7} {pid:<9} {n:>8}  {share:5.1}%  {bar}");
    }
    let _ = io::stdout().write_all(out.as_bytes());
}
