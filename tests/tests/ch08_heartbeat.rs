//! Chapter 8: the master pings every worker; a worker whose loop is stuck misses the
//! pings, is killed as a zombie and replaced, while the others serve. A worker that is
//! only slow is left alone; and a pong sent from a thread of its own hides the hang.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use chapter_tests::*;

const CH08: &str = "ch08-heartbeat";

/// The heartbeat the tests use: short, so that three missed beats pass quickly.
const BEAT_MS: u64 = 200;

#[track_caller]
fn start(workers: usize, extra: &[&str]) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    let beat = BEAT_MS.to_string();
    let mut args = vec!["--heartbeat-ms", beat.as_str()];
    args.extend_from_slice(extra);
    Chapter::start_cluster(CH08, workers, &args)
}

/// Sends a request for `path` that will not be answered soon, and returns its connection
/// and the worker that took it, from that worker's own log line (`marker` in it).
#[track_caller]
fn send_stuck(
    master: &Chapter,
    addr: SocketAddr,
    path: &str,
    marker: &str,
    forked: &[(u32, u32)],
) -> (TcpStream, (u32, u32)) {
    let mut stream = connect(addr).expect("connect");
    write_request(&mut stream, path, false).expect("send the request");
    let line = master.wait_for(marker, TIMEOUT);
    let (id, pid) = parse_speaker(&line).unwrap_or_else(|| panic!("who said {line}?"));
    assert!(forked.contains(&(id, pid)), "{line}");
    (stream, (id, pid))
}

#[test]
fn a_hung_worker_is_killed_within_about_three_beats_and_replaced_while_the_other_serves() {
    let kill_timeout = Duration::from_secs(1);
    let (master, addr, forked) = start(2, &["--kill-timeout", "1"]);
    let (_hung, (id, pid)) = send_stuck(&master, addr, "/hang", "/hang: spinning", &forked);
    let hung_at = Instant::now();
    let load = SteadyLoad::start(addr);
    master.wait_for(
        &format!("worker {id} missed a heartbeat (2 of 3 in a row)"),
        TIMEOUT,
    );
    master.wait_for(
        &format!("worker {id} (pid {pid}) is a zombie: its last 3 pings went unanswered"),
        TIMEOUT,
    );
    master.wait_for(
        &format!("worker {id} (pid {pid}) was killed by SIGTERM"),
        TIMEOUT,
    );
    assert_eq!(
        master.count(&format!("worker {id} missed a heartbeat (3 of")),
        0,
        "the third missed ping makes a zombie; there is no fourth chance"
    );
    // Three beats without an answer, one more to notice, the grace before SIGKILL, and
    // room for a busy machine.
    let bound = Duration::from_millis(4 * BEAT_MS) + kill_timeout + Duration::from_secs(3);
    assert!(
        hung_at.elapsed() < bound,
        "the zombie should be gone within about 3 beats plus the grace, not {:?}",
        hung_at.elapsed()
    );
    let (_, new_pid) = master.wait_forked(3)[2];
    load.wait_for_pid(new_pid);
    load.wait_for_more(20);
    let replies = load.stop();
    let failed = failures(&replies);
    assert!(
        failed.is_empty(),
        "the other worker answers throughout, and a connection handed to the hung worker \
         goes to another when it dies: {failed:?}"
    );
    let (other_id, _) = *forked.iter().find(|(i, _)| *i != id).expect("two workers");
    assert_eq!(
        master.count(&format!("worker {other_id} missed")),
        0,
        "a healthy worker answers every ping: {:#?}",
        master.lines()
    );
    assert!(!pid_alive(pid));
    no_defunct_children(master.pid());
}

#[test]
fn a_worker_slow_for_less_than_two_beats_is_not_killed() {
    // Slower beats than the other tests: between the end of the sleep and the next beat
    // the worker must get a CPU and answer, and 250 ms leaves room for a busy machine.
    const BEAT_MS: u64 = 500;
    let beat = BEAT_MS.to_string();
    let (master, addr, forked) = Chapter::start_cluster(CH08, 2, &["--heartbeat-ms", &beat]);
    let path = format!("/sleep?ms={}", BEAT_MS * 3 / 2);
    let response = get_path(addr, &path);
    assert_eq!(response.status, 200, "{response:?}");
    let (id, pid) = *forked
        .iter()
        .find(|(id, pid)| {
            response
                .body
                .starts_with(&format!("worker {id} (pid {pid}) slept"))
        })
        .unwrap_or_else(|| panic!("who slept? {response:?}"));
    // Nothing announces a kill that does not come: watch five more beats. The slow worker
    // may have missed one beat (it depends on where the beats fell); it answers again
    // once its loop runs, and three misses in a row never come.
    let window = Duration::from_millis(5 * BEAT_MS);
    let killed = wait_until(window, || master.count("is a zombie") > 0);
    assert!(!killed, "slow is not dead: {:#?}", master.lines());
    assert_eq!(
        master.count(&format!("worker {id} missed a heartbeat (2 of")),
        0
    );
    assert!(pid_alive(pid), "worker {id} (pid {pid}) lives on");
    assert_eq!(master.count("forked worker"), 2, "no worker was replaced");
    // And it still serves.
    assert!(
        wait_until(TIMEOUT, || get(addr).body == hello_body(pid, id)),
        "worker {id} serves again"
    );
}

/// Exercise ch08-missed: one or two missed beats are logged, not punished. A worker sleeps
/// in a handler for two and a half beats: at least two beats come while it cannot answer,
/// so the second finds a ping unanswered and logs one missed beat; fewer than the four a
/// zombie needs (three missed in a row) can come. The first verdict on it must be that
/// line, and it must live on.
#[test]
fn a_worker_that_misses_a_beat_or_two_is_not_killed() {
    // Slow beats, as above: 250 ms between the end of the sleep and the beat that would
    // make a third miss leave room for a busy machine.
    const BEAT_MS: u64 = 500;
    let beat = BEAT_MS.to_string();
    let (master, addr, forked) = Chapter::start_cluster(CH08, 2, &["--heartbeat-ms", &beat]);
    let mut stream = connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    write_request(
        &mut stream,
        &format!("/sleep?ms={}", BEAT_MS * 5 / 2),
        false,
    )
    .expect("send the request");
    let verdict = master.wait_for_line("a verdict on a worker", TIMEOUT, |l| {
        l.contains("missed a heartbeat") || l.contains("is a zombie")
    });
    let response = read_response(&mut stream).expect("the slow request is answered");
    let (id, pid) = *forked
        .iter()
        .find(|(id, pid)| {
            response
                .body
                .starts_with(&format!("worker {id} (pid {pid}) slept"))
        })
        .unwrap_or_else(|| panic!("who slept? {response:?}"));
    assert!(
        verdict.contains(&format!("worker {id} missed a heartbeat (1 of 3 in a row)")),
        "one missed beat is logged, not punished: {verdict}"
    );
    let window = Duration::from_millis(2 * BEAT_MS);
    let killed = wait_until(window, || master.count("is a zombie") > 0);
    assert!(!killed, "slow is not dead: {:#?}", master.lines());
    assert!(pid_alive(pid), "worker {id} (pid {pid}) lives on");
    assert_eq!(master.count("forked worker"), 2, "no worker was replaced");
}

#[test]
fn a_pong_from_a_thread_of_its_own_hides_a_hung_loop() {
    let (master, addr, forked) = start(2, &["--pong-from-thread", "on"]);
    let (_hung, (id, pid)) = send_stuck(&master, addr, "/hang", "/hang: spinning", &forked);
    // Wait until it has spun for five beats' worth of CPU time, so at least five beats
    // have passed: the worker is stuck, and the master, hearing its thread, suspects
    // nothing. (On a machine loaded far past its CPUs, the pong thread itself may wait
    // longer than a beat to run, and the master then logs a missed beat; what the thread
    // hides is the hang, so the test asks only that the worker is never judged a zombie.)
    let spun = Duration::from_millis(5 * BEAT_MS);
    let before = cpu_time(pid);
    assert!(
        wait_until(TIMEOUT, || cpu_time(pid).saturating_sub(before) >= spun),
        "worker {id} (pid {pid}) should spin"
    );
    assert_eq!(
        master.count("is a zombie"),
        0,
        "the thread answers the pings, so the spinning worker is never judged a zombie: \
         {:#?}",
        master.lines()
    );
    assert!(pid_alive(pid), "the hung worker is left alone");
}

/// Ctrl-C with one worker stuck (and a connection it was handed and never took): the
/// healthy worker drains and exits at once; the stuck one is killed at --kill-timeout.
#[test]
fn stopping_with_a_hung_worker_drains_the_others_and_kills_it_at_the_timeout() {
    // Heartbeats an hour apart: the master will not find the zombie by itself.
    let args = ["--heartbeat-ms", "3600000", "--kill-timeout", "2"];
    let (mut master, addr, forked) = Chapter::start_cluster(CH08, 2, &args);
    let (_hung, (id, pid)) = send_stuck(&master, addr, "/hang", "/hang: spinning", &forked);
    let (healthy_id, healthy) = *forked.iter().find(|(i, _)| *i != id).expect("two workers");
    // Requests until one is handed to the stuck worker, which never takes it: the
    // master holds it for that worker, and its client waits.
    let mut lost = Vec::new();
    let give_up = std::time::Instant::now() + TIMEOUT;
    while lost.is_empty() {
        assert!(
            std::time::Instant::now() < give_up,
            "no request went to the stuck worker: the master hands it nothing"
        );
        let mut stream = connect(addr).expect("connect");
        write_request(&mut stream, "/", false).expect("send a request");
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("a short read timeout");
        match read_response(&mut stream) {
            Ok(response) => assert_eq!(answered_by(&response, &forked), (healthy, healthy_id)),
            Err(_) => lost.push(stream),
        }
    }
    master.signal(nix::sys::signal::Signal::SIGINT);
    master.wait_for(
        &format!("worker {healthy_id} (pid {healthy}) exited with code 0"),
        TIMEOUT,
    );
    master.wait_for(
        &format!("worker {id} (pid {pid}) is still there after --kill-timeout 2 s: SIGKILL"),
        TIMEOUT,
    );
    let status = master.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    let lines = master.wait_output_closed(TIMEOUT);
    let killed = format!("worker {healthy_id} (pid {healthy}) is still there");
    assert!(
        !lines.iter().any(|l| l.contains(&killed)),
        "the healthy worker drained by itself: {lines:#?}"
    );
}

/// A port another program holds ends the start at once: see the harness's
/// `a_busy_port_ends_the_start`.
#[test]
fn a_port_held_by_another_program_ends_the_start_at_once_with_one_error_line() {
    a_busy_port_ends_the_start(CH08);
}

/// A zombie that was handed a connection and never took it: once it is killed, the
/// connection goes to the other worker at once. The zombie's slot is given up (it dies
/// within `--min-uptime`, with `--max-restarts 0`), so no replacement comes to wake the
/// master, and no other client connects; only the other worker's pongs come.
#[test]
fn the_connection_a_zombie_never_took_goes_to_the_other_worker_once_it_is_killed() {
    let args = [
        "--heartbeat-ms",
        "500",
        "--kill-timeout",
        "1",
        "--min-uptime",
        "600",
        "--max-restarts",
        "0",
    ];
    let (master, addr, forked) = Chapter::start_cluster(CH08, 2, &args);
    let (id, pid) = forked[0];
    let (other_id, other) = forked[1];
    // A stopped worker misses its pings as a hung one does.
    let stuck = one_handed_to_a_stopped_worker(master.pid(), addr, pid, 2);
    master.wait_for(&format!("worker {id} (pid {pid}) is a zombie"), TIMEOUT);
    master.wait_for(
        &format!("worker {id} died before taking its connection"),
        TIMEOUT,
    );
    master.wait_for("slot 1 is given up", TIMEOUT);
    match stuck.next(TIMEOUT) {
        Ok(response) => assert_eq!(answered_by(&response, &forked), (other, other_id)),
        Err(e) => panic!(
            "worker {other_id} was free: the connection worker {id} never took should be its \
             at once: {e}"
        ),
    }
    no_defunct_children(master.pid());
}
