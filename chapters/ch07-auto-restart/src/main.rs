//! Chapter 7: the master keeps its workers alive.
//!
//! Chapter 6's master hands every connection to the next free worker; this one also keeps
//! the workers there. A worker that dies is replaced: at once the first time, then after
//! a wait that grows while its replacements keep dying, and a slot that crash-loops is
//! given up on while the others serve. A worker that panics tells the master first, so
//! its replacement starts at once and it can finish what it holds before it exits; so
//! does one that outgrows `--max-rss`. Ctrl-C drains every worker before the master exits.
//!
//! The master's side lives in this chapter's library, `keeper` and `supervisor`, the worker's in
//! `graceful`: chapters 8 and 9 keep their workers the same way. What is left here
//! is what a learner needs to see it happen: `/crash`, `/exit`, `/leak?mb=N`, and
//! `--crash-at-start K`.

use std::cell::RefCell;
use std::process::ExitCode;

use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::cluster::{self, Outcome};
use ch02_ipc_messaging::worker;
use ch07_auto_restart::graceful;
use ch07_auto_restart::keeper::{self, Keeper, KeeperOptions};
use clap::Parser;
use shared::args::ListenMany;
use shared::http::{self, Request, Response};
use shared::log;

/// Chapter 7: the master restarts workers that die, lets a failing worker leave gracefully,
/// and drains every worker on Ctrl-C. Try /crash, /exit, /leak?mb=N.
#[derive(Parser)]
#[command(name = "ch07-auto-restart", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: ListenMany,
    #[command(flatten)]
    workers: Workers,
    /// The first K starts of slot 1 fail at once, to watch the backoff and the give-up
    #[arg(long, value_name = "K", default_value_t = 0)]
    #[arg(allow_negative_numbers = true)]
    crash_at_start: u32,
    /// `--kill-timeout`, `--max-rss` and the restart options (`src/keeper.rs`).
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
    loop {
        // Chapter 6's one loop. `next_event` also does what falls due while it waits: a
        // restart whose wait is over, SIGKILL for a leaving worker that takes too long.
        let Some(event) = keeper.next_event(None) else {
            continue;
        };
        if let Some(code) = keeper.handle(event) {
            return Ok(code);
        }
    }
}
// ANCHOR_END: master

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    fail_at_start(options.crash_at_start);
    let channel = worker::channel_from_env()?;
    let max_rss = options.keeper.max_rss;
    let handler = triggers(id, max_rss);
    graceful::serve(
        id,
        &options.listen,
        max_rss,
        channel,
        handler,
        |_, message| log!("unexpected message '{}'", message.text),
    )
}
// ANCHOR_END: worker

/// The ways to make a worker fail, for a learner to try with curl.
// ANCHOR: triggers
fn triggers(id: u32, max_rss: u64) -> impl FnMut(&Request) -> Response {
    move |request| match request.route() {
        // A bug in a handler. The server catches the panic, answers this request with a
        // 500, and the worker leaves gracefully (`graceful::on_panic`).
        "/crash" => panic!("/crash: a bug in a request handler"),
        // Death without a word: the master learns of it from the exit alone, and whatever
        // this worker was serving is lost with it.
        "/exit" => {
            log!("/exit: process::exit(1), without a word to the master");
            std::process::exit(1)
        }
        // Memory that is never given back, for `--max-rss` to catch.
        "/leak" => leak(request, id, max_rss),
        _ => http::hello(id),
    }
}
// ANCHOR_END: triggers

/// The most one worker will leak, in MB: `/leak` shows a memory limit at work; it must
/// not take the machine down when no limit is set.
const MAX_LEAK_MB: usize = 1024;

thread_local! {
    /// What `/leak` has taken and will never give back.
    static LEAKED: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// `/leak?mb=N`: keeps N more MB for good, and says where the worker's memory stands.
fn leak(request: &Request, id: u32, max_rss: u64) -> Response {
    let refuse = |why: String| Response {
        status: 400,
        body: why + "\n",
    };
    let Some(mb) = request.query("mb").and_then(|n| n.parse::<usize>().ok()) else {
        return refuse(format!("/leak?mb=N takes N from 1 to {MAX_LEAK_MB}"));
    };
    let total = LEAKED.with_borrow(|leaked| leaked.iter().map(Vec::len).sum::<usize>() >> 20);
    // Compared without adding, so that no N can wrap around past the limit.
    if mb == 0 || mb > MAX_LEAK_MB.saturating_sub(total) {
        return refuse(format!(
            "/leak stops at {MAX_LEAK_MB} MB per worker; this one has leaked {total} MB"
        ));
    }
    // A non-zero fill writes every page, so the memory is really resident; pages that
    // were only allocated would not count in RSS until touched.
    LEAKED.with_borrow_mut(|leaked| leaked.push(vec![1u8; mb << 20]));
    let rss = graceful::rss_bytes().unwrap_or(0) >> 20;
    let limit = match max_rss {
        0 => "no --max-rss: nothing will stop this worker".to_string(),
        max => format!("--max-rss {max}: the memory check runs every second"),
    };
    Response::ok(format!(
        "worker {id} (pid {}) leaked {mb} MB, {} MB in all; RSS {rss} MB; {limit}\n",
        std::process::id(),
        total + mb
    ))
}

/// `--crash-at-start K`: the first K workers of slot 1 die as they start, as a worker
/// with a bad configuration would, so that the learner can watch the waits grow.
// ANCHOR: fail_at_start
fn fail_at_start(k: u32) {
    keeper::fail_on_purpose(&format!("--crash-at-start {k}"), |start| start <= k);
}
// ANCHOR_END: fail_at_start
