//! How chapters 1–6 stop. Ctrl-C in a terminal sends SIGINT to the whole foreground
//! process group, workers included: the workers ignore it and the master stops them, with
//! SIGTERM, and with SIGKILL if one does not go within the grace period. And in every
//! chapter, a master killed with SIGKILL takes its workers with it, a stopped one too.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use chapter_tests::*;

#[test]
fn ctrl_c_on_the_whole_group_is_handled_by_the_master_alone() {
    let mut master = Chapter::start("ch02-ipc-messaging", &["--workers", "3"]);
    let ready = master.wait_ready(3);
    // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group.
    killpg(Pid::from_raw(master.pid() as i32), Signal::SIGINT).expect("SIGINT the group");
    let lines = master.collect_after_stop();
    for worker in &ready {
        let by_term = format!(
            "worker {} (pid {}) was killed by SIGTERM",
            worker.id, worker.pid
        );
        assert!(
            lines.iter().any(|l| l.contains(&by_term)),
            "worker {} should ignore SIGINT and be stopped by the master's SIGTERM:\n{}",
            worker.id,
            lines.join("\n")
        );
    }
}

#[test]
fn a_worker_that_will_not_stop_is_killed_after_the_grace_period() {
    let mut master = Chapter::start("ch01-random-port-fork", &["--workers", "2"]);
    let ready = master.wait_ready(2);
    let stuck = ready[0];
    // A stopped process cannot act on SIGTERM: the signal stays pending, as it would for
    // a worker stuck in a loop that handles SIGTERM. SIGKILL still kills it. (The
    // master's waitpid does not report stops, so it sees nothing until then.)
    kill(Pid::from_raw(stuck.pid as i32), Signal::SIGSTOP).expect("SIGSTOP the worker");
    assert!(
        wait_until(TIMEOUT, || stopped(stuck.pid)),
        "worker {} (pid {}) should be stopped",
        stuck.id,
        stuck.pid
    );
    master.signal(Signal::SIGINT);
    master.wait_for(
        &format!(
            "worker {} (pid {}) ignored SIGTERM; sending SIGKILL",
            stuck.id, stuck.pid
        ),
        TIMEOUT,
    );
    assert!(
        wait_until(TIMEOUT, || !pid_alive(stuck.pid)),
        "the master should kill the worker that ignored SIGTERM"
    );
    master.wait_for(
        &format!(
            "worker {} (pid {}) was killed by SIGKILL",
            stuck.id, stuck.pid
        ),
        TIMEOUT,
    );
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert!(!pid_alive(stuck.pid));
}

/// Every chapter whose master forks workers: its arguments for two workers on a port the
/// kernel picks, and how to wait until both serve (which is after each one asked for its
/// parent-death signal).
const CLUSTERS: [(&str, &[&str], Serving); 10] = [
    ("ch01-random-port-fork", TWO, workers_ready),
    ("ch02-ipc-messaging", TWO, workers_ready),
    // Without SO_REUSEPORT the second worker fails to bind and exits; with it, both serve.
    (
        "ch03-eaddrinuse",
        &["--port", "0", "--workers", "2", "--reuseport", "on"],
        workers_ready,
    ),
    ("ch04-proxy", TWO, master_ready),
    ("ch05-handle-passing", TWO, master_ready),
    ("ch06-round-robin", TWO, master_ready),
    ("ch07-auto-restart", TWO, master_ready),
    ("ch08-heartbeat", TWO, master_ready),
    ("ch09-rolling-reload", TWO, master_ready),
    ("ch10-reuseport", TWO, master_ready),
];

const TWO: &[&str] = &["--port", "0", "--workers", "2"];

/// Waits until both workers serve, and returns their pids.
type Serving = fn(&Chapter) -> Vec<u32>;

/// Chapters 1 to 3: each worker prints its own ready line.
fn workers_ready(master: &Chapter) -> Vec<u32> {
    master.wait_ready(2).iter().map(|w| w.pid).collect()
}

/// Chapters 4 on: the master prints its ready line once every worker serves.
fn master_ready(master: &Chapter) -> Vec<u32> {
    master.wait_master_ready();
    master.wait_forked(2).iter().map(|&(_, pid)| pid).collect()
}

/// `kill -STOP <worker>; kill -9 <master>`: the stopped worker must go with its master.
/// A stopped process keeps SIGTERM pending until something continues it, and once its
/// master is gone nothing will; SIGKILL ends it stopped or not. The masters run in a
/// session of their own, as a service does (see [`Chapter::start_in_session`] for why
/// that matters).
#[test]
fn a_stopped_worker_dies_with_its_killed_master() {
    for (package, args, serving) in CLUSTERS {
        let master = Chapter::start_in_session(package, args);
        let workers = serving(&master);
        stop_one_then_kill_the_master(package, master, &workers);
    }
    // Chapter 0's process model: a child per connection, forked without exec. A held
    // connection keeps its child alive; the answer says which pid it is, and comes after
    // the child asked for its parent-death signal.
    let package = "ch00-server-models";
    let server = Chapter::start_in_session(package, &["--model", "process", "--port", "0"]);
    let addr = server.wait_master_ready();
    let mut held = connect(addr).expect("connect to the process model");
    write_request(&mut held, "/", true).expect("send a request");
    let answer = read_response(&mut held).expect("an answer from a child process");
    let (child, _) = parse_hello(&answer.body)
        .unwrap_or_else(|| panic!("{package}: not a hello: {:?}", answer.body));
    stop_one_then_kill_the_master(package, server, &[child]);
}

/// Stops `workers[0]` with SIGSTOP, kills `master` with SIGKILL, and asserts that every one
/// of `workers` is gone within the harness's timeout. If one is not, dropping `master`
/// still kills it: re-parented, it stays in the master's process group.
#[track_caller]
fn stop_one_then_kill_the_master(package: &str, mut master: Chapter, workers: &[u32]) {
    let stuck = workers[0];
    kill(Pid::from_raw(stuck as i32), Signal::SIGSTOP).expect("SIGSTOP a worker");
    assert!(
        wait_until(TIMEOUT, || stopped(stuck)),
        "{package}: worker pid {stuck} should be stopped"
    );
    master.signal(Signal::SIGKILL);
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(describe(status), "signal 9", "{package}: the master's end");
    for &pid in workers {
        let what = if pid == stuck { "stopped" } else { "running" };
        assert!(
            wait_until(TIMEOUT, || !pid_alive(pid)),
            "{package}: a {what} worker (pid {pid}) outlived its master, killed with \
             SIGKILL; its parent is now pid {:?}",
            parent_pid(pid)
        );
    }
}
