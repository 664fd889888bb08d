//! `--state agent`: the count lives in an agent, a process the master starts beside its
//! workers (Egg.js's `agent_worker`), and each worker asks it directly, on a line of its
//! own.
//!
//! The agent is this program once more, started as chapter 1 starts a worker (it dies
//! with its master, and leaves Ctrl-C to it), with [`AGENT_VAR`] set. Its channel to the
//! master is a worker's channel, in the same variable. For each worker the master makes a
//! socketpair and sends one end to the agent (`worker ID`) and the other to the worker
//! (`agent PID`), as chapter 5 sent sockets; then it closes its copies. From there on a
//! question goes from a worker to the agent and back, and the master sees none of it.
//!
//! Egg.js relays every message between its agent and its workers through the master
//! (`lib/utils/messenger.js` in egg-cluster); the line of our own keeps the master out of
//! the request path.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ch00_server_models::server::Server;
use ch01_random_port_fork::cluster::{reap, WORKER_FDS};
use ch01_random_port_fork::spawn::{spawn_worker, Inherit, Worker};
use ch02_ipc_messaging::channel::{Channel, ChannelError, Message};
use ch02_ipc_messaging::cluster::{Cluster, Exited, Outcome};
use ch02_ipc_messaging::worker::{self, Messages, CHANNEL_FD_VAR};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shared::log;

/// Set in the agent's environment: this process is the agent, not a master or a worker.
pub const AGENT_VAR: &str = "CLUSTER_AGENT";

/// The token the master's loop watches its channel to the agent with: above any
/// round-robin handle's, below the workers' own.
pub const AGENT: u64 = WORKER_FDS - 1;

/// An agent that dies this many times within [`TOO_OFTEN`] is not started again.
const DEATHS: usize = 3;
const TOO_OFTEN: Duration = Duration::from_secs(10);

/// Whether this process is the agent.
pub fn is_agent() -> bool {
    std::env::var_os(AGENT_VAR).is_some()
}

/// The master's side: the agent running now, started again when it dies.
pub struct Agent {
    running: Option<Running>,
    /// When the last agents died, for a crash loop.
    deaths: VecDeque<Instant>,
}

/// An agent process and the master's channel to it. Dropped, it stops the agent.
struct Running {
    process: Worker,
    channel: Channel,
    reaped: bool,
}

impl Agent {
    /// Starts the agent: Egg.js starts it before the workers, which need it from their
    /// first request.
    pub fn start(cluster: &Cluster) -> io::Result<Agent> {
        Ok(Agent {
            running: Some(Running::start(cluster)?),
            deaths: VecDeque::new(),
        })
    }

    /// Gives worker `id` a line of its own to the agent: a socketpair, one end each.
    // ANCHOR: connect
    pub fn connect(&self, cluster: &Cluster, id: u32) {
        let Some(agent) = &self.running else {
            return;
        };
        let sent = Channel::pair()
            .map_err(ChannelError::Io)
            .and_then(|(line, theirs)| {
                agent
                    .channel
                    .send_with_fd(&format!("worker {id}"), line.as_fd())?;
                cluster.send_with_fd(id, &format!("agent {}", agent.process.pid), theirs.as_fd())
            });
        // Our copies of both ends close here: the line is the worker's and the agent's.
        if let Err(e) = sent {
            log!("could not give worker {id} a line to the agent: {e}");
        }
    }
    // ANCHOR_END: connect

    /// The agent's channel is readable: the agent has something to say, or is gone. A
    /// dead agent is reaped and a new one started, with a line to every worker; its count
    /// starts again from 0. Three deaths in ten seconds, and the master gives up.
    // ANCHOR: heard
    pub fn heard(&mut self, cluster: &Cluster) {
        let Some(agent) = self.running.take_if(|agent| !agent.alive()) else {
            return;
        };
        let pid = agent.process.pid;
        let status = agent.end(cluster, Signal::SIGKILL);
        log!("the agent (pid {pid}) {status}; the count it kept is lost");
        self.deaths.push_back(Instant::now());
        self.deaths.retain(|death| death.elapsed() < TOO_OFTEN);
        if self.deaths.len() >= DEATHS {
            log!(
                "the agent died {DEATHS} times within {TOO_OFTEN:?}: no new one; /count \
                 answers 503 until the master is restarted"
            );
            return;
        }
        match Running::start(cluster) {
            Ok(agent) => self.running = Some(agent),
            Err(e) => log!("could not start a new agent: {e}; /count answers 503"),
        }
        for id in cluster.ids() {
            self.connect(cluster, id);
        }
    }
    // ANCHOR_END: heard
}

impl Running {
    fn start(cluster: &Cluster) -> io::Result<Running> {
        let (channel, theirs) = Channel::pair()?;
        let theirs = Inherit {
            var: CHANNEL_FD_VAR,
            fd: theirs,
        };
        // Worker id 0, which no worker has: the agent never asks for its id.
        let process = spawn_worker(0, Some(theirs), &[(AGENT_VAR, "1".into())])?;
        let agent = Running {
            process,
            channel,
            reaped: false,
        };
        cluster.watch(agent.channel.as_fd(), AGENT)?;
        log!("started the agent (pid {})", agent.process.pid);
        Ok(agent)
    }

    /// Reads what the agent said; false once its channel has closed: it is gone.
    fn alive(&self) -> bool {
        loop {
            match self.channel.try_recv() {
                Ok(Some(message)) => log!("unexpected message from the agent: {}", message.text),
                Ok(None) => return true,
                Err(ChannelError::Closed | ChannelError::Io(_)) => return false,
                Err(e) => log!("the agent: {e}"),
            }
        }
    }

    /// Sends `signal` and waits for the agent's end. After SIGKILL, from a dead agent
    /// nothing is lost; its channel may close a moment before its exit can be reaped. A
    /// stopped agent is continued, for the signal to take effect.
    fn end(mut self, cluster: &Cluster, signal: Signal) -> Exited {
        let _ = cluster.unwatch(self.channel.as_fd());
        let pid = Pid::from_raw(self.process.pid as i32);
        let _ = kill(pid, signal);
        let _ = kill(pid, Signal::SIGCONT);
        self.reaped = true;
        reap(self.process.pid)
    }
}

impl Drop for Running {
    /// A master that ends, by Ctrl-C or an error, stops its agent and waits for it.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = Pid::from_raw(self.process.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let _ = kill(pid, Signal::SIGCONT);
        let status = reap(self.process.pid);
        log!("stopped the agent (pid {}): it {status}", self.process.pid);
    }
}

/// The agent process: hears the master, which sends it one end of each worker's line, and
/// answers every worker's `incr` with the next count. It runs chapter 0's event loop with
/// no HTTP socket, and ends when its master does.
// ANCHOR: run
pub fn run() -> Outcome {
    log::speak_as("agent");
    let channel = worker::channel_from_env()?;
    // The count: in this process's memory, and nowhere else.
    let count = Rc::new(Cell::new(0u64));
    let server = Server::new(0, Duration::from_secs(10))?
        .on_message(channel, move |server, message| {
            from_master(server, message, &count)
        })?;
    log!("started; the count is 0");
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: run

/// `worker ID` with one end of that worker's line: watch it.
fn from_master(server: &mut Server, message: Message, count: &Rc<Cell<u64>>) {
    let Message { text, fd } = message;
    let (Some(id), Some(fd)) = (text.strip_prefix("worker "), fd) else {
        return log!("unexpected message from the master: {text}");
    };
    let (id, line, count) = (id.to_string(), Channel::from_fd(fd), Rc::clone(count));
    let reader = line.clone();
    let watched = server.add_watch(line.as_fd(), move |server| {
        answer(server, &reader, &id, &count)
    });
    if let Err(e) = watched {
        log!("cannot watch a worker's line: {e}");
    }
}

/// Answers every question waiting on a worker's line, in order. Anything but `incr` gets
/// an error as its reply: the worker counts on one reply per question.
// ANCHOR: answer
fn answer(server: &mut Server, line: &Channel, id: &str, count: &Cell<u64>) {
    loop {
        let reply = match line.try_recv() {
            Ok(Some(message)) if message.text == "incr" => {
                count.set(count.get() + 1);
                format!("count {}", count.get())
            }
            Ok(Some(message)) => format!("error: '{}' is not a question", message.text),
            Ok(None) => return,
            Err(e @ (ChannelError::Malformed(_) | ChannelError::TooLarge(_))) => {
                format!("error: {e}")
            }
            Err(_) => {
                log!("worker {id}'s line closed (the worker exited)");
                server.unwatch(line.as_fd());
                return;
            }
        };
        if let Err(e) = line.send(&reply) {
            log!("could not reply to worker {id}: {e}");
        }
    }
}
// ANCHOR_END: answer
