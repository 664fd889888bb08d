//! Chapter 3: every worker binds the same port, and all but one fail with EADDRINUSE.
//!
//! This is what happens if you take chapter 1 and give every worker the same fixed port,
//! as the first Node example in the articles does: the first `bind` wins and every later
//! one is refused by the kernel. The master hands out the port over the IPC channel,
//! collects each worker's answer, and says how many failed.

use std::net::SocketAddr;
use std::process::ExitCode;

use ch00_server_models::server::Server;
use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::cluster::{self, Cluster, Event, Outcome};
use ch02_ipc_messaging::worker;
use ch03_eaddrinuse::net;
use clap::Parser;
use shared::args::{Listen, Switch};
use shared::log;

/// Chapter 3: every worker binds the same port; one wins, the rest get EADDRINUSE.
#[derive(Parser)]
#[command(name = "ch03-eaddrinuse", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: Listen,
    #[command(flatten)]
    workers: Workers,
    /// Set SO_REUSEPORT so every worker can bind the port (exercise ch03-reuseport)
    #[arg(long, value_name = "on|off", default_value = "off")]
    reuseport: Switch,
}

fn main() -> ExitCode {
    // Parse the options, then ask chapter 1's question: master or worker?
    cluster::run(master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let (host, workers) = (options.listen.host, options.workers.count);
    // With --port 0 the master asks the kernel for a free port once and gives that same
    // number to every worker: the clash is the point of this chapter.
    let port = match options.listen.port {
        0 => net::listen(host, 0)?.local_addr()?.port(),
        port => port,
    };
    let addr = SocketAddr::new(host, port);
    log!("master started; every worker will bind {addr}");
    let mut cluster: Cluster = Cluster::new()?;
    for _ in 0..workers {
        let id = cluster.fork()?;
        cluster.send(id, &format!("listen {addr}"))?;
    }
    let (mut listening, mut failed) = (Vec::new(), Vec::new());
    loop {
        let event = cluster.next_event();
        if let Some(code) = cluster.finished_by(&event) {
            return Ok(code);
        }
        let answered = listening.len() + failed.len();
        match event {
            Event::Message { id, message } => {
                let mut words = message.text.split(' ');
                match (words.next(), words.next()) {
                    (Some("listening"), _) => listening.push(id),
                    (Some("error"), Some(code)) => failed.push((id, code.to_string())),
                    _ => log!("unexpected message from worker {id}: {}", message.text),
                }
            }
            // A worker that dies without a word failed too, for a reason it did not say.
            Event::Exit { id, .. }
                if !listening.contains(&id) && !failed.iter().any(|(f, _)| *f == id) =>
            {
                failed.push((id, "no answer".to_string()))
            }
            Event::BadMessage { id, error } => log!("worker {id}: {error}"),
            _ => {}
        }
        if answered < workers && listening.len() + failed.len() == workers {
            report(&listening, &failed);
        }
    }
}
// ANCHOR_END: master

/// The master's summary, once every worker has answered.
// ANCHOR: report
fn report(listening: &[u32], failed: &[(u32, String)]) {
    // "worker 2", "workers 2, 3".
    let named = |ids: &[u32]| {
        let list = ids.iter().map(u32::to_string).collect::<Vec<_>>();
        match ids.len() {
            1 => format!("worker {}", list.join(", ")),
            _ => format!("workers {}", list.join(", ")),
        }
    };
    // One group per reason, in the order they came: "with EADDRINUSE (workers 2, 3)".
    let mut reasons: Vec<&str> = Vec::new();
    for (_, code) in failed {
        if !reasons.contains(&code.as_str()) {
            reasons.push(code);
        }
    }
    let why = reasons
        .iter()
        .map(|reason| {
            let who: Vec<u32> = failed
                .iter()
                .filter(|(_, c)| c == reason)
                .map(|(id, _)| *id)
                .collect();
            format!("{reason} ({})", named(&who))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let serving = match listening.len() {
        0 => "no worker listening".to_string(),
        n => format!("{} listening ({})", log::workers(n), named(listening)),
    };
    log!(
        "{serving}; {} failed to bind{}",
        failed.len(),
        match why.is_empty() {
            true => String::new(),
            false => format!(" with {why}"),
        }
    );
}
// ANCHOR_END: report

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    let channel = worker::channel_from_env()?;
    // The first message from the master says where to listen.
    let order = channel.recv()?;
    let addr: SocketAddr = order
        .text
        .strip_prefix("listen ")
        .and_then(|a| a.parse().ok())
        .ok_or(format!(
            "expected 'listen ADDR' from the master, got '{}'",
            order.text
        ))?;
    let reuse_port = options.reuseport.is_on();
    match net::listen_with(addr.ip(), addr.port(), reuse_port) {
        Ok(listener) => {
            log!("listening on http://{}", listener.local_addr()?);
            channel.send(&format!("listening {addr}"))?;
            let mut server = Server::new(id, options.listen.idle_timeout)?;
            server.add_listener(listener)?;
            server.run()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // ANCHOR: solution_ch03_report
            // Node prints an uncaught `Error: listen EADDRINUSE: ...` and the worker dies.
            // We print the same, tell the master why, and exit with code 1.
            log!("Error: {}", e.node_message());
            channel.send(&format!("error {} {}", e.code(), e.errno()))?;
            Ok(ExitCode::FAILURE)
            // ANCHOR_END: solution_ch03_report
        }
    }
}
// ANCHOR_END: worker
