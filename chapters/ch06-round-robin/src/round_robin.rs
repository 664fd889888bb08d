//! Node's round-robin handle: the master accepts every connection on a listening socket
//! and hands it, fd and all, to the next free worker; the worker acknowledges before it
//! serves.
//!
//! Explained in chapter 6 (Node's default, "method 1"), and used by the masters of
//! chapters 7 to 9, which keep serving this way while they restart and reload workers:
//! chapter 7 adds `RoundRobin::retire` (a worker on its way out gets no more
//! connections, but what it was sent is still its own) and `RoundRobin::stop_listening`.
//!
//! Node's master keeps one `RoundRobinHandle` per address its workers asked for
//! (`lib/internal/cluster/round_robin_handle.js`); so do we, one [`RoundRobin`] per key.
//! The messages name the key, so one worker can serve several ports:
//!
//! | message | from | meaning |
//! |---|---|---|
//! | `queryServer KEY` | worker | listen on KEY for me (`127.0.0.1:8000#0`: address, and which `listen` on it) |
//! | `listening KEY ADDR` | master | done: KEY's socket is bound to ADDR, and you are one of its workers |
//! | `newconn KEY` + fd | master | a connection accepted on KEY's socket; take it |
//! | `accepted KEY` | worker | taken: the master closes its copy, the worker is free again |
//! | `rejected KEY` | worker | could not take it (out of fds): the master gives it to another |
//! | `free` | worker | out of fds no longer: count on me again |
//!
//! [`Handles`] is the master's side of the table, all handles together; [`listen_via_master`]
//! and [`from_master`] are the worker's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};

use ch00_server_models::server::Server;
use ch02_ipc_messaging::channel::Message;
use ch02_ipc_messaging::cluster::Cluster;
use ch02_ipc_messaging::worker::Messages;
use ch03_eaddrinuse::net;
use shared::log;
use shared::net::ListenError;

/// One listening socket in the master and the workers that serve it: who is free, what is
/// waiting, who holds what.
pub struct RoundRobin {
    /// The address as the workers asked for it, and which of their `listen`s on it
    /// (`127.0.0.1:8000#0`): the handle's name in every message.
    key: String,
    /// The listening socket; `None` once the master has stopped listening (chapter 7).
    listener: Option<TcpListener>,
    /// The token the master's loop watches the listener with.
    token: u64,
    /// Every worker that asked for this address.
    members: HashSet<u32>,
    /// Workers ready for a connection, longest-waiting first.
    free: VecDeque<u32>,
    /// Connections accepted while no worker was free.
    waiting: VecDeque<TcpStream>,
    /// The connection each busy worker was sent and has not acknowledged yet. The master
    /// keeps its copy until then, so nothing is lost if the worker dies first.
    sent: HashMap<u32, TcpStream>,
    /// Workers that rejected a connection for want of fds: none is sent to them until
    /// they say they are free again.
    full: HashSet<u32>,
    /// Workers short of fds since their last accepted connection, so that a shortage is
    /// logged once, not at every retry.
    short: HashSet<u32>,
    /// Connections per turn for each worker (1 if not given), and what is left of its turn.
    weights: HashMap<u32, u32>,
    left: HashMap<u32, u32>,
    /// The master is out of fds: the listener is off the loop until a connection is
    /// handed off and our copy closed.
    paused: bool,
    /// Out of fds since the queue was last emptied: the shortage is logged once.
    out_of_fds: bool,
}

impl RoundRobin {
    /// Binds the address in `key` and listens: what Node's master does the first time a
    /// worker asks for it. A key is `ADDRESS#INDEX`, as Node's is: the INDEX-th `listen`
    /// on that address in each worker, so a worker that listens twice on port 0 gets two
    /// sockets, and the second is shared with every other worker's second. The master's
    /// loop watches the socket with `token`.
    pub fn bind(key: &str, cluster: &Cluster, token: u64) -> Result<RoundRobin, ListenError> {
        let address = key.split_once('#').map_or(key, |(address, _)| address);
        let addr: SocketAddr = address.parse().map_err(|_| ListenError {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            error: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{address}' is not an address"),
            ),
        })?;
        let listener = net::listen(addr.ip(), addr.port())?;
        let watched = listener
            .set_nonblocking(true)
            .and_then(|()| cluster.watch(listener.as_fd(), token));
        if let Err(error) = watched {
            return Err(ListenError { addr, error });
        }
        Ok(RoundRobin {
            key: key.to_string(),
            listener: Some(listener),
            token,
            members: HashSet::new(),
            free: VecDeque::new(),
            waiting: VecDeque::new(),
            sent: HashMap::new(),
            full: HashSet::new(),
            short: HashSet::new(),
            weights: HashMap::new(),
            left: HashMap::new(),
            paused: false,
            out_of_fds: false,
        })
    }

    /// Weighted round-robin: worker `id` gets `weights[id]` connections per turn.
    pub fn with_weights(mut self, weights: HashMap<u32, u32>) -> RoundRobin {
        self.weights = weights;
        self
    }

    /// The handle's name, as the workers asked for it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The address the socket is bound to (the real port, when port 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::other(format!("{} no longer listens", self.key))),
        }
    }

    /// How many workers serve this handle.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when no worker serves this handle.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Worker `id` serves this address from now on (Node's `handle.add(worker)`): it goes
    /// to the back of the free line.
    pub fn add(&mut self, id: u32) {
        if self.members.insert(id) {
            self.free.push_back(id);
        }
    }

    /// Accepts every connection waiting in the socket's queue. Out of fds, the socket
    /// stays readable, and watching it would wake the loop for it forever: it leaves the
    /// loop until a connection is handed off and our copy is closed.
    // ANCHOR: accept
    pub fn accept(&mut self, cluster: &Cluster) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((conn, _peer)) => self.waiting.push_back(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if std::mem::take(&mut self.out_of_fds) {
                        log!("fds available again; accepting again on {}", self.key);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                // An error of that one connection (EPROTO, a firewall's EPERM, ...): the
                // kernel has dropped it, and the next one may be fine.
                Err(e) if !short_of_fds(&e) => log!("accept failed: {e}"),
                Err(e) => {
                    if !std::mem::replace(&mut self.out_of_fds, true) {
                        log!(
                            "out of fds (accept: {e}); no new connections on {} until one is \
                             handed off",
                            self.key
                        );
                    }
                    if cluster.unwatch(listener.as_fd()).is_ok() {
                        self.paused = true;
                    }
                    return;
                }
            }
        }
    }
    // ANCHOR_END: accept

    /// Pairs waiting connections with free workers, for as long as there are both.
    // ANCHOR: distribute
    pub fn distribute(&mut self, cluster: &Cluster) {
        // ANCHOR: solution_ch06_handoff
        while !self.waiting.is_empty() {
            let Some(id) = self.free.pop_front() else {
                return;
            };
            let Some(conn) = self.waiting.pop_front() else {
                return;
            };
            match cluster.send_with_fd(id, &format!("newconn {}", self.key), conn.as_fd()) {
                Ok(()) => {
                    self.sent.insert(id, conn);
                }
                // The worker is gone: keep the connection for the next one, and do not
                // put this worker back on the free list.
                Err(e) => {
                    log!("could not hand a connection to worker {id}: {e}");
                    self.waiting.push_front(conn);
                }
            }
        }
        // ANCHOR_END: solution_ch06_handoff
    }
    // ANCHOR_END: distribute

    /// Worker `id` took the connection it was sent.
    // ANCHOR: accepted
    pub fn accepted(&mut self, id: u32, cluster: &Cluster) {
        match self.sent.remove(&id) {
            // The worker has its own fd now; dropping ours closes the master's copy.
            Some(_conn) => {}
            None => log!("worker {id} acknowledged a connection it was never sent"),
        }
        if self.short.remove(&id) {
            log!("worker {id} takes connections again");
        }
        // That freed one of our fds: if we were out of them, accept again.
        if let Some(listener) = self.listener.as_ref().filter(|_| self.paused) {
            if cluster.watch(listener.as_fd(), self.token).is_ok() {
                self.paused = false;
            }
        }
        // A worker on its way out (chapter 7) took its last connection: it gets no more.
        if !self.members.contains(&id) {
            return;
        }
        // ANCHOR: solution_ch06_weights
        // A worker with turns left goes back to the front of the line; one whose turn is
        // over goes to the back, with a new turn of `weight` connections.
        let weight = self.weights.get(&id).copied().unwrap_or(1);
        let left = self.left.entry(id).or_insert(weight);
        *left = left.saturating_sub(1);
        if *left > 0 {
            self.free.push_front(id);
        } else {
            *left = weight;
            self.free.push_back(id);
        }
        // ANCHOR_END: solution_ch06_weights
    }
    // ANCHOR_END: accepted

    /// Worker `id` could not take the connection it was sent: its fd table is full. As
    /// Node's `distribute` does, the connection goes to the back of the queue for another
    /// worker. Unlike Node, the worker stays out of the rotation until it says `free`:
    /// handing it the next connection at once would only bounce back, again and again.
    // ANCHOR: rejected
    pub fn rejected(&mut self, id: u32) {
        // A worker on its way out (chapter 7) that could not take its last connection:
        // the connection has waited long enough, it goes first to another.
        if !self.members.contains(&id) {
            if let Some(conn) = self.sent.remove(&id) {
                self.waiting.push_front(conn);
            }
            return;
        }
        if let Some(conn) = self.sent.remove(&id) {
            self.waiting.push_back(conn);
        }
        self.full.insert(id);
        if self.short.insert(id) {
            log!(
                "worker {id} rejected a connection (out of fds); it gets none until it is \
                 free"
            );
        }
    }
    // ANCHOR_END: rejected

    /// Worker `id`, which was full, has room again.
    pub fn free_again(&mut self, id: u32) {
        if self.full.remove(&id) && self.members.contains(&id) {
            self.free.push_back(id);
        }
    }

    /// Worker `id` exited (or stopped serving this address): forget it, and rescue the
    /// connection it had not taken yet. (Node's handle would wait forever for that
    /// worker's answer, and its client with it.)
    pub fn remove(&mut self, id: u32) {
        self.members.remove(&id);
        self.free.retain(|&free| free != id);
        self.full.remove(&id);
        self.short.remove(&id);
        if let Some(conn) = self.sent.remove(&id) {
            log!("worker {id} died before taking its connection; it goes to another worker");
            self.waiting.push_front(conn);
        }
    }

    /// Worker `id` is on its way out (chapter 7): it gets no more connections from now
    /// on. Unlike [`RoundRobin::remove`], the connection it was sent and has not
    /// acknowledged yet stays its own: the `newconn` is already in its channel, and a
    /// draining worker still serves what reaches it. Its answer, or its exit, settles it.
    // ANCHOR: retire
    pub fn retire(&mut self, id: u32) {
        self.members.remove(&id);
        self.free.retain(|&free| free != id);
        self.full.remove(&id);
        self.short.remove(&id);
    }
    // ANCHOR_END: retire

    /// Whether worker `id` serves this handle (asked for it, and is not on its way out).
    pub fn serves(&self, id: u32) -> bool {
        self.members.contains(&id)
    }

    /// How many connections of this handle the master still holds: accepted and waiting
    /// for a worker, or sent and not yet acknowledged.
    pub fn holding(&self) -> usize {
        self.waiting.len() + self.sent.len()
    }

    /// How many accepted connections wait for a free worker (not sent to any yet).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Stops listening (chapter 7's stop): takes every connection already in the kernel's
    /// queue, for the workers to serve, then closes the socket, so that a new client is
    /// refused at once instead of waiting for a master that is going away.
    // ANCHOR: stop_listening
    pub fn stop_listening(&mut self, cluster: &Cluster) {
        self.accept(cluster);
        if let Some(listener) = self.listener.take() {
            // A listener off the loop (out of fds) is not watched; that error is fine.
            let _ = cluster.unwatch(listener.as_fd());
        }
    }
    // ANCHOR_END: stop_listening
}

/// Every round-robin handle of a master, one per address its workers asked for (Node's
/// `handles` map in `lib/internal/cluster/primary.js`), and the workers' messages about
/// them. The masters of chapters 7 to 9 keep one; a handle's place in the list is the
/// token the master's loop watches its socket with.
#[derive(Default)]
pub struct Handles {
    handles: Vec<RoundRobin>,
    /// Chapter 6's `--weights`, given to every handle made.
    weights: HashMap<u32, u32>,
}

/// What the master learned from a worker's message, if it was about the handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Not a round-robin message: the caller's to handle.
    Other,
    /// Handled (an acknowledgement, a rejection, `free`).
    Handled,
    /// The worker asked for `key` and now serves it, on `addr`.
    Joined { key: String, addr: SocketAddr },
    /// The worker asked for `key`, and it could not be bound: it was told why.
    Refused { key: String },
}

impl Handles {
    /// No handle yet: the first `queryServer` for an address makes one.
    pub fn new() -> Handles {
        Handles::default()
    }

    /// Weighted round-robin on every handle: see [`RoundRobin::with_weights`].
    pub fn with_weights(mut self, weights: HashMap<u32, u32>) -> Handles {
        self.weights = weights;
        self
    }

    /// Takes a worker's message if it is one of the round-robin table's.
    pub fn on_message(&mut self, cluster: &mut Cluster, id: u32, text: &str) -> Heard {
        match text.split_once(' ') {
            Some(("queryServer", key)) => self.query_server(cluster, id, key),
            Some(("accepted", key)) => {
                if let Some(handle) = self.find(key) {
                    handle.accepted(id, cluster);
                }
                Heard::Handled
            }
            Some(("rejected", key)) => {
                if let Some(handle) = self.find(key) {
                    handle.rejected(id);
                }
                Heard::Handled
            }
            _ if text == "free" => {
                self.handles.iter_mut().for_each(|h| h.free_again(id));
                Heard::Handled
            }
            _ => Heard::Other,
        }
    }

    fn find(&mut self, key: &str) -> Option<&mut RoundRobin> {
        self.handles.iter_mut().find(|h| h.key() == key)
    }

    /// A worker asks the master to listen on `key` for it (Node's `queryServer`): find the
    /// handle for that address, or bind it now, add the worker, and answer with the
    /// address really bound. If binding fails, the worker hears why, as Node's does.
    // ANCHOR: query_server
    pub fn query_server(&mut self, cluster: &mut Cluster, id: u32, key: &str) -> Heard {
        let index = match self.handles.iter().position(|h| h.key() == key) {
            Some(index) => index,
            None => match RoundRobin::bind(key, cluster, self.handles.len() as u64) {
                Ok(handle) => {
                    log!("worker {id} asked for {key}: bound it, round-robin");
                    self.handles.push(handle.with_weights(self.weights.clone()));
                    self.handles.len() - 1
                }
                Err(e) => {
                    log!("worker {id} asked for {key}: {e}");
                    let _ = cluster.send(id, &format!("error {key} {}", e.node_message()));
                    return Heard::Refused { key: key.into() };
                }
            },
        };
        let handle = &mut self.handles[index];
        let Ok(addr) = handle.local_addr() else {
            return Heard::Refused { key: key.into() };
        };
        handle.add(id);
        let _ = cluster.send(id, &format!("listening {key} {addr}"));
        Heard::Joined {
            key: key.into(),
            addr,
        }
    }
    // ANCHOR_END: query_server

    /// Binds `key` for worker `id` if no handle has it yet, as [`Handles::query_server`]
    /// does, but answers nobody and tells nobody why it failed: the caller decides what a
    /// failed bind means (chapter 7's keeper). The request, handled next, finds its handle.
    pub fn bind_new(&mut self, cluster: &Cluster, id: u32, key: &str) -> Result<(), ListenError> {
        if self.handles.iter().any(|h| h.key() == key) {
            return Ok(());
        }
        let handle = RoundRobin::bind(key, cluster, self.handles.len() as u64)?;
        log!("worker {id} asked for {key}: bound it, round-robin");
        self.handles.push(handle.with_weights(self.weights.clone()));
        Ok(())
    }

    /// The listening socket watched with `token` is readable.
    pub fn accept(&mut self, token: u64, cluster: &Cluster) {
        if let Some(handle) = self.handles.get_mut(token as usize) {
            handle.accept(cluster);
        }
    }

    /// Hands waiting connections to free workers, on every handle.
    pub fn distribute(&mut self, cluster: &Cluster) {
        self.handles.iter_mut().for_each(|h| h.distribute(cluster));
    }

    /// Worker `id` exited: see [`RoundRobin::remove`].
    pub fn remove(&mut self, id: u32) {
        self.handles.iter_mut().for_each(|h| h.remove(id));
    }

    /// Worker `id` is leaving: see [`RoundRobin::retire`].
    pub fn retire(&mut self, id: u32) {
        self.handles.iter_mut().for_each(|h| h.retire(id));
    }

    /// How many handles worker `id` serves.
    pub fn served_by(&self, id: u32) -> usize {
        self.handles.iter().filter(|h| h.serves(id)).count()
    }

    /// How many workers serve `key`'s handle.
    pub fn workers_on(&self, key: &str) -> usize {
        self.handles
            .iter()
            .find(|h| h.key() == key)
            .map_or(0, RoundRobin::len)
    }

    /// Every handle's address, as `(key, address)`.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.handles
            .iter()
            .filter_map(|h| Some((h.key().to_string(), h.local_addr().ok()?)))
            .collect()
    }

    /// How many connections the master still holds for its workers, on every handle.
    pub fn holding(&self) -> usize {
        self.handles.iter().map(RoundRobin::holding).sum()
    }

    /// How many accepted connections wait for a free worker, on every handle.
    pub fn waiting(&self) -> usize {
        self.handles.iter().map(RoundRobin::waiting).sum()
    }

    /// Stops listening on every handle: see [`RoundRobin::stop_listening`].
    pub fn stop_listening(&mut self, cluster: &Cluster) {
        self.handles
            .iter_mut()
            .for_each(|h| h.stop_listening(cluster));
    }
}

/// In a worker: `server.listen(port)` on `host` for each of `ports` (`--port`), as a
/// round-robin worker does it: ask the master, bind nothing. Each request names the
/// address and which listen on it this is, as Node's key does.
// ANCHOR: listen_via_master
pub fn listen_via_master(server: &Server, host: IpAddr, ports: &[u16]) {
    for (i, port) in ports.iter().enumerate() {
        let addr = SocketAddr::new(host, *port);
        let index = ports[..i].iter().filter(|p| *p == port).count();
        server.send(&format!("queryServer {addr}#{index}"));
    }
}
// ANCHOR_END: listen_via_master

/// In a worker: the master's side of the table above: `newconn`, `listening`, `error`.
/// Returns any other message, for the chapter to handle.
// ANCHOR: from_master
pub fn from_master(server: &mut Server, message: Message) -> Option<Message> {
    match message.text.split_once(' ') {
        Some(("newconn", key)) => take_connection(server, key, message.fd),
        Some(("listening", rest)) => {
            let (key, addr) = rest.split_once(' ').unwrap_or((rest, rest));
            log!("listening on http://{addr} (asked the master for {key}; it accepts for us)");
        }
        Some(("error", rest)) => {
            // Node's worker gets the master's error as its own, named after the call
            // that failed there (`bind`), and unhandled: the worker dies of it.
            let (key, why) = rest.split_once(' ').unwrap_or(("", rest));
            let why = why.strip_prefix("listen ").unwrap_or(why);
            log!("Error: bind {why} (the master's bind, for {key})");
            std::process::exit(1);
        }
        _ => return Some(message),
    }
    None
}
// ANCHOR_END: from_master

/// In a worker: takes the connection that came with `newconn KEY`, and acknowledges it
/// before serving it, as Node's worker does, so the master puts us back in line before
/// our answer can bring the client's next connection to it. Without an fd (the kernel
/// could not install it: our fd table is full), or if it cannot be watched, the
/// connection is rejected and the master gives it to another worker.
// ANCHOR: take_connection
pub fn take_connection(server: &mut Server, key: &str, fd: Option<OwnedFd>) {
    let taken = match fd {
        Some(fd) => server.adopt_connection(TcpStream::from(fd)),
        None => Err(io::Error::other("its fd did not arrive (MSG_CTRUNC)")),
    };
    match taken {
        Ok(()) => server.send(&format!("accepted {key}")),
        Err(e) => {
            server.short_of_fds(&format!("a connection from the master: {e}"));
            server.send(&format!("rejected {key}"));
        }
    }
}
// ANCHOR_END: take_connection

/// Out of fds, or of the kernel memory a new socket needs: the connection stays queued,
/// and accepting again at once would fail again.
fn short_of_fds(e: &io::Error) -> bool {
    use nix::errno::Errno::{self, EMFILE, ENFILE, ENOBUFS, ENOMEM};
    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
    matches!(errno, EMFILE | ENFILE | ENOBUFS | ENOMEM)
}
