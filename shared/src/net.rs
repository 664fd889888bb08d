//! Listening on a port, and saying clearly why it failed: `port 8000 is in use; try
//! --port 0`, in the shape of Node's own message. Chapter 3 explains EADDRINUSE, and opens
//! its sockets step by step.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};

use nix::errno::Errno;
use nix::sys::socket::Backlog;

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

/// Node's default backlog for `server.listen()`: how many connections the kernel queues
/// before the server accepts them.
pub const BACKLOG: i32 = 511;

/// Binds `host:port` and listens, as Node's `server.listen()` does. std's
/// `TcpListener::bind` sets `SO_REUSEADDR` first, so a restarted server binds its port
/// while old connections linger in TIME_WAIT, but listens with a backlog of 128; a second
/// `listen` on the listening socket raises it to Node's 511. The socket is close-on-exec
/// and blocking. Chapter 3 opens a socket step by step, with options of its own.
pub fn listen(host: IpAddr, port: u16) -> Result<TcpListener, ListenError> {
    let addr = SocketAddr::new(host, port);
    let listen = || -> io::Result<TcpListener> {
        let listener = TcpListener::bind(addr)?;
        let backlog = Backlog::new(BACKLOG).map_err(io::Error::from)?;
        nix::sys::socket::listen(&listener, backlog)?;
        Ok(listener)
    };
    listen().map_err(|error| ListenError { addr, error })
}
