//! How chapters 1–6 stop. Ctrl-C in a terminal sends SIGINT to the whole foreground
//! process group, workers included: the workers ignore it and the master stops them, with
//! SIGTERM, and with SIGKILL if one does not go within the grace period.

use nix::sys::signal::{killpg, Signal};
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

/// Holds a process under `ptrace`, so that a signal sent to it waits for us instead of
/// being delivered: the process cannot act on SIGTERM, as a worker stuck in a loop that
/// handles SIGTERM cannot. SIGKILL still kills it. Dropping it reaps what we traced, so
/// the process's real parent (the master) can reap it too.
struct Held {
    pid: u32,
    reaped: bool,
}

impl Held {
    fn seize(pid: u32) -> Result<Held, String> {
        // SAFETY: PTRACE_SEIZE takes a pid and no pointers; it fails cleanly if not allowed.
        let seized = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                pid as libc::pid_t,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        match seized {
            0 => Ok(Held { pid, reaped: false }),
            _ => Err(std::io::Error::last_os_error().to_string()),
        }
    }
}

impl Held {
    /// Waits (with a deadline) until the held process has been killed by someone else,
    /// and reaps it as its tracer. True if it died.
    fn died(&mut self) -> bool {
        let pid = self.pid;
        self.reaped = wait_until(TIMEOUT, || {
            let mut status = 0;
            // SAFETY: waitpid writes into `status`, a local we own.
            let got = unsafe {
                libc::waitpid(
                    pid as libc::pid_t,
                    &mut status,
                    libc::__WALL | libc::WNOHANG,
                )
            };
            got == -1 || (got > 0 && (libc::WIFEXITED(status) || libc::WIFSIGNALED(status)))
        });
        self.reaped
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // A tracer must reap its tracee's exit before the real parent can see it.
        // Whatever happened, the held process dies here (the master would have killed
        // it), so the wait below cannot hang a failing test.
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        // Stops (the held SIGTERM) come first; loop until the exit, or until there is
        // nothing left to wait for.
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes into `status`, a local we own.
            let pid = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::__WALL) };
            if pid == -1 || libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                return;
            }
        }
    }
}

#[test]
fn a_worker_that_will_not_stop_is_killed_after_the_grace_period() {
    let mut master = Chapter::start("ch01-random-port-fork", &["--workers", "2"]);
    let ready = master.wait_ready(2);
    let stuck = ready[0];
    let mut held = match Held::seize(stuck.pid) {
        Ok(held) => held,
        Err(e) => {
            eprintln!("skipped: this machine does not allow ptrace ({e}), which the test needs to hold a worker");
            return;
        }
    };
    master.signal(Signal::SIGINT);
    master.wait_for(
        &format!(
            "worker {} (pid {}) ignored SIGTERM; sending SIGKILL",
            stuck.id, stuck.pid
        ),
        TIMEOUT,
    );
    assert!(
        held.died(),
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
