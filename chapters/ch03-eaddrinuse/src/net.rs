//! Opening a listening socket step by step, as Node's `server.listen()` does: socket,
//! `SO_REUSEADDR`, bind, listen with a backlog of 511; and, with `--reuseport on`,
//! `SO_REUSEPORT`, which lets several processes bind one port.
//!
//! Explained in chapter 3: why a second worker gets EADDRINUSE, why `SO_REUSEADDR` does not
//! change that, and what `SO_REUSEPORT` does instead. Every master and worker from chapter
//! 3 on opens its sockets here.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};

use shared::net::ListenError;
use socket2::{Domain, Protocol, Socket, Type};

/// Node's default backlog for `server.listen()`, 511.
pub use shared::net::BACKLOG;

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
