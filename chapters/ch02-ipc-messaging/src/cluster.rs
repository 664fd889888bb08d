//! The master's loop of chapter 1, now hearing its workers: each worker gets an IPC
//! channel, and what arrives on it comes out of the loop as [`Event::Message`].
//!
//! Node's master does the same in `cluster.fork()`: it starts the worker with an IPC
//! channel (`stdio: [..., 'ipc']`), and every message read from it becomes a `message`
//! event on the worker and on the cluster. Here the channel is chapter 1's [`Link`]: the
//! worker inherits its end, the master's end joins the loop's epoll, and this wrapper turns
//! "the channel is readable" into the messages waiting on it.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ch01_random_port_fork::cluster::{self as processes, Link, WORKER_FDS};
use ch01_random_port_fork::spawn::{Inherit, Worker};
use shared::log;

use crate::channel::{Channel, ChannelError, Message};
use crate::worker::CHANNEL_FD_VAR;

pub use ch01_random_port_fork::cluster::{master_or_worker, run, Exited, Outcome};

/// Something that happened, for the master to act on: chapter 1's events, and the
/// workers' messages.
#[derive(Debug)]
pub enum Event {
    /// Ctrl-C (SIGINT) or SIGTERM reached the master.
    Shutdown,
    /// Worker `id` sent a message.
    Message { id: u32, message: Message },
    /// Worker `id` sent something that is not a valid message; it was dropped.
    BadMessage { id: u32, error: ChannelError },
    /// Worker `id` (pid `pid`) exited or was killed.
    Exit { id: u32, pid: u32, status: Exited },
    /// An fd the chapter added with [`Cluster::watch`] is readable.
    Ready(u64),
}

/// Chapter 1's master, with a channel to every worker.
pub struct Cluster {
    processes: processes::Cluster,
    channels: BTreeMap<u32, Channel>,
    /// Messages read and not handed out yet.
    pending: VecDeque<Event>,
}

impl Cluster {
    /// A master with no workers yet.
    pub fn new() -> io::Result<Self> {
        Ok(Cluster {
            processes: processes::Cluster::new()?,
            channels: BTreeMap::new(),
            pending: VecDeque::new(),
        })
    }

    /// A master with `n` workers started, each with its channel: Node's
    /// `for (let i = 0; i < n; i++) cluster.fork()`.
    pub fn with_workers(n: usize) -> io::Result<Self> {
        let mut cluster = Cluster::new()?;
        for _ in 0..n {
            cluster.fork()?;
        }
        Ok(cluster)
    }

    /// Starts the next worker, with a channel, and returns its id.
    pub fn fork(&mut self) -> io::Result<u32> {
        self.fork_with_env(&[])
    }

    /// [`Cluster::fork`], with extra environment variables for the worker.
    // ANCHOR: fork
    pub fn fork_with_env(&mut self, env: &[(&str, String)]) -> io::Result<u32> {
        let (ours, theirs) = Channel::pair()?;
        let link = Link {
            theirs: Inherit {
                var: CHANNEL_FD_VAR,
                fd: theirs,
            },
            ours: ours.as_fd(),
        };
        let id = self.processes.fork_with(env, Some(link))?;
        self.channels.insert(id, ours);
        Ok(id)
    }
    // ANCHOR_END: fork

    /// Waits for the next event.
    pub fn next_event(&mut self) -> Event {
        processes::wait_for(|timeout| self.next_event_timeout(timeout))
    }

    /// Like [`Cluster::next_event`], but gives up after `timeout` and returns `None`.
    // ANCHOR: next_event
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.pending.pop_front() {
                if let Event::Exit { id, pid, status } = event {
                    // Only now, after its last words: chapter 1 forgets the worker.
                    self.processes
                        .note(&processes::Event::Exit { id, pid, status });
                }
                return Some(event);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.processes.next_event_unnoted(left)?;
            match event {
                processes::Event::Ready(token) if token >= WORKER_FDS => {
                    self.read_channel((token - WORKER_FDS) as u32);
                }
                processes::Event::Exit { id, pid, status } => {
                    // Whatever the worker wrote before it died is still in its channel,
                    // even when its exit came first: its last words come before its death,
                    // while the master still knows it.
                    self.read_channel(id);
                    self.channels.remove(&id);
                    self.pending.push_back(Event::Exit { id, pid, status });
                }
                processes::Event::Ready(token) => self.pending.push_back(Event::Ready(token)),
                processes::Event::Shutdown => self.pending.push_back(Event::Shutdown),
            }
        }
    }
    // ANCHOR_END: next_event

    /// Every message waiting on worker `id`'s channel, queued as events. A closed channel
    /// leaves epoll (the worker's exit comes as an event of its own); a malformed message
    /// is reported.
    // ANCHOR: read_channel
    fn read_channel(&mut self, id: u32) {
        let Some(channel) = self.channels.get(&id) else {
            return;
        };
        loop {
            match channel.try_recv() {
                Ok(Some(message)) => self.pending.push_back(Event::Message { id, message }),
                Ok(None) => return,
                Err(ChannelError::Closed) => {
                    let _ = self.processes.unwatch(channel.as_fd());
                    return;
                }
                Err(ChannelError::Io(e)) => {
                    log!("reading worker {id}'s channel failed: {e}; no more messages from it");
                    let _ = self.processes.unwatch(channel.as_fd());
                    return;
                }
                Err(error) => self.pending.push_back(Event::BadMessage { id, error }),
            }
        }
    }
    // ANCHOR_END: read_channel

    /// Sends a text message to worker `id`.
    pub fn send(&self, id: u32, text: &str) -> Result<(), ChannelError> {
        match self.channels.get(&id) {
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
        match self.channels.get(&id) {
            Some(channel) => channel.send_with_fd(text, fd),
            None => Err(ChannelError::Closed),
        }
    }

    /// Chapter 1's [`finished_by`](processes::Cluster::finished_by): Ctrl-C stops every
    /// worker and ends the master; so does the last worker's exit.
    pub fn finished_by(&mut self, event: &Event) -> Option<ExitCode> {
        let event = match *event {
            Event::Shutdown => processes::Event::Shutdown,
            Event::Exit { id, pid, status } => processes::Event::Exit { id, pid, status },
            _ => return None,
        };
        self.processes.finished_by(&event)
    }

    /// Stops every worker: see chapter 1's [`shutdown`](processes::Cluster::shutdown).
    pub fn shutdown(&mut self, grace: Duration) {
        self.note_pending_exits();
        self.processes.shutdown(grace);
    }

    /// Exits read but not handed out yet go to chapter 1's books now: a shutdown waits for
    /// every worker it knows of, and would wait for ever for one whose exit it will never
    /// see again.
    fn note_pending_exits(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for event in pending {
            match event {
                Event::Exit { id, pid, status } => {
                    self.processes
                        .note(&processes::Event::Exit { id, pid, status });
                }
                other => self.pending.push_back(other),
            }
        }
    }

    /// Adds one of the chapter's own fds to the loop: see chapter 1's
    /// [`watch`](processes::Cluster::watch).
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.processes.watch(fd, token)
    }

    /// Stops watching an fd added with [`Cluster::watch`].
    pub fn unwatch(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.processes.unwatch(fd)
    }

    /// The live worker `id`, if it has not exited.
    pub fn worker(&self, id: u32) -> Option<&Worker> {
        self.processes.worker(id)
    }

    /// The ids of the workers that have not exited yet, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.processes.ids()
    }

    /// How many workers are alive.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// True when no worker is alive.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }
}

impl Drop for Cluster {
    /// Chapter 1's cluster stops the workers still alive when it is dropped; it must not
    /// wait for those whose exits sit here, unread.
    fn drop(&mut self) {
        self.note_pending_exits();
    }
}
