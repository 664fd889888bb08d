//! Chapter 6: the master accepts every connection and hands its fd to the workers in
//! turn (Node's round-robin), optionally weighted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chapter_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CH06: &str = "ch06-round-robin";

/// Starts the chapter and waits for the master's ready line (see `Chapter::start_cluster`).
#[track_caller]
fn start(workers: usize, extra: &[&str]) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    Chapter::start_cluster(CH06, workers, extra)
}

/// Makes `m` requests one after another, each on a new connection, and counts the
/// answers per worker id, checking each comes from the worker the master forked.
///
/// Turns are exact without waiting for anything between requests: a worker acknowledges
/// its connection on its channel before it answers the client, so the acknowledgement is
/// in the master's queue before the client can connect again, and the master's one loop
/// handles both before it hands out the next connection.
fn count_turns(
    addr: SocketAddr,
    m: usize,
    forked: &[(u32, u32)],
) -> (BTreeMap<u32, usize>, Vec<u32>) {
    let mut served: BTreeMap<u32, usize> = forked.iter().map(|(id, _)| (*id, 0)).collect();
    let mut order = Vec::new();
    for i in 0..m {
        let response = http_get(addr).unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        let (_, id) = answered_by(&response, forked);
        *served.entry(id).or_default() += 1;
        order.push(id);
    }
    (served, order)
}

#[test]
fn sequential_connections_take_turns() {
    const M: usize = 60;
    const N: usize = 3;
    let (_master, addr, forked) = start(N, &[]);
    let (served, order) = count_turns(addr, M, &forked);
    for (id, n) in &served {
        assert_eq!(
            *n,
            M / N,
            "worker {id} should serve exactly {} of {M}: {served:?}",
            M / N
        );
    }
    // Not only the counts: every window of N consecutive connections has each worker once.
    for window in order.chunks(N) {
        let distinct: BTreeSet<&u32> = window.iter().collect();
        assert_eq!(distinct.len(), N, "turns out of order: {order:?}");
    }
}

/// A worker listens on nothing: every connection it serves came from the master.
#[test]
fn workers_hold_no_listening_socket() {
    let (master, addr, forked) = start(2, &[]);
    get(addr);
    assert_eq!(
        listening_addrs_of(master.pid()),
        vec![addr],
        "the master holds the one listening socket"
    );
    for (id, pid) in &forked {
        assert_eq!(
            listening_addrs_of(*pid),
            Vec::<SocketAddr>::new(),
            "worker {id} (pid {pid}) should hold no listening socket: {:?}",
            fd_targets(&pid.to_string())
        );
    }
}

/// What the load thread saw for each request: the pid that answered, or the error.
type Seen = Result<u32, String>;

/// Clients that each send one request now and wait for its answer on a thread of their
/// own, for as long as the master takes to get it to a worker (up to the harness's
/// timeout).
struct Waiting {
    answers: Arc<Mutex<Vec<Seen>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Waiting {
    /// `n` clients, each connected and with its request sent when this returns.
    #[track_caller]
    fn send(addr: SocketAddr, n: usize) -> Waiting {
        let answers: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let threads = (0..n)
            .map(|i| {
                let mut stream = connect(addr).expect("connect to the master");
                stream
                    .set_read_timeout(Some(TIMEOUT))
                    .expect("a longer read timeout");
                write_request(&mut stream, "/", false).expect("send a request");
                let answers = Arc::clone(&answers);
                std::thread::spawn(move || {
                    let outcome = match read_response(&mut stream) {
                        Ok(r) => parse_hello(&r.body).map(|(pid, _)| pid).ok_or(r.body),
                        Err(e) => Err(format!("client {i}: {e}")),
                    };
                    answers.lock().expect("answers").push(outcome);
                })
            })
            .collect();
        Waiting { answers, threads }
    }

    /// What came back so far, in the order it came.
    fn answered(&self) -> Vec<Seen> {
        self.answers.lock().expect("answers").clone()
    }

    /// Waits until `n` clients have their answer (or their error), and returns them all.
    #[track_caller]
    fn wait_for(&self, n: usize) -> Vec<Seen> {
        assert!(
            wait_until(TIMEOUT, || self.answered().len() >= n),
            "{n} clients should have their answer by now: {:?}",
            self.answered()
        );
        self.answered()
    }

    /// Waits for every client to end, answered or not, and returns what each got.
    fn join(self) -> Vec<Seen> {
        for thread in self.threads {
            thread.join().expect("a client thread panicked");
        }
        let answers = self.answers.lock().expect("answers").clone();
        answers
    }
}

#[test]
fn a_killed_worker_costs_at_most_the_connection_it_was_serving() {
    let (master, addr, forked) = start(3, &[]);
    let (victim_id, victim) = forked[1];
    let survivors: BTreeSet<u32> = forked
        .iter()
        .map(|(_, pid)| *pid)
        .filter(|pid| *pid != victim)
        .collect();

    let load = SteadyLoad::start(addr);
    load.wait_for_more(30);
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL the worker");
    master.wait_for(
        &format!("worker {victim_id} (pid {victim}) was killed by SIGKILL"),
        TIMEOUT,
    );
    // Requests after this index started once the master knew the worker was gone.
    let known_dead = load.count();
    load.wait_for_more(30);
    let outcomes = load.stop();
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        failed.len() <= 1,
        "at most the connection the killed worker was serving may fail: {failed:?}"
    );
    let after: Vec<&Seen> = outcomes.iter().skip(known_dead + 1).collect();
    let mut after_pids = BTreeSet::new();
    for outcome in &after {
        match outcome {
            Ok(pid) => {
                assert!(
                    survivors.contains(pid),
                    "pid {pid} answered after the kill; survivors are {survivors:?}"
                );
                after_pids.insert(*pid);
            }
            Err(e) => panic!("a request after the kill failed: {e}"),
        }
    }
    assert_eq!(
        after_pids, survivors,
        "both surviving workers should keep taking turns"
    );
    for pid in survivors {
        assert!(pid_alive(pid), "survivor {pid} is still alive");
    }
}

#[test]
fn a_connection_whose_worker_dies_before_taking_it_goes_to_another() {
    let (master, addr, forked) = start(3, &[]);
    let (victim_id, victim) = forked[2];
    let victim_pid = Pid::from_raw(victim as i32);
    // A stopped worker cannot read the master's `newconn`, so it never acknowledges.
    kill(victim_pid, Signal::SIGSTOP).expect("SIGSTOP the worker");
    assert!(
        wait_until(TIMEOUT, || stopped(victim)),
        "worker {victim_id} (pid {victim}) should be stopped"
    );

    // Every worker is free, and each new connection goes to the front of the free line
    // while the one before it waits at the back (or is still busy): three connections
    // reach three different workers, so one of them is the stopped one.
    let clients = Waiting::send(addr, 3);
    clients.wait_for(2);
    assert_eq!(
        clients.answered().len(),
        2,
        "the stopped worker's client should still be waiting: {:?}",
        clients.answered()
    );

    // The master still holds that connection: killing the worker hands it on.
    kill(victim_pid, Signal::SIGKILL).expect("SIGKILL the stopped worker");
    master.wait_for(
        &format!("worker {victim_id} died before taking its connection"),
        TIMEOUT,
    );
    let answers = clients.join();
    assert_eq!(answers.len(), 3);
    for answer in &answers {
        match answer {
            Ok(pid) => assert_ne!(*pid, victim, "the killed worker cannot have answered"),
            Err(e) => panic!("no connection may be lost: {e} (all: {answers:?})"),
        }
    }
}

/// Exercise ch06-handoff: a send that fails keeps its connection. Worker A takes a
/// connection and acknowledges it, then dies before the master has read that; when the
/// master does, it puts A back in line and hands it the connection that was waiting, and
/// the send fails: A's end of the channel is closed, and its exit is not known yet. The
/// connection must go to the next worker that is free.
#[test]
fn a_connection_that_cannot_be_sent_to_a_dead_worker_goes_to_another() {
    let (master, addr, forked) = start(2, &[]);
    let [(a_id, a), (_, b)] = forked[..] else {
        panic!("two workers: {forked:?}")
    };
    // Both workers stopped: each is sent a connection it cannot take yet, and a third
    // waits in the master, accepted, for one of them to be free.
    pause(a);
    pause(b);
    let clients = Waiting::send(addr, 3);
    let mut held = 0;
    assert!(
        wait_until(TIMEOUT, || {
            held = tcp_connections_of(master.pid());
            held == 3
        }),
        "the master should hold the three connections it accepted, not {held}"
    );
    // The master stopped too: it will find what happens next all at once.
    pause(master.pid());
    // A takes its connection: its acknowledgement waits in the master's channel, and its
    // client gets an answer. Then A dies; its exit waits for the master too.
    resume(a);
    let first = clients.wait_for(1);
    assert_eq!(first, [Ok(a)], "worker A answers its client");
    kill(Pid::from_raw(a as i32), Signal::SIGKILL).expect("SIGKILL worker A");
    assert!(
        wait_until(TIMEOUT, || !pid_alive(a)),
        "worker A (pid {a}) should be dead"
    );
    resume(master.pid());
    resume(b);
    let answers = clients.join();
    assert!(
        answers.iter().all(|answer| answer.is_ok()),
        "no client may be lost: {answers:?}"
    );
    assert_eq!(
        answers[1..],
        [Ok(b), Ok(b)],
        "worker B answers the other two clients: {answers:?}"
    );
    master.wait_for(
        &format!("could not hand a connection to worker {a_id}"),
        TIMEOUT,
    );
}

/// Exercise ch06-handoff: connections accepted together go out together, each to a free
/// worker, without waiting for another event. The worker at the front of the free line is
/// stopped, so it never acknowledges what it is sent: had the master handed out one
/// connection per event, the other two would wait for ever.
#[test]
fn connections_accepted_together_all_go_out_at_once() {
    let (master, addr, forked) = start(3, &[]);
    // Three requests in turn leave the free line in the order they were served.
    let (_, order) = count_turns(addr, 3, &forked);
    let pid_of = |id: u32| forked.iter().find(|w| w.0 == id).map(|w| w.1).unwrap();
    let front = pid_of(order[0]);
    pause(front);
    // With the master stopped, three clients connect: they wait in the listening
    // socket's queue, and reach the master as one event.
    pause(master.pid());
    let clients = Waiting::send(addr, 3);
    let queue = listening_inodes(addr);
    assert!(
        wait_until(TIMEOUT, || accept_queue(queue[0]) == Some(3)),
        "three connections should wait in the accept queue: {:?}",
        accept_queue(queue[0])
    );
    resume(master.pid());
    let two = clients.wait_for(2);
    let others: BTreeSet<u32> = order[1..].iter().map(|id| pid_of(*id)).collect();
    assert_eq!(
        two.iter()
            .cloned()
            .collect::<Result<BTreeSet<u32>, String>>(),
        Ok(others),
        "the two running workers answer at once"
    );
    resume(front);
    let answers = clients.join();
    assert_eq!(answers.len(), 3);
    assert_eq!(
        answers[2],
        Ok(front),
        "the stopped worker answers once it runs"
    );
}

#[test]
fn no_fd_leaks_in_the_master_after_a_thousand_connections() {
    let (master, addr, _) = start(2, &[]);
    let before = fd_count(master.pid());
    for i in 0..1000 {
        let response = http_get(addr).unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(response.status, 200, "request {i}: {response:?}");
    }
    // The master drops its copy of a connection when the worker acknowledges it, which
    // may be just after the client has its answer.
    let mut last = 0;
    assert!(
        wait_until(TIMEOUT, || {
            last = fd_count(master.pid());
            last == before
        }),
        "the master should be back to {before} fds after 1000 connections, but holds \
         {last}: {:#?}",
        fd_targets(&master.pid().to_string())
    );
}

/// Exercise ch06-weights: `--weights 2,1` gives worker 1 two turns for each of worker 2's.
#[test]
fn weights_skew_the_turns() {
    let (_master, addr, forked) = start(2, &["--weights", "2,1"]);
    let (served, _) = count_turns(addr, 90, &forked);
    let (first, second) = (served[&1], served[&2]);
    assert!(
        (58..=62).contains(&first) && (28..=32).contains(&second),
        "worker 1 should serve 60 ± 2 and worker 2 30 ± 2 of 90: {served:?}"
    );
}

/// A worker does not bind: it asks the master (`queryServer`), which makes one
/// round-robin handle per address on the first request. `--port 0,0` asks for two
/// sockets (two `listen`s on port 0, as two `server.listen(0)` calls in a Node worker),
/// and the same workers serve both, taking turns on each.
#[test]
fn the_same_workers_serve_two_ports() {
    let master = Chapter::start(CH06, &["--port", "0,0", "--workers", "2"]);
    let forked = master.wait_forked(2);
    let ready = master.wait_for_n("the master accepts", 2, TIMEOUT);
    let addrs: Vec<SocketAddr> = ready
        .iter()
        .map(|l| parse_listen_addr(l).unwrap_or_else(|| panic!("no address in {l}")))
        .collect();
    assert_ne!(addrs[0], addrs[1], "two handles, two sockets");
    for addr in &addrs {
        let (served, _) = count_turns(*addr, 4, &forked);
        assert!(
            served.values().all(|n| *n == 2),
            "on {addr}, both workers take turns: {served:?}"
        );
    }
    // Each worker asked for each socket, and the master bound each once.
    assert_eq!(
        master.count("bound it, round-robin"),
        2,
        "{:#?}",
        master.lines()
    );
    let mut held = listening_addrs_of(master.pid());
    held.sort();
    let mut expected = addrs.clone();
    expected.sort();
    assert_eq!(held, expected, "the master holds both listening sockets");
    for (id, pid) in &forked {
        assert!(
            listening_addrs_of(*pid).is_empty(),
            "worker {id} holds no listening socket"
        );
    }
}
