//! Chapter 2: master and workers talk over an IPC channel.
//!
//! Before starting each worker the master makes a socketpair, keeps one end and lets the
//! worker inherit the other; the worker finds it through `CLUSTER_CHANNEL_FD`, as a Node
//! child finds `NODE_CHANNEL_FD`. The worker announces `<port> ready`; the master logs it
//! and answers. Both sides log every message, so the conversation is on screen.

use std::process::ExitCode;

use ch00_server_models::server::Server;
use ch01_random_port_fork::net::listen_random;
use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::channel::Message;
use ch02_ipc_messaging::cluster::{self, Cluster, Event, Outcome};
use ch02_ipc_messaging::worker::{self, Messages};
use clap::Parser;
use shared::args::ListenRandom;
use shared::log;

/// Chapter 2: master and workers exchange messages over a socketpair.
#[derive(Parser)]
#[command(name = "ch02-ipc-messaging", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: ListenRandom,
    #[command(flatten)]
    workers: Workers,
}

fn main() -> ExitCode {
    // Parse the options, then ask chapter 1's question: master or worker?
    cluster::run(master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let workers = options.workers.count;
    log!("master started; forking {workers} workers");
    let mut cluster = Cluster::with_workers(workers)?;
    loop {
        let event = cluster.next_event();
        if let Some(code) = cluster.finished_by(&event) {
            return Ok(code);
        }
        match event {
            // Like `worker.on('message', msg => ...)` in Node.
            Event::Message { id, message } => {
                log!("message from worker {id}: {}", message.text);
                if message.fd.is_some() {
                    log!("worker {id} sent an fd we did not ask for; closing it");
                }
                if message.text.ends_with(" ready") {
                    cluster.send(id, "ok")?;
                }
            }
            Event::BadMessage { id, error } => log!("worker {id}: {error}"),
            _ => {}
        }
    }
}
// ANCHOR_END: master

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    // The inherited end of the socketpair, whose fd number the master put in
    // CLUSTER_CHANNEL_FD, as Node's child finds NODE_CHANNEL_FD.
    let channel = worker::channel_from_env()?;
    let listener = listen_random(options.listen.host)?;
    let port = listener.local_addr()?.port();
    log!("listening on http://{}", listener.local_addr()?);
    // The channel joins the same event loop as the HTTP sockets: one thread serves both.
    let idle_timeout = options.listen.idle_timeout;
    let mut server = Server::new(id, idle_timeout)?.on_message(channel, on_message)?;
    server.add_listener(listener)?;
    // Like `process.send(`${port} ready`)` in the Node version.
    server.send(&format!("{port} ready"));
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: worker

/// What a worker does with each message from its master.
// ANCHOR: on_message
fn on_message(server: &mut Server, message: Message) {
    if message.fd.is_some() {
        // Dropping the message closes the fd: nothing we did not ask for stays open.
        log!(
            "an fd came with '{}' unasked; closing it",
            short(&message.text)
        );
    }
    let text = message.text.as_str();
    if let Some(payload) = text.strip_prefix("echo ") {
        // Sends the payload back unchanged: the tests use this to push thousands of
        // messages, and large ones, through the channel and compare what returns.
        server.send(&format!("echo {payload}"));
    } else if text == "served?" {
        // ANCHOR: solution_ch02_served
        server.send(&format!("served {}", server.stats().served));
        // ANCHOR_END: solution_ch02_served
    } else {
        log!("message from master: {}", short(text));
    }
}
// ANCHOR_END: on_message

/// The first 60 characters of a message, for the log.
fn short(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}... ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}
