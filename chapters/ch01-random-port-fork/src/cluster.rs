//! The master's side of a cluster: start workers, hear what they say and when they exit,
//! and stop them all on Ctrl-C or SIGTERM.
//!
//! Explained in chapter 1 (fork, exit, shutdown). Chapter 2 watches each worker's IPC
//! channel in the same loop (a worker's own fd, [`Link`]); chapter 6 adds a socket of its
//! own ([`Cluster::watch`]), and chapter 9 the pipe its SIGUSR2 handler writes to.
//!
//! Node's master is an event emitter: `cluster.on('exit')`, `cluster.on('message')`, all
//! driven by one libuv loop. Ours is one loop too: [`Cluster::next_event`] waits in epoll
//! and hands back one [`Event`] at a time, so a chapter's `master` reads top to bottom. Two
//! things cannot be waited for in epoll, and each gets a small helper thread that queues
//! its event and wakes the loop through a pipe: a worker's exit (`waitpid` blocks), and
//! Ctrl-C (the `ctrlc` crate).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SendError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};

use shared::log;

use crate::spawn::{spawn_command, spawn_worker, Inherit, Worker};

pub use crate::spawn::{master_or_worker, run};
pub use shared::log::Outcome;

/// Something that happened, for the master to act on.
#[derive(Debug)]
pub enum Event {
    /// Ctrl-C (SIGINT) or SIGTERM reached the master.
    Shutdown,
    /// Worker `id` (pid `pid`) exited or was killed.
    Exit { id: u32, pid: u32, status: Exited },
    /// An fd the chapter added with [`Cluster::watch`] is readable; the number is the
    /// token it was added with. A worker's own fd ([`Link`]) comes as
    /// `Ready(WORKER_FDS + id)`.
    Ready(u64),
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

/// The epoll tokens the cluster keeps for itself. A chapter's own tokens
/// ([`Cluster::watch`]) must stay below [`WORKER_FDS`].
const WAKE: u64 = u64::MAX;
/// Worker `id`'s own fd ([`Link`]) is watched with token `WORKER_FDS + id`.
pub const WORKER_FDS: u64 = 1 << 32;

/// What ties a worker to its master besides its exit (chapter 2's IPC channel): the fd the
/// worker inherits, and the master's own end, which the loop watches for it.
pub struct Link<'a> {
    pub theirs: Inherit,
    pub ours: BorrowedFd<'a>,
}

/// The master's view of its workers.
pub struct Cluster {
    workers: BTreeMap<u32, Worker>,
    epoll: Epoll,
    /// Events from the helper threads, and the pipe they write a byte to for each one.
    queue: Receiver<Event>,
    sender: EventSender,
    wake: OwnedFd,
    /// Events read from epoll but not handed out yet.
    pending: VecDeque<Event>,
    /// Set by the Ctrl-C handler: a master still forking its workers stops forking.
    stopping: Arc<AtomicBool>,
    next_id: u32,
}

/// Queues events for the master from its helper threads, and writes a byte to the wake
/// pipe for each, so that the master's epoll returns.
#[derive(Clone)]
struct EventSender {
    queue: Sender<Event>,
    wake: Arc<OwnedFd>,
}

impl EventSender {
    /// Queues `event`; an error means the master is gone.
    fn send(&self, event: Event) -> Result<(), SendError<Event>> {
        self.queue.send(event)?;
        // A full pipe already says "look at the queue", so a failed write loses nothing.
        let _ = nix::unistd::write(&*self.wake, &[1]);
        Ok(())
    }
}

impl Cluster {
    /// A master with no workers yet.
    pub fn new() -> io::Result<Self> {
        // Where this program is, learned now: workers re-run what is at that path.
        crate::spawn::exe()?;
        let (queue_in, queue) = mpsc::channel();
        let (wake, wake_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let sender = EventSender {
            queue: queue_in,
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
            epoll,
            queue,
            sender,
            wake,
            pending: VecDeque::new(),
            stopping,
            next_id: 1,
        })
    }

    /// Starts the next worker (ids count up from 1 and are never reused, as in Node) and
    /// returns its id.
    // ANCHOR: fork
    pub fn fork(&mut self) -> io::Result<u32> {
        self.fork_with(&[], None)
    }

    /// [`Cluster::fork`], with extra environment variables for the worker and, with a
    /// `link`, an fd it inherits and the master's end to watch (chapter 2).
    pub fn fork_with(&mut self, env: &[(&str, String)], link: Option<Link>) -> io::Result<u32> {
        self.start(link, |id, theirs| spawn_worker(id, theirs, env))
    }

    /// Starts worker `id` with `spawn`, and watches it.
    fn start(
        &mut self,
        link: Option<Link>,
        spawn: impl FnOnce(u32, Option<Inherit>) -> io::Result<Worker>,
    ) -> io::Result<u32> {
        // Ctrl-C while the workers are still starting: start no more. The error ends
        // the master, and dropping the cluster stops the workers already started.
        if self.stopping.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "stopped by Ctrl-C while starting the workers",
            ));
        }
        let id = self.next_id;
        let (theirs, ours) = match link {
            Some(Link { theirs, ours }) => (Some(theirs), Some(ours)),
            None => (None, None),
        };
        let worker = spawn(id, theirs).map_err(explain_spawn_error)?;
        self.next_id += 1;
        log!("forked worker {id} (pid {})", worker.pid);
        self.watch_worker(&worker, ours)?;
        self.workers.insert(id, worker);
        Ok(id)
    }
    // ANCHOR_END: fork

    /// [`Cluster::fork_with`] for a worker that runs any program instead of this one
    /// (chapter 11's Node.js workers): `command` makes worker `id`'s command, see
    /// [`spawn_command`].
    pub fn fork_command(
        &mut self,
        command: impl FnOnce(u32) -> Command,
        link: Option<Link>,
    ) -> io::Result<u32> {
        self.start(link, |id, theirs| spawn_command(id, command(id), theirs))
    }

    /// Listens to a new worker: its own fd, if it has one, joins the master's epoll, and a
    /// helper thread waits for its exit.
    // ANCHOR: watch_worker
    fn watch_worker(&self, worker: &Worker, ours: Option<BorrowedFd>) -> io::Result<()> {
        let (id, pid) = (worker.id, worker.pid);
        // A worker we cannot watch is stopped and reaped here, or it would be a zombie.
        let give_up = |e: io::Error| {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            reap(pid);
            explain_spawn_error(e)
        };
        if let Some(fd) = ours {
            let token = WORKER_FDS + u64::from(worker.id);
            self.epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .map_err(|e| give_up(e.into()))?;
        }
        let events = self.sender.clone();
        let waiter = std::thread::Builder::new()
            .name(format!("wait-worker-{id}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                // waitpid blocks until the worker is gone, and reaps it: no zombie is left.
                let status = reap(pid);
                let _ = events.send(Event::Exit { id, pid, status });
            });
        // Out of threads, say: nobody would ever reap this worker.
        waiter.map(drop).map_err(give_up)
    }
    // ANCHOR_END: watch_worker

    /// Waits for the next event.
    pub fn next_event(&mut self) -> Event {
        wait_for(|timeout| self.next_event_timeout(timeout))
    }

    /// Like [`Cluster::next_event`], but gives up after `timeout` and returns `None`.
    // ANCHOR: next_event
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Option<Event> {
        let event = self.next_event_unnoted(timeout)?;
        self.note(&event);
        Some(event)
    }
    // ANCHOR_END: next_event

    /// [`Cluster::next_event_timeout`] without its bookkeeping: an `Exit` leaves the worker
    /// known until the caller hands it to [`Cluster::note`]. For chapter 2's master, which
    /// first reads what the worker said before it died: those messages must find it
    /// still there.
    pub fn next_event_unnoted(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Rounded up, so a short wait is a wait and not a busy loop.
            let millis = (left.as_micros().div_ceil(1000)).min(u128::from(u16::MAX - 1)) as u16;
            if millis == 0 {
                return None;
            }
            self.wait(EpollTimeout::from(millis));
        }
    }

    /// One `epoll_wait`, and everything it found queued in `pending`. Within one wait,
    /// the workers' own fds go before exits and before the chapter's own sockets: from
    /// chapter 2 on, a worker's last words are heard before its death, and an
    /// acknowledgement before the next connection it frees the worker for.
    fn wait(&mut self, timeout: EpollTimeout) {
        let mut ready = [EpollEvent::empty(); 64];
        let n = match self.epoll.wait(&mut ready, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                log!("epoll_wait failed: {e}");
                0
            }
        };
        let mut workers = Vec::new();
        let mut sockets = Vec::new();
        for token in ready[..n].iter().map(EpollEvent::data) {
            match token {
                WAKE => drain(&self.wake),
                t if t >= WORKER_FDS => workers.push(Event::Ready(t)),
                t => sockets.push(Event::Ready(t)),
            }
        }
        let others: Vec<Event> = self.queue.try_iter().collect();
        self.pending.extend(workers);
        self.pending.extend(others);
        self.pending.extend(sockets);
    }

    /// Bookkeeping every chapter needs: forget a worker once it has exited, and log it,
    /// as Node's cluster emits `exit`.
    pub fn note(&mut self, event: &Event) {
        if let Event::Exit { id, pid, status } = event {
            // Its fds close with it, and leave epoll.
            self.workers.remove(id);
            log!("worker {id} (pid {pid}) {status}");
        }
    }

    /// Adds one of the chapter's own fds to the master's loop: when it is readable,
    /// [`Cluster::next_event`] returns [`Event::Ready`]`(token)`. `token` must be below
    /// [`WORKER_FDS`]. The fd stays watched until `Cluster::unwatch` or its close.
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        assert!(token < WORKER_FDS, "token {token} is the cluster's own");
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        Ok(())
    }

    /// Stops watching an fd added with [`Cluster::watch`], or a worker's own fd.
    pub fn unwatch(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll.delete(fd)?;
        Ok(())
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

    /// What every master of chapters 1 to 6 does with the two events that can end it.
    /// Ctrl-C or SIGTERM: stop every worker, then exit 0. The last worker gone: nothing is
    /// left to manage, exit 1 (chapter 7 starts a replacement instead). Any other event:
    /// `None`, and the chapter's own loop goes on with it.
    // ANCHOR: finished_by
    pub fn finished_by(&mut self, event: &Event) -> Option<ExitCode> {
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
    // ANCHOR_END: finished_by

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
        let mut killed = false;
        while !self.workers.is_empty() {
            // After SIGKILL there is nothing left to decide: wait for the exits.
            let wait = match killed {
                true => Duration::from_secs(1),
                false => deadline.saturating_duration_since(Instant::now()),
            };
            if self.next_event_timeout(wait).is_none() && !killed {
                for worker in self.workers.values() {
                    log!(
                        "worker {} (pid {}) ignored SIGTERM; sending SIGKILL",
                        worker.id,
                        worker.pid
                    );
                    let _ = kill(Pid::from_raw(worker.pid as i32), Signal::SIGKILL);
                }
                killed = true;
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

/// Waits as long as it takes: asks `next` for an event, an hour at a time, until one
/// comes. A master's `next_event`, built on its `next_event_timeout`.
pub fn wait_for<E>(mut next: impl FnMut(Duration) -> Option<E>) -> E {
    loop {
        if let Some(event) = next(Duration::from_secs(3600)) {
            return event;
        }
    }
}

/// Reads and discards everything in a non-blocking pipe.
fn drain(pipe: &OwnedFd) {
    let mut bytes = [0u8; 64];
    while let Ok(1..) = nix::unistd::read(pipe, &mut bytes) {}
}

/// Waits for process `pid` to end and says how it ended. Chapter 6b reaps its agent with it.
pub fn reap(pid: u32) -> Exited {
    loop {
        match waitpid(Pid::from_raw(pid as i32), None) {
            Ok(WaitStatus::Exited(_, code)) => return Exited::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Exited::Signal(sig),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            // ECHILD: already reaped by someone else; nothing more to learn.
            Err(_) => return Exited::Code(-1),
        }
    }
}

/// A failed fork or exec, with what a learner can do about the common causes.
fn explain_spawn_error(e: io::Error) -> io::Error {
    let hint = match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
        Errno::EAGAIN => "out of processes: see `ulimit -u`, or the cgroup's pids.max",
        Errno::EMFILE | Errno::ENFILE => "out of file descriptors: see `ulimit -n`",
        Errno::ENOMEM => "out of memory",
        _ => return e,
    };
    io::Error::new(e.kind(), format!("{e} ({hint})"))
}
