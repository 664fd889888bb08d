//! How chapters 1–6 stop. Ctrl-C in a terminal sends SIGINT to the whole foreground
//! process group, workers included: the workers ignore it and the master stops them, with
//! SIGTERM, and with SIGKILL if one does not go within the grace period.

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
