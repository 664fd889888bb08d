//! Chapter 11, the capstone: a Rust primary for real, unmodified Node.js workers.
//!
//! ```sh
//! cargo run -p ch11-node-primary -- --workers 4 --port 8000 -- node app.js
//! ```
//!
//! The primary starts `node app.js` once per worker with `NODE_UNIQUE_ID` and a channel in
//! `NODE_CHANNEL_FD`, as Node's `cluster.fork()` does. Node then takes the program's worker
//! branch, and its `server.listen()` becomes a `queryServer` to us: we bind, accept, and
//! hand each connection to the next worker in turn, in Node's own protocol. Around that,
//! the book's machinery: restarts with a backoff and a give-up (chapter 7), `--max-rss`,
//! a rolling reload on SIGUSR2 (chapter 9), a draining stop on Ctrl-C or SIGTERM, workers
//! that die with the primary (chapter 1), and `--status`, a live view like `pm2 ls`.
//!
//! `--protocol systemd` drives any program instead, by systemd's socket activation: the
//! listening socket as fd 3 with `LISTEN_FDS` and `LISTEN_PID`, and `READY=1` on
//! `NOTIFY_SOCKET` for "serving".

use std::ffi::OsString;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use ch00_server_models::signals::SignalPipe;
use ch01_random_port_fork::cluster::Event;
use ch01_random_port_fork::workers::Workers;
use ch07_auto_restart::keeper::KeeperOptions;
use clap::{Parser, ValueEnum};
use shared::args::seconds;
use shared::log::{self, Outcome};

mod activation;
mod handles;
mod ipc;
mod primary;
mod protocol;
mod status;

use primary::{Primary, Protocol, Settings, OWN_TOKENS};

/// Chapter 11: a primary for unmodified Node.js cluster workers (or any socket-activated
/// program): ch11-node-primary --workers 4 --port 8000 -- node app.js
#[derive(Parser)]
#[command(name = "ch11-node-primary", args_override_self = true)]
struct Options {
    /// Address to listen on (a classroom server is not public)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on, 0 for a free one; workers find it in PORT
    #[arg(long, value_name = "PORT", default_value_t = 8000)]
    #[arg(allow_negative_numbers = true)]
    port: u16,
    #[command(flatten)]
    workers: Workers,
    /// What the workers speak: node (NODE_CHANNEL_FD, Node's cluster protocol) or systemd
    /// (the socket as fd 3, LISTEN_FDS, NOTIFY_SOCKET)
    #[arg(long, value_name = "PROTOCOL", default_value = "node")]
    protocol: Protocol,
    /// Node's NODE_CLUSTER_SCHED_POLICY: rr (the primary accepts and deals connections out)
    /// or none (each worker gets the listening socket, the kernel picks)
    #[arg(long, value_name = "POLICY", default_value = "rr")]
    policy: Policy,
    /// How long a new worker may take to serve, in seconds, before it is stopped (PM2's
    /// listen_timeout), up to 3600
    #[arg(long, value_name = "SECS", default_value = "3")]
    #[arg(value_parser = listen_timeout, allow_negative_numbers = true)]
    listen_timeout: Duration,
    /// Chapter 7's --kill-timeout, --max-rss and restart options.
    #[command(flatten)]
    keeper: KeeperOptions,
    /// Print the workers of the primary serving --port (pid, state, uptime, restarts,
    /// RSS, connections), as pm2 ls does, and exit
    #[arg(long)]
    status: bool,
    /// The program every worker runs, after --: node app.js
    #[arg(
        last = true,
        value_name = "PROGRAM",
        required_unless_present = "status"
    )]
    program: Vec<OsString>,
}

/// `--policy`, named as Node names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Policy {
    Rr,
    None,
}

/// `--listen-timeout`: some time to start in, and no more than an hour.
fn listen_timeout(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        timeout if timeout > Duration::ZERO && timeout <= Duration::from_secs(3600) => Ok(timeout),
        _ => Err("must be above 0 and at most 3600 seconds".into()),
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    if options.status {
        return match status::ask(options.port, "status") {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    log::exit_code(primary(&options))
}

// ANCHOR: primary
fn primary(options: &Options) -> Outcome {
    // SIGUSR2 is one more event of the loop: the prologue's self-pipe, installed before
    // the first fork, since its default action would end the primary.
    let usr2 = SignalPipe::install(&[libc::SIGUSR2])?;
    let mut primary = Primary::start(settings(options))?;
    primary.watch(usr2.read_end(), SIGUSR2_PIPE)?;
    loop {
        let done = match primary.next_event() {
            Some(Event::Ready(SIGUSR2_PIPE)) => {
                for _ in usr2.drain() {
                    primary.reload();
                }
                primary.tick()
            }
            Some(event) => primary.handle(event),
            // A deadline: a worker that must serve by now, a restart that is due.
            None => primary.tick(),
        };
        if let Some(code) = done {
            return Ok(code);
        }
    }
}
// ANCHOR_END: primary

/// The token the loop watches the SIGUSR2 pipe with.
const SIGUSR2_PIPE: u64 = OWN_TOKENS;

fn settings(options: &Options) -> Settings {
    let mut program = options.program.iter().cloned();
    Settings {
        host: options.host,
        port: options.port,
        workers: options.workers.count,
        protocol: options.protocol,
        round_robin: options.policy == Policy::Rr,
        listen_timeout: options.listen_timeout,
        kill_timeout: options.keeper.kill_timeout,
        max_rss: options.keeper.max_rss * 1_000_000,
        policy: options.keeper.restart.policy(),
        program: program.next().unwrap_or_default(),
        args: program.collect(),
    }
}
