//! Chapter 7: the master replaces workers that die, lets a failing worker leave
//! gracefully, gives up on a slot that crash-loops, and drains every worker on SIGTERM.
//! After each scenario, no child of the master is left `<defunct>`.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use chapter_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CH07: &str = "ch07-auto-restart";

#[track_caller]
fn start(workers: usize, extra: &[&str]) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    Chapter::start_cluster(CH07, workers, extra)
}

/// A worker with a request half sent on a kept-alive connection: it owes that client an
/// answer, so it cannot finish leaving before the rest of the request comes. Returns the
/// connection and the worker's `(id, pid)`.
#[track_caller]
fn busy_worker(addr: SocketAddr, forked: &[(u32, u32)]) -> (TcpStream, (u32, u32)) {
    let mut held = connect(addr).expect("connect");
    held.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    write_request(&mut held, "/", true).expect("send a request");
    let (pid, id) = answered_by(&read_response(&mut held).expect("an answer"), forked);
    held.write_all(HALF_REQUEST).expect("send half a request");
    (held, (id, pid))
}

/// `/crash` on `crasher`, a kept-alive connection to a worker, which must answer it with a
/// 500.
#[track_caller]
fn crash(mut crasher: TcpStream) {
    write_request(&mut crasher, "/crash", true).expect("send /crash");
    let response = read_response(&mut crasher).expect("the crashing request is answered");
    assert_eq!(response.status, 500, "{response:?}");
    assert_eq!(response.header("Connection"), Some("close"));
}

/// The `restart in N ms` of every restart decision the master logged for `slot`.
fn restart_delays(lines: &[String], slot: usize) -> Vec<u64> {
    let prefix = format!("slot {slot}: ");
    lines
        .iter()
        .filter_map(|l| {
            l.split_once(&prefix)?
                .1
                .split_once("restart in ")?
                .1
                .split_once(" ms")
        })
        .filter_map(|(ms, _)| ms.parse().ok())
        .collect()
}

#[test]
fn a_worker_killed_under_load_is_named_by_its_signal_and_replaced_at_once() {
    let (master, addr, forked) = start(2, &[]);
    let load = SteadyLoad::start(addr);
    load.wait_for_more(20);
    let (id, pid) = forked[0];
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9 the worker");
    master.wait_for(
        &format!("worker {id} (pid {pid}) was killed by SIGKILL"),
        TIMEOUT,
    );
    // It served for a while: no crash loop, so no wait.
    master.wait_for_line("the restart decision", TIMEOUT, |l| {
        l.contains(&format!("slot 1: worker {id} was up")) && l.ends_with("restart in 0 ms")
    });
    let (new_id, new_pid) = master.wait_forked(3)[2];
    let first = load.wait_for_pid(new_pid);
    load.wait_for_more(20);
    let replies = load.stop();
    let failed = failures(&replies);
    assert!(
        failed.len() <= 1,
        "at most the request the killed worker held may fail: {failed:?}"
    );
    assert!(
        replies[first..].iter().all(|r| r.is_ok()),
        "once worker {new_id} serves, every request succeeds: {:?}",
        &replies[first..]
    );
    no_defunct_children(master.pid());
}

/// `kill -9` under load, each request on a connection of its own (wrk's `Connection:
/// close`). What the killed worker had taken may be lost with it; but a connection the
/// master still held at the kill (handed to the worker and not acknowledged, or waiting
/// for a worker) is given to another worker, and its client is answered.
#[test]
fn under_kill_9_every_connection_the_master_still_held_is_answered() {
    let (master, addr, forked) = start(2, &[]);
    let load = SteadyLoad::clients(addr, 8);
    assert!(
        wait_until(TIMEOUT, || load.replies().len() >= 100),
        "the load should get answers"
    );
    let (id, pid) = forked[0];
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP the worker");
    assert!(
        wait_until(TIMEOUT, || stopped(pid)),
        "worker {id} should stop"
    );
    // Connections keep coming, and the stopped worker is handed one as soon as it is free
    // (or it had one already): it can neither take it nor acknowledge it.
    let before = load.replies().len();
    assert!(
        wait_until(TIMEOUT, || load.replies().len() >= before + 20),
        "the other worker should keep serving while worker {id} is stopped"
    );
    // The client ports of the connections the master holds.
    let held: BTreeSet<u16> = tcp_connections_held_by(master.pid())
        .iter()
        .map(|s| s.remote.port())
        .collect();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9 the worker");
    master.wait_for(
        &format!("worker {id} died before taking its connection; it goes to another worker"),
        TIMEOUT,
    );
    assert!(
        !held.is_empty(),
        "the master held no connection at the kill"
    );
    let (_, new_pid) = master.wait_forked(3)[2];
    assert!(
        wait_until(TIMEOUT, || load.replies().contains(&Ok(new_pid))),
        "the replacement should serve"
    );
    let replies = load.replies_by_port();
    drop(load);
    let lost: Vec<&(u16, Reply)> = replies
        .iter()
        .filter(|(port, reply)| held.contains(port) && reply.is_err())
        .collect();
    assert!(
        lost.is_empty(),
        "the master held the connections of client ports {held:?} when worker {id} was \
         killed; each should be answered: {lost:?}"
    );
    no_defunct_children(master.pid());
}

#[test]
fn a_crash_fails_its_own_request_only_and_the_replacement_serves_before_the_old_worker_exits() {
    let (master, addr, forked) = start(2, &["--idle-timeout", "60", "--min-uptime", "0"]);
    let (mut held, (id, pid)) = busy_worker(addr, &forked);
    // The connection for /crash is found before the load starts: with a second client
    // connecting over and over, the two can fall into step and this one never reach the
    // worker wanted.
    let crasher = connection_to(addr, pid);
    let load = SteadyLoad::start(addr);
    load.wait_for_more(20);
    crash(crasher);
    master.wait_for(
        &format!("worker {id} (pid {pid}) is leaving (its handler panicked)"),
        TIMEOUT,
    );
    // The replacement is started at once, not when the old worker is gone.
    let (new_id, new_pid) = master.wait_forked(3)[2];
    master.wait_for(
        &format!("worker {new_id} takes worker {id}'s place now"),
        TIMEOUT,
    );
    load.wait_for_pid(new_pid);
    assert!(
        pid_alive(pid),
        "worker {id} (pid {pid}) owes the held client an answer: it must still be there \
         while its replacement already serves"
    );
    // The rest of the held request: the leaving worker answers it, and says it closes.
    held.write_all(b"\r\n").expect("finish the held request");
    let response = read_response(&mut held).expect("the held request is answered");
    assert_eq!(answered_by(&response, &forked), (pid, id));
    assert_eq!(response.header("Connection"), Some("close"), "{response:?}");
    master.wait_for(
        &format!("worker {id} (pid {pid}) exited with code 1"),
        TIMEOUT,
    );
    master.wait_for(&format!("worker {id}'s exit was planned"), TIMEOUT);
    load.wait_for_more(20);
    let replies = load.stop();
    let failed = failures(&replies);
    assert!(failed.is_empty(), "only /crash itself may fail: {failed:?}");
    assert_eq!(
        master.count("forked worker"),
        3,
        "one replacement, no restart on top"
    );
    no_defunct_children(master.pid());
}

#[test]
fn a_slot_that_crashes_at_start_backs_off_then_is_given_up_while_the_other_serves() {
    let args = [
        "--port",
        "0",
        "--workers",
        "2",
        "--crash-at-start",
        "100",
        "--max-restarts",
        "4",
        "--restart-delay",
        "0.05",
    ];
    let master = Chapter::start(CH07, &args);
    // The ready line does not wait for a slot that dies as it starts.
    let addr = master.wait_master_ready();
    let load = SteadyLoad::start(addr);
    master.wait_for("slot 1 is given up", TIMEOUT);
    load.wait_for_more(20);
    let replies = load.stop();
    let lines = master.lines();
    // Immediate, then --restart-delay, then 1.5 times longer each time.
    assert_eq!(restart_delays(&lines, 1), [0, 50, 75, 112], "{lines:#?}");
    assert_eq!(master.count("of slot 1 fails on purpose"), 5, "{lines:#?}");
    assert_eq!(
        master.count("forked worker"),
        6,
        "5 starts of slot 1, 1 of slot 2"
    );
    // Slot 2's worker served every request, before, during and after.
    let slot2 = parse_forked(&master.wait_for_n("forked worker", 2, TIMEOUT)[1])
        .expect("slot 2's fork line");
    for reply in &replies {
        assert_eq!(*reply, Ok(slot2.1), "every request goes to slot 2's worker");
    }
    assert!(pid_alive(master.pid()), "the master keeps serving");
    no_defunct_children(master.pid());
}

#[test]
fn when_every_slot_is_given_up_the_master_exits() {
    let args = [
        "--port",
        "0",
        "--workers",
        "1",
        "--crash-at-start",
        "100",
        "--max-restarts",
        "2",
        "--restart-delay",
        "0.01",
    ];
    let mut master = Chapter::start(CH07, &args);
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", describe(status));
    master.wait_for("every slot has been given up", TIMEOUT);
}

/// A connection handed to a worker that dies before taking it goes to a free worker at
/// once, even when nothing else happens after the death. Here the killed worker's slot is
/// given up (`--max-restarts 0`, and it dies within `--min-uptime`), so no replacement
/// comes to wake the master, and no other client connects.
#[test]
fn a_connection_handed_to_a_worker_killed_before_taking_it_goes_to_the_free_worker_at_once() {
    let (master, addr, forked) = start(2, &["--min-uptime", "600", "--max-restarts", "0"]);
    let (id, pid) = forked[0];
    let stuck = one_handed_to_a_stopped_worker(master.pid(), addr, pid, 2);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9 the stopped worker");
    master.wait_for(
        &format!("worker {id} died before taking its connection"),
        TIMEOUT,
    );
    master.wait_for("slot 1 is given up", TIMEOUT);
    match stuck.next(TIMEOUT) {
        Ok(response) => assert_eq!(answered_by(&response, &forked), (forked[1].1, forked[1].0)),
        Err(e) => panic!(
            "worker {} was free: the connection worker {id} never took should be its at \
             once, not wait for another client: {e}",
            forked[1].0
        ),
    }
    no_defunct_children(master.pid());
}

/// A connection handed to a worker that dies before taking it, when no worker is left to
/// take it: the slot is given up, so is every slot, and the master exits. The client is
/// not left waiting on a connection nobody holds: it sees it closed.
#[test]
fn a_connection_no_worker_is_left_to_take_is_closed_when_the_master_gives_up() {
    let (mut master, addr, forked) = start(1, &["--min-uptime", "600", "--max-restarts", "0"]);
    let (id, pid) = forked[0];
    let stuck = one_handed_to_a_stopped_worker(master.pid(), addr, pid, 1);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9 the stopped worker");
    master.wait_for(
        &format!("worker {id} died before taking its connection"),
        TIMEOUT,
    );
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", describe(status));
    match stuck.next(TIMEOUT) {
        Err(e) if e.contains("closed without an answer") => {}
        other => panic!("the client should see its connection closed: {other:?}"),
    }
}

/// The race of `/crash` with a second client, on a one-worker idle server: when the second
/// connection is handed to the crashing worker just before it exits, it is rescued, and
/// its replacement, forked as soon as the old worker said it was leaving, may already
/// serve. The second client is answered, every time, without a third one to wake the
/// master.
#[test]
fn a_request_racing_a_crash_is_answered_without_another_client() {
    let (master, addr, _) = start(1, &["--min-uptime", "0"]);
    let rescued = |master: &Chapter| master.count("died before taking its connection");
    let mut tries = 0;
    while rescued(&master) < 12 && tries < 300 {
        tries += 1;
        // The worker of this try serves: every try so far crashed one worker.
        master.wait_for_n("(asked the master for", tries, TIMEOUT);
        // /crash first, then the second request at once, as `curl /crash & curl /` does.
        let mut crasher = connect(addr).expect("connect for /crash");
        write_request(&mut crasher, "/crash", false).expect("send /crash");
        let mut client = connect(addr).expect("connect beside /crash");
        client
            .set_read_timeout(Some(TIMEOUT))
            .expect("a read timeout");
        write_request(&mut client, "/", false).expect("send the request beside /crash");
        let second = read_response(&mut client);
        let crashed = read_response(&mut crasher);
        assert!(
            matches!(&crashed, Ok(r) if r.status == 500),
            "try {tries}: /crash should get its 500: {crashed:?}"
        );
        match second {
            Ok(response) => assert_eq!(response.status, 200, "try {tries}: {response:?}"),
            Err(e) => panic!(
                "try {tries}: the request beside /crash got no answer, and no other client \
                 came ({} rescued so far): {e}",
                rescued(&master)
            ),
        }
    }
    // About one try in two hands the second connection to the crashing worker; if none
    // ever did, this test would have proved nothing.
    assert!(
        rescued(&master) > 0,
        "in {tries} tries, no connection was handed to a crashing worker"
    );
    no_defunct_children(master.pid());
}

/// A worker that leaves within --min-uptime of its start is not replaced at once: if
/// every request panics, replacing each leaving worker at once would fork a worker per
/// request. Its exit counts as a crash, with the backoff and the give-up.
#[test]
fn a_worker_that_leaves_young_is_throttled_like_a_crash() {
    let args = [
        "--port",
        "0",
        "--workers",
        "1",
        "--min-uptime",
        "30",
        "--max-restarts",
        "2",
        "--restart-delay",
        "0.01",
    ];
    let mut master = Chapter::start(CH07, &args);
    let addr = master.wait_master_ready();
    // Every worker gets a /crash as soon as it serves.
    let deadline = Instant::now() + TIMEOUT;
    while pid_alive(master.pid()) && Instant::now() < deadline {
        let _ = http_get_path(addr, "/crash");
    }
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", describe(status));
    let lines = master.wait_output_closed(TIMEOUT);
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("leaves within --min-uptime 30 s of its start"),
        3,
        "{lines:#?}"
    );
    assert_eq!(
        count("takes worker"),
        0,
        "no leaving worker is replaced at once"
    );
    assert_eq!(restart_delays(&lines, 1), [0, 10], "{lines:#?}");
    assert_eq!(count("slot 1 is given up"), 1, "{lines:#?}");
}

#[test]
fn a_worker_over_max_rss_leaves_and_is_replaced() {
    let (master, addr, forked) = start(2, &["--max-rss", "64", "--min-uptime", "0"]);
    let response = get_path(addr, "/leak?mb=100");
    assert_eq!(response.status, 200, "{response:?}");
    let (id, pid) = *forked
        .iter()
        .find(|(id, pid)| {
            response
                .body
                .starts_with(&format!("worker {id} (pid {pid}) leaked"))
        })
        .unwrap_or_else(|| panic!("which worker leaked? {}", response.body));
    master.wait_for(
        &format!("worker {id} (pid {pid}) is leaving (RSS "),
        TIMEOUT,
    );
    let (_, new_pid) = master.wait_forked(3)[2];
    master.wait_for(&format!("worker {id}'s exit was planned"), TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || parse_hello(&get(addr).body).map(|(p, _)| p)
            == Some(new_pid)),
        "the replacement (pid {new_pid}) should serve"
    );
    assert!(!pid_alive(pid), "the leaking worker is gone");
    no_defunct_children(master.pid());
}

#[test]
fn exit_without_a_word_is_a_crash_and_the_slot_restarts_at_once() {
    let (master, addr, forked) = start(2, &[]);
    let lost = http_get_path(addr, "/exit");
    assert!(lost.is_err(), "/exit answers nothing: {lost:?}");
    let line = master.wait_for("exited with code 1", TIMEOUT);
    let (id, pid) = *forked
        .iter()
        .find(|(id, pid)| line.contains(&format!("worker {id} (pid {pid})")))
        .unwrap_or_else(|| panic!("not one of {forked:?}: {line}"));
    master.wait_for_line("the restart decision", TIMEOUT, |l| {
        l.contains(&format!("worker {id} was up")) && l.ends_with("restart in 0 ms")
    });
    let (_, new_pid) = master.wait_forked(3)[2];
    assert!(
        wait_until(TIMEOUT, || parse_hello(&get(addr).body).map(|(p, _)| p)
            == Some(new_pid)),
        "the replacement (pid {new_pid}) should serve"
    );
    assert!(!pid_alive(pid));
    no_defunct_children(master.pid());
}

#[test]
fn a_leaving_worker_that_does_not_finish_in_time_is_killed() {
    let args = [
        "--kill-timeout",
        "0.5",
        "--idle-timeout",
        "60",
        // The crash may come within a few ms of the worker's start: it must not count
        // as a crash at start here.
        "--min-uptime",
        "0",
    ];
    let (master, addr, forked) = start(2, &args);
    let (mut held, (id, pid)) = busy_worker(addr, &forked);
    crash(connection_to(addr, pid));
    master.wait_for(&format!("worker {id} (pid {pid}) is leaving"), TIMEOUT);
    master.wait_for(
        &format!("worker {id} (pid {pid}) is still there after --kill-timeout 0.5 s: SIGKILL"),
        TIMEOUT,
    );
    master.wait_for(
        &format!("worker {id} (pid {pid}) was killed by SIGKILL"),
        TIMEOUT,
    );
    master.wait_for(&format!("worker {id}'s exit was planned"), TIMEOUT);
    assert!(
        wait_closed(&mut held).is_ok(),
        "the held client's connection closes with its worker"
    );
    assert_eq!(
        master.count("forked worker"),
        3,
        "one replacement, no restart on top"
    );
    no_defunct_children(master.pid());
}

#[test]
fn sigterm_with_twenty_requests_in_flight_answers_them_all_then_everything_exits() {
    let kill_timeout = Duration::from_secs(10);
    let args = ["--kill-timeout", "10", "--idle-timeout", "60"];
    let (mut master, addr, forked) = start(2, &args);
    let pids: Vec<u32> = forked.iter().map(|(_, pid)| *pid).collect();
    let mut clients: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut stream = connect(addr).unwrap_or_else(|e| panic!("client {i}: {e}"));
            stream
                .set_read_timeout(Some(TIMEOUT))
                .expect("read timeout");
            stream.write_all(HALF_REQUEST).expect("send half a request");
            stream
        })
        .collect();
    // Every one has reached a worker, which holds its first half.
    let mut held = 0;
    assert!(
        wait_until(TIMEOUT, || {
            held = pids.iter().map(|pid| tcp_connections_of(*pid)).sum();
            held == 20
        }),
        "the workers should hold the 20 connections, not {held}"
    );
    let stopped_at = Instant::now();
    master.signal(Signal::SIGTERM);
    // Every worker drains: it takes no new connection, and finishes what it holds.
    master.wait_for_n("draining: no new connections; finishing", 2, TIMEOUT);
    assert!(
        connect(addr).is_err(),
        "a stopping master no longer listens: a new client is refused at once"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(b"\r\n").expect("finish the request");
        let response = read_response(client).unwrap_or_else(|e| panic!("client {i}: {e}"));
        answered_by(&response, &forked);
        assert_eq!(response.header("Connection"), Some("close"), "{response:?}");
    }
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert!(
        stopped_at.elapsed() < kill_timeout,
        "every worker left by itself once its clients had their answers, before the \
         --kill-timeout: {:#?}",
        master.lines()
    );
    let lines = master.wait_output_closed(TIMEOUT);
    assert!(lines.iter().any(|l| l.contains("all workers stopped")));
    assert!(!lines.iter().any(|l| l.contains("SIGKILL")), "{lines:#?}");
    for pid in pids {
        assert!(!pid_alive(pid), "worker pid {pid} is gone");
    }
}

#[test]
fn a_master_killed_with_sigkill_leaves_no_worker_behind() {
    let (master, addr, forked) = start(2, &[]);
    get(addr);
    master.signal(Signal::SIGKILL);
    for (id, pid) in forked {
        assert!(
            wait_until(TIMEOUT, || !pid_alive(pid)),
            "worker {id} (pid {pid}) outlived its master"
        );
    }
}

/// A port another program holds ends the start at once: see the harness's
/// `a_busy_port_ends_the_start`.
#[test]
fn a_port_held_by_another_program_ends_the_start_at_once_with_one_error_line() {
    a_busy_port_ends_the_start(CH07);
}

/// A worker killed after a rebuild whose program listens on one more port, one another
/// program holds: its replacement's `queryServer` for it fails in the master. Said once;
/// the replacement leaves without serving, and its slot is given up at once rather than
/// restarted (every new worker would ask again); the other worker serves on.
#[test]
fn a_replacement_that_asks_for_a_busy_port_gives_its_slot_up_once() {
    let copy = BinaryCopy::new(CH07, Path::new(env!("CARGO_TARGET_TMPDIR")), "busy-port");
    let (mut master, addr, forked) = copy.start_cluster(2, &[]);
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let busy = other.local_addr().expect("its address").port();
    copy.with_port(busy);
    let (_, pid) = forked[0];
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9 worker 1");
    let given_up = master.wait_for("is given up", TIMEOUT);
    let (new_id, new_pid) = master.wait_forked(3)[2];
    let key = format!("127.0.0.1:{busy}#0");
    assert!(
        parse_master(&given_up).is_some()
            && given_up.contains(&format!(
                "worker {new_id} asked for {key}, which the master cannot bind: listen \
                 EADDRINUSE"
            ))
            && given_up.contains("slot 1 is given up")
            && given_up.contains("1 of 2 slots still serve"),
        "{given_up}"
    );
    master.wait_for(
        &format!("worker {new_id} (pid {new_pid}) exited with code 0"),
        TIMEOUT,
    );
    master.wait_for(
        &format!("worker {new_id}'s exit was planned: the master could not bind {key} for it"),
        TIMEOUT,
    );
    each_answers(addr, &forked[1..]);
    // Stopping now: the books have no restart due, so the given-up slot has no worker.
    let lines = master.interrupt_and_collect();
    let all = lines.join("\n");
    assert_eq!(
        lines.iter().filter(|l| l.contains("EADDRINUSE")).count(),
        1,
        "reported once: {all}"
    );
    assert_eq!(
        lines.iter().filter_map(|l| parse_forked(l)).count(),
        3,
        "no worker started after the refusal: {all}"
    );
    assert!(
        all.contains("stopping: no new connections; 1 worker finishes what it holds"),
        "{all}"
    );
}
