//! Opening a listening TCP socket, and saying clearly why it failed.
//!
//! Explained in chapter 1 (binding), chapter 3 (EADDRINUSE, and why `SO_REUSEADDR`
//! does not let two processes bind one port) and chapter 10 (a port kept for a group of
//! `SO_REUSEPORT` listeners).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use socket2::{Domain, Protocol, Socket, Type};

/// Node's default backlog for `server.listen()`.
pub const BACKLOG: i32 = 511;

/// A `listen` that failed: where, and the operating system's error.
#[derive(Debug)]
pub struct ListenError {
    pub addr: SocketAddr,
    pub error: io::Error,
}

impl ListenError {
    /// The errno name, as Node prints it (`EADDRINUSE`), or `E?` if there is none.
    pub fn code(&self) -> String {
        match self.error.raw_os_error() {
            Some(n) => format!("{:?}", Errno::from_raw(n)),
            None => "E?".into(),
        }
    }

    /// The raw errno (98 for EADDRINUSE on Linux).
    pub fn errno(&self) -> i32 {
        self.error.raw_os_error().unwrap_or(0)
    }

    /// What the learner can do about it.
    pub fn hint(&self) -> &'static str {
        match self.error.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EADDRINUSE) => {
                "another process holds this port; try --port 0 for a free one"
            }
            Some(Errno::EACCES) => "ports below 1024 need root; try --port 0 or a port above 1024",
            Some(Errno::EADDRNOTAVAIL) => "this machine has no such address; try --host 127.0.0.1",
            _ => "see the error above",
        }
    }
}

// ANCHOR: listen_error
impl ListenError {
    /// `listen EADDRINUSE: address already in use 127.0.0.1:8000 (errno 98)`, the shape
    /// of Node's message.
    pub fn node_message(&self) -> String {
        let text = match self.error.raw_os_error() {
            Some(n) => Errno::from_raw(n).desc().to_lowercase(),
            None => self.error.to_string(),
        };
        format!(
            "listen {}: {} {} (errno {})",
            self.code(),
            text,
            self.addr,
            self.errno()
        )
    }
}

impl fmt::Display for ListenError {
    /// Node's message, then what the learner can do about it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node_message(), self.hint())
    }
}
// ANCHOR_END: listen_error

impl std::error::Error for ListenError {}

/// Binds `host:port` and listens, the way Node's `server.listen()` does: with
/// `SO_REUSEADDR` set (so a restarted server can bind while old connections linger in
/// TIME_WAIT) and a backlog of 511. The socket is close-on-exec and blocking; the
/// caller makes it non-blocking if it wants.
// ANCHOR: listen
pub fn listen(host: IpAddr, port: u16) -> Result<TcpListener, ListenError> {
    listen_with(host, port, false)
}

/// [`listen`], and with `reuse_port` also `SO_REUSEPORT`: then several sockets, in one
/// process or many, may bind the same address, and the kernel spreads new connections
/// among them.
pub fn listen_with(host: IpAddr, port: u16, reuse_port: bool) -> Result<TcpListener, ListenError> {
    let addr = SocketAddr::new(host, port);
    let open = || -> io::Result<TcpListener> {
        // ANCHOR: solution_ch03_reuseport
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // Node sets this on every listening socket. It lets us bind while old connections
        // to the port sit in TIME_WAIT; it does NOT let two live sockets share the port.
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
        // ANCHOR_END: solution_ch03_reuseport
    };
    open().map_err(|error| ListenError { addr, error })
}
// ANCHOR_END: listen

/// A port kept for a group of `SO_REUSEPORT` listeners: a socket bound to it that never
/// listens (chapter 10). See [`reserve`].
#[derive(Debug)]
pub struct Reservation {
    socket: Socket,
}

impl Reservation {
    /// The address reserved, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("the reserved socket has no IP address"))
    }
}

impl AsFd for Reservation {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Binds `host:port` with `SO_REUSEPORT` and does not listen: the port is ours, and every
/// [`listen_with`]`(host, port, true)` of the same user may still bind it beside us.
///
/// A socket that is bound but not listening has no accept queue, and the kernel never
/// picks it for a connection; it only holds the port. A master that keeps one can start
/// workers that listen on the port with `SO_REUSEPORT` at any time, even after every
/// worker has died, and no other program can take the port in between (one that does not
/// set `SO_REUSEPORT`, or runs as another user, gets EADDRINUSE). With port 0 the kernel
/// picks a free port, read back with [`Reservation::local_addr`]. `SO_REUSEADDR` is left
/// off on purpose: with it, a program setting only `SO_REUSEADDR` could bind the port too.
// ANCHOR: reserve
pub fn reserve(host: IpAddr, port: u16) -> Result<Reservation, ListenError> {
    let addr = SocketAddr::new(host, port);
    let open = || -> io::Result<Reservation> {
        // ANCHOR: solution_ch10_reserve
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        // No listen(): no queue, no connections. socket2 makes the fd close-on-exec, so
        // the workers do not inherit it.
        Ok(Reservation { socket })
        // ANCHOR_END: solution_ch10_reserve
    };
    open().map_err(|error| ListenError { addr, error })
}
// ANCHOR_END: reserve

/// Listens on a port chosen at random, as the workers of chapters 1 and 2 do (Node's
/// example uses `Math.random() * 10000`).
///
/// We draw from 10000–29999: below 1024 needs root, and from 32768 up is where Linux picks
/// the local ports of outgoing connections. Two workers can still draw the same number, so
/// on EADDRINUSE we draw again, and after a few misses let the kernel choose (port 0),
/// which is what a real server should do in the first place.
// ANCHOR: listen_random
pub fn listen_random(host: IpAddr) -> Result<TcpListener, ListenError> {
    for _ in 0..8 {
        let port = rand::random_range(10_000..30_000);
        match listen(host, port) {
            Err(e) if e.errno() == Errno::EADDRINUSE as i32 => {
                crate::log!("port {port} is taken; drawing another");
            }
            result => return result,
        }
    }
    listen(host, 0)
}
// ANCHOR_END: listen_random

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpStream};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn a_reservation_holds_the_port_for_reuseport_listeners_only() {
        let reserved = reserve(LOCALHOST, 0).unwrap();
        let port = reserved.local_addr().unwrap().port();
        assert_ne!(port, 0, "port 0 asks the kernel for a free port");
        // Bound, not listening: nobody answers.
        assert!(TcpStream::connect((LOCALHOST, port)).is_err());
        // A listener without SO_REUSEPORT cannot take the port...
        let plain = listen(LOCALHOST, port).unwrap_err();
        assert_eq!(plain.code(), "EADDRINUSE", "{plain}");
        // ...but any number with it can, beside the reservation.
        let first = listen_with(LOCALHOST, port, true).unwrap();
        let second = listen_with(LOCALHOST, port, true).unwrap();
        drop((first, second));
        // Every listener gone, the port is still ours: a new one binds it again.
        listen_with(LOCALHOST, port, true).unwrap();
    }
}
