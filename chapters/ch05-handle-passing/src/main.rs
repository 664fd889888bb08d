//! Chapter 5: the master binds the port once, sends the listening socket to every worker
//! over IPC (`SCM_RIGHTS`), and closes its own copy.
//!
//! This is Node's "method 2" (the shared handle), and nginx's model: every worker holds
//! the same listening socket and calls `accept` on it. The kernel gives each connection to
//! one of them; the others, woken for nothing, get EAGAIN and go back to waiting.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shared::args::{Args, Cli};
use shared::channel::Message;
use shared::cluster::{self, Cluster, Event, Outcome};
use shared::log;
use shared::net;
use shared::server::Server;
use shared::spawn;

fn main() -> ExitCode {
    let args = Cli::new(
        "ch05-handle-passing",
        "Chapter 5: the master sends its listening socket to every worker; workers race to accept.",
    )
    .option(
        "--exclusive",
        "on|off",
        "register the shared socket with EPOLLEXCLUSIVE: wake one worker per connection",
        "off",
    )
    .parse();
    // Master or worker? `master_or_worker` asks, as Node's `cluster.isPrimary` does.
    cluster::master_or_worker(&args, master, worker)
}

// ANCHOR: master
fn master(args: &Args) -> Outcome {
    // ANCHOR: solution_ch05_handoff
    // ANCHOR: hand_off
    // One socket, bound once, by the master: no second bind, so no EADDRINUSE.
    let listener = net::listen(args.host, args.port)?;
    let addr = listener.local_addr()?;
    let mut cluster: Cluster = Cluster::new()?;
    for _ in 0..args.workers {
        cluster.fork()?;
    }
    for id in cluster.ids() {
        // The kernel installs a new fd for the same socket in the worker's fd table.
        cluster.send_with_fd(id, "server", listener.as_fd())?;
    }
    // Like `server.close()` after `worker.send('server', server)` in Node: our fd goes,
    // the socket stays open, held by the workers' fds.
    drop(listener);
    log!(
        "sent the listening socket {addr} to {} workers and closed ours",
        cluster.len()
    );
    // ANCHOR_END: hand_off
    let mut ready = 0;
    loop {
        let event = cluster.next_event();
        if let Event::Shutdown = event {
            // Before the workers go, ask them how the race went.
            summarize(&mut cluster);
        }
        if let Some(code) = cluster.ends_here(&event) {
            return Ok(code);
        }
        match event {
            Event::Message { id, message } if message.text == "listening" => {
                ready += 1;
                log!("worker {id} accepts on the shared socket");
                if ready == args.workers {
                    log!("listening on http://{addr} (shared by {ready} workers; the master holds no listening socket)");
                }
            }
            Event::Message { id, message } => {
                log!("unexpected message from worker {id}: {}", message.text)
            }
            Event::BadMessage { id, error } => log!("worker {id}: {error}"),
            Event::Exit { .. } | Event::Shutdown => {}
            Event::Other(()) => {}
        }
    }
    // ANCHOR_END: solution_ch05_handoff
}
// ANCHOR_END: master

/// Before stopping, asks every worker how many connections it won, and logs the spread.
// ANCHOR: summarize
fn summarize(cluster: &mut Cluster) {
    // ANCHOR: solution_ch05_summary
    for id in cluster.ids() {
        let _ = cluster.send(id, "stats?");
    }
    let mut accepted = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    while accepted.len() < cluster.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match cluster.next_event_timeout(left) {
            Some(Event::Message { id, message }) => {
                if let Some(n) = message.text.strip_prefix("accepted ") {
                    accepted.insert(id, n.parse::<u64>().unwrap_or(0));
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    let total: u64 = accepted.values().sum();
    for (id, n) in &accepted {
        let share = *n as f64 * 100.0 / total.max(1) as f64;
        log!("worker {id} accepted {n} of {total} connections ({share:.0}%)");
    }
    // ANCHOR_END: solution_ch05_summary
}
// ANCHOR_END: summarize

// ANCHOR: worker
fn worker(id: u32, args: &Args) -> Outcome {
    let channel = spawn::channel_from_env().ok_or("no IPC channel: start the master instead")?;
    let exclusive = args.get::<String>("--exclusive") == "on";
    let mut reported = (0, 0);
    let server = Server::new(id, args.idle_timeout)?
        .on_message(channel, move |server, message| {
            on_message(server, message, exclusive)
        })?
        // Once a second, if anything changed: how many connections we won, and how often
        // we were woken for one that another worker took first.
        .every(Duration::from_secs(1), move |server| {
            let stats = server.stats();
            if (stats.accepted, stats.lost_races) != reported {
                reported = (stats.accepted, stats.lost_races);
                log!(
                    "accepted {} connections; woken {} times for nothing (accept said EAGAIN)",
                    stats.accepted,
                    stats.lost_races
                );
            }
        });
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: worker

// ANCHOR: on_message
fn on_message(server: &mut Server, message: Message, exclusive: bool) {
    match (message.text.as_str(), message.fd) {
        ("server", Some(fd)) => {
            // ANCHOR: solution_ch05_adopt
            // What arrives is not a server object, only a descriptor of the socket; we
            // wrap it and start accepting on it, as Node's child rebuilds a net.Server.
            let listener = TcpListener::from(fd);
            match server.add_listener_with(listener, exclusive) {
                Ok(()) => server.send("listening"),
                Err(e) => log!("cannot accept on the socket from the master: {e}"),
            }
            // ANCHOR_END: solution_ch05_adopt
        }
        ("stats?", None) => server.send(&format!("accepted {}", server.stats().accepted)),
        (text, fd) => {
            // An fd we did not ask for is dropped, which closes it.
            log!(
                "unexpected message '{text}'{}",
                if fd.is_some() {
                    " with an fd (closed)"
                } else {
                    ""
                }
            );
        }
    }
}
// ANCHOR_END: on_message
