//! The exercises: one row each.
//!
//! To add one (say for chapter 4): mark the reference code in the source with
//! `// ANCHOR: solution_<x>` and `// ANCHOR_END: solution_<x>` on lines of their own (the
//! region must still compile when its lines are replaced by one `todo!()`), then add a row
//! below. `cargo test -p exercise` checks that every anchor exists exactly once, and
//! `cargo run -q -p exercise -- verify NAME` proves the tests catch the blanked region.

/// One exercise: a region of real source that the learner rewrites.
pub struct Exercise {
    /// What the learner types: `start ch01-spawn`.
    pub name: &'static str,
    /// The chapter crate it belongs to (and whose binary its test runs).
    pub chapter: &'static str,
    /// The source file, relative to the workspace root.
    pub file: &'static str,
    /// The function that holds the region, as the learner should look for it.
    pub function: &'static str,
    /// The anchor around the region: `// ANCHOR: <anchor>` ... `// ANCHOR_END: <anchor>`.
    pub anchor: &'static str,
    /// The integration test target in `tests/tests/` (`cargo test --test <test>`).
    pub test: &'static str,
    /// Optional test-name filter, when only some tests of the target exercise the region.
    pub filter: Option<&'static str>,
    /// One line for `list`: what the learner writes.
    pub about: &'static str,
    /// The hint placed in the `todo!()`. No quotes, braces or backslashes: it is a format
    /// string literal.
    pub hint: &'static str,
}

pub const EXERCISES: &[Exercise] = &[
    Exercise {
        name: "ch01-spawn",
        chapter: "ch01-random-port-fork",
        file: "shared/src/spawn.rs",
        function: "spawn_worker",
        anchor: "solution_ch01_spawn",
        test: "ch01_random_port_fork",
        filter: None,
        about: "start a worker: run this same binary again, with its id (and channel fd) in the environment",
        hint: "re-run std::env::current_exe() with the same args and WORKER_ID_VAR set to id; \
               with_channel: keep one end of Channel::pair(), put the other end's fd in \
               CHANNEL_FD_VAR; run prepare_child in pre_exec",
    },
    Exercise {
        name: "ch01-percent",
        chapter: "ch01-random-port-fork",
        file: "shared/src/args.rs",
        function: "workers_for_share",
        anchor: "solution_ch01_percent",
        test: "ch01_random_port_fork",
        filter: Some("workers_as_a_share_of_the_cpus"),
        about: "turn `--workers 50%` into a number of workers from the CPU count",
        hint: "percent of cpus, rounded to the nearest whole worker, and never fewer than 1",
    },
    Exercise {
        name: "ch02-send",
        chapter: "ch02-ipc-messaging",
        file: "shared/src/channel.rs",
        function: "Channel::send_message",
        anchor: "solution_ch02_send",
        test: "ch02_ipc_messaging",
        filter: None,
        about: "send one IPC message (and maybe an fd) as one packet with sendmsg",
        hint: "one sendmsg call on self.socket: the text as the only IoSlice, plus \
               ControlMessage::ScmRights when fd is Some; pass MSG_NOSIGNAL",
    },
    Exercise {
        name: "ch02-served",
        chapter: "ch02-ipc-messaging",
        file: "chapters/ch02-ipc-messaging/src/main.rs",
        function: "on_message",
        anchor: "solution_ch02_served",
        test: "ch02_ipc_messaging",
        filter: Some("worker_counts_what_it_served"),
        about: "a worker answers the master's `served?` with how many requests it has answered",
        hint: "reply served N with server.send, where N is the count kept in server.stats()",
    },
    Exercise {
        name: "ch03-report",
        chapter: "ch03-eaddrinuse",
        file: "chapters/ch03-eaddrinuse/src/main.rs",
        function: "worker",
        anchor: "solution_ch03_report",
        test: "ch03_eaddrinuse",
        filter: None,
        about: "a worker that cannot bind prints Node's EADDRINUSE error, tells the master, exits 1",
        hint: "log Error: e as Node does, send error CODE ERRNO to the master (ListenError has \
               code and errno), then return ExitCode::FAILURE",
    },
    Exercise {
        name: "ch03-reuseport",
        chapter: "ch03-eaddrinuse",
        file: "shared/src/net.rs",
        function: "listen_with",
        anchor: "solution_ch03_reuseport",
        test: "ch03_eaddrinuse",
        filter: Some("reuseport_lets_every_worker_bind"),
        about: "with `--reuseport on`, let every worker bind the same port",
        hint: "set SO_REUSEPORT on the socket before bind; socket2 has a setter for it",
    },
    Exercise {
        name: "ch04-flush",
        chapter: "ch04-proxy",
        file: "chapters/ch04-proxy/src/proxy.rs",
        function: "Pair::flush",
        anchor: "solution_ch04_flush",
        test: "ch04_proxy",
        filter: None,
        about: "the heart of a proxy: write what one side sent to the other side, and pass on end-of-file",
        hint: "write self.pending[from] to self.sides[1 - from] until it is empty or the write \
               would block (then return Ok and wait for EPOLLOUT); once done[from] and nothing \
               is pending, shutdown(Write) the other side",
    },
    Exercise {
        name: "ch04-limit",
        chapter: "ch04-proxy",
        file: "chapters/ch04-proxy/src/proxy.rs",
        function: "refuse_if_full",
        anchor: "solution_ch04_limit",
        test: "ch04_proxy",
        filter: Some("max_connections_refuses_the_extra_client"),
        about: "with `--max-connections N`, answer a client past the budget with a 503 instead of proxying it",
        hint: "when open is already max or more, write BUSY to the client and return true; \
               otherwise return false",
    },
    Exercise {
        name: "ch05-adopt",
        chapter: "ch05-handle-passing",
        file: "chapters/ch05-handle-passing/src/main.rs",
        function: "on_message",
        anchor: "solution_ch05_adopt",
        test: "ch05_handle_passing",
        filter: None,
        about: "a worker turns the fd that came with `server` into a listener and starts accepting on it",
        hint: "TcpListener::from(fd), then server.add_listener_with(listener, exclusive); \
               tell the master listening when that worked, log the error when not",
    },
    Exercise {
        name: "ch05-summary",
        chapter: "ch05-handle-passing",
        file: "chapters/ch05-handle-passing/src/main.rs",
        function: "summarize",
        anchor: "solution_ch05_summary",
        test: "ch05_handle_passing",
        filter: Some("master_reports_the_spread_on_shutdown"),
        about: "before stopping, the master asks each worker how many connections it won and logs the spread",
        hint: "send stats? to every id in cluster.ids(), collect the accepted N replies with \
               cluster.next_event_timeout for up to a second, then log one line per worker: \
               worker I accepted N of T connections (P%)",
    },
    Exercise {
        name: "ch06-handoff",
        chapter: "ch06-round-robin",
        file: "shared/src/round_robin.rs",
        function: "RoundRobin::distribute",
        anchor: "solution_ch06_handoff",
        test: "ch06_round_robin",
        filter: None,
        about: "hand a waiting connection's fd to a free worker, and keep it until the worker acknowledges",
        hint: "cluster.send_with_fd(id, newconn KEY, conn.as_fd()); on Ok keep conn in self.sent \
               under id; on Err log it and put conn back at the front of self.waiting",
    },
    Exercise {
        name: "ch06-weights",
        chapter: "ch06-round-robin",
        file: "shared/src/round_robin.rs",
        function: "RoundRobin::accepted",
        anchor: "solution_ch06_weights",
        test: "ch06_round_robin",
        filter: Some("weights_skew_the_turns"),
        about: "weighted round-robin (nginx's WRR): with `--weights 2,1` worker 1 gets two connections per turn",
        hint: "count down what is left of the worker's turn (self.left, starting at its weight); \
               with turns left put it at the front of self.free, else refill and put it at the back",
    },
];

/// The exercise called `name`.
pub fn find(name: &str) -> Option<&'static Exercise> {
    EXERCISES.iter().find(|e| e.name == name)
}

impl Exercise {
    /// The arguments after `cargo`: `test -p chapter-tests --test <test> [filter]`.
    pub fn test_args(&self) -> Vec<&'static str> {
        let mut args = vec!["test", "-p", "chapter-tests", "--test", self.test];
        args.extend(self.filter);
        args
    }

    /// The check command as a learner would type it.
    pub fn test_command(&self) -> String {
        format!("cargo {}", self.test_args().join(" "))
    }
}
