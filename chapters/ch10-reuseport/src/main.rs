//! Chapter 10: every worker opens a listening socket of its own on the same port, with
//! `SO_REUSEPORT`, and the kernel spreads the connections among the sockets ("method 3").
//!
//! No fd crosses the IPC channel and the master accepts nothing. It keeps the port
//! reserved (bound, never listening), starts the workers, and starts a new one in the
//! place of any that dies (chapter 7's supervisor); the new worker opens a socket of its own
//! and joins the group.

mod reserve;

use std::collections::{BTreeSet, HashMap};
use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ch00_server_models::server::Server;
use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::channel::Message;
use ch02_ipc_messaging::cluster::{self, Cluster, Event, Outcome};
use ch02_ipc_messaging::worker;
use ch02_ipc_messaging::worker::Messages;
use ch03_eaddrinuse::net;
use ch07_auto_restart::keeper::{self, RestartOptions, Start};
use ch07_auto_restart::supervisor::{Supervisor, Verdict};
use clap::Parser;
use shared::args::Listen;
use shared::log;

/// The environment variable that tells a worker which address to listen on: the master
/// has reserved it, so with `--port 0` every worker gets the same port.
const ADDR_VAR: &str = "CLUSTER_REUSEPORT_ADDR";

/// Chapter 10: every worker listens on the same port with a socket of its own
/// (SO_REUSEPORT); the kernel spreads the connections, the master only supervises: it
/// restarts a worker that dies, by chapter 7's rules.
#[derive(Parser)]
#[command(name = "ch10-reuseport", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: Listen,
    #[command(flatten)]
    workers: Workers,
    /// Chapter 7's restart options; there is no leaving worker to time or memory to watch.
    #[command(flatten)]
    restart: RestartOptions,
}

fn main() -> ExitCode {
    // Parse the options, then ask chapter 1's question: master or worker?
    cluster::run(master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let workers = options.workers.count;
    // The master binds the port but never listens on it: no queue, no connection ever
    // lands here. It keeps the port ours, for the workers and for their replacements.
    let reserved = reserve::reserve(options.listen.host, options.listen.port)?;
    let addr = reserved.local_addr()?;
    log!("reserved {addr} (bound, not listening); every worker listens on it itself");
    let env = [(ADDR_VAR, addr.to_string())];
    let mut cluster = Cluster::new()?;
    let mut supervisor = Supervisor::new(workers, options.restart.policy());
    for slot in supervisor.slots() {
        keeper::fork_into(&mut cluster, &mut supervisor, slot, &env)?;
    }
    // Who has a socket open, whether the ready line is out, and when each empty slot lost
    // its worker (to say how long the slot went without a socket).
    let mut listening = BTreeSet::new();
    let mut ready = false;
    let mut lost_at: HashMap<usize, Instant> = HashMap::new();
    loop {
        let wait = supervisor
            .next_due()
            .map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(Instant::now())
            });
        if let Some(event) = cluster.next_event_timeout(wait) {
            // Only Ctrl-C or SIGTERM ends this master: unlike chapters 1 to 6, a dead last
            // worker is replaced, not the end (so `finished_by` sees the stop alone).
            if let Event::Shutdown = event {
                return Ok(cluster.finished_by(&event).unwrap_or(ExitCode::SUCCESS));
            }
            match event {
                Event::Message { id, message } if message.text == "listening" => {
                    listening.insert(id);
                    let slot = supervisor.slot_of(id).unwrap_or(0);
                    if let Some(since) = lost_at.remove(&slot) {
                        log!(
                            "worker {id} listens in slot {slot}, {} ms after its last worker died",
                            since.elapsed().as_millis()
                        );
                    }
                    if !ready && listening.len() == workers {
                        ready = true;
                        log!(
                            "listening on http://{addr} ({} workers, a socket each; the \
                             master holds none)",
                            workers
                        );
                    }
                }
                Event::Message { id, message } => {
                    log!("unexpected message from worker {id}: {}", message.text)
                }
                Event::BadMessage { id, error } => log!("worker {id}: {error}"),
                Event::Exit { id, .. } => {
                    // Its socket closed with it. What waited in its queue was reset (or,
                    // with net.ipv4.tcp_migrate_req=1, moved to another worker's socket).
                    listening.remove(&id);
                    let verdict = supervisor.exited(id, Instant::now());
                    if let Some(code) = report(verdict, &supervisor, &mut lost_at) {
                        return Ok(code);
                    }
                }
                _ => {}
            }
        }
        for slot in supervisor.due(Instant::now()) {
            // Chapter 7's restart: a fork that fails is a death at start, with the backoff.
            match keeper::refill(&mut cluster, &mut supervisor, slot, &env) {
                Start::Started(_) => {}
                Start::Stopping => break,
                Start::Failed(verdict) => {
                    if let Some(code) = report(verdict, &supervisor, &mut lost_at) {
                        return Ok(code);
                    }
                }
            }
        }
    }
}
// ANCHOR_END: master

// ANCHOR: report
/// Logs what the supervisor decided for a slot whose worker is gone. Returns the master's
/// exit code when no slot is left in service.
fn report(
    verdict: Verdict,
    supervisor: &Supervisor,
    lost_at: &mut HashMap<usize, Instant>,
) -> Option<ExitCode> {
    match verdict {
        Verdict::Restart { slot, after, .. } => {
            lost_at.entry(slot).or_insert_with(Instant::now);
            log!("slot {slot}: a new worker in {} ms", after.as_millis());
        }
        Verdict::GiveUp { slot, crashes } => {
            log!("slot {slot}: {crashes} crashes at start in a row; giving up");
            if supervisor.in_service() == 0 {
                log!("no slot left in service; the master exits");
                return Some(ExitCode::FAILURE);
            }
        }
        Verdict::Planned => {}
    }
    None
}
// ANCHOR_END: report

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    let channel = worker::channel_from_env()?;
    let addr: SocketAddr = std::env::var(ADDR_VAR)
        .ok()
        .and_then(|a| a.parse().ok())
        .ok_or(format!(
            "{ADDR_VAR} must hold the address the master reserved; start the master instead"
        ))?;
    let idle_timeout = options.listen.idle_timeout;
    let server = Server::new(id, idle_timeout)?.on_message(channel, on_message)?;
    listen_on_own_socket(server, addr)?.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: worker

/// Opens this worker's own listening socket on `addr`, starts accepting on it, and tells
/// the master, which waits for every worker before it prints its ready line.
// ANCHOR: listen_on_own_socket
fn listen_on_own_socket(mut server: Server, addr: SocketAddr) -> Result<Server, Box<dyn Error>> {
    // ANCHOR: solution_ch10_listen
    // socket, SO_REUSEPORT, bind, listen, all in this process. The kernel adds the socket
    // to the group on this port, and from now on hashes a share of the new connections to
    // its queue, which only this worker accepts from.
    let listener = net::listen_with(addr.ip(), addr.port(), true)?;
    log!(
        "listening on http://{} (a socket of its own)",
        listener.local_addr()?
    );
    server.add_listener(listener)?;
    server.send("listening");
    Ok(server)
    // ANCHOR_END: solution_ch10_listen
}
// ANCHOR_END: listen_on_own_socket

fn on_message(_server: &mut Server, message: Message) {
    // The master has nothing to tell a worker here.
    worker::unexpected(&message.text, message.fd);
}
