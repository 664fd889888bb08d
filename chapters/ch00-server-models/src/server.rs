//! The worker's HTTP server: one thread, one event loop, many connections.
//!
//! Built in the prologue, as its event-loop model; chapter 1 runs one per worker. Later
//! chapters add to the same loop through its few openings: chapter 2 watches its IPC
//! channel ([`Server::watch`]), chapter 6 hands it connections accepted elsewhere
//! ([`Server::adopt_connection`]), chapter 6b answers a request once another process has
//! replied ([`Server::handler_later`]), chapter 7 closes it gracefully ([`Server::drain`],
//! Node's `server.close()`) and chapter 9 lets a drain linger for a last request
//! ([`Server::drain_lingering`]).
//!
//! A Node process runs all its JavaScript on one thread: libuv waits on epoll for any
//! socket that is ready, runs the callback for it, and goes back to waiting. That is what
//! [`Server::run`] does. Every socket is non-blocking, so a slow client never holds up
//! the others. The flip side is Node's too: a handler that never returns stalls the whole
//! worker, its IPC channel included, and chapter 8 relies on exactly that.
//!
//! The loop watches three kinds of things: listening sockets (accept new connections),
//! connections (read requests, write responses), and the fds a chapter gives it (chapter
//! 2's IPC channel), whose callbacks run when they are readable.
//!
//! Nothing a client does can make the loop spin or its memory grow without bound: a
//! connection is read only while its unsent answers stay under [`OUTPUT_LIMIT`], epoll
//! watches a socket only for what the loop is ready to do with it, and a connection that
//! makes no progress, reading or writing, for the idle timeout is closed. Out of fds, the
//! worker stops accepting until one frees instead of retrying a failing `accept` forever.

use std::any::Any;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, SockFlag};

use shared::http::{self, Parsed, Request, Response, MAX_BODY, MAX_HEAD};
use shared::log;

/// A connection whose unsent answers reach this many bytes is not read any further
/// until the client takes some: a client that sends requests and never reads the answers
/// costs the worker this much memory, not more.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// The most a connection's unparsed input may hold: one largest request.
const INPUT_LIMIT: usize = MAX_HEAD + MAX_BODY;

/// How long to wait, out of fds, before trying to accept again when no connection of ours
/// has closed in the meantime (the fds may be held elsewhere in the process).
const RETRY_WHEN_OUT_OF_FDS: Duration = Duration::from_secs(1);

type Handler = Box<dyn FnMut(&Request, Later) -> Option<Response>>;
type Callback = Box<dyn FnMut(&mut Server)>;

struct Timer {
    every: Duration,
    next: Instant,
    callback: Option<Callback>,
}

/// Counters a chapter can print or report to its master.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Connections this worker accepted.
    pub accepted: u64,
    /// Times epoll woke us for a listener but `accept` found nothing: another process
    /// sharing the socket took the connection first (EAGAIN), the "thundering herd".
    pub lost_races: u64,
    /// Requests answered.
    pub served: u64,
}

enum Source {
    Listener(Listener),
    Conn(Conn),
    Watched(Watched),
}

/// An fd a chapter added with [`Server::watch`], and what to do when it is readable (taken
/// out while it runs).
struct Watched {
    fd: RawFd,
    on_readable: Option<Callback>,
}

/// A request whose handler answers it later ([`Server::handler_later`]): which connection,
/// and which of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Later {
    token: u64,
    request: u64,
}

struct Listener {
    socket: TcpListener,
    /// The epoll flags it is registered with (EPOLLIN, maybe EPOLLEXCLUSIVE).
    flags: EpollFlags,
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The client has sent end-of-file: answer what is buffered, then close.
    eof: bool,
    /// Close once `output` is written.
    closing: bool,
    /// What epoll watches this connection for now.
    interest: EpollFlags,
    /// Closed if it makes no progress by then: no whole request read, no byte written.
    deadline: Instant,
    /// Requests answered on it so far.
    answered: u64,
    /// The request being answered later, if any (its keep-alive as the client asked): no
    /// further request of this connection is read into the handler until it is answered.
    waiting: Option<bool>,
}

/// The worker's state when it has run out of fds (or out of room for one more
/// connection): the episode is logged once, when it starts and when it ends.
struct OutOfFds {
    since: Instant,
    /// Listeners are off epoll until an fd frees (or `retry` comes).
    paused: bool,
    retry: Instant,
}

/// A worker's event loop. Build it, add listeners (and, from chapter 2, the IPC channel), run.
pub struct Server {
    epoll: Epoll,
    sources: HashMap<u64, Source>,
    next_token: u64,
    worker: u32,
    idle_timeout: Duration,
    handler: Option<Handler>,
    on_fds_freed: Option<Callback>,
    on_crash: Option<Callback>,
    timers: Vec<Timer>,
    out_of_fds: Option<OutOfFds>,
    /// Open connections: while there are none (and no fds to wait for), there is nothing
    /// to sweep, and an idle worker sleeps until something happens.
    open: usize,
    stats: Stats,
    /// Taking no new connections, and stopping once the open ones are done.
    draining: bool,
    /// After [`Server::drain_lingering`]: until when an idle kept-alive connection may
    /// send one more request.
    linger_until: Option<Instant>,
    running: bool,
}

impl Server {
    /// A server for worker `worker` that drops connections idle for `idle_timeout`.
    pub fn new(worker: u32, idle_timeout: Duration) -> io::Result<Server> {
        Ok(Server {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            sources: HashMap::new(),
            next_token: 0,
            worker,
            idle_timeout,
            handler: None,
            on_fds_freed: None,
            on_crash: None,
            timers: Vec::new(),
            out_of_fds: None,
            stats: Stats::default(),
            draining: false,
            linger_until: None,
            open: 0,
            running: true,
        })
    }

    /// Replaces the default handler ([`http::hello`]) with one of the chapter's.
    pub fn handler(mut self, mut handler: impl FnMut(&Request) -> Response + 'static) -> Server {
        self.handler = Some(Box::new(move |request, _| Some(handler(request))));
        self
    }

    /// Like [`Server::handler`], for a handler that may have to wait for another process
    /// (chapter 6b asks its master, or an agent, for a count). It answers now with
    /// `Some(response)`, or returns `None` and answers later with
    /// [`Server::answer_later`] and the [`Later`] it was given. Meanwhile the loop serves
    /// every other connection; this one waits, its next requests unread.
    // ANCHOR: handler_later
    pub fn handler_later(
        mut self,
        handler: impl FnMut(&Request, Later) -> Option<Response> + 'static,
    ) -> Server {
        self.handler = Some(Box::new(handler));
        self
    }

    /// Answers a request its handler left for later, and serves what its client sent
    /// meanwhile. False, and the answer dropped, if the connection is gone (the client
    /// left, or the idle timeout closed it) or that request was answered already. Not from
    /// inside the handler: it may run the handler again.
    pub fn answer_later(&mut self, later: Later, response: Response) -> bool {
        let Some(Source::Conn(conn)) = self.sources.get_mut(&later.token) else {
            return false;
        };
        if conn.answered != later.request {
            return false;
        }
        let Some(keep_alive) = conn.waiting.take() else {
            return false;
        };
        let keep_alive = keep_alive && !self.draining;
        conn.answered += 1;
        self.stats.served += 1;
        conn.output.extend(response.to_bytes(keep_alive));
        conn.closing = !keep_alive;
        conn.deadline = Instant::now() + self.idle_timeout;
        self.serve(later.token, EpollFlags::empty());
        true
    }
    // ANCHOR_END: handler_later

    /// Watches one more fd besides the sockets (chapter 2's IPC channel): each time it is
    /// readable, `on_readable` runs on the loop's thread and gets the server itself to act
    /// on what it reads. The callback must own what keeps `fd` open.
    pub fn watch(
        mut self,
        fd: BorrowedFd<'_>,
        on_readable: impl FnMut(&mut Server) + 'static,
    ) -> io::Result<Server> {
        self.add_watch(fd, on_readable)?;
        Ok(self)
    }

    /// [`Server::watch`], from a running loop: chapter 6b's worker watches the line to
    /// its agent once the master has sent it.
    pub fn add_watch(
        &mut self,
        fd: BorrowedFd<'_>,
        on_readable: impl FnMut(&mut Server) + 'static,
    ) -> io::Result<()> {
        let token = self.register(fd, EpollFlags::EPOLLIN)?;
        let watched = Watched {
            fd: fd.as_raw_fd(),
            on_readable: Some(Box::new(on_readable)),
        };
        self.sources.insert(token, Source::Watched(watched));
        Ok(())
    }

    /// Stops watching `fd`, and drops its callback with what it owns. (Closing the fd alone
    /// would not do: another handle on it may keep it open, and watched.)
    pub fn unwatch(&mut self, fd: BorrowedFd<'_>) {
        let _ = self.epoll.delete(fd);
        let raw = fd.as_raw_fd();
        self.sources
            .retain(|_, source| !matches!(source, Source::Watched(w) if w.fd == raw));
    }

    /// Calls `callback` every `every`, on the loop's thread, between events.
    pub fn every(mut self, every: Duration, callback: impl FnMut(&mut Server) + 'static) -> Server {
        self.timers.push(Timer {
            every,
            next: Instant::now() + every,
            callback: Some(Box::new(callback)),
        });
        self
    }

    /// Calls `callback` each time the worker, short of fds, may take connections again:
    /// one of its connections has closed, or a second has passed. Chapter 6's worker
    /// tells its master it is free again.
    pub fn on_fds_freed(mut self, callback: impl FnMut(&mut Server) + 'static) -> Server {
        self.on_fds_freed = Some(Box::new(callback));
        self
    }

    /// Calls `callback` when the handler panics, after the request that made it panic got
    /// a 500: a chapter that survives its handlers' panics (chapter 7) tells its master
    /// and drains, as a Node worker does from `process.on('uncaughtException')`. Without
    /// it, a panic in the handler unwinds out of [`Server::run`], as it would anywhere.
    pub fn on_crash(mut self, callback: impl FnMut(&mut Server) + 'static) -> Server {
        self.on_crash = Some(Box::new(callback));
        self
    }

    /// Starts accepting connections on `listener`.
    pub fn add_listener(&mut self, listener: TcpListener) -> io::Result<()> {
        self.add_listener_with(listener, false)
    }

    /// Like [`Server::add_listener`]; with `exclusive`, the listener is registered with
    /// `EPOLLEXCLUSIVE`: when several processes wait on one shared listening socket, the
    /// kernel wakes one of them per connection instead of all of them (chapter 5).
    // ANCHOR: add_listener_with
    pub fn add_listener_with(&mut self, listener: TcpListener, exclusive: bool) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let flags = match exclusive {
            true => EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
            false => EpollFlags::EPOLLIN,
        };
        let token = self.register(listener.as_fd(), flags)?;
        let listener = Listener {
            socket: listener,
            flags,
        };
        self.sources.insert(token, Source::Listener(listener));
        Ok(())
    }
    // ANCHOR_END: add_listener_with

    /// Takes over a connection accepted by another process (the master, in chapter 6),
    /// without reading it yet: the loop serves it on its next turn. That leaves the
    /// caller time to acknowledge it first, as Node's worker acks a `newconn` before
    /// serving it, so the master hears "taken" before the client can hear the answer.
    // ANCHOR: adopt_connection
    pub fn adopt_connection(&mut self, stream: TcpStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        self.watch_connection(stream).map(|_| ())
    }
    // ANCHOR_END: adopt_connection

    /// Starts serving `stream`, which must already be non-blocking; returns its token.
    fn watch_connection(&mut self, stream: TcpStream) -> io::Result<u64> {
        let token = self.register(stream.as_fd(), EpollFlags::EPOLLIN)?;
        self.stats.accepted += 1;
        self.took_connection();
        let conn = Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            eof: false,
            closing: false,
            interest: EpollFlags::EPOLLIN,
            deadline: Instant::now() + self.idle_timeout,
            answered: 0,
            waiting: None,
        };
        self.sources.insert(token, Source::Conn(conn));
        self.open += 1;
        Ok(token)
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Makes [`Server::run`] return after the current event.
    pub fn stop(&mut self) {
        self.running = false;
    }

    /// A graceful exit (chapter 7): take no new connection, finish the open ones, then
    /// return from [`Server::run`]. Listeners are closed at once. A keep-alive connection
    /// that sits idle between requests is closed; every other one is served to the end of
    /// the requests it has sent, the last answer saying `Connection: close`. Connections
    /// handed over later (a `newconn` already on its way) are served the same way.
    // ANCHOR: drain
    pub fn drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        let tokens: Vec<u64> = self.sources.keys().copied().collect();
        for token in tokens {
            match self.sources.get(&token) {
                Some(Source::Listener(_)) => {
                    // Dropping our fd closes the socket, or, if others share it, only
                    // our hold on it; either way it leaves our epoll.
                    self.sources.remove(&token);
                }
                // Read what has arrived first: a request sent but not yet read is owed
                // an answer. Answers from now on say `Connection: close`.
                Some(Source::Conn(_)) => self.serve(token, EpollFlags::EPOLLIN),
                _ => {}
            }
        }
        // An idle kept-alive connection is closed now; after `drain_lingering` (chapter 9),
        // only once the linger is over.
        if self.linger_until.is_none() {
            self.close_idle();
        }
        let open = match self.connections() {
            1 => "1 open connection".to_string(),
            n => format!("{n} open connections"),
        };
        log!("draining: no new connections; finishing {open}");
        self.stop_if_drained();
    }
    // ANCHOR_END: drain

    /// [`Server::drain`] for a worker whose service goes on without it (chapter 9's
    /// reload): an idle kept-alive connection is not closed at once, but gets `linger` to
    /// send one more request, answered with `Connection: close`. Closing it at once races
    /// with the client's next request, which may already be on its way, and which then
    /// fails without an answer; a client that is using its connection sends that request
    /// within milliseconds. A connection still idle after `linger` is closed.
    // ANCHOR: drain_lingering
    pub fn drain_lingering(&mut self, linger: Duration) {
        if !self.draining {
            self.linger_until = Some(Instant::now() + linger);
        }
        self.drain();
    }
    // ANCHOR_END: drain_lingering

    /// Closes every kept-alive connection that sits idle between two requests.
    fn close_idle(&mut self) {
        let idle: Vec<u64> = self
            .sources
            .iter()
            .filter_map(|(token, source)| match source {
                Source::Conn(conn) if conn.is_idle() => Some(*token),
                _ => None,
            })
            .collect();
        for token in idle {
            self.close(token);
        }
    }

    /// Whether [`Server::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.open
    }

    fn stop_if_drained(&mut self) {
        if self.draining && self.connections() == 0 {
            self.stop();
        }
    }

    fn register(&mut self, fd: std::os::fd::BorrowedFd<'_>, flags: EpollFlags) -> io::Result<u64> {
        let token = self.next_token;
        self.next_token += 1;
        self.epoll.add(fd, EpollEvent::new(flags, token))?;
        Ok(token)
    }

    /// Runs the event loop until [`Server::stop`] is called (from chapter 2 on, also when the
    /// master's channel closes).
    // ANCHOR: run
    pub fn run(mut self) -> io::Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        // Stalled connections are looked for a few times per timeout, not on every event.
        let sweep_every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
        let mut next_sweep = Instant::now() + sweep_every;
        while self.running {
            // Sweep only while there is something to sweep: an idle worker with no timer
            // sleeps in epoll_wait until a connection or a message comes.
            let paused = self.out_of_fds.as_ref().is_some_and(|s| s.paused);
            let sweep = (self.open > 0 || paused).then_some(next_sweep);
            let next_timer = self.timers.iter().map(|t| t.next).min();
            let timeout = match next_timer.into_iter().chain(sweep).min() {
                Some(wake) => {
                    let wait = wake.saturating_duration_since(Instant::now());
                    EpollTimeout::from(wait.as_millis().min(1000) as u16 + 1)
                }
                None => EpollTimeout::NONE,
            };
            let ready = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            for event in &events[..ready] {
                self.ready(event.data(), event.events());
                if !self.running {
                    break;
                }
            }
            if Instant::now() >= next_sweep {
                self.close_stalled_connections();
                self.retry_when_out_of_fds();
                next_sweep = Instant::now() + sweep_every;
            }
            self.run_timers();
        }
        Ok(())
    }
    // ANCHOR_END: run

    fn run_timers(&mut self) {
        let now = Instant::now();
        for i in 0..self.timers.len() {
            if self.timers[i].next > now {
                continue;
            }
            self.timers[i].next = now + self.timers[i].every;
            // Taken out while it runs, so it can borrow the server.
            if let Some(mut callback) = self.timers[i].callback.take() {
                callback(self);
                self.timers[i].callback = Some(callback);
            }
        }
    }

    fn readable(&mut self, token: u64) {
        let Some(Source::Watched(watched)) = self.sources.get_mut(&token) else {
            return;
        };
        // Taken out while it runs, so it can borrow the server.
        let Some(mut on_readable) = watched.on_readable.take() else {
            return;
        };
        on_readable(self);
        // Put back, unless it stopped watching its fd meanwhile.
        if let Some(Source::Watched(watched)) = self.sources.get_mut(&token) {
            watched.on_readable = Some(on_readable);
        }
    }

    fn ready(&mut self, token: u64, flags: EpollFlags) {
        match self.sources.get(&token) {
            Some(Source::Listener(_)) => self.accept(token),
            Some(Source::Conn(_)) => self.serve(token, flags),
            Some(Source::Watched(_)) => self.readable(token),
            None => {}
        }
    }

    // ANCHOR: accept
    fn accept(&mut self, token: u64) {
        let mut first = true;
        loop {
            let Some(Source::Listener(listener)) = self.sources.get(&token) else {
                return;
            };
            // accept4 makes the new socket non-blocking and close-on-exec in the same call.
            let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
            match accept4(listener.socket.as_raw_fd(), flags) {
                Ok(fd) => {
                    // SAFETY: accept4 just returned this fd; nothing else owns it.
                    let stream = unsafe { TcpStream::from_raw_fd(fd) };
                    match self.watch_connection(stream) {
                        // The request is usually there already: serve it now rather
                        // than after one more trip through epoll_wait.
                        Ok(token) => self.serve(token, EpollFlags::EPOLLIN),
                        Err(e) => self.short_of_fds(&format!("cannot watch a connection: {e}")),
                    }
                }
                // Nothing (more) to accept. If we found nothing at all, another process
                // sharing this listening socket was woken too and took the connection.
                Err(Errno::EAGAIN) => {
                    if first {
                        self.stats.lost_races += 1;
                    }
                    return;
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                // Out of fds (or kernel memory). The connection stays queued and the
                // listener stays readable, so trying again now would spin: stop
                // watching the listener until one of our connections closes.
                Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    self.short_of_fds(&format!("accept: {e}"));
                    return;
                }
                Err(e) => {
                    log!("accept failed: {e}");
                    return;
                }
            }
            first = false;
        }
    }
    // ANCHOR_END: accept

    /// The worker cannot take another connection for want of fds: stop watching the
    /// listeners until a connection closes (or, if none does, a second passes). Logs once
    /// per episode. Chapter 6's worker calls it when a connection from its master arrives
    /// without its fd.
    pub fn short_of_fds(&mut self, why: &str) {
        let now = Instant::now();
        if self.out_of_fds.is_none() {
            log!("out of fds ({why}); no new connections until one closes");
        }
        let since = self.out_of_fds.as_ref().map_or(now, |o| o.since);
        self.out_of_fds = Some(OutOfFds {
            since,
            paused: true,
            retry: now + RETRY_WHEN_OUT_OF_FDS,
        });
        let listeners: Vec<u64> = self
            .sources
            .iter()
            .filter(|(_, s)| matches!(s, Source::Listener(_)))
            .map(|(token, _)| *token)
            .collect();
        for token in listeners {
            if let Some(Source::Listener(l)) = self.sources.get(&token) {
                // EPOLLEXCLUSIVE cannot be changed with EPOLL_CTL_MOD: take the listener
                // off epoll altogether, and add it again later.
                let _ = self.epoll.delete(l.socket.as_fd());
            }
        }
    }

    /// An fd may have freed: watch the listeners again and let the chapter know.
    fn fds_freed(&mut self) {
        match &mut self.out_of_fds {
            Some(state) if state.paused => state.paused = false,
            _ => return,
        }
        for (token, source) in &self.sources {
            if let Source::Listener(l) = source {
                let event = EpollEvent::new(l.flags, *token);
                if let Err(e) = self.epoll.add(l.socket.as_fd(), event) {
                    log!("cannot watch a listener again: {e}");
                }
            }
        }
        if let Some(mut callback) = self.on_fds_freed.take() {
            callback(self);
            self.on_fds_freed = Some(callback);
        }
    }

    /// A connection was taken: if the worker was short of fds, the episode is over.
    fn took_connection(&mut self) {
        if let Some(state) = self.out_of_fds.take() {
            log!(
                "fds available again after {:.1} s; accepting again",
                state.since.elapsed().as_secs_f64()
            );
        }
    }

    fn retry_when_out_of_fds(&mut self) {
        if matches!(&self.out_of_fds, Some(s) if s.paused && Instant::now() >= s.retry) {
            self.fds_freed();
        }
    }

    /// Moves a connection forward as far as it can go now: read what we have room for,
    /// answer every whole request, write what the client will take. Then tell epoll what
    /// to wait for next, or close the connection if it is over.
    fn serve(&mut self, token: u64, flags: EpollFlags) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(&token) else {
            return;
        };
        let mut broken = false;
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            && conn.wants_input()
        {
            broken = conn.receive().is_err();
        }
        // Waiting for its answer with nothing more to read, the connection is watched for
        // nothing, yet epoll reports a hang-up or an error for as long as it lasts: the
        // client is gone, and waiting on would wake the loop again and again.
        if conn.waiting.is_some()
            && !conn.wants_input()
            && flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
        {
            broken = true;
        }
        let mut crash = None;
        while !broken {
            let buffered = conn.input.len();
            // While the answers waiting reach the limit, `answer` leaves every request
            // it has read for later.
            let held_back = conn.output.len() >= OUTPUT_LIMIT;
            crash = crash.or(answer(
                conn,
                token,
                &mut self.handler,
                self.worker,
                &mut self.stats,
                self.idle_timeout,
                self.draining,
            ));
            broken = conn.send(self.idle_timeout).is_err();
            // Everything went out: requests already read can be answered now, and nothing
            // else will prompt it, since epoll never wakes us for bytes we have already
            // read. A loop that stopped here whenever this pass answered nothing would
            // leave a pass held back by the limit unanswered for good, its client waiting.
            let answered = conn.input.len() != buffered;
            if !conn.output.is_empty() || !(answered || held_back) {
                break;
            }
        }
        if broken || conn.is_done() {
            self.close(token);
        } else {
            let want = conn.interest_now();
            if want != conn.interest {
                conn.interest = want;
                let mut event = EpollEvent::new(want, token);
                if self.epoll.modify(conn.stream.as_fd(), &mut event).is_err() {
                    self.close(token);
                }
            }
        }
        if let Some(panic) = crash {
            match self.on_crash.take() {
                Some(mut on_crash) => {
                    on_crash(self);
                    self.on_crash = Some(on_crash);
                }
                None => std::panic::resume_unwind(panic),
            }
        }
    }

    fn close(&mut self, token: u64) {
        if let Some(Source::Conn(conn)) = self.sources.remove(&token) {
            self.open -= 1;
            // Closing the fd also takes it off epoll.
            let _ = conn.stream.shutdown(Shutdown::Both);
            drop(conn);
            self.fds_freed();
            self.stop_if_drained();
        }
    }

    /// Closes connections that made no progress within the idle timeout: no whole request
    /// arrived and no byte of an answer went out. A silent client, a slow one, or one that
    /// never reads cannot hold a worker's memory and fds forever. Once the linger of
    /// [`Server::drain_lingering`] is over, idle connections are closed too.
    fn close_stalled_connections(&mut self) {
        let now = Instant::now();
        let stalled: Vec<u64> = self
            .sources
            .iter()
            .filter_map(|(token, source)| match source {
                Source::Conn(conn) if conn.deadline <= now => Some(*token),
                _ => None,
            })
            .collect();
        for token in stalled {
            self.close(token);
        }
        if self.linger_until.is_some_and(|until| until <= now) {
            self.close_idle();
        }
    }
}

/// Answers every whole request that has arrived (clients may pipeline several), as long
/// as the unsent answers stay under [`OUTPUT_LIMIT`] and no answer is left for later
/// (the connection `token`'s requests are answered in order). While the worker drains, the
/// answer says `Connection: close`. If the handler panics, the client gets a 500 and the
/// panic is returned, for the loop to report once the connection is in order.
// ANCHOR: answer
fn answer(
    conn: &mut Conn,
    token: u64,
    handler: &mut Option<Handler>,
    worker: u32,
    stats: &mut Stats,
    idle_timeout: Duration,
    draining: bool,
) -> Option<Box<dyn Any + Send>> {
    while !conn.closing && conn.waiting.is_none() && conn.output.len() < OUTPUT_LIMIT {
        match http::parse(&conn.input) {
            Parsed::Partial => {
                // Nothing more will come: what is left can never be a whole request.
                conn.closing = conn.eof;
                break;
            }
            Parsed::Request { request, used } => {
                conn.input.drain(..used);
                let later = Later {
                    token,
                    request: conn.answered,
                };
                // The handler runs right here, on the loop's only thread: while it
                // runs, nothing else in this worker does.
                let response = match handler.as_mut() {
                    Some(handler) => catch_unwind(AssertUnwindSafe(|| handler(&request, later))),
                    None => Ok(Some(http::hello(worker))),
                };
                let keep_alive = request.keep_alive && !draining;
                conn.deadline = Instant::now() + idle_timeout;
                let response = match response {
                    Ok(Some(response)) => Ok(response),
                    // Answered later (`Server::answer_later`), and the requests after it
                    // only then.
                    Ok(None) => {
                        conn.waiting = Some(request.keep_alive);
                        break;
                    }
                    Err(panic) => Err(panic),
                };
                conn.answered += 1;
                stats.served += 1;
                match response {
                    Ok(response) => {
                        conn.output.extend(response.to_bytes(keep_alive));
                        conn.closing = !keep_alive;
                    }
                    Err(panic) => {
                        let response = Response {
                            status: 500,
                            body: "the handler panicked\n".into(),
                        };
                        conn.output.extend(response.to_bytes(false));
                        conn.closing = true;
                        return Some(panic);
                    }
                }
            }
            Parsed::Bad(why) => {
                let response = Response {
                    status: 400,
                    body: format!("bad request: {why}\n"),
                };
                conn.output.extend(response.to_bytes(false));
                conn.closing = true;
            }
        }
    }
    None
}
// ANCHOR_END: answer

impl Conn {
    /// Whether to read more now: not once the client is done or we are closing, and not
    /// while its answers pile up unsent or its input holds a whole largest request.
    fn wants_input(&self) -> bool {
        !self.eof
            && !self.closing
            && self.output.len() < OUTPUT_LIMIT
            && self.input.len() < INPUT_LIMIT
    }

    /// What epoll should watch this connection for: readable only while we want input,
    /// writable only while answers wait. (Hang-ups and errors are always reported.)
    fn interest_now(&self) -> EpollFlags {
        let mut want = EpollFlags::empty();
        if self.wants_input() {
            want |= EpollFlags::EPOLLIN;
        }
        if !self.output.is_empty() {
            want |= EpollFlags::EPOLLOUT;
        }
        want
    }

    /// Idle between requests on a kept-alive connection: it has been answered at least
    /// once, owes nothing and has nothing half-read. (A fresh connection is not idle: its
    /// first request may be on the way.)
    fn is_idle(&self) -> bool {
        self.answered > 0
            && self.waiting.is_none()
            && self.input.is_empty()
            && self.output.is_empty()
    }

    /// Over: everything owed is written and nothing more will be answered.
    fn is_done(&self) -> bool {
        self.closing && self.output.is_empty()
    }

    /// Reads what has arrived, up to [`INPUT_LIMIT`]. An error means the connection is
    /// broken.
    fn receive(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        while self.input.len() < INPUT_LIMIT {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    // A short read means the socket is drained for now: skip the read
                    // that would only say EAGAIN. Epoll tells us if more arrives.
                    if n < chunk.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes as much of the unsent answers as the client takes now. Every byte that goes
    /// out is progress, and pushes the idle deadline back. An error means the connection
    /// is broken.
    fn send(&mut self, idle_timeout: Duration) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            match self.stream.write(&self.output[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if sent > 0 {
            self.output.drain(..sent);
            self.deadline = Instant::now() + idle_timeout;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::sync::mpsc;

    /// Runs a server on a thread: returns its address and a receiver that gets `()` when
    /// `run` returns.
    fn serve_in_thread(
        build: impl FnOnce(Server) -> Server + Send + 'static,
    ) -> (SocketAddr, mpsc::Receiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let mut server = build(Server::new(1, Duration::from_secs(10)).unwrap());
            server.add_listener(listener).unwrap();
            server.run().unwrap();
            let _ = done.send(());
        });
        (addr, finished)
    }

    /// Sends one GET and returns the status line and the Connection header.
    fn get(stream: &mut TcpStream, path: &str) -> (String, String) {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (mut status, mut connection, mut length) = (String::new(), String::new(), 0);
        reader.read_line(&mut status).unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("Connection: ") {
                connection = v.trim().to_string();
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (status.trim().to_string(), connection)
    }

    fn closed(stream: &mut TcpStream) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        matches!(stream.read(&mut [0u8; 16]), Ok(0) | Err(_))
    }

    #[test]
    fn draining_closes_idle_connections_and_answers_the_busy_with_close() {
        // Drains once one request has been answered.
        let (addr, finished) = serve_in_thread(|server| {
            server.every(Duration::from_millis(10), |server| {
                if server.stats().served >= 1 {
                    server.drain();
                }
            })
        });
        // A request half sent: the worker owes it an answer.
        let mut busy = TcpStream::connect(addr).unwrap();
        busy.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
        let mut idle = TcpStream::connect(addr).unwrap();
        assert_eq!(get(&mut idle, "/").1, "keep-alive");
        assert!(closed(&mut idle), "an idle keep-alive connection is closed");
        assert!(
            TcpStream::connect(addr).is_err(),
            "the listener is closed: no new connection"
        );
        // The rest of the half-sent request gets its answer, and the connection ends.
        write!(busy, "\r\n").unwrap();
        let mut reader = BufReader::new(busy.try_clone().unwrap());
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "got {head:?}");
            head += &line;
        }
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        finished
            .recv_timeout(Duration::from_secs(5))
            .expect("run returns once the last connection is done");
    }

    #[test]
    fn a_lingering_drain_answers_one_more_request_on_an_idle_connection() {
        let linger = Duration::from_millis(300);
        // Drains, lingering, once two requests have been answered.
        let (addr, finished) = serve_in_thread(move |server| {
            server.every(Duration::from_millis(10), move |server| {
                if server.stats().served >= 2 {
                    server.drain_lingering(linger);
                }
            })
        });
        let mut using = TcpStream::connect(addr).unwrap();
        assert_eq!(get(&mut using, "/").1, "keep-alive");
        let mut idle = TcpStream::connect(addr).unwrap();
        assert_eq!(get(&mut idle, "/").1, "keep-alive");
        // Drained once the listener is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < deadline, "the server never drained");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A client still using its connection gets its next answer, the last one.
        let (status, connection) = get(&mut using, "/");
        assert_eq!(
            (status.as_str(), connection.as_str()),
            ("HTTP/1.1 200 OK", "close")
        );
        assert!(closed(&mut using));
        // One that stays idle is closed after the linger, and the server is done.
        let waited = Instant::now();
        assert!(closed(&mut idle), "the idle connection is closed");
        assert!(waited.elapsed() < Duration::from_secs(4));
        finished
            .recv_timeout(Duration::from_secs(5))
            .expect("run returns once the last connection is closed");
    }

    /// Reads one response and returns its body.
    fn body(reader: &mut BufReader<TcpStream>) -> String {
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }

    #[test]
    fn an_answer_left_for_later_holds_its_connection_only_and_keeps_the_order() {
        use std::cell::RefCell;
        use std::rc::Rc;
        let (addr, _finished) = serve_in_thread(|server| {
            let later: Rc<RefCell<Option<Later>>> = Rc::default();
            let kept = later.clone();
            server
                .handler_later(move |request, ticket| match request.path.as_str() {
                    "/later" => {
                        *kept.borrow_mut() = Some(ticket);
                        None
                    }
                    _ => Some(Response::ok("now")),
                })
                // What it waited for arrives once another client has been served.
                .every(Duration::from_millis(10), move |server| {
                    let ticket = *later.borrow();
                    if let Some(ticket) = ticket.filter(|_| server.stats().served >= 1) {
                        later.borrow_mut().take();
                        assert!(server.answer_later(ticket, Response::ok("later")));
                        assert!(!server.answer_later(ticket, Response::ok("twice")));
                    }
                })
        });
        // Two requests at once: the second waits behind the first.
        let mut waiting = TcpStream::connect(addr).unwrap();
        write!(
            waiting,
            "GET /later HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        .unwrap();
        let mut other = TcpStream::connect(addr).unwrap();
        assert_eq!(
            get(&mut other, "/").0,
            "HTTP/1.1 200 OK",
            "the loop is not held"
        );
        let mut reader = BufReader::new(waiting);
        assert_eq!(body(&mut reader), "later");
        assert_eq!(body(&mut reader), "now");
    }

    #[test]
    fn a_panicking_handler_gets_a_500_and_the_crash_hook_runs() {
        let (addr, finished) = serve_in_thread(|server| {
            server
                .handler(|request| match request.path.as_str() {
                    "/crash" => panic!("crash on purpose"),
                    _ => Response::ok("hi\n"),
                })
                .on_crash(|server| server.drain())
        });
        let mut client = TcpStream::connect(addr).unwrap();
        assert_eq!(get(&mut client, "/").0, "HTTP/1.1 200 OK");
        let mut crasher = TcpStream::connect(addr).unwrap();
        let (status, connection) = get(&mut crasher, "/crash");
        assert_eq!(status, "HTTP/1.1 500 Internal Server Error");
        assert_eq!(connection, "close");
        // The hook drained the server: the idle client is let go and run returns.
        assert!(closed(&mut client));
        finished
            .recv_timeout(Duration::from_secs(5))
            .expect("run returns once drained");
    }
}
