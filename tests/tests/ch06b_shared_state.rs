//! Chapter 6b: a count on `/count`, kept in each worker (`--state local`), in the master
//! (`--state master`) or in an agent process the master starts (`--state agent`).
//!
//! The cluster's tests count through real connections. The worker's side of a question
//! is tested with the test as its master: it hands the worker connections as chapter 6's
//! master does, reads the worker's `incr`, and replies when, and what, it likes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

use ch02_ipc_messaging::channel::Channel;
use chapter_tests::*;
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

const CH06B: &str = "ch06b-shared-state";

/// Starts the chapter with two workers and `--state STATE`, and waits until it serves.
#[track_caller]
fn start(state: &str, extra: &[&str]) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    let mut args = vec!["--state", state];
    args.extend_from_slice(extra);
    Chapter::start_cluster(CH06B, 2, &args)
}

/// `count N by PID (worker ID)`: `(N, PID, ID)`.
fn parse_count(body: &str) -> Option<(u64, u32, u32)> {
    let rest = body.strip_prefix("count ")?.trim_end();
    let (n, rest) = rest.split_once(" by ")?;
    let (pid, rest) = rest.split_once(" (worker ")?;
    let id = rest.strip_suffix(')')?;
    Some((n.parse().ok()?, pid.parse().ok()?, id.parse().ok()?))
}

/// Checks that `response` is a count from one of the `forked` workers: `(N, ID)`.
#[track_caller]
fn counted(response: &HttpResponse, forked: &[(u32, u32)]) -> (u64, u32) {
    assert_eq!(response.status, 200, "{response:?}");
    let (n, pid, id) =
        parse_count(&response.body).unwrap_or_else(|| panic!("not a count: {:?}", response.body));
    assert!(
        forked.contains(&(id, pid)),
        "worker {id} (pid {pid}) is not among the master's forks {forked:?}"
    );
    (n, id)
}

/// `GET /count` on a kept-alive connection, and its answer.
#[track_caller]
fn count_on(stream: &mut TcpStream) -> HttpResponse {
    write_request(stream, "/count", true).expect("send GET /count");
    read_response(stream).expect("an answer to GET /count")
}

/// The pid in the master's `n`-th `started the agent (pid PID)` line.
#[track_caller]
fn agent_pid(master: &Chapter, n: usize) -> u32 {
    let lines = master.wait_for_n("started the agent (pid ", n, TIMEOUT);
    let line = &lines[n - 1];
    let (_, rest) = line.split_once("(pid ").expect("a pid");
    rest.trim_end_matches(')').parse().expect("a pid")
}

#[test]
fn local_counts_are_per_worker_and_neither_sees_all() {
    let (_master, addr, forked) = start("local", &[]);
    let seen: Vec<(u64, u32)> = (0..10)
        .map(|_| counted(&get_path(addr, "/count"), &forked))
        .collect();
    let mut by_worker: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (n, id) in &seen {
        by_worker.entry(*id).or_default().push(*n);
    }
    assert_eq!(by_worker.len(), 2, "both workers answered: {seen:?}");
    for (id, counts) in &by_worker {
        let own: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(
            counts, &own,
            "worker {id} counts its own requests, and only those: {seen:?}"
        );
    }
    // Connections one after another take turns: two counts, interleaved.
    let counts: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(counts, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], "{seen:?}");
}

/// 4 clients at once, 200 requests each, every one on a new connection: the counts given
/// are exactly 1 to 800, each once, and each client sees its own counts grow, whichever
/// worker answered.
#[track_caller]
fn exact_under_concurrent_clients(state: &str) {
    const CLIENTS: usize = 4;
    const EACH: usize = 200;
    let (_master, addr, forked) = start(state, &[]);
    let forked = &forked;
    let seen: Vec<Vec<(u64, u32)>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                scope.spawn(move || {
                    (0..EACH)
                        .map(|i| match http_get_path(addr, "/count") {
                            Ok(response) => counted(&response, forked),
                            Err(e) => panic!("client {c}, request {i}: {e}"),
                        })
                        .collect()
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("a client panicked"))
            .collect()
    });
    for (c, mine) in seen.iter().enumerate() {
        assert!(
            mine.windows(2).all(|w| w[0].0 < w[1].0),
            "client {c}'s counts should grow: {mine:?}"
        );
    }
    let all: Vec<u64> = seen.iter().flatten().map(|(n, _)| *n).collect();
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a count was given twice");
    let expected: BTreeSet<u64> = (1..=(CLIENTS * EACH) as u64).collect();
    assert_eq!(distinct, expected, "the counts given");
    let workers: BTreeSet<u32> = seen.iter().flatten().map(|(_, id)| *id).collect();
    assert_eq!(workers.len(), 2, "both workers answered");
}

#[test]
fn master_counts_are_exact_under_concurrent_clients() {
    exact_under_concurrent_clients("master");
}

#[test]
fn agent_counts_are_exact_under_concurrent_clients() {
    exact_under_concurrent_clients("agent");
}

/// The master is out of the agent's request path: stopped, it accepts no new connection,
/// but a kept-alive client still gets its counts, from the agent through the worker.
#[test]
fn with_the_master_stopped_the_agent_still_counts() {
    let (master, addr, forked) = start("agent", &[]);
    let mut client = connect(addr).expect("connect");
    assert_eq!(counted(&count_on(&mut client), &forked).0, 1);
    pause(master.pid());
    for n in 2..=4 {
        assert_eq!(counted(&count_on(&mut client), &forked).0, n);
    }
    resume(master.pid());
}

/// `kill -9` the agent: while the master cannot start another (it is stopped), `/count`
/// answers 503 at once and the worker says why; then the master starts a new agent, and
/// the count starts again from 1: the old one died with its process.
#[test]
fn a_killed_agent_is_replaced_and_its_count_starts_over() {
    let (master, addr, forked) = start("agent", &[]);
    let agent = agent_pid(&master, 1);
    for n in 1..=3 {
        assert_eq!(counted(&get_path(addr, "/count"), &forked).0, n);
    }
    let mut client = connect(addr).expect("connect");
    write_request(&mut client, "/", true).expect("send GET /");
    let (pid, id) = answered_by(&read_response(&mut client).expect("hello"), &forked);

    pause(master.pid());
    kill(Pid::from_raw(agent as i32), Signal::SIGKILL).expect("kill -9 the agent");
    assert!(wait_until(TIMEOUT, || !pid_alive(agent)), "the agent died");
    let refused = count_on(&mut client);
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("agent"), "{refused:?}");
    master.wait_for(&format!("worker {id}[{pid}] the agent is gone"), TIMEOUT);

    resume(master.pid());
    master.wait_for(
        &format!("the agent (pid {agent}) was killed by SIGKILL"),
        TIMEOUT,
    );
    let new = agent_pid(&master, 2);
    let asking = format!("asking the agent (pid {new}) for counts");
    master.wait_for_n(&asking, 2, TIMEOUT);
    assert_eq!(counted(&count_on(&mut client), &forked).0, 1);
    assert_eq!(counted(&get_path(addr, "/count"), &forked).0, 2);
}

#[test]
fn ctrl_c_stops_every_process_the_agent_included() {
    let (mut master, addr, forked) = start("agent", &[]);
    let agent = agent_pid(&master, 1);
    assert_eq!(counted(&get_path(addr, "/count"), &forked).0, 1);
    let lines = master.interrupt_and_collect();
    let stopped = format!("stopped the agent (pid {agent})");
    assert!(
        lines.iter().any(|l| l.contains(&stopped)),
        "{stopped}: {lines:#?}"
    );
    for pid in pids(&forked).into_iter().chain([agent]) {
        assert!(!pid_alive(pid), "pid {pid} outlived its master");
    }
    assert_eq!(
        killpg(Pid::from_raw(master.pid() as i32), None),
        Err(Errno::ESRCH),
        "a process of the master's group is left"
    );
}

// ---------------------------------------------------------------------------------------
// One worker, the test its master
// ---------------------------------------------------------------------------------------

/// A worker of `--state master`, started alone: the test plays its master.
struct Lone {
    worker: Chapter,
    channel: Channel,
    /// The round-robin key the worker asked for.
    key: String,
}

impl Lone {
    #[track_caller]
    fn start(extra: &[&str]) -> Lone {
        let mut args = vec!["--port", "0", "--state", "master"];
        args.extend_from_slice(extra);
        let (worker, channel) = Chapter::start_worker(CH06B, &args);
        assert_eq!(expect_message(&channel, "online").text, "online");
        let query = expect_message(&channel, "a queryServer").text;
        let key = query
            .strip_prefix("queryServer ")
            .unwrap_or_else(|| panic!("expected queryServer, got {query}"))
            .to_string();
        Lone {
            worker,
            channel,
            key,
        }
    }

    /// A client of the worker: the test accepts the connection and hands it over, as
    /// chapter 6's master does.
    #[track_caller]
    fn client(&self) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let client = connect(listener.local_addr().expect("addr")).expect("connect");
        let (conn, _) = listener.accept().expect("accept");
        self.channel
            .send_with_fd(&format!("newconn {}", self.key), conn.as_fd())
            .expect("hand the connection over");
        assert_eq!(self.next("accepted"), format!("accepted {}", self.key));
        client
    }

    /// The worker's next message.
    #[track_caller]
    fn next(&self, what: &str) -> String {
        expect_message(&self.channel, what).text
    }

    /// Sends `GET /count` on `client` and waits for the worker's question.
    #[track_caller]
    fn ask(&self, client: &mut TcpStream) {
        write_request(client, "/count", true).expect("send GET /count");
        assert_eq!(self.next("the question"), "incr");
    }

    #[track_caller]
    fn reply(&self, text: &str) {
        self.channel.send(text).expect("reply to the worker");
    }

    /// The count in an answer, which must be a 200 from this worker.
    #[track_caller]
    fn count_in(&self, client: &mut TcpStream) -> u64 {
        let response = read_response(client).expect("an answer");
        match parse_count(&response.body) {
            Some((n, pid, 1)) if response.status == 200 && pid == self.worker.pid() => n,
            _ => panic!("expected a count from worker 1: {response:?}"),
        }
    }
}

/// Nothing has arrived on `client` yet (without waiting for anything).
#[track_caller]
fn nothing_yet(client: &mut TcpStream) -> bool {
    client.set_nonblocking(true).expect("non-blocking");
    let read = client.read(&mut [0u8; 1]);
    client.set_nonblocking(false).expect("blocking again");
    matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[test]
fn a_worker_waiting_for_a_reply_serves_its_other_clients() {
    let lone = Lone::start(&["--ask-timeout", "60"]);
    let mut waiting = lone.client();
    lone.ask(&mut waiting);
    let mut other = lone.client();
    write_request(&mut other, "/", true).expect("send GET /");
    let hello = read_response(&mut other).expect("the other client's answer");
    assert_eq!(parse_hello(&hello.body), Some((lone.worker.pid(), 1)));
    assert!(nothing_yet(&mut waiting), "no reply, no answer yet");
    lone.reply("count 41");
    assert_eq!(lone.count_in(&mut waiting), 41);
}

#[test]
fn replies_answer_the_oldest_question_first() {
    let lone = Lone::start(&["--ask-timeout", "60"]);
    let (mut first, mut second) = (lone.client(), lone.client());
    lone.ask(&mut first);
    lone.ask(&mut second);
    lone.reply("count 1");
    lone.reply("count 2");
    assert_eq!(lone.count_in(&mut first), 1);
    assert_eq!(lone.count_in(&mut second), 2);
}

#[test]
fn a_reply_that_is_not_a_count_is_a_503_and_the_next_reply_still_fits() {
    let lone = Lone::start(&["--ask-timeout", "60"]);
    let (mut first, mut second) = (lone.client(), lone.client());
    lone.ask(&mut first);
    lone.ask(&mut second);
    lone.reply("count banana");
    let refused = read_response(&mut first).expect("an answer");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("count banana"), "{refused:?}");
    lone.worker
        .wait_for("replied 'count banana', not 'count N'", TIMEOUT);
    lone.reply("count 2");
    assert_eq!(lone.count_in(&mut second), 2);
}

/// A question whose request was answered 503 keeps its place: its late reply is dropped,
/// and the next question gets the reply after it.
#[test]
fn a_reply_after_its_timeout_is_not_taken_for_the_next_question() {
    let lone = Lone::start(&["--ask-timeout", "1"]);
    let (mut first, mut second) = (lone.client(), lone.client());
    lone.ask(&mut first);
    let late = read_response(&mut first).expect("a 503 after the timeout");
    assert_eq!(late.status, 503, "{late:?}");
    assert!(
        late.body.contains("no reply from the master within 1s"),
        "{late:?}"
    );
    lone.ask(&mut second);
    lone.reply("count 1");
    lone.reply("count 2");
    assert_eq!(lone.count_in(&mut second), 2);
}

// ---------------------------------------------------------------------------------------
// The book's Node.js program
// ---------------------------------------------------------------------------------------

/// `book/node/ch06b-counter.js`: a count in the master is exact, one per worker is not.
#[test]
fn the_node_counter_is_exact_in_the_master_only() {
    let Some(node) = tool_or_skip("node", "book/node/ch06b-counter.js") else {
        return;
    };
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/node/ch06b-counter.js");
    for state in ["master", "local"] {
        let mut command = Command::new(&node);
        command
            .arg(&program)
            .env("STATE", state)
            .env("PORT", "0")
            .env("WORKERS", "2")
            .env_remove("CLUSTER_WORKER_ID")
            .env_remove("NODE_UNIQUE_ID")
            .env_remove("NODE_CLUSTER_SCHED_POLICY");
        let master = Chapter::from_command(&format!("node ch06b-counter.js ({state})"), command);
        let addr = master.wait_master_ready();
        let counts: Vec<u64> = (0..20)
            .map(|_| {
                let response = get_path(addr, "/count");
                parse_count(&response.body)
                    .unwrap_or_else(|| panic!("not a count: {response:?}"))
                    .0
            })
            .collect();
        match state {
            "master" => assert_eq!(counts, (1..=20).collect::<Vec<u64>>()),
            _ => {
                assert_eq!(counts.iter().filter(|&&n| n == 1).count(), 2, "{counts:?}");
                assert!(counts.iter().all(|&n| n < 20), "{counts:?}");
            }
        }
    }
}
