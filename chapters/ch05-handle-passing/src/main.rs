//! Chapter 5: the master binds the port once, sends the listening socket to every worker
//! over IPC (`SCM_RIGHTS`), and closes its own copy: the articles' `child_process`
//! experiment.
//!
//! Every worker then holds the same listening socket and calls `accept` on it, as nginx's
//! workers do. The kernel gives each connection to one of them. Node's cluster does the
//! same with its "method 2" (`SharedHandle`), a little differently: the master binds
//! when the first worker asks, keeps the socket, and sends it to each worker that asks.
//! `--shared-handle on` does that.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ch00_server_models::server::Server;
use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::channel::Message;
use ch02_ipc_messaging::cluster::{self, Cluster, Event, Outcome};
use ch02_ipc_messaging::worker;
use ch02_ipc_messaging::worker::Messages;
use ch03_eaddrinuse::net;
use clap::Parser;
use shared::args::{Listen, Switch};
use shared::log;

/// Chapter 5: the master sends its listening socket to every worker; workers race to accept.
#[derive(Parser)]
#[command(name = "ch05-handle-passing", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: Listen,
    #[command(flatten)]
    workers: Workers,
    /// Register the shared socket with EPOLLEXCLUSIVE: wake one worker per connection
    #[arg(long, value_name = "on|off", default_value = "off")]
    exclusive: Switch,
    /// Like cluster's SharedHandle: each worker asks, and the master keeps its socket
    #[arg(long, value_name = "on|off", default_value = "off")]
    shared_handle: Switch,
}

fn main() -> ExitCode {
    // Parse the options, then ask chapter 1's question: master or worker?
    cluster::run(master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let (listen, workers) = (&options.listen, options.workers.count);
    let mut cluster = Cluster::with_workers(workers)?;
    // The articles' experiment: send the socket to every worker now, and close ours. With
    // --shared-handle, cluster's SharedHandle instead: the first worker to ask makes the
    // master bind, and the master keeps the socket and sends it to each worker that asks.
    let like_cluster = options.shared_handle.is_on();
    let mut addr = match like_cluster {
        true => None,
        false => Some(hand_off(listen, &cluster)?),
    };
    let mut kept: Option<TcpListener> = None;
    let mut ready = 0;
    loop {
        let event = cluster.next_event();
        if let Event::Shutdown = event {
            // Before the workers go, ask them how the race went.
            summarize(&mut cluster);
        }
        if let Some(code) = cluster.finished_by(&event) {
            return Ok(code);
        }
        match event {
            Event::Message { id, message } if message.text.starts_with("queryServer ") => {
                // ANCHOR: shared_handle
                let listener = match &kept {
                    Some(listener) => listener,
                    None => {
                        let listener = kept.insert(net::listen(listen.host, listen.port)?);
                        addr = Some(listener.local_addr()?);
                        log!(
                            "worker {id} asked to listen: bound {}, and kept it",
                            listener.local_addr()?
                        );
                        listener
                    }
                };
                cluster.send_with_fd(id, "server", listener.as_fd())?;
                // ANCHOR_END: shared_handle
            }
            Event::Message { id, message } if message.text == "listening" => {
                ready += 1;
                log!("worker {id} accepts on the shared socket");
                if let (true, Some(addr)) = (ready == workers, addr) {
                    let master = match like_cluster {
                        true => "the master keeps its copy, as cluster's SharedHandle does",
                        false => "the master holds no listening socket",
                    };
                    log!("listening on http://{addr} (shared by {ready} workers; {master})");
                }
            }
            Event::Message { id, message } => {
                log!("unexpected message from worker {id}: {}", message.text)
            }
            Event::BadMessage { id, error } => log!("worker {id}: {error}"),
            _ => {}
        }
    }
}
// ANCHOR_END: master

/// The articles' `child_process` experiment: bind once, send the listening socket to
/// every worker, close the master's copy. Returns the address.
// ANCHOR: hand_off
fn hand_off(args: &Listen, cluster: &Cluster) -> Result<SocketAddr, Box<dyn Error>> {
    // ANCHOR: solution_ch05_handoff
    // One socket, bound once, by the master: no second bind, so no EADDRINUSE.
    let listener = net::listen(args.host, args.port)?;
    let addr = listener.local_addr()?;
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
    Ok(addr)
    // ANCHOR_END: solution_ch05_handoff
}
// ANCHOR_END: hand_off

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
fn worker(id: u32, options: &Options) -> Outcome {
    let channel = worker::channel_from_env()?;
    let exclusive = options.exclusive.is_on();
    let ask = options.shared_handle.is_on();
    let mut reported = (0, 0);
    let server = Server::new(id, options.listen.idle_timeout)?
        .on_message(channel, move |server, message| {
            on_message(server, message, exclusive)
        })?
        // Once a second, if anything changed: how many connections we won, how often the
        // kernel woke us at all, and how often `accept` then found nothing.
        .every(Duration::from_secs(1), move |server| {
            let stats = server.stats();
            if (stats.accepted, stats.lost_races) != reported {
                reported = (stats.accepted, stats.lost_races);
                log!(
                    "accepted {} connections; woken {} times in all; accept found nothing \
                     {} times",
                    stats.accepted,
                    wakeups(),
                    stats.lost_races
                );
            }
        });
    if ask {
        // A cluster worker's `server.listen(port)`: ask the master for the socket.
        server.send(&format!(
            "queryServer {}",
            SocketAddr::new(options.listen.host, options.listen.port)
        ));
    }
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: worker

/// How many times this process has slept and been woken: its voluntary context switches
/// (Linux). Most wake-ups of a thundering herd never reach the program: epoll wakes every
/// waiter, and then, finding the socket no longer readable (another worker accepted
/// first), goes back to sleep without returning. Only this count shows them.
// ANCHOR: wakeups
fn wakeups() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
// ANCHOR_END: wakeups

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
        (text, fd) => worker::unexpected(text, fd),
    }
}
// ANCHOR_END: on_message
