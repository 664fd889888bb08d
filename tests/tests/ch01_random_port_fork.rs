//! Chapter 1: a master forks N workers; each serves HTTP on a random port of its own.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use chapter_tests::*;
use nix::sys::signal::Signal;

const CH01: &str = "ch01-random-port-fork";

/// Starts the chapter with `workers` workers and waits for all of them to be ready.
fn start(workers: usize, extra: &[&str]) -> (Chapter, Vec<Ready>) {
    let n = workers.to_string();
    let mut args = vec!["--port", "0", "--workers", n.as_str()];
    args.extend_from_slice(extra);
    let chapter = Chapter::start(CH01, &args);
    let ready = chapter.wait_ready(workers);
    (chapter, ready)
}

#[test]
fn each_worker_has_its_own_port_and_answers_with_its_own_pid() {
    let (master, ready) = start(3, &[]);
    let forked: Vec<(u32, u32)> = master
        .wait_for_n("forked worker", 3, TIMEOUT)
        .iter()
        .map(|l| parse_forked(l).unwrap_or_else(|| panic!("not a fork line: {l}")))
        .collect();

    let ports: BTreeSet<u16> = ready.iter().map(|r| r.addr.port()).collect();
    assert_eq!(
        ports.len(),
        3,
        "3 workers should listen on 3 ports: {ready:?}"
    );
    let ids: BTreeSet<u32> = ready.iter().map(|r| r.id).collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]), "worker ids: {ready:?}");
    let pids: BTreeSet<u32> = ready.iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 3, "3 workers should be 3 processes: {ready:?}");
    assert!(!pids.contains(&master.pid()), "a worker is not the master");

    for worker in &ready {
        // The pid in the ready line is the one the master forked as that worker.
        assert!(
            forked.contains(&(worker.id, worker.pid)),
            "worker {} (pid {}) is not among the master's forks {forked:?}",
            worker.id,
            worker.pid
        );
        let response = get(worker.addr);
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body, hello_body(worker.pid, worker.id));
    }
}

#[test]
fn every_worker_is_a_child_of_the_master() {
    let (master, ready) = start(2, &[]);
    for worker in &ready {
        assert_eq!(
            parent_pid(worker.pid),
            Some(master.pid()),
            "worker {} (pid {}) should be the master's child",
            worker.id,
            worker.pid
        );
    }
}

#[test]
fn ctrl_c_stops_every_worker_and_the_master_exits_0() {
    let (mut master, ready) = start(2, &[]);
    let lines = master.interrupt_and_collect();
    assert!(
        lines.iter().any(|l| l.contains("stopping 2 workers")),
        "the master should say it is stopping 2 workers: {lines:#?}"
    );
    for worker in &ready {
        assert!(
            wait_until(TIMEOUT, || !pid_alive(worker.pid)),
            "worker {} (pid {}) survived Ctrl-C",
            worker.id,
            worker.pid
        );
        assert!(
            lines.iter().any(
                |l| l.contains(&format!("worker {} (pid {})", worker.id, worker.pid))
                    && !l.contains("forked")
            ),
            "the master should log worker {}'s exit: {lines:#?}",
            worker.id
        );
    }
}

#[test]
fn workers_die_with_a_killed_master() {
    let (mut master, ready) = start(2, &[]);
    master.signal(Signal::SIGKILL);
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(describe(status), "signal 9");
    for worker in &ready {
        assert!(
            wait_until(Duration::from_secs(5), || !pid_alive(worker.pid)),
            "worker {} (pid {}) kept running after its master was killed",
            worker.id,
            worker.pid
        );
    }
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let (_master, ready) = start(2, &[]);
    let worker = ready[0];
    let mut stream = connect(worker.addr).expect("connect to the worker");
    for round in 1..=2 {
        write_request(&mut stream, "/", true).expect("send a request");
        let response = read_response(&mut stream)
            .unwrap_or_else(|e| panic!("response {round} on a kept-alive connection: {e}"));
        assert_eq!(response.status, 200);
        assert_eq!(response.body, hello_body(worker.pid, worker.id));
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    // And `Connection: close` is honoured.
    write_request(&mut stream, "/", false).expect("send the last request");
    let last = read_response(&mut stream).expect("the last response");
    assert_eq!(last.header("connection"), Some("close"));
    wait_closed(&mut stream).expect("the worker closes after Connection: close");
}

#[test]
fn a_malformed_request_gets_400_and_the_connection_closes() {
    let (_master, ready) = start(2, &[]);
    let mut stream = connect(ready[1].addr).expect("connect to the worker");
    stream.write_all(b"hello\r\n\r\n").expect("send garbage");
    let response = read_response(&mut stream).expect("a response to a malformed request");
    assert_eq!(response.status, 400, "{response:?}");
    wait_closed(&mut stream).expect("the worker closes the connection after a 400");
    // The worker is still fine.
    assert_eq!(get(ready[1].addr).status, 200);
}

#[test]
fn a_silent_client_is_dropped_after_the_idle_timeout() {
    let (_master, ready) = start(2, &["--idle-timeout", "0.3"]);
    // Timed from before the connection exists, so the worker's clock for it starts later.
    let start = Instant::now();
    let mut stream = connect(ready[0].addr).expect("connect to the worker");
    // The stream's read timeout (5 s) bounds this; a worker without an idle timeout
    // leaves the connection open and the read fails with a timeout.
    wait_closed(&mut stream).expect("the worker should drop a silent client");
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(290),
        "dropped after {after:?}, before the 0.3 s idle timeout"
    );
}

#[test]
fn help_lists_the_options() {
    let (status, stdout, _) = run_to_end(CH01, &["--help"]);
    assert_eq!(status.code(), Some(0), "--help exits 0: {status}");
    for option in ["--host", "--port", "--workers", "--idle-timeout", "--help"] {
        assert!(
            stdout.contains(option),
            "--help should list {option}:\n{stdout}"
        );
    }
    assert!(!stdout.contains("forked"), "--help starts no worker");
}

#[test]
fn a_bad_port_exits_2_and_says_why() {
    let (status, stdout, stderr) = run_to_end(CH01, &["--port", "99999", "--workers", "2"]);
    assert_eq!(status.code(), Some(2), "a bad --port exits 2: {status}");
    assert!(
        stderr.contains("--port"),
        "the message names --port:\n{stderr}"
    );
    assert!(!stdout.contains("forked"), "no worker starts:\n{stdout}");
}

/// Pins the calling thread to the first CPU it may run on. A process started from this
/// thread inherits the mask, and a master counts the CPUs it may use (as `num_cpus` and
/// Node's `os.availableParallelism()` do), so a chapter started from here sees exactly one
/// CPU, whatever the machine has: the test knows the right answer without computing it.
fn pin_this_thread_to_one_cpu() {
    // SAFETY: cpu_set_t is plain data that zeroed() makes an empty set; the two calls only
    // read and write the set we pass, for the calling thread (pid 0).
    unsafe {
        let mut mask: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(
            libc::sched_getaffinity(0, size, &mut mask),
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        let first = (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| libc::CPU_ISSET(cpu, &mask))
            .expect("this thread may run on at least one CPU");
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(first, &mut one);
        assert_eq!(
            libc::sched_setaffinity(0, size, &one),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Exercise ch01-percent: `--workers P%` is P% of the CPUs, rounded to the nearest whole
/// worker and never fewer than one. On one CPU: 150% is 1.5 workers, which rounds to 2
/// (not down to 1); 120% is 1.2, which rounds to 1 (not up to 2); 10% is 0.1, which
/// rounds to 0, and one worker is the least there can be.
#[test]
fn workers_as_a_share_of_the_cpus() {
    // Built before the pin, so that a cold build does not run on one CPU.
    binary(CH01);
    pin_this_thread_to_one_cpu();
    for (share, expected) in [("100%", 1), ("150%", 2), ("120%", 1), ("10%", 1)] {
        let mut master = Chapter::start(CH01, &["--port", "0", "--workers", share]);
        // The master says how many it forks before it forks them.
        let first = master.wait_for("master started", TIMEOUT);
        assert!(
            first.ends_with(&format!("forking {expected} workers")),
            "--workers {share} on 1 CPU should fork {expected} worker(s): {first}"
        );
        master.wait_ready(expected);
        // Stop it and read the whole log, so a worker too many cannot hide.
        let lines = master.interrupt_and_collect();
        let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(
            (count("forked worker"), count(READY)),
            (expected, expected),
            "--workers {share} on 1 CPU should start {expected} worker(s): {lines:#?}"
        );
    }
}
