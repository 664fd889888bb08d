//! The worker's HTTP server: one thread, one event loop, many connections.
//!
//! Explained in chapter 1 (the event loop) and chapter 2 (the IPC channel in the same loop).
//!
//! A Node process runs all its JavaScript on one thread: libuv waits on epoll for any
//! socket that is ready, runs the callback for it, and goes back to waiting. That is what
//! [`Server::run`] does. Every socket is non-blocking, so a slow client never holds up
//! the others. The flip side is Node's too: a handler that never returns stalls the whole
//! worker, its IPC channel included, and chapter 8 relies on exactly that.
//!
//! The loop watches three kinds of things: listening sockets (accept new connections),
//! connections (read requests, write responses), and the IPC channel (messages from the
//! master, handed to the chapter's [`Server::on_message`] callback).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, SockFlag};

use crate::channel::{Channel, ChannelError, Message};
use crate::http::{self, Parsed, Request, Response, MAX_BODY, MAX_HEAD};
use crate::log;

type Handler = Box<dyn FnMut(&Request) -> Response>;
type OnMessage = Box<dyn FnMut(&mut Server, Message)>;
type OnTimer = Box<dyn FnMut(&mut Server)>;

struct Timer {
    every: Duration,
    next: Instant,
    callback: Option<OnTimer>,
}

const CHANNEL: u64 = 0;

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
    Listener(TcpListener),
    Conn(Conn),
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once `output` is written.
    closing: bool,
    /// Whether epoll is also watching for writability.
    writing: bool,
    /// Dropped if no whole request arrives by then.
    deadline: Instant,
}

/// A worker's event loop. Build it, add listeners and (optionally) the IPC channel, run.
pub struct Server {
    epoll: Epoll,
    sources: HashMap<u64, Source>,
    next_token: u64,
    worker: u32,
    idle_timeout: Duration,
    handler: Option<Handler>,
    channel: Option<Channel>,
    on_message: Option<OnMessage>,
    timers: Vec<Timer>,
    stats: Stats,
    running: bool,
}

impl Server {
    /// A server for worker `worker` that drops connections silent for `idle_timeout`.
    pub fn new(worker: u32, idle_timeout: Duration) -> io::Result<Server> {
        Ok(Server {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            sources: HashMap::new(),
            next_token: CHANNEL + 1,
            worker,
            idle_timeout,
            handler: None,
            channel: None,
            on_message: None,
            timers: Vec::new(),
            stats: Stats::default(),
            running: true,
        })
    }

    /// Replaces the default handler ([`http::hello`]) with one of the chapter's.
    pub fn handler(mut self, handler: impl FnMut(&Request) -> Response + 'static) -> Server {
        self.handler = Some(Box::new(handler));
        self
    }

    /// Watches the IPC channel: each message goes to `on_message`, which gets the server
    /// itself to act on it (reply, add a listener or a connection, stop). When the channel
    /// closes, the master is gone, and [`Server::run`] returns.
    // ANCHOR: watch_channel
    pub fn on_message(
        mut self,
        channel: Channel,
        on_message: impl FnMut(&mut Server, Message) + 'static,
    ) -> io::Result<Server> {
        let event = EpollEvent::new(EpollFlags::EPOLLIN, CHANNEL);
        self.epoll.add(channel.as_fd(), event)?;
        self.channel = Some(channel);
        self.on_message = Some(Box::new(on_message));
        Ok(self)
    }
    // ANCHOR_END: watch_channel

    /// Calls `callback` every `every`, on the loop's thread, between events.
    pub fn every(mut self, every: Duration, callback: impl FnMut(&mut Server) + 'static) -> Server {
        self.timers.push(Timer {
            every,
            next: Instant::now() + every,
            callback: Some(Box::new(callback)),
        });
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
        self.sources.insert(token, Source::Listener(listener));
        Ok(())
    }
    // ANCHOR_END: add_listener_with

    /// Serves a connection this worker has just accepted.
    pub fn add_connection(&mut self, stream: TcpStream) -> io::Result<()> {
        let token = self.adopt(stream, false)?;
        // The request is usually there already: try it now rather than after one more
        // trip through epoll_wait.
        self.ready(token, EpollFlags::EPOLLIN);
        Ok(())
    }

    /// Takes over a connection accepted by another process (the master, in chapter 6),
    /// without reading it yet: the loop serves it on its next turn. That leaves the
    /// caller time to acknowledge it first, as Node's worker acks a `newconn` before
    /// serving it, so the master hears "taken" before the client can hear the answer.
    // ANCHOR: adopt_connection
    pub fn adopt_connection(&mut self, stream: TcpStream) -> io::Result<()> {
        self.adopt(stream, false).map(|_| ())
    }
    // ANCHOR_END: adopt_connection

    fn adopt(&mut self, stream: TcpStream, nonblocking: bool) -> io::Result<u64> {
        if !nonblocking {
            stream.set_nonblocking(true)?;
        }
        let token = self.register(stream.as_fd(), EpollFlags::EPOLLIN)?;
        self.stats.accepted += 1;
        let conn = Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            closing: false,
            writing: false,
            deadline: Instant::now() + self.idle_timeout,
        };
        self.sources.insert(token, Source::Conn(conn));
        Ok(token)
    }

    /// Sends a message to the master. Errors are logged: a worker whose master is gone
    /// will see the channel close and stop.
    pub fn send(&self, text: &str) {
        match &self.channel {
            Some(channel) => {
                if let Err(e) = channel.send(text) {
                    log!("could not send '{text}' to the master: {e}");
                }
            }
            None => log!("no IPC channel to send '{text}' on"),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Makes [`Server::run`] return after the current event.
    pub fn stop(&mut self) {
        self.running = false;
    }

    fn register(&mut self, fd: std::os::fd::BorrowedFd<'_>, flags: EpollFlags) -> io::Result<u64> {
        let token = self.next_token;
        self.next_token += 1;
        self.epoll.add(fd, EpollEvent::new(flags, token))?;
        Ok(token)
    }

    /// Runs the event loop until the channel closes or [`Server::stop`] is called.
    // ANCHOR: run
    pub fn run(mut self) -> io::Result<()> {
        let mut events = vec![EpollEvent::empty(); 256];
        // Silent connections are looked for a few times per timeout, not on every event.
        let sweep_every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
        let mut next_sweep = Instant::now() + sweep_every;
        while self.running {
            let next_timer = self.timers.iter().map(|t| t.next).min();
            let wake = next_timer.map_or(next_sweep, |t| t.min(next_sweep));
            let wait = wake.saturating_duration_since(Instant::now());
            let timeout = EpollTimeout::from(wait.as_millis().min(1000) as u16 + 1);
            let ready = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            for event in &events[..ready] {
                match event.data() {
                    CHANNEL => self.read_channel(),
                    token => self.ready(token, event.events()),
                }
                if !self.running {
                    break;
                }
            }
            if Instant::now() >= next_sweep {
                self.drop_silent_connections();
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

    // ANCHOR: read_channel
    fn read_channel(&mut self) {
        loop {
            let Some(channel) = &self.channel else { return };
            match channel.try_recv() {
                Ok(Some(message)) => {
                    // Take the callback out while it runs, so it can borrow the server.
                    if let Some(mut on_message) = self.on_message.take() {
                        on_message(self, message);
                        self.on_message = Some(on_message);
                    }
                }
                Ok(None) => return,
                Err(ChannelError::Closed) => {
                    log!("IPC channel closed: the master is gone, so this worker exits");
                    self.stop();
                    return;
                }
                Err(e @ (ChannelError::Malformed(_) | ChannelError::TooLarge(_))) => {
                    log!("{e}");
                }
                Err(e) => {
                    log!("{e}; this worker exits");
                    self.stop();
                    return;
                }
            }
        }
    }
    // ANCHOR_END: read_channel

    fn ready(&mut self, token: u64, flags: EpollFlags) {
        match self.sources.get(&token) {
            Some(Source::Listener(_)) => self.accept(token),
            Some(Source::Conn(_)) => {
                if flags
                    .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
                {
                    self.read(token);
                }
                self.flush(token);
            }
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
            match accept4(listener.as_raw_fd(), flags) {
                Ok(fd) => {
                    // SAFETY: accept4 just returned this fd; nothing else owns it.
                    let stream = unsafe { TcpStream::from_raw_fd(fd) };
                    match self.adopt(stream, true) {
                        Ok(token) => self.ready(token, EpollFlags::EPOLLIN),
                        Err(e) => log!("could not watch a new connection: {e}"),
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
                Err(e) => {
                    // EMFILE and friends: say so, and let the next wakeup try again.
                    log!("accept failed: {e}");
                    return;
                }
            }
            first = false;
        }
    }
    // ANCHOR_END: accept

    fn read(&mut self, token: u64) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(&token) else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            // Never buffer more than one largest request: past that, parsing says 400.
            if conn.input.len() > MAX_HEAD + MAX_BODY {
                break;
            }
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    conn.input.extend_from_slice(&chunk[..n]);
                    // A short read means the socket is drained for now: skip the read
                    // that would only say EAGAIN. Epoll tells us if more arrives.
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(token);
                    return;
                }
            }
        }
        self.answer(token);
        if let Some(Source::Conn(conn)) = self.sources.get_mut(&token) {
            if eof {
                // The client is done sending; finish writing what we owe, then close.
                conn.closing = true;
                conn.input.clear();
            }
        }
    }

    /// Answers every whole request that has arrived (clients may pipeline several).
    // ANCHOR: answer
    fn answer(&mut self, token: u64) {
        let mut handler = self.handler.take();
        let worker = self.worker;
        let Some(Source::Conn(conn)) = self.sources.get_mut(&token) else {
            return;
        };
        while !conn.closing {
            match http::parse(&conn.input) {
                Parsed::Partial => break,
                Parsed::Request { request, used } => {
                    conn.input.drain(..used);
                    // The handler runs right here, on the loop's only thread: while it
                    // runs, nothing else in this worker does.
                    let response = match handler.as_mut() {
                        Some(handler) => handler(&request),
                        None => http::hello(worker),
                    };
                    conn.output.extend(response.to_bytes(request.keep_alive));
                    conn.closing = !request.keep_alive;
                    conn.deadline = Instant::now() + self.idle_timeout;
                    self.stats.served += 1;
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
        self.handler = handler;
    }
    // ANCHOR_END: answer

    fn flush(&mut self, token: u64) {
        let Some(Source::Conn(conn)) = self.sources.get_mut(&token) else {
            return;
        };
        while !conn.output.is_empty() {
            match conn.stream.write(&conn.output) {
                Ok(0) => break,
                Ok(n) => {
                    conn.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(token);
                    return;
                }
            }
        }
        if conn.output.is_empty() && conn.closing {
            self.close(token);
            return;
        }
        // Watch for writability only while there is something left to write.
        let want = !conn.output.is_empty();
        if want != conn.writing {
            conn.writing = want;
            let flags = match want {
                true => EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT,
                false => EpollFlags::EPOLLIN,
            };
            let mut event = EpollEvent::new(flags, token);
            if self.epoll.modify(conn.stream.as_fd(), &mut event).is_err() {
                self.close(token);
            }
        }
    }

    fn close(&mut self, token: u64) {
        if let Some(Source::Conn(conn)) = self.sources.remove(&token) {
            let _ = self.epoll.delete(conn.stream.as_fd());
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }

    /// Drops connections that have not sent a whole request within the idle timeout, so
    /// a silent client cannot hold a worker's memory and fds forever.
    fn drop_silent_connections(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .sources
            .iter()
            .filter_map(|(token, source)| match source {
                Source::Conn(conn) if conn.deadline <= now && conn.output.is_empty() => {
                    Some(*token)
                }
                _ => None,
            })
            .collect();
        for token in expired {
            self.close(token);
        }
    }
}
