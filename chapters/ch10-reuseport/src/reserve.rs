//! A port kept by the master for its workers' `SO_REUSEPORT` sockets, so that no other
//! program can take it while none of them listens.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};

use shared::net::ListenError;
use socket2::{Domain, Protocol, Socket, Type};

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
/// chapter 3's `listen_with(host, port, true)` of the same user may still bind it beside us.
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

#[cfg(test)]
mod tests {
    use super::*;
    use ch03_eaddrinuse::net::{listen, listen_with};
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
