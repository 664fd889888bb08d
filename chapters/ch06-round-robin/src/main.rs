//! Chapter 6: a worker asks the master to listen for it; the master accepts every
//! connection and hands it to the next free worker.
//!
//! This is Node's default on Linux ("method 1"). In a cluster worker, `server.listen(8000)`
//! binds nothing: the worker sends `queryServer` to the master, which finds or creates
//! the round-robin handle for that address (binding it the first time), adds the worker
//! to it, and answers. That is why every worker can "listen" on one port without
//! EADDRINUSE. From then on the master accepts, and sends each connection's fd to one
//! worker over IPC (this chapter's library, `round_robin`: Node's `RoundRobinHandle`).
//!
//! `--port 8000,8001` makes every worker ask for both ports: two handles, one set of
//! workers. The handles, and the worker's side of the conversation, are in
//! the library's `round_robin` module, where chapters 7 to 9 use them too.

use std::collections::HashMap;
use std::process::ExitCode;
use std::str::FromStr;

use ch00_server_models::server::Server;
use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::channel::Message;
use ch02_ipc_messaging::cluster::{self, Cluster, Event, Outcome};
use ch02_ipc_messaging::worker;
use ch02_ipc_messaging::worker::Messages;
use ch06_round_robin::round_robin::{self, Handles, Heard};
use clap::Parser;
use shared::args::{self, ListenMany};
use shared::log;

/// Chapter 6: workers ask the master to listen; the master accepts each connection and
/// hands it to the workers in turn.
#[derive(Parser)]
#[command(name = "ch06-round-robin", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: ListenMany,
    #[command(flatten)]
    workers: Workers,
    /// Weighted round-robin: worker i gets Wi connections per turn, a worker not listed 1
    /// (default: 1 each; exercise ch06-weights)
    #[arg(long, value_name = "W1,W2,...")]
    #[arg(allow_hyphen_values = true)]
    weights: Option<Weights>,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let weights = options
        .weights
        .as_ref()
        .map_or(0, |weights| weights.0.len());
    if weights > options.workers.count {
        args::refuse::<Options>(format!(
            "--weights gives {weights} weights for {}; give at most one per worker",
            log::workers(options.workers.count)
        ));
    }
    // Master or worker? `master_or_worker` asks, as Node's `cluster.isPrimary` does.
    cluster::master_or_worker(&options, master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let workers = options.workers.count;
    let weights = options.weights.clone().unwrap_or_default().by_worker();
    let mut cluster = Cluster::with_workers(workers)?;
    // One round-robin handle per address the workers ask for, made on the first request:
    // Node's `handles` in lib/internal/cluster/primary.js. A handle's place in this list
    // is the token the loop watches its socket with.
    let mut handles = Handles::new().with_weights(weights);
    loop {
        // One loop, like Node's master on libuv: the workers' channels, their exits,
        // Ctrl-C, and every listening socket wake the same `next_event`.
        let event = cluster.next_event();
        if let Some(code) = cluster.finished_by(&event) {
            return Ok(code);
        }
        match event {
            Event::Ready(token) => handles.accept(token, &cluster),
            // queryServer, accepted, rejected and free are the round-robin's messages.
            Event::Message { id, message } => {
                match handles.on_message(&mut cluster, id, &message.text) {
                    Heard::Joined { key, addr } if handles.workers_on(&key) == workers => {
                        let serve = log::serve(workers);
                        log!("listening on http://{addr} (the master accepts, {serve})")
                    }
                    Heard::Other if message.text == "online" => log!("worker {id} online"),
                    Heard::Other => log!("unexpected message from worker {id}: {}", message.text),
                    _ => {}
                }
            }
            Event::Exit { id, .. } => handles.remove(id),
            _ => {}
        }
        handles.distribute(&cluster);
    }
}
// ANCHOR_END: master

/// `--weights 2,1`: worker 1 weighs 2, worker 2 weighs 1 (the others 1).
#[derive(Debug, Default, Clone)]
struct Weights(Vec<u32>);

impl FromStr for Weights {
    type Err = String;

    fn from_str(text: &str) -> Result<Weights, String> {
        let mut weights = Vec::new();
        for word in text.split(',').filter(|w| !w.is_empty()) {
            match word.trim().parse::<u32>() {
                Ok(w) if w > 0 => weights.push(w),
                _ => return Err(format!("whole numbers above 0 like 2,1; not '{word}'")),
            }
        }
        Ok(Weights(weights))
    }
}

impl Weights {
    /// Worker id to weight.
    fn by_worker(&self) -> HashMap<u32, u32> {
        (1..).zip(self.0.iter().copied()).collect()
    }
}

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    let listen = &options.listen;
    let channel = worker::channel_from_env()?;
    let server = Server::new(id, listen.idle_timeout)?
        .on_message(channel, on_message)?
        // After a rejection for want of fds: one of our connections has closed (or a
        // second has passed), so tell the master to count on us again.
        .on_fds_freed(|server| server.send("free"));
    server.send("online");
    // `server.listen(port)` in a Node worker: ask the master, bind nothing ourselves.
    round_robin::listen_via_master(&server, listen.host, &listen.ports);
    server.run()?;
    Ok(ExitCode::SUCCESS)
}

fn on_message(server: &mut Server, message: Message) {
    // `newconn`, `listening` and `error` are the round-robin's messages.
    if let Some(message) = round_robin::from_master(server, message) {
        worker::unexpected(&message.text, message.fd);
    }
}
// ANCHOR_END: worker
