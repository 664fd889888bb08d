//! The primary's listening sockets, one per key its workers asked for: Node's
//! `RoundRobinHandle` (`lib/internal/cluster/round_robin_handle.js`), in which the primary
//! accepts and hands each connection to the next free worker, and its `SharedHandle`
//! (`shared_handle.js`), in which each worker gets the listening socket itself and the
//! kernel picks who accepts (`NODE_CLUSTER_SCHED_POLICY=none`, our `--policy none`).
//!
//! Chapter 6 built the same round-robin for its own workers, with a text protocol; this
//! one follows Node's handle line by line, so that Node's workers find in it the primary
//! they expect: `free` and `handles`, `handoff` after every answer, a refused connection
//! sent to the back of the line.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use ch01_random_port_fork::cluster::Cluster;
use shared::log;

/// Sends worker `id` a connection on `key` (a `newconn` with the fd): the message's seq,
/// which the worker's answer names, or `None` if the worker cannot be reached.
pub type Send<'a> = dyn FnMut(u32, &str, BorrowedFd<'_>) -> Option<u64> + 'a;

/// One listening socket and the workers that serve it.
pub struct Handle {
    /// Node's key, from the first `queryServer` that made this handle.
    key: String,
    listener: Option<TcpListener>,
    /// Round-robin (the primary accepts) or shared (each worker accepts).
    round_robin: bool,
    /// Node's `all`: every worker that asked for this key and has not closed it.
    all: BTreeSet<u32>,
    /// Node's `free`: workers waiting for a connection, longest-waiting first.
    free: VecDeque<u32>,
    /// Node's `handles`: connections accepted and given to nobody yet.
    handles: VecDeque<TcpStream>,
    /// The connection each worker was sent and has not answered, with its `newconn`'s
    /// seq. Node keeps it in the callback of the send; the primary closes its copy only
    /// once the worker has answered.
    sent: HashMap<u32, (u64, TcpStream)>,
    /// Connections each worker took, for the status table.
    taken: BTreeMap<u32, u64>,
    /// Workers whose last fd did not arrive (their fd table was full), and until when
    /// they rest before they are tried again: a Node worker never says it has room again.
    resting: Vec<(u32, Instant)>,
}

/// How long a worker that could not take a connection's fd gets none.
pub const REST: Duration = Duration::from_secs(1);

impl Handle {
    /// A handle for `key` on `listener`, bound already. A round-robin handle's socket
    /// joins the primary's loop with `token`.
    pub fn new(
        key: &str,
        listener: TcpListener,
        round_robin: bool,
        cluster: &Cluster,
        token: u64,
    ) -> io::Result<Handle> {
        if round_robin {
            listener.set_nonblocking(true)?;
            cluster.watch(listener.as_fd(), token)?;
        }
        Ok(Handle {
            key: key.to_string(),
            listener: Some(listener),
            round_robin,
            all: BTreeSet::new(),
            free: VecDeque::new(),
            handles: VecDeque::new(),
            sent: HashMap::new(),
            taken: BTreeMap::new(),
            resting: Vec::new(),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn is_round_robin(&self) -> bool {
        self.round_robin
    }

    /// The listening socket, for a shared handle's answer (or `None` once closed).
    pub fn listener(&self) -> Option<&TcpListener> {
        self.listener.as_ref()
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    /// How many connections worker `id` took from this handle.
    pub fn taken_by(&self, id: u32) -> u64 {
        self.taken.get(&id).copied().unwrap_or(0)
    }

    /// Worker `id` asked for this key (Node's `add`): it joins, and, in round-robin, takes
    /// a connection at once if one waits.
    pub fn add(&mut self, id: u32, send: &mut Send) {
        if self.all.insert(id) && self.round_robin {
            self.handoff(id, send);
        }
    }

    /// Accepts every connection in the socket's queue, and gives each to a free worker
    /// if there is one (Node's `distribute`, once per connection).
    // ANCHOR: accept
    /// Returns the error when the primary is short of fds (or of the kernel memory a
    /// socket needs): the connection stays in the kernel's queue, the socket stays
    /// readable, and accepting again at once would fail again, in a loop.
    pub fn accept(&mut self, send: &mut Send) -> Option<io::Error> {
        let listener = self.listener.as_ref()?;
        let mut accepted = Vec::new();
        let mut short = None;
        loop {
            match listener.accept() {
                Ok((conn, _)) => accepted.push(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) if short_of_fds(&e) => {
                    short = Some(e);
                    break;
                }
                // An error of that one connection: the kernel dropped it.
                Err(e) => {
                    log!("accept on {} failed: {e}", self.key);
                    break;
                }
            }
        }
        for conn in accepted {
            self.distribute(conn, send);
        }
        short
    }
    // ANCHOR_END: accept

    /// Node's `distribute`: the connection joins the back of `handles`, and the first
    /// free worker, if any, gets the front one.
    fn distribute(&mut self, conn: TcpStream, send: &mut Send) {
        self.handles.push_back(conn);
        if let Some(id) = self.free.pop_front() {
            self.handoff(id, send);
        }
    }

    /// Node's `handoff`: worker `id` gets the connection at the front of `handles`, or
    /// goes back to `free` if there is none.
    // ANCHOR: handoff
    fn handoff(&mut self, id: u32, send: &mut Send) {
        if !self.all.contains(&id) {
            return; // the worker is closing this server
        }
        let Some(conn) = self.handles.pop_front() else {
            self.free.push_back(id);
            return;
        };
        match send(id, &self.key, conn.as_fd()) {
            // Our copy stays open until the worker answers: a worker that dies before it
            // takes the connection does not take the client with it.
            Some(seq) => {
                self.sent.insert(id, (seq, conn));
            }
            // The worker's channel is gone: the connection waits for another worker, and
            // this one's exit will take it off every list.
            None => self.handles.push_front(conn),
        }
    }
    // ANCHOR_END: handoff

    /// Worker `id` answered `newconn` number `ack`. Returns false if it was not waiting
    /// for that answer (an `ack` of another handle's, or of nothing).
    // ANCHOR: answered
    pub fn answered(&mut self, id: u32, ack: u64, accepted: bool, send: &mut Send) -> bool {
        // Node's callbacks are found by `ack` alone; here each worker has at most one
        // connection in flight per handle, and the `ack` says which handle's it is.
        if self.sent.get(&id).is_none_or(|(seq, _)| *seq != ack) {
            return false;
        }
        // ANCHOR: solution_ch11_answered
        let Some((_, conn)) = self.sent.remove(&id) else {
            return false;
        };
        match accepted {
            // The worker has its own fd now: dropping ours closes the primary's copy.
            true => *self.taken.entry(id).or_default() += 1,
            // Its server is closing, or at its maxConnections: the connection goes to the
            // back of the line, and to the first free worker if there is one.
            false => self.distribute(conn, send),
        }
        // Either way the worker is free again: its next connection, or the free line.
        self.handoff(id, send);
        true
        // ANCHOR_END: solution_ch11_answered
    }
    // ANCHOR_END: answered

    /// Worker `id`'s fd did not arrive (`NODE_HANDLE_NACK`, its fd table is full): the
    /// connection goes to another worker, and this one rests for [`REST`] before it is
    /// tried again. Handing it the next connection at once would only bounce back; never
    /// trying it again would leave a cluster whose workers were all full once serving
    /// nobody after they had room again.
    pub fn not_arrived(&mut self, id: u32, send: &mut Send) -> bool {
        match self.sent.remove(&id) {
            Some((_, conn)) => {
                self.resting.push((id, Instant::now() + REST));
                self.distribute(conn, send);
                true
            }
            None => false,
        }
    }

    /// When the first resting worker is to be tried again, if one rests.
    pub fn next_rested(&self) -> Option<Instant> {
        self.resting.iter().map(|(_, until)| *until).min()
    }

    /// Workers whose rest is over are free again, and get what waits.
    pub fn rested(&mut self, now: Instant, send: &mut Send) {
        let (ready, resting): (Vec<_>, Vec<_>) =
            self.resting.drain(..).partition(|(_, until)| *until <= now);
        self.resting = resting;
        for (id, _) in ready {
            self.handoff(id, send);
        }
    }

    /// Worker `id` closed this server (`close`) or is leaving: it gets no more connections.
    /// What it was sent stays its own: the `newconn` is already in its channel, and its
    /// answer settles it (a closing Node server answers `accepted: false`).
    pub fn retire(&mut self, id: u32) {
        self.all.remove(&id);
        self.free.retain(|&free| free != id);
        self.resting.retain(|(resting, _)| *resting != id);
    }

    /// Worker `id` exited: unlike Node's `remove`, the connection it had not answered goes
    /// to another worker, instead of waiting in the primary for an answer that never comes.
    pub fn remove(&mut self, id: u32, send: &mut Send) {
        self.retire(id);
        if let Some((_, conn)) = self.sent.remove(&id) {
            log!(
                "worker {id} died before taking its connection on {}; it goes to another",
                self.key
            );
            self.handles.push_front(conn);
            if let Some(free) = self.free.pop_front() {
                self.handoff(free, send);
            }
        }
    }

    /// Connections waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.handles.len()
    }

    /// Stops listening: takes what is already in the kernel's queue, then closes the
    /// socket, so a new client is refused at once rather than left waiting.
    pub fn stop_listening(&mut self, cluster: &Cluster, send: &mut Send) {
        if self.round_robin {
            self.accept(send);
        }
        if let Some(listener) = self.listener.take() {
            if self.round_robin {
                let _ = cluster.unwatch(listener.as_fd());
            }
        }
    }
}

/// Out of fds, or of the kernel memory a new socket needs.
fn short_of_fds(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
