//! Chapter 0, the prologue: three ways for one server to serve many clients at once.
//!
//! - `--model process`: a new process for every connection (`fork`), as the first Unix
//!   servers did. (Apache's prefork forks a pool in advance instead, each process
//!   accepting in a loop.)
//! - `--model thread`: a new thread for every connection, each blocking on its socket.
//! - `--model event`: one thread and one `epoll` for every connection, as nginx and
//!   Node.js do. This is the worker loop every later chapter uses.
//!
//! All three answer `Hello world by <pid> (worker <id>)`. The id says who served the
//! connection: its number for the process and thread models, where each connection gets
//! a worker of its own, and 0 for the event model, where the process itself serves all.
//! There is no master and no `--workers` yet: that is what chapter 1 adds.

mod backoff;
mod blocking;
mod process;
mod stop;
mod thread;

use std::process::ExitCode;
use std::time::Duration;

use ch00_server_models::server::Server;
use clap::{Parser, ValueEnum};
use shared::args::{self, Listen};
use shared::log;
use shared::log::Outcome;
use shared::net;

/// The most clients `--max-clients` may allow: far beyond what this prologue measures,
/// and still below Linux's default limit on process ids (`/proc/sys/kernel/pid_max`).
const MAX_CLIENTS_LIMIT: usize = 30_000;
/// `--max-clients` when not given.
const DEFAULT_MAX_CLIENTS: usize = 1000;

// ANCHOR: main
/// Chapter 0: one server, three models: a process per connection, a thread per
/// connection, or one event loop. There are no workers to count here: --workers is refused
/// (chapter 1 adds them).
#[derive(Parser)]
#[command(name = "ch00-server-models", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: Listen,
    /// How to serve many clients at once: a process or a thread per connection, or one
    /// event loop
    #[arg(long, value_enum, value_name = "MODEL", default_value = "event")]
    model: Model,
    /// Process and thread models only: serve at most N connections at once, up to 30000 (by
    /// default 1000); the rest wait in the kernel's accept queue
    #[arg(long, value_name = "N")]
    #[arg(value_parser = max_clients, allow_negative_numbers = true)]
    max_clients: Option<usize>,
    /// Every later chapter's command line takes `--workers`, but this one has no workers:
    /// it is refused, saying so, rather than accepted and ignored; and `--help` leaves it
    /// out.
    #[arg(long, hide = true)]
    workers: Option<String>,
}

fn main() -> ExitCode {
    let options = Options::parse();
    if let Err(why) = check(&options) {
        args::refuse::<Options>(why);
    }
    shared::log::exit_code(serve(&options))
}

fn serve(options: &Options) -> Outcome {
    let max_clients = options.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS);
    let Listen {
        host,
        port,
        idle_timeout,
    } = options.listen;
    let listener = net::listen(host, port)?;
    let addr = listener.local_addr()?;
    match options.model {
        Model::Process => {
            log!("listening on http://{addr} (a process per connection, at most {max_clients})");
            process::serve(listener, max_clients, idle_timeout)
        }
        Model::Thread => {
            stop::log_then_end_on_signals()?;
            log!("listening on http://{addr} (a thread per connection, at most {max_clients})");
            thread::serve(listener, max_clients, idle_timeout)
        }
        Model::Event => {
            stop::log_then_end_on_signals()?;
            log!("listening on http://{addr} (one thread, one event loop)");
            event_loop(listener, idle_timeout)
        }
    }
}
// ANCHOR_END: main

/// The event model is chapter 1's worker, whole: one thread waits on one `epoll` for any
/// socket that is ready, and serves it without ever blocking.
// ANCHOR: event
fn event_loop(listener: std::net::TcpListener, idle_timeout: Duration) -> Outcome {
    let mut server = Server::new(0, idle_timeout)?;
    server.add_listener(listener)?;
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: event

/// The three ways to serve many clients.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Model {
    Process,
    Thread,
    Event,
}

/// `--max-clients`: from 1 to [`MAX_CLIENTS_LIMIT`].
fn max_clients(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n) if (1..=MAX_CLIENTS_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!("a number of clients from 1 to {MAX_CLIENTS_LIMIT}")),
    }
}

/// Refuses what has no meaning here, before anything is bound.
fn check(options: &Options) -> Result<(), String> {
    if options.workers.is_some() {
        return Err(
            "--workers does not apply here: each model is one server process (use \
                    --model; --max-clients caps the connections)"
                .into(),
        );
    }
    if options.model == Model::Event && options.max_clients.is_some() {
        return Err(
            "--max-clients applies to the process and thread models only: the event \
             loop's limit is its file descriptors (ulimit -n)"
                .into(),
        );
    }
    Ok(())
}
