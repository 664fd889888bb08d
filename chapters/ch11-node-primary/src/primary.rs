//! The primary: chapter 1's cluster of processes, chapter 7's books of slots and
//! restarts, and Node's protocol ([`crate::ipc`], [`crate::protocol`],
//! [`crate::handles`]) or systemd's ([`crate::activation`]) to speak with the workers.
//!
//! Everything happens on one thread, one event at a time, as in every master of this
//! book: a worker's message, its exit, a connection, a notification, a signal, or a
//! deadline passing.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use ch01_random_port_fork::cluster::{Cluster, Event, Exited, Link, WORKER_FDS};
use ch01_random_port_fork::spawn::Inherit;
use ch07_auto_restart::supervisor::{Policy, Supervisor, Verdict};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use shared::log;
use shared::net::ListenError;

use crate::activation::{self, Notify};
use crate::handles::{self, Handle};
use crate::ipc::{Channel, Fault, Incoming};
use crate::protocol::{self, FromWorker, Query};
use crate::status::{self, Control, Row};

/// What the workers speak with the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Node's cluster protocol on `NODE_CHANNEL_FD`: the program is `node` and a script.
    Node,
    /// systemd's socket activation: the socket as fd 3, `LISTEN_FDS`, `NOTIFY_SOCKET`.
    Systemd,
}

/// How the primary runs, from its command line.
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub workers: usize,
    pub protocol: Protocol,
    /// Round-robin (`rr`, Node's default) or a shared handle (`none`).
    pub round_robin: bool,
    pub listen_timeout: Duration,
    pub kill_timeout: Duration,
    /// In bytes; 0: no limit.
    pub max_rss: u64,
    pub policy: Policy,
    pub program: OsString,
    pub args: Vec<OsString>,
}

/// The epoll tokens of the primary's own fds. Each handle's socket is watched with its
/// place in `handles`, from 0.
const NOTIFY: u64 = 1 << 24;
const CONTROL: u64 = NOTIFY + 1;
/// A signal pipe a caller adds with [`Primary::watch`].
pub const OWN_TOKENS: u64 = NOTIFY + 2;
/// Control clients, from here up.
const CONTROL_CLIENTS: u64 = NOTIFY + 1024;

/// Where a worker is in its life, as `pm2 ls` and Node's `worker.state` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Starting,
    Online,
    Serving,
    Leaving,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Online => "online",
            State::Serving => "serving",
            State::Leaving => "leaving",
        }
    }
}

/// One worker, as the primary keeps it.
struct Worker {
    pid: u32,
    forked: Instant,
    state: State,
    /// It must serve by then, or be stopped (`--listen-timeout`).
    serve_by: Option<Instant>,
    /// Leaving: SIGKILL then (`--kill-timeout`).
    kill_at: Option<Instant>,
    /// A replacement for that worker, which keeps its slot until this one serves.
    replaces: Option<u32>,
    /// Node's channel (none for a socket-activated program, or once closed).
    channel: Option<Channel>,
    /// What it said that the primary did not understand, logged once each.
    unknown: HashSet<String>,
    /// Its last `STATUS=` (socket activation).
    status: String,
}

/// A rolling reload under way.
struct Reload {
    started: Instant,
    /// The old workers still to replace, in slot order.
    todo: VecDeque<u32>,
    /// The turn under way: (old, new).
    turn: Option<(u32, u32)>,
    replaced: usize,
    /// Another SIGUSR2 came meanwhile.
    again: bool,
}

/// The primary.
pub struct Primary {
    settings: Settings,
    cluster: Cluster,
    books: Supervisor,
    workers: BTreeMap<u32, Worker>,
    /// The address bound at start, `--host` and `--port`.
    address: SocketAddr,
    /// Its socket, until a worker's `queryServer` adopts it (Node); kept, and passed to
    /// every worker as fd 3 (systemd).
    prebound: Option<TcpListener>,
    handles: Vec<Handle>,
    /// Short of fds: the round-robin sockets are off the loop until then, or until a
    /// connection is handed off.
    accept_paused_until: Option<Instant>,
    /// Out of fds since the accept queue was last emptied: logged once.
    short_of_fds: bool,
    messages: protocol::Primary,
    notify: Option<Notify>,
    control: Control,
    reload: Option<Reload>,
    /// The first round of workers not yet serving or gone: the ready line waits for them.
    first_round: BTreeSet<u32>,
    announced: bool,
    stopping: bool,
    /// Node workers have been told to disconnect (after the last connection held was
    /// handed out).
    disconnected: bool,
    /// When a stop stops waiting: `--kill-timeout` after Ctrl-C or SIGTERM.
    stop_by: Option<Instant>,
    next_rss_check: Instant,
}

impl Primary {
    /// Binds the address, then starts one worker per slot.
    pub fn start(settings: Settings) -> Result<Primary, Box<dyn std::error::Error>> {
        // Bound first, before anything else opens an fd: a busy port stops the primary at
        // once, and the socket is fd 3 here already, as a socket-activated worker wants it.
        let listener = shared::net::listen(settings.host, settings.port)?;
        let address = listener.local_addr()?;
        let notify = match settings.protocol {
            Protocol::Systemd => Some(Notify::bind(&format!(
                "ch11-node-primary/{}/notify",
                std::process::id()
            ))?),
            Protocol::Node => None,
        };
        let control = Control::bind(address.port()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the control socket for port {}: {e}", address.port()),
            )
        })?;
        let cluster = Cluster::new()?;
        if let Some(notify) = &notify {
            cluster.watch(notify.as_fd(), NOTIFY)?;
        }
        cluster.watch(control.as_fd(), CONTROL)?;
        let books = Supervisor::new(settings.workers, settings.policy);
        let mut primary = Primary {
            settings,
            cluster,
            books,
            workers: BTreeMap::new(),
            address,
            prebound: Some(listener),
            handles: Vec::new(),
            accept_paused_until: None,
            short_of_fds: false,
            messages: protocol::Primary::new(),
            notify,
            control,
            reload: None,
            first_round: BTreeSet::new(),
            announced: false,
            stopping: false,
            disconnected: false,
            stop_by: None,
            next_rss_check: Instant::now(),
        };
        for slot in primary.books.slots() {
            let id = primary.fork_into(slot)?;
            primary.first_round.insert(id);
        }
        Ok(primary)
    }

    /// Adds a caller's fd (the SIGUSR2 pipe) to the loop, with `token` from [`OWN_TOKENS`].
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.cluster.watch(fd, token)
    }

    // ---------------------------------------------------------------------------------
    // Starting workers
    // ---------------------------------------------------------------------------------

    /// Starts a worker for `slot`, which it holds from now on.
    fn fork_into(&mut self, slot: usize) -> io::Result<u32> {
        let id = self.fork(None)?;
        self.books.started(slot, id, Instant::now());
        Ok(id)
    }

    /// Starts a worker running the program: with its channel and `NODE_UNIQUE_ID` (Node),
    /// or with the socket as fd 3 and `NOTIFY_SOCKET` (systemd).
    // ANCHOR: fork
    fn fork(&mut self, replaces: Option<u32>) -> io::Result<u32> {
        let (program, args) = (&self.settings.program, &self.settings.args);
        let port = self.address.port().to_string();
        let (id, channel) = match self.settings.protocol {
            Protocol::Node => {
                let (channel, theirs) = Channel::pair()?;
                let link = Link {
                    theirs: Inherit {
                        var: "NODE_CHANNEL_FD",
                        fd: theirs,
                    },
                    ours: channel.as_fd(),
                };
                let command = |id: u32| {
                    let mut command = Command::new(program);
                    command
                        .args(args)
                        .env("NODE_UNIQUE_ID", id.to_string())
                        .env("NODE_CHANNEL_SERIALIZATION_MODE", "json")
                        .env("PORT", &port);
                    in_a_group_of_its_own(command)
                };
                let id = self.cluster.fork_command(command, Some(link))?;
                (id, Some(channel))
            }
            Protocol::Systemd => {
                let listener = self.prebound.as_ref().map_or(-1, |l| l.as_raw_fd());
                let notify = self.notify.as_ref().map_or("", |n| n.name()).to_string();
                let command = |id: u32| {
                    let vars = [
                        ("NOTIFY_SOCKET", notify),
                        ("CLUSTER_WORKER_ID", id.to_string()),
                        ("PORT", port),
                    ];
                    in_a_group_of_its_own(activation::command(program, args, listener, &vars))
                };
                (self.cluster.fork_command(command, None)?, None)
            }
        };
        let now = Instant::now();
        let pid = self.cluster.worker(id).map_or(0, |w| w.pid);
        self.workers.insert(
            id,
            Worker {
                pid,
                forked: now,
                state: State::Starting,
                serve_by: Some(now + self.settings.listen_timeout),
                kill_at: None,
                replaces,
                channel,
                unknown: HashSet::new(),
                status: String::new(),
            },
        );
        Ok(id)
    }
    // ANCHOR_END: fork

    /// Starts a worker for `slot` after a death, or counts the failure as one.
    fn refill(&mut self, slot: usize) {
        if self.stopping {
            return;
        }
        log!("slot {slot}: starting a new worker");
        if let Err(e) = self.fork_into(slot) {
            log!("slot {slot}: could not start a worker: {e}");
            let verdict = self.books.start_failed(slot, Instant::now());
            self.report(verdict);
        }
    }

    // ---------------------------------------------------------------------------------
    // The loop
    // ---------------------------------------------------------------------------------

    /// Waits for the next event, or for the next deadline (`None`).
    pub fn next_event(&mut self) -> Option<Event> {
        let wait = self
            .next_deadline()
            .map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(Instant::now())
            });
        self.cluster.next_event_timeout(wait)
    }

    /// The soonest of every deadline the primary keeps.
    fn next_deadline(&self) -> Option<Instant> {
        let workers = self
            .workers
            .values()
            .flat_map(|w| [w.serve_by, w.kill_at])
            .flatten();
        let rss = (self.settings.max_rss > 0).then_some(self.next_rss_check);
        let rested = self.handles.iter().filter_map(Handle::next_rested);
        workers
            .chain(self.books.next_due())
            .chain(rss)
            .chain(self.accept_paused_until)
            .chain(rested)
            .chain(self.stop_by)
            .min()
    }

    /// Handles one event. Returns the exit code once the primary is done.
    // ANCHOR: handle
    pub fn handle(&mut self, event: Event) -> Option<ExitCode> {
        match event {
            Event::Shutdown => self.stop(),
            Event::Exit { id, status, .. } => {
                // What it wrote before it died is still in its channel: its last words
                // come before its death.
                self.read_channel(id);
                self.exited(id, status);
            }
            Event::Ready(token) if token >= WORKER_FDS => {
                self.read_channel((token - WORKER_FDS) as u32);
            }
            Event::Ready(NOTIFY) => self.notifications(),
            Event::Ready(CONTROL) => self.control_clients(),
            Event::Ready(token) if token >= CONTROL_CLIENTS => {
                self.control_command(token - CONTROL_CLIENTS);
            }
            Event::Ready(token) => self.accept(token as usize),
        }
        self.tick()
    }
    // ANCHOR_END: handle

    /// What falls due whatever the event: deadlines, restarts, the memory check, the end.
    pub fn tick(&mut self) -> Option<ExitCode> {
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|at| at <= now) {
            self.resume_accepting();
        }
        for index in 0..self.handles.len() {
            if self.handles[index]
                .next_rested()
                .is_some_and(|at| at <= now)
            {
                self.with_sender(index, |handle, send, _| handle.rested(now, send));
            }
        }
        for id in self.due(now, |w| w.serve_by) {
            self.too_slow(id);
        }
        for id in self.due(now, |w| w.kill_at) {
            if let Some(w) = self.workers.get_mut(&id) {
                w.kill_at = None;
                log!(
                    "worker {id} (pid {}) is still there after --kill-timeout {}: SIGKILL",
                    w.pid,
                    secs(self.settings.kill_timeout)
                );
                let _ = kill(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
            }
        }
        for slot in self.books.due(now) {
            self.refill(slot);
        }
        if self.settings.max_rss > 0 && now >= self.next_rss_check {
            self.next_rss_check = now + Duration::from_secs(1);
            self.check_memory();
        }
        if self.stopping && !self.disconnected && self.handles.iter().all(|h| h.waiting() == 0) {
            self.disconnect_all();
        }
        // --kill-timeout is over and connections still wait for a worker that cannot take
        // them (out of fds, say): the workers are not waited for any longer.
        if self.stop_by.is_some_and(|at| at <= now) {
            self.stop_by = None;
            let waiting: usize = self.handles.iter().map(Handle::waiting).sum();
            if !self.disconnected {
                log!("{waiting} accepted connections found no worker within --kill-timeout");
                self.disconnect_all();
            }
            for w in self.workers.values_mut() {
                w.kill_at = Some(now);
            }
            return self.tick();
        }
        if self.stopping && self.workers.is_empty() {
            log!("all workers stopped");
            return Some(ExitCode::SUCCESS);
        }
        if !self.stopping && self.books.in_service() == 0 {
            log!("every slot is given up: nothing is left to serve; the primary exits");
            return Some(ExitCode::FAILURE);
        }
        None
    }

    /// The workers whose deadline `at` has passed; each deadline is cleared.
    fn due(&mut self, now: Instant, at: fn(&Worker) -> Option<Instant>) -> Vec<u32> {
        self.workers
            .iter()
            .filter(|(_, w)| at(w).is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect()
    }

    // ---------------------------------------------------------------------------------
    // Node's channel
    // ---------------------------------------------------------------------------------

    /// Reads worker `id`'s channel and acts on each message; ends a worker whose channel
    /// is broken.
    fn read_channel(&mut self, id: u32) {
        let Some(channel) = self.workers.get_mut(&id).and_then(|w| w.channel.as_mut()) else {
            return;
        };
        let (messages, fault) = channel.read();
        for incoming in messages {
            self.on_message(id, incoming);
        }
        if let Some(fault) = fault {
            self.channel_fault(id, fault);
        }
    }

    /// A worker's channel cannot be used any more. Closed: the worker is going, and its
    /// exit will come. Anything else is the worker's fault, and it is killed; the primary
    /// goes on.
    // ANCHOR: channel_fault
    fn channel_fault(&mut self, id: u32, fault: Fault) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if let Some(channel) = worker.channel.take() {
            let _ = self.cluster.unwatch(channel.as_fd());
        }
        let pid = worker.pid;
        for handle in &mut self.handles {
            handle.retire(id);
        }
        if !matches!(fault, Fault::Closed) {
            log!("worker {id} (pid {pid}): {fault}; killing it");
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    // ANCHOR_END: channel_fault

    /// One message from worker `id`.
    // ANCHOR: on_message
    fn on_message(&mut self, id: u32, incoming: Incoming) {
        match protocol::parse(&incoming.message) {
            FromWorker::Online => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.state = w.state.max(State::Online);
                }
                log!("worker {id} online");
            }
            FromWorker::QueryServer(query) => self.query_server(id, query),
            FromWorker::Listening { port } => {
                log!("worker {id} listening on port {port}");
                self.serving(id);
            }
            FromWorker::Accepted { ack, accepted } => self.answered(id, ack, accepted),
            FromWorker::Close { key } => {
                if let Some(handle) = self.handles.iter_mut().find(|h| h.key() == key) {
                    handle.retire(id);
                }
            }
            FromWorker::ExitedAfterDisconnect { seq } => {
                let ack = self.messages.ack(seq);
                self.send(id, &ack);
                self.left_on_its_own(id);
            }
            FromWorker::HandleAck { arrived } => {
                if let Some(Err(fault)) = self.channel(id).map(Channel::acknowledged) {
                    self.channel_fault(id, fault);
                }
                if !arrived {
                    self.not_arrived(id);
                }
            }
            FromWorker::Handle => {
                // Closed here; the ack keeps the worker's channel going, for it queues
                // everything it sends until then.
                drop(incoming.fd);
                self.send(id, &json!({ "cmd": "NODE_HANDLE_ACK" }));
                self.unknown(id, "a handle (process.send with a socket)".into());
            }
            FromWorker::Unknown(what) => self.unknown(id, what),
        }
    }
    // ANCHOR_END: on_message

    /// A message the primary does not understand: said once per worker and kind, then
    /// ignored.
    fn unknown(&mut self, id: u32, what: String) {
        if let Some(w) = self.workers.get_mut(&id) {
            if w.unknown.insert(what.clone()) {
                log!("worker {id} sent {what}; this primary ignores it (said once)");
            }
        }
    }

    fn channel(&mut self, id: u32) -> Option<&mut Channel> {
        self.workers.get_mut(&id)?.channel.as_mut()
    }

    /// Sends a message to worker `id`; a failure ends the worker.
    fn send(&mut self, id: u32, message: &serde_json::Value) {
        if let Some(Err(fault)) = self.channel(id).map(|c| c.send(message)) {
            self.channel_fault(id, fault);
        }
    }

    /// Runs `f` on handle `index` with a sender of `newconn` messages, then ends every
    /// worker whose channel failed meanwhile.
    fn with_sender(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut Handle, &mut handles::Send, &Cluster),
    ) {
        let mut faults = Vec::new();
        {
            let workers = &mut self.workers;
            let messages = &mut self.messages;
            let mut send = |id: u32, key: &str, fd: BorrowedFd<'_>| {
                let channel = workers.get_mut(&id)?.channel.as_mut()?;
                let (seq, newconn) = messages.newconn(key);
                match channel.send_handle(&newconn, fd) {
                    Ok(()) => Some(seq),
                    Err(fault) => {
                        faults.push((id, fault));
                        None
                    }
                }
            };
            if let Some(handle) = self.handles.get_mut(index) {
                f(handle, &mut send, &self.cluster);
            }
        }
        for (id, fault) in faults {
            self.channel_fault(id, fault);
        }
    }

    // ---------------------------------------------------------------------------------
    // Listening for the workers
    // ---------------------------------------------------------------------------------

    /// A worker's `server.listen()`: find the handle for its key or make one (binding the
    /// address, or adopting the one bound at start), answer, and add the worker.
    // ANCHOR: query_server
    fn query_server(&mut self, id: u32, query: Query) {
        if self
            .workers
            .get(&id)
            .is_none_or(|w| w.state == State::Leaving)
        {
            return; // Node's primary ignores a disconnecting worker's queries too
        }
        let key = query.key();
        let index = match self.handles.iter().position(|h| h.key() == key) {
            Some(index) => index,
            None => match self.bind_for(&query, &key) {
                Ok(index) => index,
                Err(e) => {
                    log!("worker {id} asked for {key}: {e}");
                    let errno = e.error.raw_os_error().unwrap_or(libc::EINVAL);
                    let reply = self.messages.query_reply(&query, &key, Err(errno));
                    self.send(id, &reply);
                    return;
                }
            },
        };
        let handle = &self.handles[index];
        let sockname = handle.local_addr().map(protocol::sockname);
        let shared = (!handle.is_round_robin()).then(|| handle.listener().map(|l| l.as_fd()));
        let reply = self
            .messages
            .query_reply(&query, &key, sockname.ok_or(libc::EBADF));
        match shared.flatten() {
            // A shared handle: the answer carries the listening socket itself.
            Some(fd) => {
                let fd = fd.try_clone_to_owned();
                let sent = match (fd, self.channel(id)) {
                    (Ok(fd), Some(channel)) => channel.send_handle(&reply, fd.as_fd()),
                    (Err(e), _) => Err(Fault::Io(e)),
                    (_, None) => Err(Fault::Closed),
                };
                if let Err(fault) = sent {
                    self.channel_fault(id, fault);
                }
            }
            None => self.send(id, &reply),
        }
        self.with_sender(index, |handle, send, _| handle.add(id, send));
    }
    // ANCHOR_END: query_server

    /// A new handle for `key`: the socket bound at start if the query asks for its port,
    /// or a new one bound now, as Node's primary binds one per key.
    fn bind_for(&mut self, query: &Query, key: &str) -> Result<usize, ListenError> {
        let host = match &query.address {
            Some(address) => address.parse().unwrap_or(self.settings.host),
            // `listen(port)` with no host: Node's primary binds every interface; this one
            // binds `--host`, which is the primary's to choose.
            None => self.settings.host,
        };
        let ours = self.settings.protocol == Protocol::Node
            && query.index == 0
            && query.port == i64::from(self.address.port())
            && host == self.address.ip();
        let listener = match (ours, self.prebound.take()) {
            (true, Some(listener)) => listener,
            (_, kept) => {
                self.prebound = kept;
                if !query.is_tcp() {
                    return Err(ListenError {
                        addr: self.address,
                        error: io::Error::new(
                            io::ErrorKind::Unsupported,
                            "only TCP ports are balanced by this primary",
                        ),
                    });
                }
                shared::net::listen(host, query.port as u16)?
            }
        };
        let token = self.handles.len() as u64;
        let handle = Handle::new(
            key,
            listener,
            self.settings.round_robin,
            &self.cluster,
            token,
        )
        .map_err(|error| ListenError {
            addr: self.address,
            error,
        })?;
        let how = match self.settings.round_robin {
            true => "round-robin: the primary accepts",
            false => "shared: each worker accepts",
        };
        log!(
            "a worker asked for {key}: listening on {} ({how})",
            handle.local_addr().map_or("?".into(), |a| a.to_string())
        );
        self.handles.push(handle);
        Ok(self.handles.len() - 1)
    }

    /// A handle's socket is readable: accept what waits, and hand it out. Short of fds,
    /// the sockets leave the loop until one of the primary's copies is closed (a worker
    /// took its connection) or a second has passed: watched, a socket whose connection
    /// cannot be accepted would wake the loop again at once, for ever.
    fn accept(&mut self, index: usize) {
        let mut short = None;
        self.with_sender(index, |handle, send, _| short = handle.accept(send));
        match short {
            Some(e) => self.pause_accepting(e),
            // The queue emptied: if fds ran short before, that episode is over.
            None if std::mem::take(&mut self.short_of_fds) => {
                log!("fds available again; accepting again")
            }
            None => {}
        }
    }

    fn pause_accepting(&mut self, e: io::Error) {
        // One line per episode, however often the sockets are tried again meanwhile.
        if !std::mem::replace(&mut self.short_of_fds, true) {
            log!("out of fds (accept: {e}); no new connections until one is handed off");
        }
        if self.accept_paused_until.is_none() {
            let _ = self.cluster.unwatch(self.control.as_fd());
            for handle in &self.handles {
                if let Some(listener) = handle.listener().filter(|_| handle.is_round_robin()) {
                    let _ = self.cluster.unwatch(listener.as_fd());
                }
            }
        }
        self.accept_paused_until = Some(Instant::now() + Duration::from_secs(1));
    }

    /// Watches the sockets again after `pause_accepting`.
    fn resume_accepting(&mut self) {
        if self.accept_paused_until.take().is_none() {
            return;
        }
        let _ = self.cluster.watch(self.control.as_fd(), CONTROL);
        for (token, handle) in self.handles.iter().enumerate() {
            if let Some(listener) = handle.listener().filter(|_| handle.is_round_robin()) {
                let _ = self.cluster.watch(listener.as_fd(), token as u64);
            }
        }
    }

    /// Worker `id` answered the `newconn` whose seq is `ack`.
    fn answered(&mut self, id: u32, ack: u64, accepted: bool) {
        for index in 0..self.handles.len() {
            let mut found = false;
            self.with_sender(index, |h, send, _| {
                found = h.answered(id, ack, accepted, send)
            });
            if found {
                // The primary's copy of a connection is closed: an fd is free again.
                if accepted {
                    self.resume_accepting();
                }
                return;
            }
        }
        self.unknown(id, "an answer to a connection it was not sent".into());
    }

    /// Worker `id`'s last handle did not arrive.
    fn not_arrived(&mut self, id: u32) {
        for index in 0..self.handles.len() {
            let mut found = false;
            self.with_sender(index, |h, send, _| found = h.not_arrived(id, send));
            if found {
                log!("worker {id} did not receive a connection's fd; it goes to another");
                return;
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Serving, leaving, exiting
    // ---------------------------------------------------------------------------------

    /// Worker `id` serves: it said `listening`, or `READY=1`. A replacement takes its old
    /// worker's slot now, and only now does the old one leave.
    // ANCHOR: serving
    fn serving(&mut self, id: u32) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if worker.state != State::Starting && worker.state != State::Online {
            return;
        }
        worker.state = State::Serving;
        worker.serve_by = None;
        self.first_round.remove(&id);
        if let Some(old) = worker.replaces.take() {
            let now = Instant::now();
            if let Some(slot) = self.books.leaving(old) {
                self.books.started(slot, id, now);
                log!("worker {id} serves: it takes worker {old}'s place in slot {slot}");
            }
            self.leave(old, &format!("worker {id} serves in its place"));
            if let Some(reload) = self.reload.as_mut().filter(|r| r.turn == Some((old, id))) {
                reload.turn = None;
                reload.replaced += 1;
                self.reload_step();
            }
        }
        self.announce();
    }
    // ANCHOR_END: serving

    /// The ready line, once every worker of the first round serves or is gone.
    fn announce(&mut self) {
        let serving = self.serving_count();
        if self.announced || !self.first_round.is_empty() || serving == 0 {
            return;
        }
        self.announced = true;
        let mut addrs: Vec<SocketAddr> =
            self.handles.iter().filter_map(Handle::local_addr).collect();
        if self.settings.protocol == Protocol::Systemd || addrs.is_empty() {
            addrs.insert(0, self.address);
        }
        let (kind, policy) = match self.settings.protocol {
            Protocol::Node if self.settings.round_robin => ("Node", ", round-robin"),
            Protocol::Node => ("Node", ", shared handle"),
            Protocol::Systemd => ("socket-activated", ""),
        };
        for addr in addrs {
            log!(
                "listening on http://{addr} ({serving} of {} {kind} workers serve{policy}; \
                 status: ch11-node-primary --status --port {})",
                self.settings.workers,
                self.address.port()
            );
        }
        if self.prebound.is_some() && self.settings.protocol == Protocol::Node {
            log!(
                "no worker asked for port {}, which the primary bound: does the program \
                 listen on process.env.PORT?",
                self.address.port()
            );
        }
    }

    fn serving_count(&self) -> usize {
        let serving = |w: &&Worker| w.state == State::Serving;
        self.workers.values().filter(serving).count()
    }

    /// Worker `id` leaves on the primary's word: no more connections, `disconnect` (Node)
    /// or SIGTERM (systemd), and SIGKILL after `--kill-timeout`. Its exit is planned.
    // ANCHOR: leave
    fn leave(&mut self, id: u32, why: &str) {
        self.books.leaving(id);
        for handle in &mut self.handles {
            handle.retire(id);
        }
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if worker.state == State::Leaving {
            return;
        }
        worker.state = State::Leaving;
        worker.serve_by = None;
        worker.kill_at = Some(Instant::now() + self.settings.kill_timeout);
        let pid = worker.pid;
        log!(
            "worker {id} (pid {pid}) is leaving ({why}): it finishes what it holds, SIGKILL in \
             {} if it has not",
            secs(self.settings.kill_timeout)
        );
        match self.settings.protocol {
            Protocol::Node => {
                let disconnect = self.messages.disconnect();
                self.send(id, &disconnect);
            }
            Protocol::Systemd => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
    }
    // ANCHOR_END: leave

    /// Worker `id` called `worker.disconnect()` itself: its exit is planned, and its slot
    /// gets a new worker now.
    fn left_on_its_own(&mut self, id: u32) {
        for handle in &mut self.handles {
            handle.retire(id);
        }
        let slot = self.books.leaving(id);
        if let Some(w) = self.workers.get_mut(&id) {
            w.state = State::Leaving;
            w.kill_at = Some(Instant::now() + self.settings.kill_timeout);
        }
        log!("worker {id} leaves on its own (worker.disconnect()): its slot gets a new worker");
        if let Some(slot) = slot {
            self.refill(slot);
        }
    }

    /// Worker `id` did not serve by its deadline: it is stopped. A replacement's turn
    /// fails; any other worker died at start, and its slot backs off.
    fn too_slow(&mut self, id: u32) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        worker.serve_by = None;
        worker.kill_at = Some(Instant::now() + self.settings.kill_timeout);
        let pid = worker.pid;
        let replaces = worker.replaces;
        log!(
            "worker {id} (pid {pid}) did not serve within --listen-timeout {}: stopping it",
            secs(self.settings.listen_timeout)
        );
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if let Some(old) = replaces {
            self.turn_failed(id, old, "did not serve in time");
        }
    }

    /// Worker `id` exited (chapter 1 has logged how): forget it, rescue the connection it
    /// had not taken, and let the books decide about its slot.
    // ANCHOR: exited
    fn exited(&mut self, id: u32, status: Exited) {
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        if let Some(channel) = &worker.channel {
            let _ = self.cluster.unwatch(channel.as_fd());
        }
        for index in 0..self.handles.len() {
            self.with_sender(index, |handle, send, _| handle.remove(id, send));
        }
        self.first_round.remove(&id);
        if let Some(old) = worker.replaces {
            self.turn_failed(id, old, &format!("{status} before it served"));
            return;
        }
        if self.stopping {
            return;
        }
        let now = Instant::now();
        let verdict = match worker.state {
            State::Starting | State::Online => self.books.exited_unready(id, now),
            State::Serving | State::Leaving => self.books.exited(id, now),
        };
        self.report(verdict);
        self.announce();
    }
    // ANCHOR_END: exited

    /// What the books decided about a slot.
    fn report(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Restart {
                slot,
                after,
                crashes,
                ..
            } => {
                let row = match crashes {
                    0 => String::new(),
                    n => format!("{n} deaths at start in a row; "),
                };
                log!("slot {slot}: {row}restart in {} ms", after.as_millis());
            }
            Verdict::GiveUp { slot, crashes } => log!(
                "slot {slot} is given up: its workers died at start {crashes} times in a row, \
                 more than --max-restarts {}; {} of {} slots still serve",
                self.books.policy().max_restarts,
                self.books.in_service(),
                self.settings.workers
            ),
            Verdict::Planned => {}
        }
    }

    // ---------------------------------------------------------------------------------
    // Reload, memory
    // ---------------------------------------------------------------------------------

    /// SIGUSR2: replace every worker, one at a time, each new one serving before its old
    /// one leaves. A second SIGUSR2 during a reload makes one more reload after it.
    // ANCHOR: reload
    pub fn reload(&mut self) {
        if self.stopping {
            return;
        }
        if let Some(reload) = &mut self.reload {
            reload.again = true;
            log!("SIGUSR2 during a reload: one more reload follows this one");
            return;
        }
        let todo: VecDeque<u32> = self
            .books
            .slots()
            .filter_map(|slot| self.holder(slot))
            .collect();
        log!(
            "SIGUSR2: replacing {} one at a time, each by a new worker that must serve first",
            shared::log::workers(todo.len())
        );
        self.reload = Some(Reload {
            started: Instant::now(),
            todo,
            turn: None,
            replaced: 0,
            again: false,
        });
        self.reload_step();
    }

    /// Moves the reload on: the next old worker's replacement, or the end.
    fn reload_step(&mut self) {
        while let Some(reload) = &mut self.reload {
            if reload.turn.is_some() {
                return; // its new worker does not serve yet: `serving` calls again
            }
            let Some(old) = reload.todo.pop_front() else {
                let (replaced, took, again) =
                    (reload.replaced, reload.started.elapsed(), reload.again);
                log!(
                    "reload done: {} replaced in {} ms",
                    shared::log::workers(replaced),
                    took.as_millis()
                );
                self.reload = None;
                if again {
                    self.reload();
                }
                return;
            };
            if self.books.slot_of(old).is_none() {
                continue; // it died meanwhile, and its slot was restarted from the new program
            }
            match self.fork(Some(old)) {
                Ok(new) => {
                    if let Some(reload) = &mut self.reload {
                        reload.turn = Some((old, new));
                    }
                    return;
                }
                Err(e) => {
                    log!("reload stopped: could not start a worker to replace worker {old}: {e}");
                    self.reload = None;
                }
            }
        }
    }
    // ANCHOR_END: reload

    /// The worker holding `slot`, if one does.
    fn holder(&self, slot: usize) -> Option<u32> {
        self.workers
            .keys()
            .copied()
            .find(|id| self.books.slot_of(*id) == Some(slot))
    }

    /// Replacement `new` of worker `old` will not serve: `old` keeps its slot, and a
    /// reload whose turn this was stops.
    fn turn_failed(&mut self, new: u32, old: u32, why: &str) {
        log!("worker {new}, started to replace worker {old}, {why}: worker {old} keeps its slot");
        if self.reload.as_ref().and_then(|r| r.turn) == Some((old, new)) {
            if let Some(reload) = self.reload.take() {
                log!(
                    "reload stopped: {} of {} replaced; the others serve on",
                    reload.replaced,
                    reload.replaced + reload.todo.len() + 1
                );
            }
        }
    }

    /// `--max-rss`: a serving worker past the limit is replaced, the new one first.
    fn check_memory(&mut self) {
        let replacing: HashSet<u32> = self.workers.values().filter_map(|w| w.replaces).collect();
        let over: Vec<(u32, u64)> = self
            .workers
            .iter()
            .filter(|(id, w)| w.state == State::Serving && !replacing.contains(id))
            .filter_map(|(id, w)| Some((*id, rss(w.pid)?)))
            .filter(|(_, rss)| *rss > self.settings.max_rss)
            .collect();
        for (id, bytes) in over {
            log!(
                "worker {id} uses {} MB, over --max-rss {} MB: a new worker replaces it",
                bytes / 1_000_000,
                self.settings.max_rss / 1_000_000
            );
            if let Err(e) = self.fork(Some(id)) {
                log!("could not start a worker to replace worker {id}: {e}");
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Socket activation
    // ---------------------------------------------------------------------------------

    /// Notifications on `NOTIFY_SOCKET`: `READY=1` means serving.
    fn notifications(&mut self) {
        let Some(notify) = &self.notify else {
            return;
        };
        for (pid, text) in notify.receive() {
            let Some(id) = self
                .workers
                .iter()
                .find(|(_, w)| w.pid == pid)
                .map(|(id, _)| *id)
            else {
                continue; // not one of ours
            };
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("READY", "1")) => {
                        log!("worker {id} is ready (READY=1)");
                        self.serving(id);
                    }
                    Some(("STATUS", status)) => {
                        if let Some(w) = self.workers.get_mut(&id) {
                            w.status = status.to_string();
                        }
                    }
                    _ => self.unknown(id, format!("a notification {line:?}")),
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // The control socket
    // ---------------------------------------------------------------------------------

    /// New clients of the control socket: each is answered at once if its command has
    /// come, and watched until it has.
    fn control_clients(&mut self) {
        let (new, failed) = self.control.accept();
        for (n, fd) in &new {
            let _ = self.cluster.watch(*fd, CONTROL_CLIENTS + n);
        }
        let new: Vec<u64> = new.into_iter().map(|(n, _)| n).collect();
        if let Some(e) = failed {
            // Out of fds, most likely: the control socket rests with the others.
            self.pause_accepting(e);
        }
        for n in new {
            self.control_command(n);
        }
    }

    /// Answers control client `n` if its command has come (its socket then closes, and
    /// leaves the loop).
    fn control_command(&mut self, n: u64) {
        let Some((command, stream)) = self.control.read(n) else {
            return;
        };
        let text = match command.as_str() {
            "status" => self.status_table(),
            other => format!("unknown command {other:?}; the one command is: status\n"),
        };
        status::answer(stream, &text);
    }

    /// The answer to `status`.
    fn status_table(&self) -> String {
        let now = Instant::now();
        let rows: Vec<Row> = self
            .workers
            .iter()
            .map(|(id, w)| {
                let slot = match (self.books.slot_of(*id), w.replaces) {
                    (Some(slot), _) => slot.to_string(),
                    (None, Some(old)) => format!("->{old}"),
                    (None, None) => "-".into(),
                };
                let restarts = self
                    .books
                    .slot_of(*id)
                    .map_or(0, |slot| self.books.starts(slot).saturating_sub(1));
                let connections = (self.settings.protocol == Protocol::Node
                    && self.settings.round_robin)
                    .then(|| self.handles.iter().map(|h| h.taken_by(*id)).sum());
                Row {
                    id: *id,
                    slot,
                    pid: w.pid,
                    state: w.state.name(),
                    uptime: now.saturating_duration_since(w.forked),
                    restarts,
                    rss: rss(w.pid),
                    connections,
                    note: w.status.clone(),
                }
            })
            .collect();
        let head = format!(
            "primary pid {}, http://{}, {} of {} slots in service{}",
            std::process::id(),
            self.address,
            self.books.in_service(),
            self.settings.workers,
            if self.reload.is_some() {
                ", reloading"
            } else {
                ""
            }
        );
        status::table(&head, &rows)
    }

    // ---------------------------------------------------------------------------------
    // Stopping
    // ---------------------------------------------------------------------------------

    /// Ctrl-C or SIGTERM: stop listening, hand out what the primary holds, then let every
    /// worker finish. A second one: SIGKILL now.
    // ANCHOR: stop
    fn stop(&mut self) {
        if self.stopping {
            log!("stopping now: SIGKILL to every worker");
            for w in self.workers.values() {
                let _ = kill(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
            }
            return;
        }
        self.stopping = true;
        self.stop_by = Some(Instant::now() + self.settings.kill_timeout);
        self.reload = None;
        log!(
            "stopping: no new connections; {} finish what they hold, for at most {} \
             (--kill-timeout)",
            shared::log::workers(self.workers.len()),
            secs(self.settings.kill_timeout)
        );
        for index in 0..self.handles.len() {
            self.with_sender(index, |handle, send, cluster| {
                handle.stop_listening(cluster, send)
            });
        }
        self.prebound = None;
    }
    // ANCHOR_END: stop

    /// Every worker leaves, once no connection waits in the primary for one.
    fn disconnect_all(&mut self) {
        self.disconnected = true;
        let ids: Vec<u32> = self.workers.keys().copied().collect();
        for id in ids {
            self.leave(id, "the primary is stopping");
        }
    }
}

/// A worker leads a process group of its own: Ctrl-C in a terminal signals the foreground
/// group, and Node resets SIGINT to its default when it starts, so an ignored SIGINT (the
/// way chapter 1 shields its workers) would not shield a Node worker. Out of the group,
/// only the primary hears Ctrl-C, and it drains the workers.
fn in_a_group_of_its_own(mut command: Command) -> Command {
    command.process_group(0);
    command
}

/// A process's resident memory, in bytes, from `/proc/PID/statm`.
fn rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes a plain integer.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(0) as u64)
}

/// `5 s`, `0.5 s`.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}
