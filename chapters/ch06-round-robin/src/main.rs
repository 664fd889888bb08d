//! Chapter 6: a worker asks the master to listen for it; the master accepts every
//! connection and hands it to the next free worker.
//!
//! This is Node's default on Linux ("method 1"). In a cluster worker, `server.listen(8000)`
//! binds nothing: the worker sends `queryServer` to the master, which finds or creates
//! the round-robin handle for that address (binding it the first time), adds the worker
//! to it, and answers. That is why every worker can "listen" on one port without
//! EADDRINUSE. From then on the master accepts, and sends each connection's fd to one
//! worker over IPC (`shared::round_robin`, Node's `RoundRobinHandle`).
//!
//! `--port 8000,8001` makes every worker ask for both ports: two handles, one set of
//! workers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;

use shared::args::{Args, Cli};
use shared::channel::Message;
use shared::cluster::{self, Cluster, Event, Outcome};
use shared::log;
use shared::round_robin::{self, RoundRobin};
use shared::server::Server;
use shared::spawn;

fn main() -> ExitCode {
    let args = Cli::new(
        "ch06-round-robin",
        "Chapter 6: workers ask the master to listen; the master accepts each connection \
         and hands it to the workers in turn.",
    )
    .many_ports()
    .option::<Weights>(
        "--weights",
        "W1,W2,...",
        "weighted round-robin: worker i gets Wi connections per turn (exercise ch06-weights)",
        "",
    )
    .check(|args| {
        let weights = args.get::<Weights>("--weights");
        match weights.0.len() <= args.workers {
            true => Ok(()),
            false => Err(format!(
                "--weights gives {} weights for {} workers; give at most one per worker",
                weights.0.len(),
                args.workers
            )),
        }
    })
    .parse();
    // Master or worker? `master_or_worker` asks, as Node's `cluster.isPrimary` does.
    cluster::master_or_worker(&args, master, worker)
}

// ANCHOR: master
fn master(args: &Args) -> Outcome {
    let weights = args.get::<Weights>("--weights").by_worker();
    let mut cluster = Cluster::new()?;
    for _ in 0..args.workers {
        cluster.fork()?;
    }
    // One round-robin handle per address the workers ask for, made on the first request:
    // Node's `handles` in lib/internal/cluster/primary.js. A handle's place in this list
    // is the token the loop watches its socket with.
    let mut handles: Vec<RoundRobin> = Vec::new();
    loop {
        // One loop, like Node's master on libuv: the workers' channels, their exits,
        // Ctrl-C, and every listening socket wake the same `next_event`.
        let event = cluster.next_event();
        if let Some(code) = cluster.finished_by(&event) {
            return Ok(code);
        }
        match event {
            Event::Ready(token) => handles[token as usize].accept(&cluster),
            Event::Message { id, message } => match message.text.split_once(' ') {
                Some(("queryServer", key)) => {
                    query_server(&mut cluster, &mut handles, id, key, &weights, args.workers)
                }
                Some(("accepted", key)) => {
                    if let Some(handle) = handles.iter_mut().find(|h| h.key() == key) {
                        handle.accepted(id, &cluster);
                    }
                }
                Some(("rejected", key)) => {
                    if let Some(handle) = handles.iter_mut().find(|h| h.key() == key) {
                        handle.rejected(id);
                    }
                }
                _ => match message.text.as_str() {
                    "online" => log!("worker {id} online"),
                    // A worker that was out of fds has room again, for every handle.
                    "free" => handles.iter_mut().for_each(|h| h.free_again(id)),
                    text => log!("unexpected message from worker {id}: {text}"),
                },
            },
            Event::Exit { id, .. } => handles.iter_mut().for_each(|h| h.remove(id)),
            _ => {}
        }
        for handle in &mut handles {
            handle.distribute(&cluster);
        }
    }
}
// ANCHOR_END: master

/// A worker asks the master to listen on `key` for it (Node's `queryServer`): find the
/// handle for that address, or bind it now, add the worker, and answer with the address
/// really bound. If binding fails, the worker hears why, as Node's worker does.
// ANCHOR: query_server
fn query_server(
    cluster: &mut Cluster,
    handles: &mut Vec<RoundRobin>,
    id: u32,
    key: &str,
    weights: &HashMap<u32, u32>,
    workers: usize,
) {
    let index = match handles.iter().position(|h| h.key() == key) {
        Some(index) => index,
        None => match RoundRobin::bind(key, cluster, handles.len() as u64) {
            Ok(handle) => {
                log!("worker {id} asked for {key}: bound it, round-robin");
                handles.push(handle.with_weights(weights.clone()));
                handles.len() - 1
            }
            Err(e) => {
                log!("worker {id} asked for {key}: {e}");
                let _ = cluster.send(id, &format!("error {key} {}", e.node_message()));
                return;
            }
        },
    };
    let handle = &mut handles[index];
    handle.add(id);
    let Ok(addr) = handle.local_addr() else {
        return;
    };
    let _ = cluster.send(id, &format!("listening {key} {addr}"));
    if handle.len() == workers {
        log!("listening on http://{addr} (the master accepts, {workers} workers serve)");
    }
}
// ANCHOR_END: query_server

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
fn worker(id: u32, args: &Args) -> Outcome {
    let channel = spawn::channel_from_env()?;
    let server = Server::new(id, args.idle_timeout)?
        .on_message(channel, on_message)?
        // After a rejection for want of fds: one of our connections has closed (or a
        // second has passed), so tell the master to count on us again.
        .on_fds_freed(|server| server.send("free"));
    server.send("online");
    // `server.listen(port)` in a Node worker: ask the master, bind nothing ourselves.
    // Each request names the address and which listen on it this is, as Node's key does.
    for (i, port) in args.ports().iter().enumerate() {
        let addr = SocketAddr::new(args.host, *port);
        let index = args.ports()[..i].iter().filter(|p| *p == port).count();
        server.send(&format!("queryServer {addr}#{index}"));
    }
    server.run()?;
    Ok(ExitCode::SUCCESS)
}

fn on_message(server: &mut Server, message: Message) {
    match message.text.split_once(' ') {
        Some(("newconn", key)) => round_robin::take_connection(server, key, message.fd),
        Some(("listening", rest)) => {
            let (key, addr) = rest.split_once(' ').unwrap_or((rest, rest));
            log!("listening on http://{addr} (asked the master for {key}; it accepts for us)");
        }
        Some(("error", rest)) => {
            // Node's worker gets the master's error as its own `listen` error, unhandled:
            // the worker dies of it.
            log!("Error: {rest}");
            std::process::exit(1);
        }
        _ => log!(
            "unexpected message '{}'{}",
            message.text,
            if message.fd.is_some() {
                " with an fd (closed)"
            } else {
                ""
            }
        ),
    }
}
// ANCHOR_END: worker
