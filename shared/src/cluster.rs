//! The master's side of a cluster: start workers, hear what they say and when they exit,
//! and stop them all on Ctrl-C or SIGTERM.
//!
//! Explained in chapter 1 (fork, exit, shutdown) and chapter 2 (messages).
//!
//! Node's master is an event emitter: `cluster.on('message')`, `cluster.on('exit')`. Ours
//! is a queue of [`Event`]s that the chapter's `main` takes one at a time with
//! [`Cluster::next_event`]. Small helper threads feed the queue: one per worker that
//! blocks reading its channel (or, without a channel, waiting for it to exit), and the
//! Ctrl-C handler. The chapter's own loop stays single-threaded and reads top to bottom.
//!
//! A master that must also watch sockets of its own (chapter 6 accepts every connection)
//! reads the channels itself in one epoll loop, as Node's master does on libuv: see
//! [`Cluster::polled`].

use std::collections::BTreeMap;
use std::error::Error;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SendError, Sender};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::args::Args;
use crate::channel::{Channel, ChannelError, Message};
use crate::log;
use crate::spawn::{self, spawn_worker, Worker};

/// What a chapter's `master` and `worker` functions return: an exit code, or an error for
/// [`crate::log::exit_code`] to report.
pub type Outcome = Result<ExitCode, Box<dyn Error>>;

/// Every chapter's `main`, once its arguments are parsed: run `worker` if this process is
/// a worker, `master` if not.
// ANCHOR: master_or_worker
pub fn master_or_worker(
    args: &Args,
    master: fn(&Args) -> Outcome,
    worker: fn(u32, &Args) -> Outcome,
) -> ExitCode {
    // Am I a worker? The same question as Node's `cluster.isPrimary`, asked the same way:
    // is the variable the master sets for its workers in my environment?
    let result = match spawn::role() {
        Ok(Some(id)) => worker(id, args),
        Ok(None) => master(args),
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(2);
        }
    };
    crate::log::exit_code(result)
}
// ANCHOR_END: master_or_worker

/// Something that happened, for the master to act on.
pub enum Event {
    /// Ctrl-C (SIGINT) or SIGTERM reached the master.
    Shutdown,
    /// Worker `id` sent a message.
    Message { id: u32, message: Message },
    /// Worker `id` sent something that is not a valid message; it was dropped.
    BadMessage { id: u32, error: ChannelError },
    /// Worker `id` (pid `pid`) exited or was killed.
    Exit { id: u32, pid: u32, status: Exited },
}

/// How a worker ended, as `cluster.on('exit', (worker, code, signal))` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exited {
    Code(i32),
    Signal(Signal),
}

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exited::Code(code) => write!(f, "exited with code {code}"),
            Exited::Signal(sig) => write!(f, "was killed by {sig}"),
        }
    }
}

/// The master's view of its workers.
pub struct Cluster {
    workers: BTreeMap<u32, Worker>,
    events: Receiver<Event>,
    sender: EventSender,
    /// Set by the Ctrl-C handler: a master still forking its workers stops forking.
    stopping: Arc<AtomicBool>,
    /// Readable whenever an event is queued, for a master that waits in epoll (chapter 6).
    wake: OwnedFd,
    with_channel: bool,
    /// Whether the master reads the channels itself instead of a helper thread per worker.
    polled: bool,
    next_id: u32,
}

/// Queues events for the master, from its helper threads, and makes
/// [`Cluster::wake_fd`] readable for each one.
#[derive(Clone)]
struct EventSender {
    queue: Sender<Event>,
    wake: Arc<OwnedFd>,
}

impl EventSender {
    /// Queues `event`; an error means the master is gone.
    fn send(&self, event: Event) -> Result<(), SendError<Event>> {
        self.queue.send(event)?;
        // One byte per event. A full pipe already says "look at the queue", so a failed
        // write loses nothing.
        let _ = nix::unistd::write(&*self.wake, &[1]);
        Ok(())
    }
}

impl Cluster {
    /// A cluster whose workers each get an IPC channel (chapter 2 onwards).
    pub fn new() -> io::Result<Self> {
        Self::build(true, false)
    }

    /// A cluster whose workers get no channel: the master can only start and stop them
    /// (chapter 1).
    pub fn without_channels() -> io::Result<Self> {
        Self::build(false, false)
    }

    /// A cluster whose workers each get an IPC channel that the master reads itself, in
    /// its own event loop, through [`Cluster::channel`] (chapter 6). Exits and Ctrl-C still
    /// arrive as events; [`Cluster::wake_fd`] says when, and [`Cluster::try_event`] takes
    /// them.
    pub fn polled() -> io::Result<Self> {
        Self::build(true, true)
    }

    fn build(with_channel: bool, polled: bool) -> io::Result<Self> {
        let (queue, events) = mpsc::channel();
        let (wake, wake_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let sender = EventSender {
            queue,
            wake: Arc::new(wake_write),
        };
        let on_signal = sender.clone();
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        // ANCHOR: ctrlc
        // ctrlc runs this on its own thread, not inside the signal handler, so it may
        // do anything; it just queues the event for the master's loop.
        ctrlc::set_handler(move || {
            flag.store(true, Ordering::SeqCst);
            let _ = on_signal.send(Event::Shutdown);
        })
        .map_err(io::Error::other)?;
        // ANCHOR_END: ctrlc
        Ok(Cluster {
            workers: BTreeMap::new(),
            events,
            sender,
            stopping,
            wake,
            with_channel,
            polled,
            next_id: 1,
        })
    }

    /// Starts the next worker (ids count up from 1 and are never reused, as in Node) and
    /// returns its id.
    // ANCHOR: fork
    pub fn fork(&mut self) -> io::Result<u32> {
        // Ctrl-C while the workers are still starting: start no more. The error ends
        // the master, and dropping the cluster stops the workers already started.
        if self.stopping.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "stopped by Ctrl-C while starting the workers",
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        let worker = spawn_worker(id, self.with_channel)?;
        log!("forked worker {id} (pid {})", worker.pid);
        self.watch(&worker);
        self.workers.insert(id, worker);
        Ok(id)
    }
    // ANCHOR_END: fork

    /// Starts one helper thread that turns what the worker does into events.
    // ANCHOR: watch
    fn watch(&self, worker: &Worker) {
        let (id, pid) = (worker.id, worker.pid);
        let events = self.sender.clone();
        // A polled master reads the channel itself; the thread only waits for the exit.
        let channel = worker.channel.clone().filter(|_| !self.polled);
        std::thread::spawn(move || {
            if let Some(channel) = channel {
                forward_messages(id, &channel, &events);
            }
            // The channel reads end-of-file when the worker's process has closed it, that
            // is, as it exits; now wait for the exit itself and reap it.
            let status = reap(pid);
            let _ = events.send(Event::Exit { id, pid, status });
        });
    }
    // ANCHOR_END: watch

    /// Waits for the next event.
    pub fn next_event(&mut self) -> Event {
        let event = self
            .events
            .recv()
            .expect("the cluster keeps a sender, so its queue never closes");
        self.note(&event);
        event
    }

    /// Bookkeeping every chapter needs: forget a worker once it has exited, and log it,
    /// as Node's cluster emits `exit`.
    fn note(&mut self, event: &Event) {
        if let Event::Exit { id, pid, status } = event {
            self.workers.remove(id);
            log!("worker {id} (pid {pid}) {status}");
        }
    }

    /// Like [`Cluster::next_event`], but gives up after `timeout` and returns `None`.
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Option<Event> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => {
                self.note(&event);
                Some(event)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => unreachable!("the cluster keeps a sender"),
        }
    }

    /// Takes the next queued event without waiting: `None` if there is none. For a master
    /// that waits in epoll and finds [`Cluster::wake_fd`] readable.
    pub fn try_event(&mut self) -> Option<Event> {
        let mut byte = [0u8; 1];
        let _ = nix::unistd::read(&self.wake, &mut byte);
        let event = self.events.try_recv().ok()?;
        self.note(&event);
        Some(event)
    }

    /// Readable whenever an event is waiting in the queue: what a master that runs its
    /// own epoll loop watches to hear about exits and Ctrl-C.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Worker `id`'s channel, for a master that reads it itself ([`Cluster::polled`]).
    pub fn channel(&self, id: u32) -> Option<&Channel> {
        self.workers.get(&id).and_then(|w| w.channel.as_ref())
    }

    /// Sends a text message to worker `id`.
    pub fn send(&self, id: u32, text: &str) -> Result<(), ChannelError> {
        match self.workers.get(&id).and_then(|w| w.channel.as_ref()) {
            Some(channel) => channel.send(text),
            None => Err(ChannelError::Closed),
        }
    }

    /// Sends a text message with a file descriptor attached to worker `id` (chapter 5).
    pub fn send_with_fd(
        &self,
        id: u32,
        text: &str,
        fd: BorrowedFd<'_>,
    ) -> Result<(), ChannelError> {
        match self.workers.get(&id).and_then(|w| w.channel.as_ref()) {
            Some(channel) => channel.send_with_fd(text, fd),
            None => Err(ChannelError::Closed),
        }
    }

    /// The live worker `id`, if it has not exited.
    pub fn worker(&self, id: u32) -> Option<&Worker> {
        self.workers.get(&id)
    }

    /// The ids of the workers that have not exited yet, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.workers.keys().copied().collect()
    }

    /// How many workers are alive.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// True when no worker is alive.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// What every master does with the two events that can end it. Ctrl-C or SIGTERM:
    /// stop every worker, then exit 0. The last worker gone: nothing is left to manage,
    /// exit 1 (chapter 7 will start a replacement instead). Any other event: `None`, and
    /// the chapter's own loop goes on with it.
    // ANCHOR: ends_here
    pub fn ends_here(&mut self, event: &Event) -> Option<ExitCode> {
        match event {
            Event::Shutdown => {
                self.shutdown(Duration::from_secs(5));
                Some(ExitCode::SUCCESS)
            }
            Event::Exit { .. } if self.is_empty() => {
                log!("no workers left; the master exits");
                Some(ExitCode::FAILURE)
            }
            _ => None,
        }
    }
    // ANCHOR_END: ends_here

    /// Stops every worker: SIGTERM first, then, for any still alive after `grace`,
    /// SIGKILL. Returns once all have exited and been reaped, logging each exit.
    // ANCHOR: shutdown
    pub fn shutdown(&mut self, grace: Duration) {
        match self.workers.len() {
            1 => log!("stopping 1 worker"),
            n => log!("stopping {n} workers"),
        }
        for worker in self.workers.values() {
            let _ = kill(Pid::from_raw(worker.pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while !self.workers.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event_timeout(left.max(Duration::from_millis(1))) {
                Some(_) => {}
                None => {
                    for worker in self.workers.values() {
                        log!(
                            "worker {} (pid {}) ignored SIGTERM; sending SIGKILL",
                            worker.id,
                            worker.pid
                        );
                        let _ = kill(Pid::from_raw(worker.pid as i32), Signal::SIGKILL);
                    }
                }
            }
        }
        log!("all workers stopped");
    }
    // ANCHOR_END: shutdown
}

impl Drop for Cluster {
    /// A master that returns early, on an error or on Ctrl-C during start-up, still stops
    /// the workers it started rather than leave them to die with it one by one.
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.shutdown(Duration::from_secs(5));
        }
    }
}

/// Forwards every message from one worker until its channel closes.
// ANCHOR: forward_messages
fn forward_messages(id: u32, channel: &Channel, events: &EventSender) {
    loop {
        let event = match channel.recv() {
            Ok(message) => Event::Message { id, message },
            Err(ChannelError::Closed) => return,
            Err(ChannelError::Io(e)) => {
                log!("reading worker {id}'s channel failed: {e}; no more messages from it");
                return;
            }
            Err(error) => Event::BadMessage { id, error },
        };
        if events.send(event).is_err() {
            return;
        }
    }
}
// ANCHOR_END: forward_messages

/// Waits for process `pid` to end and says how it ended.
fn reap(pid: u32) -> Exited {
    loop {
        match waitpid(Pid::from_raw(pid as i32), None) {
            Ok(WaitStatus::Exited(_, code)) => return Exited::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Exited::Signal(sig),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            // ECHILD: already reaped by someone else; nothing more to learn.
            Err(_) => return Exited::Code(-1),
        }
    }
}
