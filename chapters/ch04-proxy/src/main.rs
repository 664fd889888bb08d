//! Chapter 4: the master listens on the public port and proxies every connection to a
//! worker listening on a private port of its own.
//!
//! This is the first way out of chapter 3's EADDRINUSE: only the master binds the public
//! port; each worker binds its own (the kernel picks it), and tells the master which over
//! IPC. It works, and it is how many reverse proxies work, but every client costs the
//! master two sockets: the client's, and the one it opens to the worker.

mod proxy;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ch00_server_models::server::Server;
use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::cluster::{self, Cluster, Event, Outcome};
use ch02_ipc_messaging::worker;
use ch02_ipc_messaging::worker::Messages;
use ch03_eaddrinuse::net;
use clap::Parser;
use nix::sys::resource::{getrlimit, Resource};
use shared::args::Listen;
use shared::log;

/// Chapter 4: the master proxies each connection to a worker on a private port.
#[derive(Parser)]
#[command(name = "ch04-proxy", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: Listen,
    #[command(flatten)]
    workers: Workers,
    /// Proxy at most N client connections at once; refuse more with a 503 (exercise
    /// ch04-limit); auto: half of ulimit -n, less a margin
    #[arg(long, value_name = "N|auto", default_value = "auto")]
    #[arg(allow_negative_numbers = true)]
    max_connections: MaxConnections,
}

fn main() -> ExitCode {
    // Parse the options, then ask chapter 1's question: master or worker?
    cluster::run(master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let workers = options.workers.count;
    let listener = net::listen(options.listen.host, options.listen.port)?;
    let public = listener.local_addr()?;
    let mut cluster = Cluster::with_workers(workers)?;
    // The proxy runs on its own thread; this loop keeps its list of workers current.
    let upstreams: proxy::Upstreams = Arc::new(Mutex::new(Vec::new()));
    let mut private: Vec<(u32, SocketAddr)> = Vec::new();
    let for_proxy = upstreams.clone();
    let max = match options.max_connections {
        MaxConnections::Auto => fd_budget(),
        MaxConnections::At(n) => n,
    };
    std::thread::Builder::new()
        .name("proxy".into())
        .spawn(move || {
            if let Err(e) = proxy::run(listener, for_proxy, max) {
                log!("the proxy stopped: {e}");
            }
        })?;
    loop {
        let event = cluster.next_event();
        if let Some(code) = cluster.finished_by(&event) {
            return Ok(code);
        }
        match event {
            Event::Message { id, message } => match message.text.strip_prefix("listening ") {
                Some(addr) => match addr.parse() {
                    Ok(addr) => {
                        log!("worker {id} serves on private address {addr}");
                        private.push((id, addr));
                        // The proxy must know the worker before the ready line tells
                        // anyone to connect.
                        if let Ok(mut list) = upstreams.lock() {
                            list.push(addr);
                        }
                        if private.len() == workers {
                            log!(
                                "listening on http://{public} (the master proxies to {} \
                                 workers)",
                                private.len()
                            );
                        }
                    }
                    Err(_) => log!("worker {id} sent a bad address: {addr}"),
                },
                None => log!("unexpected message from worker {id}: {}", message.text),
            },
            Event::BadMessage { id, error } => log!("worker {id}: {error}"),
            Event::Exit { id, .. } => private.retain(|(worker, _)| *worker != id),
            _ => {}
        }
        if let Ok(mut list) = upstreams.lock() {
            *list = private.iter().map(|(_, addr)| *addr).collect();
        }
    }
}
// ANCHOR_END: master

/// `--max-connections`: a number of clients, or `auto` to size it from `ulimit -n`.
#[derive(Clone, Copy)]
enum MaxConnections {
    Auto,
    At(usize),
}

impl FromStr for MaxConnections {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(MaxConnections::Auto),
            _ => match text.parse::<usize>() {
                Ok(0) => Err("0 would refuse every client; give 1 or more, or auto".into()),
                Ok(n) => Ok(MaxConnections::At(n)),
                Err(_) => Err("a whole number of clients, or auto".into()),
            },
        }
    }
}

/// How many clients the master can proxy before it runs out of fds: each one costs two,
/// and a few dozen are kept for the channels, the listener and the runtime.
fn fd_budget() -> usize {
    let (soft, _hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    (soft.saturating_sub(64) / 2).max(1) as usize
}

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    let channel = worker::channel_from_env()?;
    // Port 0: the kernel picks a free private port; the master learns it over IPC.
    let listener = net::listen(options.listen.host, 0)?;
    let addr = listener.local_addr()?;
    let mut server = Server::new(id, options.listen.idle_timeout)?
        .on_message(channel, |_, message| {
            log!("message from master: {}", message.text)
        })?;
    server.add_listener(listener)?;
    server.send(&format!("listening {addr}"));
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: worker
