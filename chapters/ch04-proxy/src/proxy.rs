//! The master's proxy loop: accept on the public port, open a second connection to a
//! worker, and copy bytes both ways until both sides are done.
//!
//! One thread and epoll, like the workers' loop in `shared::server`. For every client the
//! master holds two sockets, the client's and the one to the worker: that is the cost
//! chapter 4 measures.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, SockFlag};
use shared::log;
use socket2::{Domain, Socket, Type};

/// The workers' private addresses, kept up to date by the master's main loop.
pub type Upstreams = Arc<Mutex<Vec<SocketAddr>>>;

const LISTENER: u64 = 0;
const NO_WORKER: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 20\r\nConnection: close\r\n\r\nno worker available\n";
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n";

/// One proxied connection: the client's socket and the worker's, with what each side has
/// sent that the other has not taken yet.
struct Pair {
    sides: [TcpStream; 2],
    /// `pending[i]`: bytes read from side `i`, still to be written to the other side.
    pending: [Vec<u8>; 2],
    /// `done[i]`: side `i` has sent end-of-file.
    done: [bool; 2],
    /// The epoll interest each side is registered with now.
    interest: [EpollFlags; 2],
}

/// Runs the proxy until an unrecoverable epoll error.
// ANCHOR: run
pub fn run(listener: TcpListener, upstreams: Upstreams, max_pairs: usize) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        listener.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
    )?;
    let mut pairs: HashMap<u64, Pair> = HashMap::new();
    let mut next_pair = 1u64;
    let mut turn = 0usize;
    let mut paused = false;
    // Set while out of fds, so the shortage is logged once, not once per attempt.
    let mut short = false;
    let mut events = vec![EpollEvent::empty(); 256];
    loop {
        // Paused, a closing pair is what frees fds and resumes accepting. With no pair
        // open (the whole machine is short of fds, say), nothing would: look again in a
        // second.
        let timeout = match paused && pairs.is_empty() {
            true => EpollTimeout::from(1000u16),
            false => EpollTimeout::NONE,
        };
        let ready = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if ready == 0 && paused {
            resume(&epoll, &listener)?;
            paused = false;
        }
        for event in &events[..ready] {
            // Tokens: 0 is the listener; pair p uses 2p (client side) and 2p+1 (worker side).
            let token = event.data();
            if token == LISTENER {
                loop {
                    let shortage = match accept_nonblocking(&listener) {
                        Ok(mut client) => {
                            if refuse_if_full(&mut client, pairs.len(), max_pairs) {
                                continue;
                            }
                            turn += 1;
                            match open_pair(&epoll, client, &upstreams, turn, next_pair) {
                                Ok(pair) => {
                                    pairs.insert(next_pair, pair);
                                    next_pair += 1;
                                    continue;
                                }
                                // The client has its 503. Short of fds for its second
                                // socket, the next client would fare no better: pause.
                                Err(e) if out_of_fds(&e) => e,
                                Err(e) => {
                                    log!("cannot proxy a connection: {e}");
                                    continue;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // The queue is empty: whatever shortage there was is over.
                            if std::mem::take(&mut short) {
                                log!("fds available again; accepting again");
                            }
                            break;
                        }
                        Err(e) if out_of_fds(&e) => e,
                        Err(_) => continue, // e.g. the client gave up before we accepted
                    };
                    // Out of fds. The listener stays readable, so epoll would wake us for
                    // it forever: stop watching it until a pair closes and frees fds. One
                    // line per shortage, not one per attempt.
                    if !std::mem::replace(&mut short, true) {
                        log!(
                            "out of fds ({shortage}); no new connections until one closes \
                             (raise ulimit -n, or lower --max-connections)"
                        );
                    }
                    epoll.modify(
                        listener.as_fd(),
                        &mut EpollEvent::new(EpollFlags::empty(), LISTENER),
                    )?;
                    paused = true;
                    break;
                }
                continue;
            }
            let (id, side) = (token / 2, (token % 2) as usize);
            let Some(pair) = pairs.get_mut(&id) else {
                continue;
            };
            let finished = match pair.on_event(side, event.events()) {
                Ok(()) => pair.finished(),
                Err(_) => true,
            };
            if finished || pair.update_interest(&epoll, id).is_err() {
                // Dropping the pair closes both sockets, and closing the only fd of a
                // socket also takes it off epoll's list: no EPOLL_CTL_DEL needed.
                pairs.remove(&id);
                if paused {
                    // Two fds were just freed: accept again.
                    resume(&epoll, &listener)?;
                    paused = false;
                }
            }
        }
    }
}
// ANCHOR_END: run

/// Watches the listener again after a pause for want of fds.
fn resume(epoll: &Epoll, listener: &TcpListener) -> io::Result<()> {
    epoll.modify(
        listener.as_fd(),
        &mut EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
    )?;
    Ok(())
}

/// Every client costs two fds; with `open` clients proxied already and a budget of `max`,
/// refuses this one (a 503, then closed when the caller drops it) rather than run the
/// whole process out of descriptors. Returns whether it refused.
// ANCHOR: limit
fn refuse_if_full(client: &mut TcpStream, open: usize, max: usize) -> bool {
    // ANCHOR: solution_ch04_limit
    if open >= max {
        let _ = client.write_all(BUSY);
        return true;
    }
    false
    // ANCHOR_END: solution_ch04_limit
}
// ANCHOR_END: limit

/// EMFILE or ENFILE: this process, or the whole system, has no fd left to give.
fn out_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE)
    )
}

/// `accept`, with the new socket non-blocking and close-on-exec from the start (accept4):
/// one system call instead of two per client.
fn accept_nonblocking(listener: &TcpListener) -> io::Result<TcpStream> {
    let fd = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: accept4 just returned this fd; nothing else owns it.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

// ANCHOR: connect_nonblocking
/// Connects to a worker with a non-blocking socket, waiting at most a second: on loopback
/// the handshake is done almost at once, but a worker whose backlog is full must not
/// stall every other client of the proxy for long.
fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => {
            let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
            if poll(&mut fds, PollTimeout::from(1000u16))? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("worker {addr} did not accept within a second"),
                ));
            }
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}
// ANCHOR_END: connect_nonblocking

/// Connects a new client to the next worker in turn.
// ANCHOR: open_pair
fn open_pair(
    epoll: &Epoll,
    mut client: TcpStream,
    upstreams: &Upstreams,
    turn: usize,
    id: u64,
) -> io::Result<Pair> {
    let addrs = upstreams.lock().map(|a| a.clone()).unwrap_or_default();
    // Try each worker once, starting with this turn's.
    let mut failure = io::Error::other("no worker is listening");
    let mut upstream = None;
    for i in 0..addrs.len() {
        match connect_nonblocking(addrs[(turn + i) % addrs.len()]) {
            Ok(stream) => {
                upstream = Some(stream);
                break;
            }
            Err(e) => failure = e,
        }
    }
    let Some(upstream) = upstream else {
        // Out of fds is not the workers' fault: say which it is, to the client and the log.
        if out_of_fds(&failure) {
            let _ = client.write_all(BUSY);
            return Err(failure);
        }
        let _ = client.write_all(NO_WORKER);
        return Err(io::Error::new(
            failure.kind(),
            format!("no worker took it ({failure}); the client got a 503"),
        ));
    };
    // Both sockets are non-blocking from birth. No Nagle delays: a proxy passes on each
    // chunk as it comes, and a small one held back waiting for an ACK stalls the exchange.
    for side in [&client, &upstream] {
        side.set_nodelay(true)?;
    }
    let interest = [EpollFlags::EPOLLIN, EpollFlags::EPOLLIN];
    epoll.add(client.as_fd(), EpollEvent::new(interest[0], 2 * id))?;
    epoll.add(upstream.as_fd(), EpollEvent::new(interest[1], 2 * id + 1))?;
    Ok(Pair {
        sides: [client, upstream],
        pending: [Vec::new(), Vec::new()],
        done: [false, false],
        interest,
    })
}
// ANCHOR_END: open_pair

impl Pair {
    /// Side `from` is readable or writable: move bytes.
    // ANCHOR: copy
    fn on_event(&mut self, from: usize, flags: EpollFlags) -> io::Result<()> {
        // ANCHOR: solution_ch04_copy
        if flags.intersects(EpollFlags::EPOLLERR) {
            return Err(io::Error::other("socket error"));
        }
        let to = 1 - from;
        // Writable: push out what the other side sent us earlier.
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(to)?;
        }
        // Readable (or hung up): read only if the last chunk has gone out, so a fast
        // sender cannot make the master buffer without limit.
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP)
            && self.pending[from].is_empty()
            && !self.done[from]
        {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match self.sides[from].read(&mut chunk) {
                    Ok(0) => {
                        // End of file from one side: pass it on as a half-close.
                        self.done[from] = true;
                        if self.pending[from].is_empty() {
                            let _ = self.sides[to].shutdown(Shutdown::Write);
                        }
                        break;
                    }
                    Ok(n) => {
                        self.pending[from].extend_from_slice(&chunk[..n]);
                        self.flush(from)?;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
        // ANCHOR_END: solution_ch04_copy
    }
    // ANCHOR_END: copy

    /// Writes what side `from` sent to the other side, as much as it takes now.
    // ANCHOR: flush
    fn flush(&mut self, from: usize) -> io::Result<()> {
        let to = 1 - from;
        // ANCHOR: solution_ch04_flush
        while !self.pending[from].is_empty() {
            match self.sides[to].write(&self.pending[from]) {
                Ok(n) => {
                    self.pending[from].drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.done[from] {
            let _ = self.sides[to].shutdown(Shutdown::Write);
        }
        Ok(())
        // ANCHOR_END: solution_ch04_flush
    }
    // ANCHOR_END: flush

    /// The exchange is over once the worker has closed and its last bytes are delivered.
    /// An HTTP server closes only when it is done with the connection (a client that
    /// closes first gets its end-of-file passed on, and then the worker closes too), and
    /// a client that never closes must not hold the master's two fds forever.
    fn finished(&self) -> bool {
        self.done[1] && self.pending[1].is_empty()
    }

    /// Reads from a side only while its last chunk is delivered; writes to a side only
    /// while something is waiting for it.
    // ANCHOR: interest
    fn update_interest(&mut self, epoll: &Epoll, id: u64) -> io::Result<()> {
        for side in 0..2 {
            let mut want = EpollFlags::empty();
            if !self.done[side] && self.pending[side].is_empty() {
                want |= EpollFlags::EPOLLIN;
            }
            if !self.pending[1 - side].is_empty() {
                want |= EpollFlags::EPOLLOUT;
            }
            if want != self.interest[side] {
                let mut event = EpollEvent::new(want, 2 * id + side as u64);
                epoll.modify(self.sides[side].as_fd(), &mut event)?;
                self.interest[side] = want;
            }
        }
        Ok(())
    }
    // ANCHOR_END: interest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the proxy on a thread of its own, in front of `upstreams`; returns its address.
    fn proxy_to(upstreams: Vec<SocketAddr>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let upstreams = Arc::new(Mutex::new(upstreams));
        std::thread::spawn(move || run(listener, upstreams, 100));
        addr
    }

    /// An address where nothing listens: bound, then closed again.
    fn dead_address() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn read_all(addr: SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn a_worker_that_refuses_is_skipped() {
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = proxy_to(vec![dead_address(), live.local_addr().unwrap()]);
        let serving = std::thread::spawn(move || {
            // Each turn starts with another worker, so two clients meet the dead one first
            // at least once; both must still reach the live one.
            for _ in 0..2 {
                let (mut conn, _) = live.accept().unwrap();
                conn.write_all(b"from the live worker").unwrap();
            }
        });
        for _ in 0..2 {
            assert_eq!(read_all(proxy), "from the live worker");
        }
        serving.join().unwrap();
    }

    #[test]
    fn with_no_worker_listening_a_client_gets_503() {
        let proxy = proxy_to(vec![dead_address(), dead_address()]);
        let answer = read_all(proxy);
        assert!(
            answer.starts_with("HTTP/1.1 503") && answer.ends_with("no worker available\n"),
            "{answer:?}"
        );
    }
}
