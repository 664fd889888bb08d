//! Chapter 6: the master accepts every connection and hands it to the next free worker.
//!
//! This is Node's default on Linux ("method 1", `RoundRobinHandle` in
//! `lib/internal/cluster/round_robin_handle.js`). The master owns the listening socket;
//! for each accepted connection it sends the connection's fd to one worker over IPC. A
//! worker gets one connection at a time: it goes back on the free list only when it
//! acknowledges the last one. While no worker is free, connections wait in a queue. A
//! connection the worker rejects, or whose worker dies before acknowledging it, goes to
//! another worker: none is lost.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::str::FromStr;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use shared::args::{Args, Cli};
use shared::channel::{ChannelError, Message};
use shared::cluster::{self, Cluster, Event, Outcome};
use shared::log;
use shared::net;
use shared::server::Server;
use shared::spawn;

fn main() -> ExitCode {
    let args = Cli::new(
        "ch06-round-robin",
        "Chapter 6: the master accepts each connection and hands it to the workers in turn.",
    )
    .option::<Weights>(
        "--weights",
        "W1,W2,...",
        "weighted round-robin: worker i gets Wi connections per turn (exercise ch06-weights)",
        "",
    )
    .check(|args| {
        let weights = args.get::<Weights>("--weights");
        match weights.0.len() <= args.workers {
            true => Ok(()),
            false => Err(format!(
                "--weights gives {} weights for {} workers; give at most one per worker",
                weights.0.len(),
                args.workers
            )),
        }
    })
    .parse();
    // Master or worker? `master_or_worker` asks, as Node's `cluster.isPrimary` does.
    cluster::master_or_worker(&args, master, worker)
}

/// The master's epoll tokens: a worker's channel uses the worker's id, and these two
/// can never be ids.
const LISTENER: u64 = u64::MAX;
const CLUSTER: u64 = u64::MAX - 1;

// ANCHOR: round_robin
/// Node's `RoundRobinHandle`: who is free, what is waiting, who holds what.
#[derive(Default)]
struct RoundRobin {
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
}

impl RoundRobin {
    /// Pairs waiting connections with free workers, for as long as there are both.
    fn distribute(&mut self, cluster: &Cluster) {
        while !self.waiting.is_empty() {
            let Some(id) = self.free.pop_front() else {
                return;
            };
            let Some(conn) = self.waiting.pop_front() else {
                return;
            };
            // ANCHOR: solution_ch06_handoff
            match cluster.send_with_fd(id, "newconn", conn.as_fd()) {
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
            // ANCHOR_END: solution_ch06_handoff
        }
    }

    /// Worker `id` took the connection it was sent.
    fn accepted(&mut self, id: u32) {
        match self.sent.remove(&id) {
            // The worker has its own fd now; dropping ours closes the master's copy.
            Some(_conn) => {}
            None => log!("worker {id} acknowledged a connection it was never sent"),
        }
        if self.short.remove(&id) {
            log!("worker {id} takes connections again");
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

    /// Worker `id` could not take the connection it was sent: its fd table is full. As
    /// Node's `distribute` does, the connection goes to the back of the queue for another
    /// worker. Unlike Node, the worker stays out of the rotation until it says `free`:
    /// handing it the next connection at once would only bounce back, again and again.
    fn rejected(&mut self, id: u32) {
        if let Some(conn) = self.sent.remove(&id) {
            self.waiting.push_back(conn);
        }
        self.full.insert(id);
        if self.short.insert(id) {
            log!("worker {id} rejected a connection (out of fds); it gets none until it is free");
        }
    }

    /// Worker `id`, which was full, has room again.
    fn free_again(&mut self, id: u32) {
        if self.full.remove(&id) {
            self.free.push_back(id);
        }
    }

    /// Worker `id` exited: forget it, and rescue the connection it had not taken yet.
    fn remove(&mut self, id: u32) {
        self.free.retain(|&free| free != id);
        self.full.remove(&id);
        self.short.remove(&id);
        if let Some(conn) = self.sent.remove(&id) {
            log!("worker {id} died before taking its connection; it goes to another worker");
            self.waiting.push_front(conn);
        }
    }
}
// ANCHOR_END: round_robin

/// `--weights 2,1`: worker 1 weighs 2, worker 2 weighs 1 (the others 1).
#[derive(Debug, Default, Clone)]
struct Weights(Vec<u32>);

impl FromStr for Weights {
    type Err = String;

    fn from_str(text: &str) -> Result<Weights, String> {
        let mut weights = Vec::new();
        for word in text.split(',').filter(|w| !w.is_empty()) {
            match word.trim().parse::<u32>() {
                Ok(w) if w > 0 => weights.push(w),
                _ => return Err(format!("whole numbers above 0 like 2,1; not '{word}'")),
            }
        }
        Ok(Weights(weights))
    }
}

impl Weights {
    /// Worker id to weight.
    fn by_worker(&self) -> HashMap<u32, u32> {
        (1..).zip(self.0.iter().copied()).collect()
    }
}

// ANCHOR: master
fn master(args: &Args) -> Outcome {
    let mut balancer = RoundRobin {
        weights: args.get::<Weights>("--weights").by_worker(),
        ..RoundRobin::default()
    };
    let listener = net::listen(args.host, args.port)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    // One thread and one epoll, like Node's master on libuv: the listening socket, every
    // worker's channel, and the cluster's own events (exits, Ctrl-C) wake the same loop.
    let mut cluster: Cluster = Cluster::polled()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        listener.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
    )?;
    epoll.add(
        cluster.wake_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, CLUSTER),
    )?;
    for _ in 0..args.workers {
        let id = cluster.fork()?;
        if let Some(channel) = cluster.channel(id) {
            epoll.add(
                channel.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, u64::from(id)),
            )?;
        }
    }
    let mut online = 0;
    let mut paused = false;
    let mut short = false;
    let mut ready = vec![EpollEvent::empty(); 64];
    loop {
        let n = match epoll.wait(&mut ready, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for token in ready[..n].iter().map(EpollEvent::data) {
            match token {
                LISTENER => match accept_all(&listener, &mut balancer.waiting) {
                    Ok(()) => {
                        if std::mem::take(&mut short) {
                            log!("fds available again; accepting again");
                        }
                    }
                    Err(e) => {
                        // Out of fds: the listener stays readable, so watching it would
                        // wake us for it forever. One line per shortage, not per attempt.
                        if !std::mem::replace(&mut short, true) {
                            log!("out of fds (accept: {e}); no new connections until one is handed off");
                        }
                        watch(&epoll, &listener, EpollFlags::empty())?;
                        paused = true;
                    }
                },
                CLUSTER => {
                    while let Some(event) = cluster.try_event() {
                        if let Some(code) = cluster.ends_here(&event) {
                            return Ok(code);
                        }
                        if let Event::Exit { id, .. } = event {
                            balancer.remove(id);
                        }
                    }
                }
                worker => {
                    let id = worker as u32;
                    for message in read_channel(&cluster, &epoll, id) {
                        match message.text.as_str() {
                            "online" => {
                                balancer.free.push_back(id);
                                online += 1;
                                if online == args.workers {
                                    log!("listening on http://{addr} (the master accepts, {online} workers serve)");
                                }
                            }
                            "accepted" => {
                                balancer.accepted(id);
                                // Our copy of that connection is closed: one fd free.
                                if paused {
                                    watch(&epoll, &listener, EpollFlags::EPOLLIN)?;
                                    paused = false;
                                }
                            }
                            "rejected" => balancer.rejected(id),
                            "free" => balancer.free_again(id),
                            text => log!("unexpected message from worker {id}: {text}"),
                        }
                    }
                }
            }
        }
        balancer.distribute(&cluster);
    }
}
// ANCHOR_END: master

/// Accepts every connection waiting in the listening socket's queue. Fails when the
/// master is out of fds (EMFILE): then the listener stays readable, and the caller must
/// stop watching it until a connection is handed off and closed, or epoll would report
/// it again at once, forever.
// ANCHOR: accept_all
fn accept_all(listener: &TcpListener, waiting: &mut VecDeque<TcpStream>) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((conn, _peer)) => waiting.push_back(conn),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(e),
        }
    }
}
// ANCHOR_END: accept_all

/// Changes what epoll watches the listening socket for.
fn watch(epoll: &Epoll, listener: &TcpListener, flags: EpollFlags) -> io::Result<()> {
    let mut event = EpollEvent::new(flags, LISTENER);
    Ok(epoll.modify(listener.as_fd(), &mut event)?)
}

/// Every message waiting on worker `id`'s channel. A closed channel leaves the loop's
/// watch list (its exit arrives as an event); a malformed message is reported and skipped.
fn read_channel(cluster: &Cluster, epoll: &Epoll, id: u32) -> Vec<Message> {
    let mut messages = Vec::new();
    let Some(channel) = cluster.channel(id) else {
        return messages;
    };
    loop {
        match channel.try_recv() {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => return messages,
            Err(ChannelError::Closed) => {
                let _ = epoll.delete(channel.as_fd());
                return messages;
            }
            Err(e @ (ChannelError::Malformed(_) | ChannelError::TooLarge(_))) => {
                log!("worker {id}: {e}")
            }
            Err(e) => {
                log!("worker {id}: {e}; no longer reading its channel");
                let _ = epoll.delete(channel.as_fd());
                return messages;
            }
        }
    }
}

// ANCHOR: worker
fn worker(id: u32, args: &Args) -> Outcome {
    let channel = spawn::channel_from_env()?;
    let server = Server::new(id, args.idle_timeout)?
        .on_message(channel, on_message)?
        // After a rejection for want of fds: one of our connections has closed (or a
        // second has passed), so tell the master to count on us again.
        .on_fds_freed(|server| server.send("free"));
    // This worker listens on nothing: every connection comes from the master.
    server.send("online");
    server.run()?;
    Ok(ExitCode::SUCCESS)
}

fn on_message(server: &mut Server, message: Message) {
    match (message.text.as_str(), message.fd) {
        ("newconn", fd) => {
            // ANCHOR: newconn
            // Acknowledge before serving, as Node does: the master puts us back in line
            // before our answer can bring the client's next connection to it.
            let taken = match fd {
                Some(fd) => server.adopt_connection(TcpStream::from(fd)),
                // The kernel could not install the fd: our fd table is full.
                None => Err(io::Error::other("its fd did not arrive (MSG_CTRUNC)")),
            };
            match taken {
                Ok(()) => server.send("accepted"),
                Err(e) => {
                    server.short_of_fds(&format!("a connection from the master: {e}"));
                    server.send("rejected");
                }
            }
            // ANCHOR_END: newconn
        }
        (text, fd) => {
            log!(
                "unexpected message '{text}'{}",
                if fd.is_some() {
                    " with an fd (closed)"
                } else {
                    ""
                }
            );
        }
    }
}
// ANCHOR_END: worker
