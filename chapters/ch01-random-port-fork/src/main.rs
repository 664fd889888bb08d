//! Chapter 1: a master starts one worker per CPU, and each worker serves HTTP on a port
//! of its own, drawn at random.
//!
//! The same binary plays both parts. Run it and it is the master; the master runs it
//! again with `CLUSTER_WORKER_ID` set, and that copy is a worker. This is what Node's
//! `cluster.fork()` does, and `main` asks the same question as `cluster.isPrimary`.

use std::process::ExitCode;

use ch00_server_models::server::Server;
use ch01_random_port_fork::cluster::{self, Cluster, Outcome};
use ch01_random_port_fork::net::listen_random;
use ch01_random_port_fork::workers::Workers;
use clap::Parser;
use shared::args::ListenRandom;
use shared::log;
use shared::net;

// ANCHOR: main
/// Chapter 1: a master starts one worker per CPU; each serves HTTP on a random port.
#[derive(Parser)]
#[command(name = "ch01-random-port-fork", args_override_self = true)]
struct Options {
    /// `--host`, `--port` and `--idle-timeout`, as every chapter takes them.
    #[command(flatten)]
    listen: ListenRandom,
    /// `--workers`: this chapter's idea (`src/workers.rs`).
    #[command(flatten)]
    workers: Workers,
}

fn main() -> ExitCode {
    let options = Options::parse();
    // Master or worker? `master_or_worker` asks, as Node's `cluster.isPrimary` does.
    cluster::master_or_worker(&options, master, worker)
}
// ANCHOR_END: main

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let workers = options.workers.count;
    log!("master started; forking {workers} workers");
    // No IPC yet: this master can start its workers and stop them, nothing more.
    let mut cluster: Cluster = Cluster::new()?;
    for _ in 0..workers {
        cluster.fork()?;
    }
    loop {
        // Without IPC only two events can reach this master: a worker exited, or
        // Ctrl-C/SIGTERM arrived. `finished_by` decides whether either ends the master.
        let event = cluster.next_event();
        if let Some(code) = cluster.finished_by(&event) {
            return Ok(code);
        }
    }
}
// ANCHOR_END: master

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    let listen = &options.listen;
    // Every worker picks its own port. Nothing is shared yet, so nothing can clash.
    let listener = match listen.port {
        0 => listen_random(listen.host)?,
        port => net::listen(listen.host, port)?,
    };
    log!("listening on http://{}", listener.local_addr()?);
    let mut server = Server::new(id, listen.idle_timeout)?;
    server.add_listener(listener)?;
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: worker
