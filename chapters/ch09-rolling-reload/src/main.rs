//! Chapter 9: a rolling reload on SIGUSR2.
//!
//! `kill -USR2 <master pid>` replaces every worker with one started from the program as it
//! is on disk now, one worker at a time: fork the new worker, wait until it serves, tell the
//! old one to drain (chapter 7's graceful exit), then the next. At every moment the old
//! workers or their replacements serve, so a rebuilt binary takes over without a request
//! lost. A new worker that dies before it serves, does not serve within
//! `--listen-timeout`, or asks for an address the master cannot bind, stops the reload
//! there: the old workers keep serving, and the log says why. A SIGUSR2 that comes during
//! a reload is queued, and a new reload starts when this one ends.
//!
//! The master is chapter 7's keeper, the worker chapter 7's graceful worker; what is new
//! is the reload loop below. `/version` answers with [`VERSION`]: change it, `cargo build`,
//! send SIGUSR2, and the new code answers. `--crash-from-start N` plays a broken build.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ch00_server_models::signals::SignalPipe;
use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::cluster::{self, Event, Exited, Outcome};
use ch02_ipc_messaging::worker;
use ch07_auto_restart::graceful;
use ch07_auto_restart::keeper::{self, Keeper, KeeperOptions, OWN_TOKENS};
use clap::Parser;
use shared::args::{seconds, ListenMany, Seconds};
use shared::http::{self, Request, Response};
use shared::log;

/// What `/version` answers. Change it, rebuild, and send the master SIGUSR2.
// ANCHOR: version
const VERSION: &str = "v1";
// ANCHOR_END: version

/// Chapter 9: kill -USR2 <master pid> replaces every worker, one at a time, with the
/// program as it is on disk now, and no request is lost. Try /version, rebuild, and send
/// SIGUSR2.
#[derive(Parser)]
#[command(name = "ch09-rolling-reload", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: ListenMany,
    #[command(flatten)]
    workers: Workers,
    /// How long a new worker may take to serve, in seconds, before the reload gives up on it
    /// and stops (PM2's listen_timeout), up to 3600
    #[arg(long, value_name = "SECS", default_value = "3")]
    #[arg(value_parser = listen_timeout, allow_negative_numbers = true)]
    listen_timeout: Duration,
    /// Slot 1's N-th start and every later one exit at once, as a broken build would: 2 makes
    /// the first reload fail (0: never)
    #[arg(long, value_name = "N", default_value_t = 0)]
    #[arg(allow_negative_numbers = true)]
    crash_from_start: u32,
    /// Chapter 7's `--kill-timeout`, `--max-rss` and restart options.
    #[command(flatten)]
    keeper: KeeperOptions,
}

/// `--listen-timeout`: some time to start in, and no more than an hour.
fn listen_timeout(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        timeout if timeout > Duration::ZERO && timeout <= Duration::from_secs(3600) => Ok(timeout),
        _ => Err("must be above 0 and at most 3600 seconds".into()),
    }
}

fn main() -> ExitCode {
    // Parse the options, then ask chapter 1's question: master or worker?
    cluster::run(master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let (workers, ports) = (options.workers.count, options.listen.ports.len());
    // SIGUSR2 becomes one more event of the loop, like a message or an exit: the
    // prologue's self-pipe, caught before the first fork (its default action would end
    // the master), watched once the keeper's loop exists.
    let usr2 = SignalPipe::install(&[libc::SIGUSR2])?;
    let mut keeper = Keeper::start(workers, ports, &options.keeper)?;
    keeper.watch(usr2.read_end(), SIGUSR2_PIPE)?;
    let mut reload = Reload::new(options.listen_timeout);
    loop {
        // Chapter 7's loop, with one more thing to wake up for: a new worker's deadline.
        let Some(event) = keeper.next_event(reload.deadline()) else {
            reload.too_slow(&mut keeper);
            continue;
        };
        match event {
            Event::Ready(SIGUSR2_PIPE) => {
                for _ in usr2.drain() {
                    reload.requested(&mut keeper);
                }
            }
            event => {
                // The new worker of a turn may be the one that exited.
                if let Event::Exit { id, status, .. } = &event {
                    reload.exited(&mut keeper, *id, *status);
                }
                if let Some(code) = keeper.handle(event) {
                    return Ok(code);
                }
            }
        }
        // Whatever happened, the reload may move on now: its new worker may serve, or may
        // have asked for an address the master cannot bind.
        reload.refused(&mut keeper);
        reload.step(&mut keeper);
    }
}
// ANCHOR_END: master

/// The token the master's loop watches the SIGUSR2 pipe with.
const SIGUSR2_PIPE: u64 = OWN_TOKENS;

/// A rolling reload: the old workers still to replace, the turn under way, and whether
/// another reload was asked for meanwhile.
struct Reload {
    listen_timeout: Duration,
    /// Whether a reload is under way.
    running: bool,
    /// The old workers whose turn has not come yet, in order.
    todo: VecDeque<u32>,
    /// The turn under way: `old` serves until `new` does.
    turn: Option<Turn>,
    /// A SIGUSR2 came during this reload: another one starts when it ends.
    queued: bool,
    /// When this reload began, and how many old workers it has replaced so far.
    began: Instant,
    replaced: usize,
}

/// One worker's turn: `new` was forked to replace `old`, and must serve by `deadline`.
struct Turn {
    old: u32,
    new: u32,
    deadline: Instant,
}

impl Reload {
    fn new(listen_timeout: Duration) -> Reload {
        Reload {
            listen_timeout,
            running: false,
            todo: VecDeque::new(),
            turn: None,
            queued: false,
            began: Instant::now(),
            replaced: 0,
        }
    }

    /// When the master must wake up if nothing happens: the new worker's deadline.
    fn deadline(&self) -> Option<Instant> {
        self.turn.as_ref().map(|turn| turn.deadline)
    }

    /// SIGUSR2: reload every worker serving now, or, during a reload, queue one more.
    // ANCHOR: requested
    fn requested(&mut self, keeper: &mut Keeper) {
        if !self.running {
            return self.begin(keeper);
        }
        match std::mem::replace(&mut self.queued, true) {
            false => {
                log!("SIGUSR2 during a reload: queued; a new reload starts when this one ends")
            }
            true => log!("SIGUSR2 during a reload: one is queued already"),
        }
    }
    // ANCHOR_END: requested

    fn begin(&mut self, keeper: &mut Keeper) {
        self.todo = keeper.active().into();
        self.running = true;
        self.began = Instant::now();
        self.replaced = 0;
        log!(
            "SIGUSR2: replacing {} one at a time, each by a worker started from the program \
             on disk now",
            log::workers(self.todo.len())
        );
    }

    /// Moves the reload on as far as it can go now, after any event: once the new worker
    /// serves, the old one drains and the next turn begins.
    // ANCHOR: step
    fn step(&mut self, keeper: &mut Keeper) {
        // ANCHOR: solution_ch09_step
        while self.running {
            if let Some(turn) = &self.turn {
                // Not serving yet: the old worker serves on, and we wait for what comes.
                if !keeper.serving(turn.new) {
                    return;
                }
                let why = format!("reload: worker {} serves in its place", turn.new);
                keeper.drain(turn.old, &why);
                self.replaced += 1;
                self.turn = None;
            }
            let Some(old) = self.todo.pop_front() else {
                let took = self.began.elapsed().as_millis();
                return self.end(
                    keeper,
                    format!(
                        "done: {} replaced in {took} ms",
                        log::workers(self.replaced)
                    ),
                );
            };
            match keeper.replace(old) {
                Ok(Some(new)) => {
                    let deadline = Instant::now() + self.listen_timeout;
                    self.turn = Some(Turn { old, new, deadline });
                }
                Ok(None) => log!("worker {old} is gone already: its turn is skipped"),
                // No worker can be forked: the reload stops with this one's turn undone.
                Err(e) => {
                    self.todo.push_front(old);
                    return self.stop(keeper, format!("no worker could be forked: {e}"));
                }
            }
        }
        // ANCHOR_END: solution_ch09_step
    }
    // ANCHOR_END: step

    /// Worker `id` exited: if it was the new worker of this turn, the reload stops here.
    // ANCHOR: exited
    fn exited(&mut self, keeper: &mut Keeper, id: u32, status: Exited) {
        let Some(turn) = self.turn.as_ref().filter(|turn| turn.new == id) else {
            return;
        };
        let why = format!(
            "worker {id}, started to replace worker {}, {status} before it served",
            turn.old
        );
        self.stop(keeper, why);
    }
    // ANCHOR_END: exited

    /// The new worker of this turn asked for an address the master cannot bind (a rebuilt
    /// program that listens on one more port, say): it will never serve, and the reload
    /// stops here, as when a new worker dies.
    // ANCHOR: refused
    fn refused(&mut self, keeper: &mut Keeper) {
        let Some(&Turn { old, new, .. }) = self.turn.as_ref() else {
            return;
        };
        if let Some(key) = keeper.refused(new) {
            let why = format!(
                "worker {new}, started to replace worker {old}, asked for {key}, which the \
                 master cannot bind"
            );
            self.stop(keeper, why);
        }
    }
    // ANCHOR_END: refused

    /// The new worker did not serve within `--listen-timeout`: it is stopped, and so is
    /// the reload. (PM2 goes on after its `listen_timeout`, and stops the old worker.)
    // ANCHOR: too_slow
    fn too_slow(&mut self, keeper: &mut Keeper) {
        let Some(&Turn { old, new, .. }) = self.turn.as_ref() else {
            return;
        };
        let timeout = Seconds(self.listen_timeout);
        keeper.terminate(
            new,
            &format!("not serving after --listen-timeout {timeout}"),
        );
        let why = format!(
            "worker {new}, started to replace worker {old}, did not serve within \
             --listen-timeout {timeout}"
        );
        self.stop(keeper, why);
    }
    // ANCHOR_END: too_slow

    /// A failed turn: no other old worker is touched, they all keep serving.
    fn stop(&mut self, keeper: &mut Keeper, why: String) {
        let left = self.todo.len() + usize::from(self.turn.is_some());
        let how = format!(
            "stopped: {why}; {} of {} replaced, the other {left} serve on",
            self.replaced,
            log::workers(self.replaced + left)
        );
        self.end(keeper, how);
    }

    /// The reload is over; a queued SIGUSR2 starts the next one.
    fn end(&mut self, keeper: &mut Keeper, how: String) {
        log!("reload {how}");
        self.running = false;
        self.turn = None;
        self.todo.clear();
        if std::mem::take(&mut self.queued) {
            self.begin(keeper);
        }
    }
}

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    broken_build(options.crash_from_start);
    let channel = worker::channel_from_env()?;
    let max_rss = options.keeper.max_rss;
    graceful::serve(
        id,
        &options.listen,
        max_rss,
        channel,
        answers(id),
        |_, message| log!("unexpected message '{}'", message.text),
    )
}
// ANCHOR_END: worker

/// `/version`, and chapter 1's hello for everything else.
// ANCHOR: answers
fn answers(id: u32) -> impl FnMut(&Request) -> Response {
    move |request| match request.route() {
        "/version" => Response::ok(format!(
            "{VERSION} by {} (worker {id})\n",
            std::process::id()
        )),
        _ => http::hello(id),
    }
}
// ANCHOR_END: answers

/// `--crash-from-start N`: from its N-th start on, slot 1's worker exits as it starts,
/// as every start of a broken build would.
fn broken_build(from: u32) {
    let option = format!("--crash-from-start {from}");
    keeper::fail_on_purpose(&option, |start| from > 0 && start >= from);
}
