//! `loadgen`: send many HTTP requests to a chapter's server and show who answered.
//!
//! Used from chapter 4 on. Every chapter's workers answer `Hello world by <pid> (worker
//! <id>)`, so counting bodies tells how the master spread the load. By default each request
//! opens a new connection (that is what the master balances); `-k` reuses one connection
//! per client instead (then the balancing happens once per client).
//!
//! ```text
//! cargo run --release -p loadgen -- http://127.0.0.1:8000 -n 2000 -c 8
//! ```
//!
//! With `--duration SECS` it runs for a time instead of a count (the prologue's
//! `bench/models.sh` uses it): it first opens every connection and waits for each one's
//! first answer, prints a `measuring` line, and only then counts, for SECS seconds, with
//! all the connections open.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::{Domain, Socket, Type};

struct Options {
    addr: SocketAddr,
    host: String,
    path: String,
    requests: usize,
    clients: usize,
    keep_alive: bool,
    timeout: Duration,
    /// `--duration`: count for this long, once every client has had a first answer.
    duration: Option<Duration>,
    /// `--hold`: wait for a line on stdin before counting, and keep the connections open
    /// after the report until stdin closes.
    hold: bool,
}

/// Where a `--duration` run is: warming up (connecting), measuring, or over.
#[derive(Default)]
struct Window {
    /// Clients that have had their first answer.
    warm: AtomicUsize,
    measuring: AtomicBool,
    over: AtomicBool,
}

impl Window {
    /// Whether an answer arriving now counts: always without `--duration`.
    fn counts(&self, options: &Options) -> bool {
        options.duration.is_none()
            || (self.measuring.load(Ordering::Relaxed) && !self.over.load(Ordering::Relaxed))
    }
}

/// What one client thread saw.
#[derive(Default)]
struct Tally {
    /// Responses per (worker id, pid).
    by_worker: BTreeMap<(String, String), usize>,
    errors: BTreeMap<String, usize>,
    latencies: Vec<Duration>,
    /// With `--hold`: the connections still open when the time was up.
    held: Vec<Socket>,
}

const USAGE: &str =
    "Usage: loadgen URL [-n REQUESTS] [-c CLIENTS] [-k] [--timeout SECS] [--duration SECS [--hold]]

Sends REQUESTS (default 1000) GET requests to URL, CLIENTS at a time (default 8), each on a
new connection, or with -k on one kept-alive connection per client. Prints the rate, the
errors, and how many requests each worker answered.

With --duration SECS, -n is ignored: every client connects and gets a first answer (each
within --timeout), a line 'measuring: N of CLIENTS clients answered' is printed, and the
requests answered in the next SECS seconds are counted. With --hold, the counting starts only
when a line arrives on standard input, and the connections stay open after the report, idle,
until standard input closes (with -k, which --hold needs): time to look at the server, before
and after.";

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
    let window = Arc::new(Window::default());
    let mut started = Instant::now();
    // One thread per CPU, each running an event loop over its share of the connections.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = options.clients.min(cpus);
    let threads: Vec<_> = (0..threads)
        .map(|t| {
            let (next, options, window) = (next.clone(), options.clone(), window.clone());
            let share = options.clients / threads + usize::from(t < options.clients % threads);
            std::thread::spawn(move || client(&options, &next, &window, share))
        })
        .collect();
    let mut elapsed = None;
    if let Some(duration) = options.duration {
        started = measure(&options, &window, duration);
        elapsed = Some(duration);
    }
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
        total.held.extend(tally.held);
    }
    report(
        &options,
        &total,
        elapsed.unwrap_or_else(|| started.elapsed()),
    );
    if options.hold {
        // Idle, every connection open, until whoever started us closes our stdin.
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
    }
    match total.by_worker.is_empty() {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

fn parse(words: Vec<String>) -> Result<Options, String> {
    let mut url = None;
    let (mut requests, mut clients, mut keep_alive, mut timeout) = (1000, 8, false, 5.0);
    let mut duration = None;
    let mut hold = false;
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
            "--duration" => {
                let secs: f64 = value("--duration")?
                    .parse()
                    .map_err(|_| "--duration takes seconds")?;
                duration = Some(
                    Duration::try_from_secs_f64(secs)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or("--duration must be above 0")?,
                );
            }
            "-k" => keep_alive = true,
            "--hold" => hold = true,
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
    if duration.is_some() {
        // The clock, not a count, ends the run.
        requests = usize::MAX;
    } else if hold {
        return Err("--hold goes with --duration".into());
    }
    if hold && !keep_alive {
        return Err("--hold keeps kept-alive connections open: add -k".into());
    }
    Ok(Options {
        addr,
        host: host.to_string(),
        path: path.to_string(),
        requests,
        clients,
        keep_alive,
        timeout: Duration::from_secs_f64(timeout),
        duration,
        hold,
    })
}

/// A `--duration` run, seen from the main thread: waits until every client has had a first
/// answer (or for one `--timeout` more once none has arrived for that long), says so on
/// stdout, counts for `duration`, and returns when the counting began.
fn measure(options: &Options, window: &Window, duration: Duration) -> Instant {
    let mut last = (window.warm.load(Ordering::Relaxed), Instant::now());
    loop {
        let warm = window.warm.load(Ordering::Relaxed);
        if warm != last.0 {
            last = (warm, Instant::now());
        }
        if warm >= options.clients || last.1.elapsed() > options.timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let warm = window.warm.load(Ordering::Relaxed).min(options.clients);
    let line = format!(
        "measuring: {warm} of {} clients answered; counting for {:.1} s\n",
        options.clients,
        duration.as_secs_f64()
    );
    let mut out = io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    drop(out);
    if options.hold {
        // Every client is connected and idle: whoever started us may look at the server
        // now, and says when to start with a line on our stdin.
        let _ = io::stdin().read_line(&mut String::new());
    }
    let started = Instant::now();
    window.measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(duration);
    window.over.store(true, Ordering::Relaxed);
    started
}

/// One connection slot of a client thread, and where it is in its request.
struct Slot {
    stream: Socket,
    /// The request bytes not written yet; empty once it is all sent.
    unsent: usize,
    /// What has arrived of the answer.
    buf: Vec<u8>,
    /// When this request started, and when it gives up.
    started: Instant,
    deadline: Instant,
    /// Whether this client has had an answer yet (for `--duration`'s warm-up).
    answered: bool,
}

/// One client thread: keeps `connections` requests in flight on one epoll, taking request
/// numbers from `next` until all are taken. An event loop rather than a thread per
/// connection, so the load client spends its CPU on requests, not on switching threads.
fn client(options: &Options, next: &AtomicUsize, window: &Window, connections: usize) -> Tally {
    let mut tally = Tally::default();
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(epoll) => epoll,
        Err(e) => {
            *tally.errors.entry(format!("epoll: {e}")).or_default() += 1;
            return tally;
        }
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: {}\r\n\r\n",
        options.path,
        options.host,
        if options.keep_alive {
            "keep-alive"
        } else {
            "close"
        }
    )
    .into_bytes();
    let mut slots: Vec<Option<Slot>> = (0..connections).map(|_| None).collect();
    for (i, slot) in slots.iter_mut().enumerate() {
        *slot = begin(options, next, window, &epoll, i, None, &mut tally);
    }
    // Kept up to date rather than counted, and deadlines checked a few times a second
    // rather than after every event: with thousands of clients, scanning them all on
    // every wake-up would cost more than the requests.
    let mut live = slots.iter().filter(|s| s.is_some()).count();
    let mut next_scan = Instant::now();
    // --duration: clients that have had their first answer wait here, connection open,
    // until every other client has had one too. Otherwise the first clients' load would
    // starve the server's accepting of the last ones, and the warm-up would never end.
    let mut parked: Vec<usize> = Vec::new();
    let mut events = vec![EpollEvent::empty(); connections.max(1)];
    while live > 0 {
        if !parked.is_empty() && window.measuring.load(Ordering::Relaxed) {
            for i in parked.drain(..) {
                let reuse = slots[i].take().filter(|_| options.keep_alive);
                slots[i] = begin(options, next, window, &epoll, i, reuse, &mut tally);
                live -= usize::from(slots[i].is_none());
            }
        }
        let wait = if parked.is_empty() { 100u16 } else { 5 };
        let ready = match epoll.wait(&mut events, EpollTimeout::from(wait)) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                *tally.errors.entry(format!("epoll: {e}")).or_default() += 1;
                break;
            }
        };
        for event in &events[..ready] {
            let i = event.data() as usize;
            let Some(slot) = slots[i].as_mut() else {
                continue;
            };
            match step(slot, &request, &epoll, i) {
                Ok(None) => {}
                Ok(Some(body)) => {
                    if !std::mem::replace(&mut slot.answered, true) {
                        window.warm.fetch_add(1, Ordering::Relaxed);
                    }
                    if window.counts(options) {
                        tally.latencies.push(slot.started.elapsed());
                        *tally.by_worker.entry(who(&body)).or_default() += 1;
                    }
                    if options.duration.is_some() && !window.measuring.load(Ordering::Relaxed) {
                        // No deadline while it waits for the others.
                        slot.deadline = Instant::now() + Duration::from_secs(86_400);
                        parked.push(i);
                        continue;
                    }
                    let reuse = slots[i].take().filter(|_| options.keep_alive);
                    if window.over.load(Ordering::Relaxed) {
                        // Time is up: keep this connection for --hold, or close it.
                        tally
                            .held
                            .extend(reuse.filter(|_| options.hold).map(|slot| slot.stream));
                    } else {
                        slots[i] = begin(options, next, window, &epoll, i, reuse, &mut tally);
                    }
                }
                Err(e) => {
                    if window.counts(options) {
                        *tally.errors.entry(e.to_string()).or_default() += 1;
                    }
                    slots[i] = begin(options, next, window, &epoll, i, None, &mut tally);
                }
            }
            live -= usize::from(slots[i].is_none());
        }
        // Requests past their deadline count as errors and make room for the next.
        let now = Instant::now();
        if now < next_scan && !window.over.load(Ordering::Relaxed) {
            continue;
        }
        next_scan = now + Duration::from_millis(20);
        for (i, slot) in slots.iter_mut().enumerate() {
            let expired = slot.as_ref().is_some_and(|slot| slot.deadline <= now);
            // Once a --duration run is over, close every client, answered or not.
            let ended = slot.is_some() && window.over.load(Ordering::Relaxed);
            if expired && !ended {
                if window.counts(options) {
                    *tally.errors.entry("timed out".into()).or_default() += 1;
                }
                *slot = begin(options, next, window, &epoll, i, None, &mut tally);
            } else if ended {
                if let Some(slot) = slot.take().filter(|_| options.hold) {
                    tally.held.push(slot.stream);
                }
            }
            live -= usize::from((expired || ended) && slot.is_none());
        }
    }
    tally
}

/// Starts the next request in slot `i`, on `reuse` (a kept-alive connection) or on a new
/// one; `None` once every request has been taken.
fn begin(
    options: &Options,
    next: &AtomicUsize,
    window: &Window,
    epoll: &Epoll,
    i: usize,
    reuse: Option<Slot>,
    tally: &mut Tally,
) -> Option<Slot> {
    let mut reuse = reuse;
    loop {
        if window.over.load(Ordering::Relaxed) {
            return None;
        }
        if next.fetch_add(1, Ordering::Relaxed) >= options.requests {
            return None;
        }
        let now = Instant::now();
        let answered = reuse.as_ref().is_some_and(|slot| slot.answered);
        if let Some(mut slot) = reuse.take() {
            slot.unsent = usize::MAX;
            slot.buf.clear();
            slot.started = now;
            slot.deadline = now + options.timeout;
            let mut event = EpollEvent::new(EpollFlags::EPOLLOUT, i as u64);
            if epoll.modify(slot.stream.as_fd(), &mut event).is_ok() {
                return Some(slot);
            }
        }
        match connect(options.addr) {
            Ok(stream) => {
                let event = EpollEvent::new(EpollFlags::EPOLLOUT, i as u64);
                if let Err(e) = epoll.add(stream.as_fd(), event) {
                    *tally.errors.entry(format!("epoll: {e}")).or_default() += 1;
                    continue;
                }
                return Some(Slot {
                    stream,
                    unsent: usize::MAX,
                    buf: Vec::with_capacity(256),
                    started: now,
                    deadline: now + options.timeout,
                    answered,
                });
            }
            Err(e) => {
                if window.counts(options) {
                    *tally.errors.entry(e.to_string()).or_default() += 1;
                }
                // In a --duration run no count ends these retries: do not spin on them.
                if options.duration.is_some() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// Starts a non-blocking connect; epoll says "writable" once it is done.
fn connect(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(socket),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
        Err(e) => Err(e),
    }
}

/// Moves one request along: finish connecting, send, read. `Some(body)` once the whole
/// answer is in.
fn step(slot: &mut Slot, request: &[u8], epoll: &Epoll, i: usize) -> io::Result<Option<String>> {
    if slot.unsent == usize::MAX {
        // Writable for the first time: the connect finished, or failed.
        if let Some(e) = slot.stream.take_error()? {
            return Err(e);
        }
        slot.unsent = request.len();
    }
    while slot.unsent > 0 {
        let from = request.len() - slot.unsent;
        match (&slot.stream).write(&request[from..]) {
            Ok(n) => slot.unsent -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
        if slot.unsent == 0 {
            // Everything sent: from now on wait for the answer.
            let mut event = EpollEvent::new(EpollFlags::EPOLLIN, i as u64);
            epoll.modify(slot.stream.as_fd(), &mut event)?;
        }
    }
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(answer) = parse_answer(&slot.buf) {
            return answer.map(Some);
        }
        match (&slot.stream).read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a whole answer",
                ))
            }
            Ok(n) => slot.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// The body of a whole `200` answer at the start of `buf`; `None` if more must arrive.
fn parse_answer(buf: &[u8]) -> Option<io::Result<String>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        return Some(Err(io::Error::other(format!("answer '{status}'"))));
    }
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let Some(length) = length else {
        return Some(Err(io::Error::other("answer without Content-Length")));
    };
    let body = buf.get(head_end + 4..head_end + 4 + length)?;
    Some(Ok(String::from_utf8_lossy(body).to_string()))
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
    match options.duration {
        Some(duration) => writeln!(
            out,
            "{:.1} s of requests to http://{}{} from {} clients, {mode}",
            duration.as_secs_f64(),
            options.addr,
            options.path,
            options.clients
        ),
        None => writeln!(
            out,
            "{} requests to http://{}{} from {} clients, {mode}",
            options.requests, options.addr, options.path, options.clients
        ),
    }
    .unwrap_or_default();
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
