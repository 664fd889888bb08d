//! Chapter 6b: a count the workers share.
//!
//! Chapter 6's cluster, where `/count` answers how many times it has been asked. Where the
//! count lives is the whole question (`--state`):
//!
//! - `local`: in each worker's memory. Every worker is a process of its own, started by
//!   running the program again, so each has its own count, and none is right.
//! - `master`: in the master. A worker asks over its IPC channel (`incr`) and answers the
//!   request when the master replies (`count N`); its loop serves everyone else meanwhile.
//! - `agent`: in an agent, a process the master starts beside the workers (Egg.js's
//!   `agent_worker`). Each worker has a line of its own to it, and the master is out of the
//!   request path. If the agent dies, the master starts a new one.
//!
//! The worker's side of the questions is in `ask`, the agent in `agent`.

mod agent;
mod ask;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use ch00_server_models::server::{Later, Server};
use ch01_random_port_fork::workers::Workers;
use ch02_ipc_messaging::channel::{Channel, ChannelError, Message};
use ch02_ipc_messaging::cluster::{self, Cluster, Event, Outcome};
use ch02_ipc_messaging::worker::{self, Messages};
use ch06_round_robin::round_robin::{self, Handles, Heard};
use clap::{Parser, ValueEnum};
use shared::args::{self, ListenMany};
use shared::http::{self, Response};
use shared::log;

use crate::agent::{Agent, AGENT};
use crate::ask::Questions;

/// Chapter 6b: chapter 6's cluster with a count on /count, kept in each worker, in the
/// master, or in an agent process.
#[derive(Parser)]
#[command(name = "ch06b-shared-state", args_override_self = true)]
struct Options {
    #[command(flatten)]
    listen: ListenMany,
    #[command(flatten)]
    workers: Workers,
    /// Where /count keeps its count: in each worker (local), in the master, or in an agent
    /// process the master starts
    #[arg(long, value_enum, default_value = "local")]
    state: State,
    /// How long a worker waits for the master's or the agent's reply before it answers
    /// 503, in seconds
    #[arg(long, value_name = "SECS", default_value = "2")]
    #[arg(value_parser = ask_timeout, allow_negative_numbers = true)]
    ask_timeout: Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Local,
    Master,
    Agent,
}

/// `--ask-timeout`: some time, or no reply could ever be waited for.
fn ask_timeout(text: &str) -> Result<Duration, String> {
    match args::seconds(text)? {
        timeout if timeout.is_zero() => Err("must be above 0".into()),
        timeout => Ok(timeout),
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    // The agent is this program too, started by the master with a variable of its own.
    if agent::is_agent() {
        return log::exit_code(agent::run());
    }
    cluster::master_or_worker(&options, master, worker)
}

// ANCHOR: master
fn master(options: &Options) -> Outcome {
    let workers = options.workers.count;
    let mut cluster = Cluster::new()?;
    let mut agent = match options.state {
        State::Agent => Some(Agent::start(&cluster)?),
        _ => None,
    };
    for _ in 0..workers {
        let id = cluster.fork()?;
        if let Some(agent) = &agent {
            agent.connect(&cluster, id);
        }
    }
    let mut handles = Handles::new();
    // --state master: the count, in the master's memory.
    let mut count = 0;
    loop {
        let event = cluster.next_event();
        // Ctrl-C: the workers stop here, and the agent when `agent` is dropped.
        if let Some(code) = cluster.finished_by(&event) {
            return Ok(code);
        }
        match event {
            Event::Ready(AGENT) => {
                if let Some(agent) = &mut agent {
                    agent.heard(&cluster);
                }
            }
            Event::Ready(token) => handles.accept(token, &cluster),
            Event::Message { id, message } => {
                match handles.on_message(&mut cluster, id, &message.text) {
                    Heard::Joined { key, addr } if handles.workers_on(&key) == workers => {
                        let serve = log::serve(workers);
                        let state = where_the_count_is(options.state);
                        log!("listening on http://{addr} (the master accepts, {serve}; {state})")
                    }
                    Heard::Other if message.text == "incr" && options.state == State::Master => {
                        count_here(&cluster, id, &mut count)
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

/// `--state master`: worker `id` asks for the next count, and the master, the one process
/// that holds it, counts and replies.
// ANCHOR: count_here
fn count_here(cluster: &Cluster, id: u32, count: &mut u64) {
    *count += 1;
    // A worker that died meanwhile cannot hear it; its exit comes next.
    if let Err(e) = cluster.send(id, &format!("count {count}")) {
        log!("could not reply to worker {id}: {e}");
    }
}
// ANCHOR_END: count_here

fn where_the_count_is(state: State) -> &'static str {
    match state {
        State::Local => "each worker counts /count in its own memory",
        State::Master => "/count is counted in the master",
        State::Agent => "/count is counted in the agent",
    }
}

// ANCHOR: worker
fn worker(id: u32, options: &Options) -> Outcome {
    let listen = &options.listen;
    let channel = worker::channel_from_env()?;
    let server = Server::new(id, listen.idle_timeout)?;
    let server = match options.state {
        State::Local => count_locally(server, id).on_message(channel, |server, message| {
            // `newconn`, `listening` and `error` are the round-robin's messages.
            if let Some(message) = round_robin::from_master(server, message) {
                worker::unexpected(&message.text, message.fd);
            }
        })?,
        state => ask_elsewhere(server, id, channel, state, options.ask_timeout)?,
    };
    let server = server.on_fds_freed(|server| server.send("free"));
    server.send("online");
    round_robin::listen_via_master(&server, listen.host, &listen.ports);
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
// ANCHOR_END: worker

/// `--state local`: the count is a variable of the worker's, like a `let count = 0` at the
/// top of a Node worker's script.
// ANCHOR: local
fn count_locally(server: Server, id: u32) -> Server {
    let count = Cell::new(0);
    server.handler(move |request| match request.route() {
        "/count" => {
            count.set(count.get() + 1);
            ask::count(count.get(), id)
        }
        _ => http::hello(id),
    })
}
// ANCHOR_END: local

/// `--state master` or `agent`: `/count` asks, and is answered when the reply comes (or
/// with a 503 once `timeout` has passed without one). The master replies on the channel
/// the worker already has; the agent on a line the master sends.
// ANCHOR: ask_elsewhere
fn ask_elsewhere(
    server: Server,
    id: u32,
    channel: Channel,
    state: State,
    timeout: Duration,
) -> io::Result<Server> {
    let (who, to) = match state {
        State::Master => ("the master", Some(channel.clone())),
        _ => ("the agent", None),
    };
    let questions = Rc::new(RefCell::new(Questions::new(who, to, timeout, id)));
    let (asker, timer) = (questions.clone(), questions.clone());
    let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    server
        .handler_later(move |request, later| match request.route() {
            "/count" => asker.borrow_mut().ask(later),
            _ => Some(http::hello(id)),
        })
        .every(tick, move |server| {
            let due = timer.borrow_mut().overdue();
            answer_all(server, due);
        })
        .on_message(channel, move |server, message| {
            on_message(server, message, &questions, state)
        })
}
// ANCHOR_END: ask_elsewhere

/// Answers requests left for later. (Never while `Questions` is borrowed: an answer lets
/// the loop read the connection's next request, which may ask again.)
fn answer_all(server: &mut Server, answers: Vec<(Later, Response)>) {
    for (later, response) in answers {
        server.answer_later(later, response);
    }
}

/// The master's messages, besides the round-robin's: `count N` (`--state master`), or a
/// line to the agent (`--state agent`).
// ANCHOR: on_message
fn on_message(
    server: &mut Server,
    message: Message,
    questions: &Rc<RefCell<Questions>>,
    state: State,
) {
    let Some(Message { text, fd }) = round_robin::from_master(server, message) else {
        return;
    };
    match (state, text.split(' ').next(), fd) {
        (State::Master, Some("count"), None) => {
            let answer = questions.borrow_mut().reply(&text);
            answer_all(server, answer.into_iter().collect());
        }
        (State::Agent, Some("agent"), Some(fd)) => connect(server, questions, &text[6..], fd),
        (_, _, fd) => worker::unexpected(&text, fd),
    }
}
// ANCHOR_END: on_message

/// `agent PID` came with one end of a line to that agent: questions go there from now on.
/// A line to an earlier agent is read to its end first (that agent is dead, but what it
/// replied before it died still counts), then let go.
// ANCHOR: connect
fn connect(server: &mut Server, questions: &Rc<RefCell<Questions>>, pid: &str, fd: OwnedFd) {
    let old = questions.borrow().line().cloned();
    if let Some(old) = old {
        hear_agent(server, &old, questions);
        if questions.borrow().line().is_some() {
            lose(server, questions, &old, "the agent was replaced");
        }
    }
    let line = Channel::from_fd(fd);
    questions.borrow_mut().connect(line.clone());
    let (reader, questions) = (line.clone(), questions.clone());
    let watched = server.add_watch(line.as_fd(), move |server| {
        hear_agent(server, &reader, &questions)
    });
    match watched {
        Ok(()) => log!("asking the agent (pid {pid}) for counts"),
        Err(e) => log!("cannot watch the line to the agent (pid {pid}): {e}"),
    }
}
// ANCHOR_END: connect

/// Every reply waiting on the line to the agent, in order. A closed line: the agent is
/// gone.
// ANCHOR: hear_agent
fn hear_agent(server: &mut Server, line: &Channel, questions: &Rc<RefCell<Questions>>) {
    loop {
        let reply = match line.try_recv() {
            Ok(Some(message)) => message.text,
            Ok(None) => return,
            // Not a count, so its request gets a 503; but a reply all the same.
            Err(e @ (ChannelError::Malformed(_) | ChannelError::TooLarge(_))) => e.to_string(),
            Err(_) => {
                return lose(
                    server,
                    questions,
                    line,
                    "the agent is gone (its line closed)",
                )
            }
        };
        let answer = questions.borrow_mut().reply(&reply);
        answer_all(server, answer.into_iter().collect());
    }
}
// ANCHOR_END: hear_agent

/// The line to the agent is gone: stop watching it, and answer 503 to what waited on it.
fn lose(server: &mut Server, questions: &Rc<RefCell<Questions>>, line: &Channel, why: &str) {
    server.unwatch(line.as_fd());
    let answers = questions.borrow_mut().lost(why);
    answer_all(server, answers);
}
