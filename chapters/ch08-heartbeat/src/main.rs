//! Chapter 8: the master pings every worker; one that stops answering is a zombie.
//!
//! Chapter 7's master notices a worker that dies. A worker stuck in an endless loop does
//! not die: its process is there, its pid answers `kill -0`, and it serves nobody. So the
//! master pings each worker every `--heartbeat-ms`, and the worker answers from its event
//! loop, the same loop that serves requests. A stuck handler stops the answers too; after
//! three missed in a row the master calls the worker a zombie, sends SIGTERM, then SIGKILL
//! if it is still there after `--kill-timeout`, and the slot is restarted as after any
//! crash.
//!
//! `/hang` spins forever; `/sleep?ms=N` blocks the loop for N ms, to find the line between
//! slow and dead. `--pong-from-thread on` answers from a thread of its own instead: the
//! wrong way, which the master cannot tell from a healthy worker.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::channel::Channel;
use ch02_ipc_messaging::cluster::{self, Event, Outcome};
use ch02_ipc_messaging::worker;
use ch02_ipc_messaging::worker::Messages;
use ch07_auto_restart::graceful;
use ch07_auto_restart::keeper::{Keeper, KeeperOptions};
use clap::{value_parser, Parser};
use shared::args::{ListenMany, Switch};
use shared::http::{self, Request, Response};
use shared::log;

/// How many pings in a row a worker may leave unanswered before it is a zombie.
const MISSED: u32 = 3;

/// The longest `/sleep` a worker will take, in ms.
const MAX_SLEEP_MS: u64 = 60_000;

/// Chapter 8: the master pings every worker; one that misses 3 answers in a row is killed
/// and replaced. Try /hang and /sleep?ms=N.
#[derive(Parser)]
#[command(name = "ch08-heartbeat", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: ListenMany,
    #[command(flatten)]
    workers: Workers,
    /// How often the master pings each worker, in ms, from 10 to 3600000
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    #[arg(value_parser = value_parser!(u64).range(10..=3_600_000), allow_negative_numbers = true)]
    heartbeat_ms: u64,
    /// Answer pings from a thread of the worker's own, not from its event loop: the wrong
    /// way, which hides a hung loop
    #[arg(long, value_name = "on|off", default_value = "off")]
    pong_from_thread: Switch,
    /// Chapter 7's `--kill-timeout`, `--max-rss` and restart options.
    #[command(flatten)]
    keeper: KeeperOptions,
}

fn main() -> ExitCode {
    // Parse the options, then ask chapter 1's question: master or worker?
    cluster::run(master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let ports = options.listen.ports.len();
    let mut keeper = Keeper::start(options.workers.count, ports, &options.keeper)?;
    let mut heartbeat = Heartbeat::new(Duration::from_millis(options.heartbeat_ms));
    loop {
        // Chapter 7's loop, with one more thing to wake up for: the next heartbeat.
        match keeper.next_event(Some(heartbeat.next)) {
            None => heartbeat.beat(&mut keeper),
            Some(Event::Message { id, message }) if message.text.starts_with("pong") => {
                heartbeat.pong(id)
            }
            Some(event) => {
                if let Some(code) = keeper.handle(event) {
                    return Ok(code);
                }
            }
        }
    }
}
// ANCHOR_END: master

/// The master's side of the heartbeat: when to ping next, and how many pings each worker
/// has left unanswered.
struct Heartbeat {
    every: Duration,
    next: Instant,
    /// Pings sent to each worker since its last answer.
    unanswered: HashMap<u32, u32>,
    /// Numbers the pings, so that a learner can match each pong to its ping.
    seq: u64,
}

impl Heartbeat {
    fn new(every: Duration) -> Heartbeat {
        Heartbeat {
            every,
            next: Instant::now() + every,
            unanswered: HashMap::new(),
            seq: 0,
        }
    }

    /// One beat: a worker that has left the last `MISSED` pings unanswered is a zombie;
    /// every other one gets a new ping. Only workers that serve are judged: one still
    /// starting has nothing to answer from yet.
    // ANCHOR: beat
    fn beat(&mut self, keeper: &mut Keeper) {
        self.next = Instant::now() + self.every;
        self.seq += 1;
        let judged: Vec<u32> = keeper
            .active()
            .into_iter()
            .filter(|id| keeper.serving(*id))
            .collect();
        // Workers gone or on their way out are forgotten.
        self.unanswered.retain(|id, _| judged.contains(id));
        for id in judged {
            let missed = self.unanswered.entry(id).or_insert(0);
            if zombie(id, missed) {
                let why = format!("a zombie: its last {MISSED} pings went unanswered");
                keeper.terminate(id, &why);
                self.unanswered.remove(&id);
                continue;
            }
            keeper.send(id, &format!("ping {}", self.seq));
        }
    }
    // ANCHOR_END: beat

    /// Worker `id` answered: whatever it had not answered is forgiven.
    // ANCHOR: pong
    fn pong(&mut self, id: u32) {
        if let Some(unanswered) = self.unanswered.insert(id, 0) {
            if unanswered > 1 {
                log!("worker {id} answers again, after {} missed", unanswered - 1);
            }
        }
    }
    // ANCHOR_END: pong
}

/// Judges worker `id` at a beat, `missed` being the pings it has left unanswered since its
/// last pong: true if it is a zombie. If not, counts the ping this beat will send it.
// ANCHOR: zombie
fn zombie(id: u32, missed: &mut u32) -> bool {
    // ANCHOR: solution_ch08_missed
    // Still unanswered after a whole interval: that ping was missed.
    if *missed >= MISSED {
        return true;
    }
    if *missed > 0 {
        log!("worker {id} missed a heartbeat ({missed} of {MISSED} in a row)");
    }
    *missed += 1;
    false
    // ANCHOR_END: solution_ch08_missed
}
// ANCHOR_END: zombie

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    let channel = worker::channel_from_env()?;
    let from_thread = options.pong_from_thread.is_on();
    if from_thread {
        pong_from_thread(channel.clone(), options.heartbeat_ms);
    }
    graceful::serve(
        id,
        &options.listen,
        options.keeper.max_rss,
        channel,
        slow_handlers(id),
        move |server, message| {
            match message.text.split_once(' ') {
                // Answered here, on the loop that serves requests: if a request never
                // returns, neither does the pong.
                Some(("ping", seq)) if !from_thread => server.send(&format!("pong {seq}")),
                Some(("ping", _)) => {}
                _ => log!("unexpected message '{}'", message.text),
            }
        },
    )
}
// ANCHOR_END: worker

/// The ways to make a worker slow, or stuck for good.
// ANCHOR: slow_handlers
fn slow_handlers(id: u32) -> impl FnMut(&Request) -> Response {
    move |request| match request.route() {
        // An endless loop in a handler: the process lives, its loop never runs again.
        "/hang" => {
            log!("/hang: spinning forever; nothing else runs in this worker from now on");
            loop {
                std::hint::spin_loop();
            }
        }
        "/sleep" => sleep(request, id),
        _ => http::hello(id),
    }
}
// ANCHOR_END: slow_handlers

/// `/sleep?ms=N`: blocks the loop for N ms, pings and other requests included.
fn sleep(request: &Request, id: u32) -> Response {
    let ms = request.query("ms").and_then(|ms| ms.parse::<u64>().ok());
    let Some(ms) = ms.filter(|ms| (1..=MAX_SLEEP_MS).contains(ms)) else {
        return Response {
            status: 400,
            body: format!("/sleep?ms=N takes N from 1 to {MAX_SLEEP_MS}\n"),
        };
    };
    std::thread::sleep(Duration::from_millis(ms));
    Response::ok(format!(
        "worker {id} (pid {}) slept {ms} ms, its whole loop with it\n",
        std::process::id()
    ))
}

/// `--pong-from-thread on`: a thread sends `pong` twice per heartbeat, whatever the loop
/// is doing. The master hears a live process, not a working one.
// ANCHOR: pong_from_thread
fn pong_from_thread(channel: Channel, every_ms: u64) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(every_ms / 2));
        if channel.send("pong").is_err() {
            return;
        }
    });
}
// ANCHOR_END: pong_from_thread
