//! The master that keeps its workers serving: chapter 6's round-robin master, plus the
//! restarts of [`crate::supervisor`], graceful exits and a draining stop.
//!
//! Explained in chapter 7; chapter 8 adds a heartbeat to it, and chapter 9's reload is
//! made of its pieces ([`Keeper::replace`], [`Keeper::serving`], [`Keeper::drain`]).
//!
//! What it does with each event, in the order a reader meets them:
//!
//! - a worker that **exits unexpectedly** (a signal, a code, no word before) is a crash:
//!   the books decide when its slot gets a new worker, or that the slot is given up;
//! - a worker that says **`leaving WHY`** (it panicked, or outgrew `--max-rss`) is taken
//!   out of the round-robin at once, its replacement is forked at once, and if it has not
//!   exited `--kill-timeout` later it gets SIGKILL; its exit is planned, not a crash;
//! - **Ctrl-C or SIGTERM** ([`Keeper::stop`]): stop listening, hand out what was
//!   accepted, tell every worker to drain, SIGKILL what is left at `--kill-timeout`,
//!   exit 0;
//! - a worker **forked to replace another** ([`Keeper::replace`], chapter 9) is on trial:
//!   the slot stays the old worker's until the new one serves and the chapter calls
//!   [`Keeper::drain`] on the old one. A new worker that dies before it serves changes
//!   nothing but the log: the old one keeps its slot, and the books count no crash;
//! - a worker asks for an address the master **cannot bind** (`Keeper::cannot_bind`):
//!   the master's own failure, which no restart can fix. While the master starts, it
//!   stops every worker and exits 1 with the error, as chapters 1 to 6 do; later, only
//!   what asked stops: that worker leaves without serving, its slot (if it had one) is
//!   given up, and chapter 9's reload stops ([`Keeper::refused`]).
//!
//! A worker serves once it has said `ready` (it has asked for every address it listens
//! on: PM2's `process.send('ready')`) and the master has answered each of its
//! `queryServer`s by adding it to the handle. Its messages come in order, so by `ready`
//! the master knows of every address it wants, and of any it could not have.
//!
//! A child is reaped the moment it exits (the cluster's `waitpid` thread), so none is
//! ever left `<defunct>`; and a worker dies with its master, even a master killed with
//! SIGKILL and a worker stopped with SIGSTOP (`PR_SET_PDEATHSIG` with SIGKILL, chapter 1).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::BorrowedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use ch02_ipc_messaging::cluster::{Cluster, Event};
use ch06_round_robin::round_robin::{Handles, Heard};
use clap::{value_parser, Args};
use shared::args::{seconds, Seconds};
use shared::log;
use shared::log::serve;
use shared::net::ListenError;

use crate::supervisor::{Policy, Supervisor, Verdict};

/// The first token a chapter may give an fd of its own ([`Keeper::watch`]); the tokens
/// below are the round-robin's listening sockets, one per address.
pub const OWN_TOKENS: u64 = 1 << 31;

/// The environment variable that tells a worker which slot it fills (1 to N).
pub const SLOT_VAR: &str = "CLUSTER_SLOT";
/// The environment variable that tells a worker which start of its slot it is (1, 2...).
pub const START_VAR: &str = "CLUSTER_START";

/// How long a worker told to drain by [`Keeper::drain`] keeps an idle kept-alive
/// connection open for one more request (chapter 9): see `Server::drain_lingering`.
pub const LINGER: Duration = Duration::from_secs(1);

/// Why the master SIGKILLs a worker.
#[derive(Clone, Copy)]
enum KillReason {
    /// It had `--kill-timeout` to go by itself.
    TimedOut,
    /// A second Ctrl-C: the master stops waiting.
    NotWaitedFor,
}

/// The options of a master that keeps its workers, with PM2's names beside ours: the
/// restart options of [`RestartOptions`], and how a leaving worker goes. Chapters 7 to 9
/// flatten it into their `Options`.
#[derive(Args, Debug, Clone)]
pub struct KeeperOptions {
    #[command(flatten)]
    pub restart: RestartOptions,
    /// How long a leaving worker may take to finish before SIGKILL, in seconds (PM2's
    /// kill_timeout)
    #[arg(long, value_name = "SECS", default_value = "5")]
    #[arg(value_parser = kill_timeout, allow_negative_numbers = true)]
    pub kill_timeout: Duration,
    /// A worker whose resident memory passes MB leaves and is replaced; 0 for no limit, at
    /// most 1048576 (1 TB) (PM2's max_memory_restart)
    #[arg(long, value_name = "MB", default_value_t = 0)]
    #[arg(value_parser = value_parser!(u64).range(..=1 << 20), allow_negative_numbers = true)]
    pub max_rss: u64,
}

/// The options of [`Policy`], for any master that restarts its workers (chapter 10's too,
/// which has no round-robin and no leaving workers).
#[derive(Args, Debug, Clone)]
pub struct RestartOptions {
    /// The wait before a slot's second restart in a row, in seconds (the first is at once);
    /// then x1.5 each time, up to 15 s (PM2's exp_backoff_restart_delay)
    #[arg(long, value_name = "SECS", default_value = "0.1")]
    #[arg(value_parser = restart_delay, allow_negative_numbers = true)]
    pub restart_delay: Duration,
    /// A worker that dies sooner, in seconds, died at start (PM2's min_uptime)
    #[arg(long, value_name = "SECS", default_value = "1")]
    #[arg(value_parser = seconds, allow_negative_numbers = true)]
    pub min_uptime: Duration,
    /// A slot whose workers die at start more than N times in a row is given up; at most 1000
    /// (PM2's max_restarts)
    #[arg(long, value_name = "N", default_value_t = 10)]
    #[arg(value_parser = value_parser!(u32).range(..=1000), allow_negative_numbers = true)]
    pub max_restarts: u32,
}

impl RestartOptions {
    /// The restart policy these options ask for.
    pub fn policy(&self) -> Policy {
        Policy {
            restart_delay: self.restart_delay,
            min_uptime: self.min_uptime,
            max_restarts: self.max_restarts,
            ..Policy::default()
        }
    }
}

/// `--kill-timeout`: some time to leave in.
fn kill_timeout(text: &str) -> Result<Duration, String> {
    let timeout = seconds(text)?;
    if timeout.is_zero() {
        let why = "must be above 0, or a leaving worker would be killed before it could \
                   finish anything";
        return Err(why.into());
    }
    Ok(timeout)
}

/// `--restart-delay`: no more than the cap the wait grows to.
fn restart_delay(text: &str) -> Result<Duration, String> {
    let delay = seconds(text)?;
    let cap = Policy::default().max_delay;
    match delay <= cap {
        true => Ok(delay),
        false => Err(format!(
            "above the wait's cap of {}: give at most {}",
            Seconds(cap),
            cap.as_secs()
        )),
    }
}

/// In a worker: the slot it fills and which start of that slot it is, from the
/// environment its keeper gave it; `(0, 0)` if it was started otherwise.
pub fn place() -> (usize, u32) {
    let read = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
    (
        read(SLOT_VAR).unwrap_or(0),
        read(START_VAR).unwrap_or(0) as u32,
    )
}

/// In a worker, for the learner's `--crash-...` options: if this is slot 1's worker and
/// `fails` says its start fails, it exits at once, as a worker with a bad configuration
/// (or a broken build) would. `option` names the option in the log.
// ANCHOR: fail_on_purpose
pub fn fail_on_purpose(option: &str, fails: impl Fn(u32) -> bool) {
    let (slot, start) = place();
    if slot == 1 && fails(start) {
        log!("start {start} of slot 1 fails on purpose ({option})");
        std::process::exit(1);
    }
}
// ANCHOR_END: fail_on_purpose

/// The variables that tell the next worker of `slot` which slot it fills and which start
/// of that slot it is.
fn slot_env(books: &Supervisor, slot: usize) -> [(&'static str, String); 2] {
    let start = books.starts(slot) + 1;
    [(SLOT_VAR, slot.to_string()), (START_VAR, start.to_string())]
}

/// Starts a worker in `slot` and puts it in the books. It learns which slot it fills and
/// which start it is, and gets `env`, the chapter's own variables.
pub fn fork_into(
    cluster: &mut Cluster,
    books: &mut Supervisor,
    slot: usize,
    env: &[(&str, String)],
) -> io::Result<u32> {
    let mut all: Vec<(&str, String)> = slot_env(books, slot).into();
    all.extend(env.iter().cloned());
    let id = cluster.fork_with_env(&all)?;
    books.started(slot, id, Instant::now());
    Ok(id)
}

/// What became of a start in a slot the master keeps alive.
pub enum Start {
    Started(u32),
    /// The fork failed (out of processes, say): a death at start, and the books' verdict
    /// on it, for the master to report.
    Failed(Verdict),
    /// Ctrl-C came first: the stop that follows needs no new worker.
    Stopping,
}

/// [`fork_into`] for a slot the master keeps alive: a fork that fails counts as a death
/// at start, and is retried by the same rules, backoff included.
pub fn refill(
    cluster: &mut Cluster,
    books: &mut Supervisor,
    slot: usize,
    env: &[(&str, String)],
) -> Start {
    match fork_into(cluster, books, slot, env) {
        Ok(id) => Start::Started(id),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Start::Stopping,
        Err(e) => {
            log!("slot {slot}: could not start a worker: {e}");
            Start::Failed(books.start_failed(slot, Instant::now()))
        }
    }
}

/// A worker on its way out.
struct Leaving {
    /// Why, for its exit line.
    why: String,
    /// When it gets SIGKILL if it is still there; `None` once it has had it.
    kill_at: Option<Instant>,
    /// Whether its exit is planned (it said so, or was told to) or counts as a crash (the
    /// master had to stop it: chapter 8's zombie).
    planned: bool,
}

/// A worker forked to take another's slot (chapter 9's reload), and not in it yet.
struct Trial {
    /// The worker it is to replace, which keeps the slot until then.
    old: u32,
    slot: usize,
    /// When it was forked: its uptime counts from there once it has the slot.
    forked: Instant,
}

/// The master of chapters 7 to 9.
pub struct Keeper {
    cluster: Cluster,
    books: Supervisor,
    handles: Handles,
    /// How many handles each worker asks for (one per `--port`).
    ports: usize,
    workers: usize,
    kill_timeout: Duration,
    leaving: BTreeMap<u32, Leaving>,
    /// The workers of the first round that neither serve nor died yet: the ready line
    /// waits for them.
    starting: HashSet<u32>,
    /// Workers forked by [`Keeper::replace`] that have not taken their slot yet.
    trials: BTreeMap<u32, Trial>,
    /// Workers that have said `ready`: they have asked for every address they listen on.
    asked_all: HashSet<u32>,
    /// Workers that asked for an address the master could not bind, after the start: the
    /// address, until their exit.
    refused: BTreeMap<u32, String>,
    ready: bool,
    stopping: bool,
}

impl Keeper {
    /// Forks `workers` workers, one per slot, and returns the master, which serves once
    /// each has asked it to listen on every one of `ports` addresses (one per `--port`).
    pub fn start(workers: usize, ports: usize, options: &KeeperOptions) -> io::Result<Keeper> {
        let policy = options.restart.policy();
        let mut keeper = Keeper {
            cluster: Cluster::new()?,
            books: Supervisor::new(workers, policy),
            handles: Handles::new(),
            ports,
            workers,
            kill_timeout: options.kill_timeout,
            leaving: BTreeMap::new(),
            starting: HashSet::new(),
            trials: BTreeMap::new(),
            asked_all: HashSet::new(),
            refused: BTreeMap::new(),
            ready: false,
            stopping: false,
        };
        for slot in keeper.books.slots() {
            let id = keeper.fork_into(slot)?;
            keeper.starting.insert(id);
        }
        Ok(keeper)
    }

    /// Starts a worker in `slot`, telling it which slot and which start it is.
    fn fork_into(&mut self, slot: usize) -> io::Result<u32> {
        fork_into(&mut self.cluster, &mut self.books, slot, &[])
    }

    /// Forks the next worker of `slot`, without giving it the slot yet.
    fn fork_for(&mut self, slot: usize) -> io::Result<u32> {
        self.cluster.fork_with_env(&slot_env(&self.books, slot))
    }

    /// Like `fork_into` for a slot the master is keeping alive: see [`refill`].
    fn refill(&mut self, slot: usize) -> Option<u32> {
        match refill(&mut self.cluster, &mut self.books, slot, &[]) {
            Start::Started(id) => Some(id),
            Start::Failed(verdict) => {
                self.report(slot, verdict, "a worker that could not be forked");
                None
            }
            Start::Stopping => None,
        }
    }

    /// Waits for the next event, doing what falls due meanwhile: restarts whose wait is
    /// over, SIGKILL for leaving workers past `--kill-timeout`. Returns `None` once
    /// `until` has passed (a chapter's own timer, chapter 8's heartbeat).
    ///
    /// Before it waits, it hands every waiting connection to a free worker. Whatever the
    /// last event was (a worker that died before taking its connection, a rejection, a
    /// worker that joined), and whatever the chapter did after it, nothing that can be
    /// served now waits for the next event: on an idle server, none may come.
    // ANCHOR: next_event
    pub fn next_event(&mut self, until: Option<Instant>) -> Option<Event> {
        loop {
            self.run_due();
            self.handles.distribute(&self.cluster);
            let now = Instant::now();
            if until.is_some_and(|until| until <= now) {
                return None;
            }
            let kills = self.leaving.values().filter_map(|l| l.kill_at);
            let wake = [until, self.books.next_due()]
                .into_iter()
                .flatten()
                .chain(kills)
                .min();
            let wait = wake.map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(now)
            });
            if let Some(event) = self.cluster.next_event_timeout(wait) {
                return Some(event);
            }
        }
    }
    // ANCHOR_END: next_event

    /// Restarts whose wait is over, and leaving workers whose time is up.
    fn run_due(&mut self) {
        let now = Instant::now();
        for slot in self.books.due(now) {
            log!("slot {slot}: starting a new worker");
            self.refill(slot);
        }
        let late: Vec<u32> = self
            .leaving
            .iter()
            .filter(|(_, l)| l.kill_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(leaving) = self.leaving.get_mut(&id) {
                leaving.kill_at = None;
            }
            self.kill(id, KillReason::TimedOut);
        }
    }

    /// SIGKILL for worker `id`.
    fn kill(&self, id: u32, reason: KillReason) {
        if let Some(worker) = self.cluster.worker(id) {
            let why = match reason {
                KillReason::TimedOut => format!(
                    "is still there after --kill-timeout {}",
                    Seconds(self.kill_timeout)
                ),
                KillReason::NotWaitedFor => "is not waited for".to_string(),
            };
            log!("worker {id} (pid {}) {why}: SIGKILL", worker.pid);
            let _ = kill(Pid::from_raw(worker.pid as i32), Signal::SIGKILL);
        }
    }

    /// Does what this master does with `event`. Returns the exit code once the master is
    /// done: after Ctrl-C or SIGTERM ([`Keeper::stop`]), or when every slot has been given
    /// up.
    // ANCHOR: handle
    pub fn handle(&mut self, event: Event) -> Option<ExitCode> {
        match event {
            Event::Shutdown => return Some(self.stop()),
            Event::Ready(token) => self.handles.accept(token, &self.cluster),
            Event::Message { id, message } => {
                if let Some(code) = self.message(id, &message.text) {
                    return Some(code);
                }
            }
            Event::BadMessage { id, error } => log!("worker {id}: {error}"),
            Event::Exit { id, .. } => return self.exited(id),
        }
        // What is waiting goes out in `next_event`, before the master waits again.
        None
    }
    // ANCHOR_END: handle

    /// A message from worker `id`: the round-robin's, or one of the keeper's own. Returns
    /// the exit code if it ends the master: an address it cannot bind while it starts.
    // ANCHOR: message
    fn message(&mut self, id: u32, text: &str) -> Option<ExitCode> {
        // An address no handle has yet: the keeper binds it first, and decides itself what
        // a failure means (chapter 6 would pass the error on to the worker).
        if let Some(("queryServer", key)) = text.split_once(' ') {
            if let Err(error) = self.handles.bind_new(&self.cluster, id, key) {
                return self.cannot_bind(id, key, error);
            }
        }
        let heard = self.handles.on_message(&mut self.cluster, id, text);
        match (heard, text.split_once(' ')) {
            (Heard::Joined { .. }, _) => self.joined(id),
            (Heard::Other, _) if text == "ready" => {
                self.asked_all.insert(id);
                self.joined(id);
            }
            (Heard::Other, Some(("leaving", why))) => self.leave(id, why),
            (Heard::Other, _) if text == "online" => log!("worker {id} online"),
            (Heard::Other, _) => log!("unexpected message from worker {id}: {text}"),
            (Heard::Handled | Heard::Refused { .. }, _) => {}
        }
        None
    }
    // ANCHOR_END: message

    /// Worker `id` has joined a handle, or said `ready`: it serves once both are done for
    /// every address.
    fn joined(&mut self, id: u32) {
        // One already on its way out gets no connection (chapter 9's new worker that joins
        // just after its deadline), as Node's master ignores a disconnecting worker's
        // queryServer.
        if self.leaving.contains_key(&id) {
            self.handles.retire(id);
            return;
        }
        if !self.serving(id) {
            return;
        }
        if let Some(trial) = self.trials.get(&id) {
            log!(
                "worker {id} serves: it can take worker {}'s place in slot {}",
                trial.old,
                trial.slot
            );
        }
        self.starting.remove(&id);
        self.ready_line();
    }

    /// The ready line, once: when every worker of the first round serves or has died (a
    /// slot that crashes at start does not hold the others back), and one serves.
    fn ready_line(&mut self) {
        if self.ready || !self.starting.is_empty() {
            return;
        }
        for (key, addr) in self.handles.addrs() {
            let n = self.handles.workers_on(&key);
            self.ready |= n > 0;
            match n == self.workers {
                true => log!(
                    "listening on http://{addr} (the master accepts, {})",
                    serve(n)
                ),
                false => log!(
                    "listening on http://{addr} (the master accepts, {n} of {} workers serve \
                     so far)",
                    self.workers
                ),
            }
        }
    }

    /// Worker `id` said it is leaving (it panicked, or outgrew `--max-rss`): no more
    /// connections for it, a replacement at once, SIGKILL if it is not gone by
    /// `--kill-timeout`. One that leaves within `--min-uptime` of its start is treated
    /// as a crash at start instead: replaced after its exit, with the backoff. Otherwise
    /// a handler that panics on every request would fork a worker per request.
    // ANCHOR: leave
    pub fn leave(&mut self, id: u32, why: &str) {
        if self.stopping || self.leaving.contains_key(&id) {
            return;
        }
        self.handles.retire(id);
        let min_uptime = self.books.policy().min_uptime;
        let up = self.books.uptime(id, Instant::now());
        let young = up.is_some_and(|up| up < min_uptime);
        let pid = self.cluster.worker(id).map_or(0, |w| w.pid);
        log!(
            "worker {id} (pid {pid}) is leaving ({why}): it gets no more connections, and \
             SIGKILL in {} if it has not finished",
            Seconds(self.kill_timeout)
        );
        self.on_its_way_out(id, why, !young);
        if young {
            log!(
                "worker {id} leaves within --min-uptime {} of its start: its exit counts as a \
                 crash, and its slot waits for it",
                Seconds(min_uptime)
            );
        } else if let Some(new) = self.replacement_of(id) {
            // Chapter 9's replacement is already starting: it takes the slot, and no
            // second worker is forked for it.
            self.take_slot(new);
            log!("worker {new}, already starting, takes worker {id}'s place");
        } else if let Some(slot) = self.books.leaving(id) {
            if let Some(new) = self.refill(slot) {
                log!("worker {new} takes worker {id}'s place now, without waiting for its exit");
            }
        }
    }
    // ANCHOR_END: leave

    /// Notes that worker `id` is on its way out, and when it gets SIGKILL if it is still
    /// there.
    fn on_its_way_out(&mut self, id: u32, why: &str, planned: bool) {
        let kill_at = Some(Instant::now() + self.kill_timeout);
        let why = why.to_string();
        let leaving = Leaving {
            why,
            kill_at,
            planned,
        };
        self.leaving.insert(id, leaving);
    }

    /// Forks a worker to take worker `old`'s slot (chapter 9's reload), from the program as
    /// it is on disk now. Until [`Keeper::drain`] is called for `old`, `old` keeps its slot
    /// and keeps serving; if the new worker dies first, `old` and the books are as they
    /// were. `Ok(None)` if `old` holds no slot (it is gone, or on its way out).
    // ANCHOR: replace
    pub fn replace(&mut self, old: u32) -> io::Result<Option<u32>> {
        let slot = match self.books.slot_of(old) {
            Some(slot) if !self.stopping && !self.leaving.contains_key(&old) => slot,
            _ => return Ok(None),
        };
        let new = self.fork_for(slot)?;
        let forked = Instant::now();
        self.trials.insert(new, Trial { old, slot, forked });
        Ok(Some(new))
    }
    // ANCHOR_END: replace

    /// Whether worker `id` serves every address its workers listen on: it has said `ready`,
    /// it has joined the round-robin, and it is not on its way out.
    // ANCHOR: serving
    pub fn serving(&self, id: u32) -> bool {
        self.asked_all.contains(&id) && self.handles.served_by(id) == self.ports
    }
    // ANCHOR_END: serving

    /// Tells worker `id` to leave (chapter 9's reload): chapter 7's graceful exit, ordered by
    /// the master. The worker forked by [`Keeper::replace`] to replace it takes its slot now;
    /// a worker without one gets a replacement at once, as any leaving worker does.
    // ANCHOR: drain
    pub fn drain(&mut self, id: u32, why: &str) {
        if self.stopping || self.leaving.contains_key(&id) || self.cluster.worker(id).is_none() {
            return;
        }
        if let Some(new) = self.replacement_of(id) {
            self.take_slot(new);
        }
        self.leave(id, why);
        // The service goes on: an idle connection of this worker may still get a request.
        self.send(id, &format!("drain {}", LINGER.as_millis()));
    }
    // ANCHOR_END: drain

    /// The worker forked by [`Keeper::replace`] to replace worker `old`, if there is one.
    fn replacement_of(&self, old: u32) -> Option<u32> {
        self.trials
            .iter()
            .find(|(_, trial)| trial.old == old)
            .map(|(new, _)| *new)
    }

    /// Worker `new`, forked by [`Keeper::replace`], takes its slot from the old worker,
    /// whose exit is planned from now on.
    fn take_slot(&mut self, new: u32) {
        if let Some(trial) = self.trials.remove(&new) {
            self.books.leaving(trial.old);
            self.books.started(trial.slot, new, trial.forked);
        }
    }

    /// Stops a worker that cannot be asked (chapter 8's zombie): out of the round-robin,
    /// SIGTERM now, SIGKILL after `--kill-timeout`. Its exit counts as a crash, so its
    /// slot is restarted by the usual rules, backoff included. `why` completes "worker N
    /// is ...": `a zombie: ...`.
    // ANCHOR: terminate
    pub fn terminate(&mut self, id: u32, why: &str) {
        if self.stopping || self.leaving.contains_key(&id) {
            return;
        }
        self.handles.retire(id);
        if let Some(worker) = self.cluster.worker(id) {
            log!(
                "worker {id} (pid {}) is {why}: SIGTERM now, SIGKILL in {} if it is still there",
                worker.pid,
                Seconds(self.kill_timeout)
            );
            let _ = kill(Pid::from_raw(worker.pid as i32), Signal::SIGTERM);
        }
        self.on_its_way_out(id, why, false);
    }
    // ANCHOR_END: terminate

    /// The master could not bind `key`, which worker `id` asked for. It is the master's
    /// failure, not the worker's: a port another program holds, a port below 1024, an
    /// address this machine does not have. Restarting workers cannot fix any of them.
    ///
    /// While the master starts (no ready line yet), that is the end: every worker is
    /// stopped, and the master exits 1 with the error, as chapters 1 to 6 do. Later, a
    /// worker that asks for an address the first ones did not runs a new program (a
    /// restart or a reload after a rebuild), and only what asked for it stops: the worker
    /// leaves as chapter 7's do and never serves; a reload's new worker leaves the old one
    /// its slot ([`Keeper::refused`] tells chapter 9 to stop the reload); a slot's worker
    /// has its slot given up, since every worker started in it would ask again. Reported
    /// once, and no crash counted.
    // ANCHOR: cannot_bind
    fn cannot_bind(&mut self, id: u32, key: &str, error: ListenError) -> Option<ExitCode> {
        if !self.ready {
            self.cluster.shutdown(self.kill_timeout);
            log!("error: {error}");
            return Some(ExitCode::FAILURE);
        }
        let what = if let Some(trial) = self.trials.remove(&id) {
            format!("worker {} keeps slot {}", trial.old, trial.slot)
        } else if let Some(slot) = self.books.give_up(id) {
            let (left, all) = (self.books.in_service(), self.workers);
            format!(
                "slot {slot} is given up, as every worker started in it would ask again; \
                 {left} of {all} slots still serve"
            )
        } else {
            "it held no slot".to_string()
        };
        log!(
            "worker {id} asked for {key}, which the master cannot bind: {error}. It leaves \
             without serving; {what}"
        );
        self.refused.insert(id, key.to_string());
        if !self.leaving.contains_key(&id) {
            self.handles.retire(id);
            self.on_its_way_out(id, &format!("refused {key}"), true);
            self.send(id, "drain");
        }
        match self.books.in_service() {
            0 => {
                log!("every slot has been given up: nothing is left to serve; the master exits");
                Some(ExitCode::FAILURE)
            }
            _ => None,
        }
    }
    // ANCHOR_END: cannot_bind

    /// The address worker `id` asked for and the master could not bind, after the start
    /// (`cannot_bind`): that worker never serves. `None` for every other worker.
    pub fn refused(&self, id: u32) -> Option<&str> {
        self.refused.get(&id).map(String::as_str)
    }

    /// The workers that serve, or are starting to: alive and not on their way out.
    pub fn active(&self) -> Vec<u32> {
        let mut ids = self.cluster.ids();
        ids.retain(|id| !self.leaving.contains_key(id));
        ids
    }

    /// Adds one of the chapter's own fds to the master's loop (chapter 9's signal pipe):
    /// [`Keeper::next_event`] returns `Event::Ready(token)` when it is readable. `token`
    /// must be at least [`OWN_TOKENS`]: the ones below name the round-robin's sockets.
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        assert!(
            token >= OWN_TOKENS,
            "token {token} names a round-robin socket"
        );
        self.cluster.watch(fd, token)
    }

    /// Sends a message to worker `id`; errors mean it is gone, and its exit will come.
    pub fn send(&self, id: u32, text: &str) {
        let _ = self.cluster.send(id, text);
    }

    /// Worker `id` is gone (the cluster has logged how): settle its connections and its
    /// slot.
    // ANCHOR: exited
    fn exited(&mut self, id: u32) -> Option<ExitCode> {
        self.handles.remove(id);
        self.starting.remove(&id);
        self.asked_all.remove(&id);
        if self.replaced(id) || self.was_refused(id) {
            return None;
        }
        let slot = self.books.slot_of(id);
        let verdict = self.books.exited(id, Instant::now());
        match (self.leaving.remove(&id), slot) {
            // It said it was leaving, or was told to: Node's `exitedAfterDisconnect`.
            (Some(gone), _) if gone.planned => log!(
                "worker {id}'s exit was planned ({}): its slot has a new worker",
                gone.why
            ),
            // The master stopped it (chapter 8): a crash, with its reason.
            (Some(gone), Some(slot)) => {
                self.report(slot, verdict, &format!("worker {id} ({})", gone.why))
            }
            (None, Some(slot)) => self.report(slot, verdict, &format!("worker {id}")),
            (_, None) => log!("worker {id}'s exit was planned: it had been replaced"),
        }
        self.ready_line();
        match self.books.in_service() {
            0 => {
                log!("every slot has been given up: nothing is left to serve; the master exits");
                Some(ExitCode::FAILURE)
            }
            _ => None,
        }
    }
    // ANCHOR_END: exited

    /// The exits of chapter 9's replacements: a worker forked by [`Keeper::replace`] that
    /// dies before it has its slot changes nothing; an old worker that dies while its
    /// replacement starts leaves the slot to it, and nothing is restarted. True if `id`
    /// was one of those.
    fn replaced(&mut self, id: u32) -> bool {
        if let Some(trial) = self.trials.remove(&id) {
            self.leaving.remove(&id);
            log!(
                "worker {id} never served: worker {} keeps slot {}",
                trial.old,
                trial.slot
            );
            return true;
        }
        let Some(new) = self.replacement_of(id) else {
            return false;
        };
        let slot = self.books.slot_of(id).unwrap_or(0);
        self.leaving.remove(&id);
        self.take_slot(new);
        self.books.exited(id, Instant::now());
        log!("slot {slot}: worker {id} died while worker {new} was starting in its place; the slot is worker {new}'s now");
        true
    }

    /// The exit of a worker `cannot_bind` sent away: planned, and its slot, if it
    /// had one, already given up. True if `id` was one.
    fn was_refused(&mut self, id: u32) -> bool {
        let Some(key) = self.refused.remove(&id) else {
            return false;
        };
        self.leaving.remove(&id);
        self.books.exited(id, Instant::now());
        log!("worker {id}'s exit was planned: the master could not bind {key} for it");
        true
    }

    /// Logs what the books decided for `slot`, whose worker `who` died (or never started).
    fn report(&mut self, slot: usize, verdict: Verdict, who: &str) {
        let policy = *self.books.policy();
        match verdict {
            Verdict::Restart {
                after, up, crashes, ..
            } => {
                let row = match crashes {
                    0 => String::new(),
                    1 => format!(
                        "; it died within --min-uptime {}",
                        Seconds(policy.min_uptime)
                    ),
                    n => format!(
                        "; {n} deaths in a row within --min-uptime {}",
                        Seconds(policy.min_uptime)
                    ),
                };
                log!(
                    "slot {slot}: {who} was up {}{row}; restart in {} ms",
                    short(up),
                    after.as_millis()
                );
            }
            Verdict::GiveUp { crashes, .. } => log!(
                "slot {slot} is given up: its workers died within --min-uptime {} of starting \
                 {crashes} times in a row, more than --max-restarts {}; {} of {} slots still \
                 serve",
                Seconds(policy.min_uptime),
                policy.max_restarts,
                self.books.in_service(),
                self.workers
            ),
            Verdict::Planned => {}
        }
    }

    /// Ctrl-C or SIGTERM: stop without dropping a request. Stop listening (the connections
    /// already accepted are kept), hand every one of them to a worker, then tell every
    /// worker to drain; whoever is still there at `--kill-timeout` gets SIGKILL. Exits 0.
    // ANCHOR: stop
    pub fn stop(&mut self) -> ExitCode {
        self.stopping = true;
        let deadline = Instant::now() + self.kill_timeout;
        let workers = match self.cluster.len() {
            1 => "1 worker finishes what it holds".to_string(),
            n => format!("{n} workers finish what they hold"),
        };
        log!(
            "stopping: no new connections; {workers}, for at most {} (--kill-timeout)",
            Seconds(self.kill_timeout)
        );
        self.handles.stop_listening(&self.cluster);
        // What the master accepted goes to a worker before anyone drains: a `newconn` the
        // worker reads before its `drain` is served, one it would read after is not. (A
        // connection already sent is in the worker's channel, ahead of the `drain`.)
        while self.handles.waiting() > 0 && !self.cluster.is_empty() {
            self.handles.distribute(&self.cluster);
            let left = deadline.saturating_duration_since(Instant::now());
            match self.cluster.next_event_timeout(left) {
                Some(event) => self.while_stopping(event),
                None => break,
            }
        }
        for id in self.cluster.ids() {
            self.handles.retire(id);
            let _ = self.cluster.send(id, "drain");
        }
        let mut killed = false;
        while !self.cluster.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = if killed { Duration::from_secs(1) } else { left };
            match self.cluster.next_event_timeout(wait) {
                Some(Event::Shutdown) if !killed => {
                    log!("Ctrl-C again: no more waiting");
                    self.kill_all(KillReason::NotWaitedFor);
                    killed = true;
                }
                Some(event) => self.while_stopping(event),
                None if !killed => {
                    self.kill_all(KillReason::TimedOut);
                    killed = true;
                }
                None => {}
            }
        }
        match self.handles.holding() {
            0 => {}
            1 => log!("1 accepted connection found no worker"),
            n => log!("{n} accepted connections found no worker"),
        }
        log!("all workers stopped");
        ExitCode::SUCCESS
    }
    // ANCHOR_END: stop

    /// While stopping, only the round-robin's books still matter: the acknowledgements (so
    /// that the master closes its copies) and the exits (already logged by the cluster).
    fn while_stopping(&mut self, event: Event) {
        match event {
            Event::Message { id, message } => {
                self.handles
                    .on_message(&mut self.cluster, id, &message.text);
            }
            Event::Exit { id, .. } => self.handles.remove(id),
            _ => {}
        }
    }

    fn kill_all(&self, reason: KillReason) {
        for id in self.cluster.ids() {
            self.kill(id, reason);
        }
    }
}

/// A duration as the log shows it: `12 ms`, `3.4 s`.
fn short(d: Duration) -> String {
    match d < Duration::from_secs(1) {
        true => format!("{} ms", d.as_millis()),
        false => format!("{:.1} s", d.as_secs_f64()),
    }
}
