//! A live view of the workers, as `pm2 ls` gives one: the primary answers `status` on a
//! control socket, and `ch11-node-primary --status --port P` asks the primary that serves
//! port P.
//!
//! The socket is a Unix stream socket in Linux's abstract namespace, named after the
//! port: no file to create, to clean up after a `kill -9`, or to collide with. Only a
//! process of the same user is answered (`SO_PEERCRED`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};

/// How many control clients may wait to send their command at once.
const MAX_CLIENTS: usize = 16;

/// The control socket's name for the primary serving `port`.
pub fn control_name(port: u16) -> String {
    format!("ch11-node-primary:{port}")
}

/// One worker's line in the table.
pub struct Row {
    pub id: u32,
    pub slot: String,
    pub pid: u32,
    pub state: &'static str,
    pub uptime: Duration,
    pub restarts: u32,
    pub rss: Option<u64>,
    pub connections: Option<u64>,
    pub note: String,
}

/// The table, as `status` answers it.
// ANCHOR: table
pub fn table(head: &str, rows: &[Row]) -> String {
    let mut out = format!("{head}\n");
    let _ = writeln!(
        out,
        "{:>4} {:>5} {:>8} {:<9} {:>8} {:>8} {:>8} {:>11}  note",
        "id", "slot", "pid", "state", "uptime", "restarts", "rss", "connections"
    );
    for r in rows {
        let rss = r
            .rss
            .map_or("-".into(), |b| format!("{:.1}MB", b as f64 / 1e6));
        let conns = r.connections.map_or("-".into(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{:>4} {:>5} {:>8} {:<9} {:>8} {:>8} {:>8} {:>11}  {}",
            r.id,
            r.slot,
            r.pid,
            r.state,
            uptime(r.uptime),
            r.restarts,
            rss,
            conns,
            r.note
        );
    }
    out
}
// ANCHOR_END: table

/// `850ms`, `12.3s`, `4m`, `2.5h`: one word each, as `pm2 ls` writes them.
fn uptime(d: Duration) -> String {
    let s = d.as_secs_f64();
    match s {
        s if s < 1.0 => format!("{}ms", d.as_millis()),
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{}m", (s / 60.0) as u64),
        s => format!("{:.1}h", s / 3600.0),
    }
}

/// The primary's end: the listening control socket, and the clients that have not said
/// what they want yet.
pub struct Control {
    listener: UnixListener,
    clients: HashMap<u64, (UnixStream, Vec<u8>)>,
    next: u64,
}

impl Control {
    pub fn bind(port: u16) -> io::Result<Control> {
        let addr = SocketAddr::from_abstract_name(control_name(port).as_bytes())?;
        let listener = UnixListener::bind_addr(&addr)?;
        listener.set_nonblocking(true)?;
        Ok(Control {
            listener,
            clients: HashMap::new(),
            next: 0,
        })
    }

    /// New clients, each with the number its socket is to be watched with (`client`), and
    /// the error that stopped accepting if it was not "nothing more": out of fds, the
    /// socket stays readable, and the primary must stop watching it for a while.
    pub fn accept(&mut self) -> (Vec<(u64, BorrowedFd<'_>)>, Option<io::Error>) {
        let mut new = Vec::new();
        let mut failed = None;
        loop {
            let (stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            // SAFETY: getuid takes nothing and cannot fail.
            let uid = unsafe { libc::getuid() };
            let same_user =
                getsockopt(&stream, sockopt::PeerCredentials).is_ok_and(|peer| peer.uid() == uid);
            if !same_user || stream.set_nonblocking(true).is_err() {
                continue;
            }
            // A client that never sends its line holds an fd: at most MAX_CLIENTS wait,
            // and the longest-waiting one makes room for a new one.
            if self.clients.len() >= MAX_CLIENTS {
                if let Some(oldest) = self.clients.keys().min().copied() {
                    self.clients.remove(&oldest);
                }
            }
            self.next += 1;
            self.clients.insert(self.next, (stream, Vec::new()));
            new.push(self.next);
        }
        let new = new
            .into_iter()
            .filter_map(|n| Some((n, self.clients.get(&n)?.0.as_fd())))
            .collect();
        (new, failed)
    }

    /// Reads what client `n` sent: its command once a whole line has come (the client is
    /// then forgotten, its socket to be answered and closed), `None` until then.
    pub fn read(&mut self, n: u64) -> Option<(String, UnixStream)> {
        let (stream, buf) = self.clients.get_mut(&n)?;
        let mut chunk = [0u8; 256];
        let done = loop {
            match stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(k) => {
                    buf.extend_from_slice(&chunk[..k]);
                    if buf.contains(&b'\n') || buf.len() > 1024 {
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if !done {
            return None;
        }
        let (stream, buf) = self.clients.remove(&n)?;
        let text = String::from_utf8_lossy(&buf);
        Some((text.lines().next().unwrap_or("").trim().to_string(), stream))
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// Answers a client: a short answer, written without waiting (the client is waiting for
/// it); one that does not read it loses it.
pub fn answer(mut stream: UnixStream, text: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(text.as_bytes());
}

/// `--status`: asks the primary serving `port` and prints what it says.
pub fn ask(port: u16, command: &str) -> io::Result<String> {
    let addr = SocketAddr::from_abstract_name(control_name(port).as_bytes())?;
    let mut stream = UnixStream::connect_addr(&addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no primary of this user answers for port {port} on this machine ({e}): give \
                 --port the port it serves"
            ),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}
