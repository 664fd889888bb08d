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

use std::str::FromStr;

use ch00_server_models::server::Server;
use shared::args::{Args, Cli};
use shared::log;
use shared::log::Outcome;
use shared::net;

/// The most clients `--max-clients` may allow: far beyond what this prologue measures,
/// and still below Linux's default limit on process ids (`/proc/sys/kernel/pid_max`).
const MAX_CLIENTS_LIMIT: usize = 30_000;

// ANCHOR: main
fn main() -> ExitCode {
    let args = Cli::new(
        "ch00-server-models",
        "Chapter 0: one server, three models: a process per connection, a thread per \
         connection, or one event loop.\nThere are no workers to count here: --workers is \
         refused (chapter 1 adds them).",
    )
    // Every chapter's command line takes `--workers`, but this one has no workers: say so
    // rather than accept a number and ignore it.
    .without_workers(
        "each model is one server process (use --model; --max-clients caps the connections)",
    )
    .option::<Model>(
        "--model",
        "MODEL",
        "process, thread or event: how to serve many clients at once",
        "event",
    )
    .option::<usize>(
        "--max-clients",
        "N",
        "process and thread models only: serve at most N connections at once, up to 30000; \
         the rest wait in the kernel's accept queue",
        "1000",
    )
    .check(check)
    .parse();
    shared::log::exit_code(serve(&args))
}

fn serve(args: &Args) -> Outcome {
    let max_clients: usize = args.get("--max-clients");
    let listener = net::listen(args.host, args.port)?;
    let addr = listener.local_addr()?;
    match args.get::<Model>("--model") {
        Model::Process => {
            log!("listening on http://{addr} (a process per connection, at most {max_clients})");
            process::serve(listener, max_clients, args.idle_timeout)
        }
        Model::Thread => {
            stop::log_then_end_on_signals()?;
            log!("listening on http://{addr} (a thread per connection, at most {max_clients})");
            thread::serve(listener, max_clients, args.idle_timeout)
        }
        Model::Event => {
            stop::log_then_end_on_signals()?;
            log!("listening on http://{addr} (one thread, one event loop)");
            event_loop(listener, args)
        }
    }
}
// ANCHOR_END: main

/// The event model is chapter 1's worker, whole: one thread waits on one `epoll` for any
/// socket that is ready, and serves it without ever blocking.
// ANCHOR: event
fn event_loop(listener: std::net::TcpListener, args: &Args) -> Outcome {
    let mut server = Server::new(0, args.idle_timeout)?;
    server.add_listener(listener)?;
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: event

/// The three ways to serve many clients.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Model {
    Process,
    Thread,
    Event,
}

impl FromStr for Model {
    type Err = String;

    fn from_str(text: &str) -> Result<Model, String> {
        match text {
            "process" => Ok(Model::Process),
            "thread" => Ok(Model::Thread),
            "event" => Ok(Model::Event),
            _ => Err("process, thread or event".into()),
        }
    }
}

/// Refuses a cap that is out of range or has no meaning, before anything is bound.
fn check(args: &Args) -> Result<(), String> {
    let max_clients: usize = args.get("--max-clients");
    if args.get::<Model>("--model") == Model::Event && given("--max-clients") {
        return Err(
            "--max-clients applies to the process and thread models only: the event \
             loop's limit is its file descriptors (ulimit -n)"
                .into(),
        );
    }
    if !(1..=MAX_CLIENTS_LIMIT).contains(&max_clients) {
        return Err(format!(
            "--max-clients must be from 1 to {MAX_CLIENTS_LIMIT}"
        ));
    }
    Ok(())
}

/// Whether option `name` is on the command line, as `--name VALUE` or `--name=VALUE`.
fn given(name: &str) -> bool {
    std::env::args()
        .skip(1)
        .any(|word| word == name || word.strip_prefix(name).is_some_and(|r| r.starts_with('=')))
}
