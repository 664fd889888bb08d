//! The exercises: one row each.
//!
//! To add one (say for chapter 4): mark the reference code in the source with
//! `// ANCHOR: solution_<x>` and `// ANCHOR_END: solution_<x>` on lines of their own (the
//! region must still compile when its lines are replaced by one `todo!()`), add a row
//! below, and write at least two wrong answers a learner could plausibly write in
//! `exercises/wrong/<name>/` (see `wrong.rs` for the format), each naming the test that
//! rejects it. `cargo test -p exercise` checks the table and the files;
//! `cargo run -q -p exercise -- verify NAME` proves that the reference passes, that the
//! tests catch the blanked region and every wrong answer, and that reset is exact.

/// One exercise: a region of real source that the learner rewrites.
pub struct Exercise {
    /// What the learner types: `start ch01-spawn`.
    pub name: &'static str,
    /// The chapter crate it belongs to (and whose binary its black-box tests run).
    pub chapter: &'static str,
    /// The source file, relative to the workspace root.
    pub file: &'static str,
    /// The function that holds the region, as the learner should look for it.
    pub function: &'static str,
    /// The anchor around the region: `// ANCHOR: <anchor>` ... `// ANCHOR_END: <anchor>`.
    pub anchor: &'static str,
    /// One line for `list`: what the learner writes.
    pub about: &'static str,
    /// What the `todo!()` asks for: what to write, not how. It becomes a format-string
    /// literal, so no quotes, braces, backslashes or newlines.
    pub todo: &'static str,
    /// The hints `hint NAME` gives, one level at a time: the idea, then the API to use and
    /// the tests to read. A hint teaches; it never prints the reference code.
    pub hints: &'static [&'static str],
    /// The test commands `check NAME` runs, in order.
    pub tests: &'static [TestRun],
}

/// One `cargo test` command.
pub struct TestRun {
    /// The package: `chapter-tests` (black-box tests), or a crate whose unit tests run
    /// (a chapter's, or `shared`).
    pub package: &'static str,
    pub target: Target,
    /// libtest filters: a test runs if its name contains any of them; none runs all.
    pub filters: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The unit tests of the package's library: `--lib`.
    Lib,
    /// The unit tests of one of the package's binaries (the modules of a chapter's
    /// `main.rs`): `--bin <name>`.
    Bin(&'static str),
    /// An integration test file: `--test <name>`, `tests/tests/<name>.rs`.
    Test(&'static str),
}

/// The black-box tests of `tests/tests/<file>.rs` whose names contain one of `filters`.
const fn black_box(file: &'static str, filters: &'static [&'static str]) -> TestRun {
    TestRun {
        package: "chapter-tests",
        target: Target::Test(file),
        filters,
    }
}

/// The unit tests of `package`'s `target` (`Target::Lib`, or `Target::Bin` for those in a
/// chapter's binary) whose names contain one of `filters` (module paths: `channel::`).
const fn unit(package: &'static str, target: Target, filters: &'static [&'static str]) -> TestRun {
    TestRun {
        package,
        target,
        filters,
    }
}

pub const EXERCISES: &[Exercise] = &[
    Exercise {
        name: "ch00-reap",
        chapter: "ch00-server-models",
        file: "chapters/ch00-server-models/src/process.rs",
        function: "reap",
        anchor: "solution_ch00_reap",
        about: "the process model's parent collects every child that has exited, so none is left a zombie",
        todo: "collect the exit status of every child that has exited, without waiting for the others",
        hints: &[
            "A child that exits stays in the process table, a zombie, until its parent asks \
             for its exit status. The parent cannot wait for one child to end: others are \
             still serving, and new clients are arriving. Several children may have ended \
             since the last look, and their SIGCHLDs can merge into one.",
            "nix's `waitpid`, asked about any child with the `WNOHANG` flag, collects one \
             child that has ended, or says without waiting that none has \
             (`WaitStatus::StillAlive`). `children` is what the parent counts against \
             --max-clients: a child collected must leave it, whether it exited or was \
             killed by a signal (`WaitStatus::pid` knows the pid of both).",
            "Which errors of waitpid are worth asking again after, and which mean there is \
             nothing left to collect? (`man waitpid`: EINTR, ECHILD.) The tests to read, in \
             tests/tests/ch00_server_models.rs: `the_process_model_leaves_no_zombie`, \
             `at_max_clients_the_next_client_waits_its_turn` and \
             `a_child_killed_by_a_signal_frees_its_place`.",
        ],
        tests: &[black_box("ch00_server_models", &[])],
    },
    Exercise {
        name: "ch01-spawn",
        chapter: "ch01-random-port-fork",
        file: "chapters/ch01-random-port-fork/src/spawn.rs",
        function: "spawn_worker",
        anchor: "solution_ch01_spawn",
        about: "start a worker: run this same program again, telling the copy its id and handing it the fd it inherits",
        todo: "start worker `id` as a copy of this program, handing it the fd in `theirs` if there is one, and return it",
        hints: &[
            "A worker is this same program, run again with the same arguments: `std::env` \
             knows both which program is running and its arguments. The copy learns that it \
             is a worker, and which one, from its environment (`WORKER_ID_VAR`), as a Node \
             worker does from `NODE_UNIQUE_ID`; a chapter adds variables of its own \
             (`env`).",
            "`std::process::Command`, for the program `exe()` names. `theirs`, when there \
             is one, comes from chapter 2: the worker's end of the socketpair that \
             `Cluster::fork_with_env` (chapters/ch02-ipc-messaging/src/cluster.rs) made. The \
             worker inherits that fd, and learns its number from the variable that \
             `Inherit::var` names. The `Worker` you return keeps the `Child`.",
            "The fd in `theirs` is close-on-exec (chapter 2 made it so, that no other worker \
             inherits it), so the worker would lose it at exec; and nothing yet makes a \
             worker die with its master. `prepare_child` does both, in the child, between \
             fork and exec (`CommandExt::pre_exec`, which is `unsafe`: say in a \
             `// SAFETY:` comment why it is sound). It needs the fd's number and the \
             master's pid: whose pid would the closure see? And mind who holds the worker's \
             end afterwards: while the master keeps a copy, the worker's exit never reads \
             as end-of-file. Tests to read: `master_and_workers_talk_both_ways` and \
             `each_channel_end_is_held_by_one_process` (tests/tests/ch02_ipc_messaging.rs), \
             and `workers_die_with_a_killed_master` (tests/tests/ch01_random_port_fork.rs).",
        ],
        tests: &[
            black_box("ch01_random_port_fork", &[]),
            black_box(
                "ch02_ipc_messaging",
                &[
                    "master_and_workers_talk_both_ways",
                    "each_channel_end_is_held_by_one_process",
                ],
            ),
            black_box(
                "ch07_auto_restart",
                &["a_slot_that_crashes_at_start_backs_off_then_is_given_up_while_the_other_serves"],
            ),
        ],
    },
    Exercise {
        name: "ch01-percent",
        chapter: "ch01-random-port-fork",
        file: "chapters/ch01-random-port-fork/src/workers.rs",
        function: "workers_for_share",
        anchor: "solution_ch01_percent",
        about: "turn `--workers 50%` into a number of workers, from the number of CPUs",
        todo: "return how many workers `percent` percent of `cpus` CPUs is",
        hints: &[
            "A share of the CPUs is rarely a whole number: 150% of 1 CPU is 1.5 workers, \
             10% of 2 CPUs is 0.2. Decide how to round, and what the fewest workers is.",
            "Round to the nearest whole worker (1.5 is 2, 1.2 is 1), and never return fewer \
             than 1: `--workers 10%` on a small machine still starts one worker. Integer \
             division rounds down, so compute with floating point.",
            "The unit test `workers::tests::a_share_of_the_cpus` \
             (chapters/ch01-random-port-fork/src/workers.rs) lists the cases. `f64` has a \
             method for each way of rounding, and `usize` one for a lower bound: which does \
             each case need?",
        ],
        tests: &[
            unit("ch01-random-port-fork", Target::Lib, &["workers::"]),
            black_box("ch01_random_port_fork", &["workers_as_a_share_of_the_cpus"]),
        ],
    },
    Exercise {
        name: "ch02-send",
        chapter: "ch02-ipc-messaging",
        file: "chapters/ch02-ipc-messaging/src/channel.rs",
        function: "Channel::send_message",
        anchor: "solution_ch02_send",
        about: "send one IPC message, and the file descriptor that goes with it, as one packet",
        todo: "send `text`, and `fd` if there is one, to the other end as one message",
        hints: &[
            "The socket is `SOCK_SEQPACKET`: the kernel keeps message boundaries, so one \
             send is one message. No framing (no newline, no length prefix): send the \
             text's bytes as they are, in one call. A file descriptor travels in that same \
             call, as ancillary data.",
            "nix's `sendmsg` sends bytes and ancillary data in one call: the text in one \
             `IoSlice`, and, when `fd` is `Some`, one `ControlMessage::ScmRights` holding \
             its raw fd; with no fd, no control message at all.",
            "A send can fail: the other end may be gone (EPIPE). Return the error (`?` \
             turns an `Errno` into `ChannelError::Closed`): the caller decides what to do, \
             and chapter 6's master hands the connection it could not send to another \
             worker. `MSG_NOSIGNAL` asks for that error rather than a SIGPIPE. Tests to \
             read: `channel::tests` in chapters/ch02-ipc-messaging/src/channel.rs, \
             `closed_and_too_large` and `an_fd_travels_with_its_message` among them.",
        ],
        tests: &[
            unit("ch02-ipc-messaging", Target::Lib, &["channel::"]),
            black_box("ch02_ipc_messaging", &[]),
        ],
    },
    Exercise {
        name: "ch02-recv",
        chapter: "ch02-ipc-messaging",
        file: "chapters/ch02-ipc-messaging/src/channel.rs",
        function: "Channel::recv_message",
        anchor: "solution_ch02_recv",
        about: "receive one IPC message and the fd that came with it; tell a closed channel from a bad packet",
        todo: "receive the next message and any fd that came with it, or say why there is none",
        hints: &[
            "One `recvmsg` call reads one whole message, with any file descriptors sent \
             with it. Then sort out what came: nothing yet (only without blocking: \
             `Ok(None)`), zero bytes, a message cut short, fds that did not fit, text that \
             is not UTF-8, or a good message.",
            "nix's `recvmsg`, into a buffer of `MAX_MESSAGE` bytes (an `IoSliceMut`) with \
             room for a few fds (`cmsg_space!`), and `MSG_CMSG_CLOEXEC` so that a received \
             fd does not leak into programs started later. EINTR: again; EAGAIN only means \
             nothing is there yet. Every fd in a `ControlMessageOwned::ScmRights` is open \
             in this process from that moment: make each an `OwnedFd` at once (`unsafe`: \
             say why it is sound), keep the first, let the others drop.",
            "The flags say the rest. `MSG_CTRUNC`: the fds did not fit (most often the fd \
             table is full); nix will not read such control data, but the message still \
             counts, without its fd, and `close_received_fds` closes any that did fit. Zero \
             bytes: a hang-up only if `hung_up` says so, otherwise an empty packet. \
             `MSG_TRUNC`: too large. Tests to read: `channel::tests` in \
             chapters/ch02-ipc-messaging/src/channel.rs, and \
             `ch06_a_worker_rejects_a_connection_whose_fd_was_cut_short` in \
             tests/tests/exhaustion.rs.",
        ],
        tests: &[
            unit("ch02-ipc-messaging", Target::Lib, &["channel::"]),
            black_box("ch02_ipc_messaging", &[]),
            black_box(
                "exhaustion",
                &["ch06_a_worker_rejects_a_connection_whose_fd_was_cut_short"],
            ),
        ],
    },
    Exercise {
        name: "ch02-served",
        chapter: "ch02-ipc-messaging",
        file: "chapters/ch02-ipc-messaging/src/main.rs",
        function: "on_message",
        anchor: "solution_ch02_served",
        about: "a worker answers its master's `served?` with how many requests it has answered",
        todo: "answer the master with how many requests this worker has served",
        hints: &[
            "The server counts what it does. Which counter is requests answered, rather \
             than connections accepted? See `ch00_server_models::server::Stats`.",
            "Answer with a message to the master, not a log line: `server.send`, with the \
             text the master expects, `served N`.",
            "The test `worker_counts_what_it_served` (tests/tests/ch02_ipc_messaging.rs) \
             sends three requests on one kept-alive connection, then asks: what must the \
             answer say?",
        ],
        tests: &[black_box(
            "ch02_ipc_messaging",
            &["worker_counts_what_it_served"],
        )],
    },
    Exercise {
        name: "ch03-report",
        chapter: "ch03-eaddrinuse",
        file: "chapters/ch03-eaddrinuse/src/main.rs",
        function: "worker",
        anchor: "solution_ch03_report",
        about: "a worker that cannot bind prints Node's EADDRINUSE error, tells the master, and exits with code 1",
        todo: "report the failed bind `e` as Node does, tell the master, and end this worker",
        hints: &[
            "Three things, as a Node worker whose `listen()` failed does them: print the \
             error as an uncaught exception would (`Error: listen EADDRINUSE: ...`), let \
             the master know why this worker gives up, and end with a failure exit code.",
            "`ListenError` already reads like Node's message (`node_message`), and knows \
             its `code` and `errno`. The master expects the message `error CODE ERRNO` on \
             the channel.",
            "Node's worker dies of the uncaught error with exit code 1, and the master \
             reads that code too. The test \
             `one_worker_binds_the_port_and_the_others_get_eaddrinuse` \
             (tests/tests/ch03_eaddrinuse.rs) checks the printed line, the master's report \
             and the exit code.",
        ],
        tests: &[black_box("ch03_eaddrinuse", &[])],
    },
    Exercise {
        name: "ch03-reuseport",
        chapter: "ch03-eaddrinuse",
        file: "chapters/ch03-eaddrinuse/src/net.rs",
        function: "listen_with",
        anchor: "solution_ch03_reuseport",
        about: "open a listening socket as Node does (SO_REUSEADDR), and with `--reuseport on` let every worker bind one port",
        todo: "make a TCP socket, set its options, bind it to `addr` and listen on it",
        hints: &[
            "A listening socket is made in steps: socket, options, bind, listen; an option \
             changes what bind does only if it is set before bind. `SO_REUSEADDR` lets a \
             restarted server bind while connections of its last run sit in TIME_WAIT; only \
             `SO_REUSEPORT` lets two live sockets share a port.",
            "std's `TcpListener::bind` does all the steps at once, with no room for options \
             between them; socket2's `Socket` does each step on its own, and its setters \
             are named after the options. A `socket2::Socket` turns into a std \
             `TcpListener`.",
            "Which option is set always, and which only with `--reuseport on`? Tests to \
             read, in tests/tests/ch03_eaddrinuse.rs: \
             `one_worker_binds_the_port_and_the_others_get_eaddrinuse` (off), \
             `reuseport_lets_every_worker_bind` (on) and \
             `a_restarted_server_binds_its_port_despite_time_wait`.",
        ],
        tests: &[black_box("ch03_eaddrinuse", &[])],
    },
    Exercise {
        name: "ch04-copy",
        chapter: "ch04-proxy",
        file: "chapters/ch04-proxy/src/proxy.rs",
        function: "Pair::on_event",
        anchor: "solution_ch04_copy",
        about: "the proxy's copy loop: read a chunk only once the last one is delivered, pass end-of-file on as a half-close",
        todo: "side `from` is readable or writable: move bytes between the two sides",
        hints: &[
            "EPOLLOUT on side `from`: side `from` can take bytes now, so what waits for it \
             can go out. EPOLLIN or EPOLLHUP: side `from` has something, bytes or \
             end-of-file. Read at most one chunk, and only once the previous chunk from \
             that side has gone out: then a fast sender cannot fill the master's memory \
             (backpressure).",
            "A chunk goes into `self.pending[from]`, and `self.flush` sends it on. A read \
             of 0 bytes is an end-of-file: note it in `self.done`; it is only a half-close, \
             for the other side may still have an answer to send. `WouldBlock`: nothing to \
             read after all; `Interrupted`: again; EPOLLERR, or any other error: return it, \
             and the caller drops the pair.",
            "The end-of-file must reach the other side too (`shutdown(Shutdown::Write)`), \
             once nothing from this side is left to write, or a client that half-closes \
             never sees its exchange end. And which buffer waits for a side that has become \
             writable? Tests to read, in tests/tests/ch04_proxy.rs: \
             `a_half_closed_client_still_gets_its_answer` and \
             `pipelined_answers_arrive_whole_when_the_proxy_must_wait_to_write`.",
        ],
        tests: &[black_box("ch04_proxy", &[])],
    },
    Exercise {
        name: "ch04-flush",
        chapter: "ch04-proxy",
        file: "chapters/ch04-proxy/src/proxy.rs",
        function: "Pair::flush",
        anchor: "solution_ch04_flush",
        about: "write what one side sent to the other, as much as the socket takes now; EPOLLOUT brings you back for the rest",
        todo: "write what side `from` sent to the other side, as far as it will go now",
        hints: &[
            "The sockets are non-blocking: a write may take part of the buffer, or nothing \
             (`WouldBlock`). What was not written stays in `self.pending[from]` until epoll \
             says the socket is writable again. Lose it, or give up on the connection, and \
             an answer arrives cut short.",
            "Write as long as something waits, and take out of `self.pending[from]` exactly \
             what the socket took. `WouldBlock` is not an error: stop there, and \
             `update_interest` asks epoll for EPOLLOUT. `Interrupted`: again. Any other \
             error: return it.",
            "`write_all` will not do: on `WouldBlock` it stops with an error, and you \
             cannot tell how much went. Nor will trying again at once: that spins while the \
             client does not read. Once everything is written and the side is `done`, pass \
             its end-of-file on. Tests to read: \
             `pipelined_answers_arrive_whole_when_the_proxy_must_wait_to_write` \
             (tests/tests/ch04_proxy.rs) and \
             `ch04_a_client_that_never_reads_makes_the_proxy_wait_not_spin` \
             (tests/tests/exhaustion.rs).",
        ],
        tests: &[
            black_box("ch04_proxy", &[]),
            black_box(
                "exhaustion",
                &["ch04_a_client_that_never_reads_makes_the_proxy_wait_not_spin"],
            ),
        ],
    },
    Exercise {
        name: "ch04-limit",
        chapter: "ch04-proxy",
        file: "chapters/ch04-proxy/src/proxy.rs",
        function: "refuse_if_full",
        anchor: "solution_ch04_limit",
        about: "with `--max-connections N`, answer a client past the budget with a 503 instead of proxying it",
        todo: "refuse this client if `open` connections already use up the budget `max`",
        hints: &[
            "Each proxied client costs two fds. With `open` clients proxied already and \
             room for `max`, is there room for this one? Mind the boundary: under \
             `--max-connections 3`, the fourth client is refused.",
            "Refusing means writing the `BUSY` answer (a 503) to the client at once, \
             without waiting for its request, and returning `true`: the caller then drops \
             the stream, which closes it. Otherwise return `false`.",
            "The test `max_connections_refuses_the_extra_client` \
             (tests/tests/ch04_proxy.rs) holds three clients under `--max-connections 3` \
             and checks the fourth, then frees a place and checks the next.",
        ],
        tests: &[black_box(
            "ch04_proxy",
            &["max_connections_refuses_the_extra_client"],
        )],
    },
    Exercise {
        name: "ch05-handoff",
        chapter: "ch05-handle-passing",
        file: "chapters/ch05-handle-passing/src/main.rs",
        function: "master",
        anchor: "solution_ch05_handoff",
        about: "the master binds once, sends the listening socket to every worker, closes its copy, and waits for them",
        todo: "bind the port once, hand the listening socket to every worker, then run the master",
        hints: &[
            "Bind the port once, in the master. A worker needs the socket itself, not its \
             address or its fd number: send the file descriptor over each worker's channel, \
             and the kernel gives the worker its own fd for the same socket. Then close the \
             master's copy: the socket stays open, held by the workers.",
            "`net::listen` binds; `Cluster::send_with_fd` sends a message (`server`) with \
             an fd to one worker; `cluster.ids()` names every worker. Dropping the master's \
             `TcpListener` closes its fd, not the socket.",
            "Log `sent the listening socket ADDR to N workers and closed ours`, which the \
             tests wait for, and return the address. Tests to read, in \
             tests/tests/ch05_handle_passing.rs: \
             `the_master_holds_no_listening_socket_after_the_hand_off` and \
             `every_worker_accepts_on_the_shared_socket`.",
        ],
        tests: &[black_box("ch05_handle_passing", &[])],
    },
    Exercise {
        name: "ch05-adopt",
        chapter: "ch05-handle-passing",
        file: "chapters/ch05-handle-passing/src/main.rs",
        function: "on_message",
        anchor: "solution_ch05_adopt",
        about: "a worker turns the fd that came with `server` into a listener and starts accepting on it",
        todo: "accept connections on the socket that came with this message, and tell the master",
        hints: &[
            "What arrives is a file descriptor, already open in this process: a listening \
             TCP socket. Wrap it in the type for a listening socket, give it to the \
             server's event loop, and tell the master, which waits for every worker before \
             it says it is ready.",
            "`TcpListener` can be made from an `OwnedFd`; the server's `add_listener_with` \
             starts accepting on it, with `EPOLLEXCLUSIVE` when `exclusive` asks for it \
             (`--exclusive on`).",
            "The master counts `listening` messages; a listener the server could not take \
             is worth a log line, not a message. Tests to read: \
             tests/tests/ch05_handle_passing.rs, \
             `exclusive_wakes_one_worker_instead_of_all` among them.",
        ],
        tests: &[black_box("ch05_handle_passing", &[])],
    },
    Exercise {
        name: "ch05-summary",
        chapter: "ch05-handle-passing",
        file: "chapters/ch05-handle-passing/src/main.rs",
        function: "summarize",
        anchor: "solution_ch05_summary",
        about: "before stopping, the master asks each worker how many connections it won and logs the spread",
        todo: "ask every worker how many connections it accepted, and log the spread",
        hints: &[
            "Ask every worker first, then collect: the answers come back over the channels \
             as events, and each line of the report needs the total, so log only once all \
             have answered (or a second has passed: a stuck worker must not stall the \
             shutdown).",
            "`stats?` to each worker; each answers `accepted N`. \
             `Cluster::next_event_timeout` waits for the next event at most as long as it \
             is told: collect until there is one answer per worker, or the second is over.",
            "Then one line per worker, `worker I accepted X of T connections (P%)`, T being \
             the total of all the answers. Tests to read, in \
             tests/tests/ch05_handle_passing.rs: `master_reports_the_spread_on_shutdown` \
             and `a_stuck_worker_does_not_hold_up_the_report`.",
        ],
        tests: &[black_box(
            "ch05_handle_passing",
            &[
                "master_reports_the_spread_on_shutdown",
                "a_stuck_worker_does_not_hold_up_the_report",
            ],
        )],
    },
    Exercise {
        name: "ch06-handoff",
        chapter: "ch06-round-robin",
        file: "chapters/ch06-round-robin/src/round_robin.rs",
        function: "RoundRobin::distribute",
        anchor: "solution_ch06_handoff",
        about: "hand a waiting connection's fd to a free worker, and keep it until the worker acknowledges",
        todo: "send `conn` to worker `id`, and keep it until the worker answers",
        hints: &[
            "Pair waiting connections with free workers for as long as there are both, not \
             one per call: connections that arrived together must all go out now, for no \
             other event may come. The worker gets its own fd for the connection; the \
             master keeps its copy until the worker acknowledges, so that nothing is lost \
             if the worker dies first.",
            "`self.waiting` and `self.free` are queues (`VecDeque`), `self.sent` what each \
             busy worker was sent. `cluster.send_with_fd` sends `newconn KEY` (the handle's \
             key, `self.key`) with the connection's fd. Which of the two queues should the \
             loop run on, so that no free worker is taken off its queue for nothing?",
            "A send can fail: the worker died, and the master has not read its exit yet. \
             Then the connection is not lost (it goes first to the next worker), and that \
             worker is not picked again. Tests to read, in tests/tests/ch06_round_robin.rs: \
             `a_connection_that_cannot_be_sent_to_a_dead_worker_goes_to_another`, \
             `connections_accepted_together_all_go_out_at_once` and \
             `a_connection_whose_worker_dies_before_taking_it_goes_to_another`.",
        ],
        tests: &[black_box("ch06_round_robin", &[])],
    },
    Exercise {
        name: "ch06-weights",
        chapter: "ch06-round-robin",
        file: "chapters/ch06-round-robin/src/round_robin.rs",
        function: "RoundRobin::accepted",
        anchor: "solution_ch06_weights",
        about: "weighted round-robin (nginx's WRR): with `--weights 2,1` worker 1 gets two connections per turn",
        todo: "put worker `id` back in line, counting down its turn of `weight` connections",
        hints: &[
            "Weighted round-robin: a worker of weight 2 takes two connections in a row \
             before the next worker's turn comes.",
            "Keep what is left of each worker's turn in `self.left`, starting from its \
             weight in `self.weights` (1 if it has none), and count it down at each \
             acknowledgement.",
            "A worker with turns left must be picked again next; one whose turn is over \
             waits behind the others, with a new turn. Where in `self.free` does each go? \
             Test to read: `weights_skew_the_turns` (tests/tests/ch06_round_robin.rs).",
        ],
        tests: &[black_box("ch06_round_robin", &["weights_skew_the_turns"])],
    },
    Exercise {
        name: "ch06b-reply",
        chapter: "ch06b-shared-state",
        file: "chapters/ch06b-shared-state/src/ask.rs",
        function: "Questions::reply",
        anchor: "solution_ch06b_reply",
        about: "the worker's side of `incr`: match the master's (or the agent's) reply to the request that waits for it",
        todo: "take the question this reply answers, and return its request with the count, or a 503",
        hints: &[
            "The worker sends `incr` and goes on serving; replies come back one per \
             question, in the order the questions went out, since a channel keeps its \
             order and the master answers in turn. So a reply is for the oldest question \
             still in line. Every reply takes one question off the line, whatever it \
             says: otherwise the line falls out of step, and every later request gets the \
             count meant for another.",
            "`self.waiting` holds the questions, oldest at the front of the `VecDeque`. \
             A question's `later` is the request to answer, or `None` once `overdue` has \
             answered it 503. Return that request with its answer, and let the caller \
             send it: `count(n, self.id)` for a reply `count N`, `unavailable(why)` for \
             anything else. A reply with no question at all answers nothing.",
            "Whose reply is it, when the oldest question's request already had its 503? \
             Tests to read, in tests/tests/ch06b_shared_state.rs: \
             `replies_answer_the_oldest_question_first`, \
             `a_reply_that_is_not_a_count_is_a_503_and_the_next_reply_still_fits` and \
             `a_reply_after_its_timeout_is_not_taken_for_the_next_question`.",
        ],
        tests: &[black_box("ch06b_shared_state", &[])],
    },
    Exercise {
        name: "ch07-backoff",
        chapter: "ch07-auto-restart",
        file: "chapters/ch07-auto-restart/src/supervisor.rs",
        function: "next_delay",
        anchor: "solution_ch07_backoff",
        about: "the wait before a slot's next restart: at once, then restart_delay, then half again each time, up to a cap",
        todo: "return the wait of the slot's next restart, given that this one waits delay",
        hints: &[
            "delay is what the restart being scheduled now waits; return what the next one \
             will wait. A slot's first restart is immediate (its delay is zero); if that \
             worker dies too, the next waits policy.restart_delay; every one after that \
             waits policy.growth times longer, and never more than policy.max_delay.",
            "Two cases: delay is zero (only the immediate first restart has happened), or \
             it is not. Multiplying zero by 1.5 gives zero forever: the first case needs \
             policy.restart_delay itself.",
            "The unit tests `supervisor::tests` \
             (chapters/ch07-auto-restart/src/supervisor.rs) list the waits a slot sees. `Duration` can be multiplied by an `f64`, and compared.",
        ],
        tests: &[
            unit("ch07-auto-restart", Target::Lib, &["supervisor::"]),
            black_box(
                "ch07_auto_restart",
                &["a_slot_that_crashes_at_start_backs_off_then_is_given_up_while_the_other_serves"],
            ),
        ],
    },
    Exercise {
        name: "ch07-leave",
        chapter: "ch07-auto-restart",
        file: "chapters/ch07-auto-restart/src/graceful.rs",
        function: "leave",
        anchor: "solution_ch07_leave",
        about: "a worker that must go (a panic, too much memory) tells its master first, then finishes what it holds",
        todo: "tell the master why this worker is leaving, then drain",
        hints: &[
            "Two things: the master must hear why this worker goes, so that it hands it no \
             more connections and starts its replacement at once; and the worker must take \
             no new connection but finish those it holds.",
            "The master's keeper understands one message from a leaving worker: \
             `Keeper::message` in chapters/ch07-auto-restart/src/keeper.rs shows its text. \
             The server has two ways to end: read `Server::drain` and `Server::stop` in \
             chapters/ch00-server-models/src/server.rs, and pick the one that finishes what \
             it holds.",
            "The test to read: \
             `a_crash_fails_its_own_request_only_and_the_replacement_serves_before_the_old_worker_exits` \
             (tests/tests/ch07_auto_restart.rs) holds half a request on the worker that \
             crashes, and checks who answers what, and when.",
        ],
        tests: &[black_box("ch07_auto_restart", &[])],
    },
    Exercise {
        name: "ch08-missed",
        chapter: "ch08-heartbeat",
        file: "chapters/ch08-heartbeat/src/main.rs",
        function: "zombie",
        anchor: "solution_ch08_missed",
        about: "the missed-beat counter: a worker that leaves 3 pings in a row unanswered is a zombie",
        todo: "say whether worker id is a zombie; if not, count the ping about to be sent",
        hints: &[
            "missed counts the pings sent to this worker since its last pong; pong() sets \
             it back to 0. At a beat, a count of 1 or more means the last ping went \
             unanswered for a whole interval: a missed beat. Judge first, then count the \
             ping this beat sends.",
            "How many unanswered pings make a zombie? `MISSED` says. One only says the \
             worker was slow for an interval; it is logged (the tests read `worker N missed \
             a heartbeat (K of 3 in a row)`), not punished. A worker that is no zombie gets \
             a ping at this beat: count it.",
            "Tests to read, in tests/tests/ch08_heartbeat.rs: \
             `a_hung_worker_is_killed_within_about_three_beats_and_replaced_while_the_other_serves` \
             (not sooner, not later) and \
             `a_worker_slow_for_less_than_two_beats_is_not_killed`.",
        ],
        tests: &[black_box("ch08_heartbeat", &[])],
    },
    Exercise {
        name: "ch09-step",
        chapter: "ch09-rolling-reload",
        file: "chapters/ch09-rolling-reload/src/main.rs",
        function: "Reload::step",
        anchor: "solution_ch09_step",
        about: "the rolling reload's turn: the new worker serves, then the old one drains, then the next turn",
        todo: "move the reload on: drain the old worker once its replacement serves, then start the next turn, or end the reload",
        hints: &[
            "step runs after every event of the master's loop, and goes as far as it can \
             each time: after the event that makes a new worker serve, no other may come. A \
             turn (`self.turn`) is an old worker and the new one forked to replace it. \
             Until the new one serves, nothing happens to the old one. Once it serves, the \
             old one drains, and the next turn begins in the same call; when no old worker \
             is left, the reload ends.",
            "`keeper.serving(new)`: it has joined every round-robin handle (alive is not \
             enough). `keeper.drain(old, why)`: the new one takes the slot, the old one \
             leaves. `keeper.replace(old)` forks the next replacement: `Ok(Some(new))` \
             starts a turn, with a deadline `listen_timeout` from now; `Ok(None)`: that old \
             worker is gone already, its turn is skipped; `Err`: no worker can be forked. \
             `self.end` and `self.stop` end the reload.",
            "A skipped turn goes on to the next; a fork that fails stops the reload, and \
             the old worker whose turn it was serves on (the stop line counts it). Tests to \
             read, in tests/tests/ch09_rolling_reload.rs: \
             `a_reload_goes_as_far_as_it_can_at_each_event`, \
             `a_fork_that_fails_mid_reload_stops_it_and_the_old_worker_serves_on` and \
             `a_new_worker_that_dies_at_start_stops_the_reload_and_every_old_worker_serves_on`.",
        ],
        tests: &[black_box("ch09_rolling_reload", &[])],
    },
    Exercise {
        name: "ch10-listen",
        chapter: "ch10-reuseport",
        file: "chapters/ch10-reuseport/src/main.rs",
        function: "listen_on_own_socket",
        anchor: "solution_ch10_listen",
        about: "a worker opens a listening socket of its own on the reserved port (SO_REUSEPORT), accepts on it, and tells the master",
        todo: "open this worker's own listening socket on `addr`, accept on it, and tell the master",
        hints: &[
            "Nothing arrives from the master but the address: the worker makes its own \
             socket, as any server does. Other workers already listen on that port, so the \
             bind succeeds only if every socket on it, this one too, asked to share the \
             port before binding.",
            "`net::listen_with` makes the socket, sets its options, binds and listens; its \
             last argument asks for SO_REUSEPORT. Log the ready line, `listening on \
             http://ADDR`, with the address the socket really has.",
            "Give the socket to the server's loop, then tell the master (`listening`): it \
             prints its own ready line once every worker has said it. Tests to read: \
             tests/tests/ch10_reuseport.rs, \
             `each_worker_listens_on_a_socket_of_its_own_and_the_master_on_none` among \
             them.",
        ],
        tests: &[black_box("ch10_reuseport", &[])],
    },
    Exercise {
        name: "ch11-answered",
        chapter: "ch11-node-primary",
        file: "chapters/ch11-node-primary/src/handles.rs",
        function: "Handle::answered",
        anchor: "solution_ch11_answered",
        about: "a Node worker answered newconn: close the primary's copy, or deal the connection to another worker, and free the worker",
        todo: "settle the connection worker `id` answered about, accepted or not, and free the worker for its next one",
        hints: &[
            "Node's worker answers every `newconn` with `accepted: true` (it took the \
             connection) or `false` (its server is closing, or is at its \
             `maxConnections`). The primary kept its own copy of the connection in `sent` \
             until this answer. Read `RoundRobinHandle.prototype.handoff` in Node's \
             `lib/internal/cluster/round_robin_handle.js`: its callback does what this \
             function does.",
            "Taken: the primary's copy can go (dropping a `TcpStream` closes it), and the \
             status table counts it in `taken`. Not taken: the client is still waiting, \
             so the connection must reach another worker; `distribute` queues it and gives \
             it to the first free worker, as Node's `distribute(0, handle)` does.",
            "Whatever the answer, the worker is ready for more: `handoff` gives it the next \
             waiting connection or puts it back on the free line. Which comes first, the \
             refused connection going out, or this worker's handoff? Tests to read: \
             `connections_alternate_between_the_node_workers` and \
             `a_worker_at_its_max_connections_sends_a_connection_back_and_another_takes_it` \
             in tests/tests/ch11_node_primary.rs.",
        ],
        tests: &[black_box("ch11_node_primary", &[])],
    },
    Exercise {
        name: "ch10-reserve",
        chapter: "ch10-reuseport",
        file: "chapters/ch10-reuseport/src/reserve.rs",
        function: "reserve",
        anchor: "solution_ch10_reserve",
        about: "the master keeps the port for its workers: a socket bound with SO_REUSEPORT that never listens",
        todo: "make a socket that holds `addr` for SO_REUSEPORT listeners and never takes a connection",
        hints: &[
            "A socket holds a port from bind on; it takes connections only once it listens. \
             The workers must still be able to bind beside it, so it has to ask to share \
             the port before it binds, with the same option their sockets use, and with \
             nothing that would let other programs in too.",
            "socket2's `Socket` does each step on its own: make it for the address's family \
             (stream, TCP), set the one option, bind. The `Reservation` keeps the socket.",
            "No listen: a listening socket would join the workers' group and get its share \
             of connections that nobody accepts. And no SO_REUSEADDR: with it, any program \
             that sets only SO_REUSEADDR could bind the port beside a socket that never \
             listens, then listen on it. Test to read: \
             `reserve::tests::a_reservation_holds_the_port_for_reuseport_listeners_only` \
             (chapters/ch10-reuseport/src/reserve.rs).",
        ],
        tests: &[
            unit("ch10-reuseport", Target::Bin("ch10-reuseport"), &["reserve::"]),
            black_box("ch10_reuseport", &[]),
        ],
    },
];

/// The exercise called `name`.
pub fn find(name: &str) -> Option<&'static Exercise> {
    EXERCISES.iter().find(|e| e.name == name)
}

/// Every exercise's name, for error messages.
pub fn names() -> String {
    let names: Vec<&str> = EXERCISES.iter().map(|e| e.name).collect();
    names.join(", ")
}

impl TestRun {
    /// The arguments after `cargo`, without filters: `test -p chapter-tests --test X`.
    pub fn target_args(&self) -> Vec<String> {
        let mut args = vec!["test".to_string(), "-p".into(), self.package.into()];
        match self.target {
            Target::Lib => args.push("--lib".into()),
            Target::Bin(name) => args.extend(["--bin".into(), name.into()]),
            Target::Test(name) => args.extend(["--test".into(), name.into()]),
        }
        args
    }

    /// The whole command's arguments after `cargo`, filters included.
    pub fn args(&self) -> Vec<String> {
        let mut args = self.target_args();
        if !self.filters.is_empty() {
            args.push("--".into());
            args.extend(self.filters.iter().map(|f| f.to_string()));
        }
        args
    }

    /// The command as a learner would type it.
    pub fn command(&self) -> String {
        format!("cargo {}", self.args().join(" "))
    }

    /// How a test of this run is named in reports and in wrong answers' `caught by`
    /// lines: `ch04_proxy` for a test file, the package name for a library's unit tests,
    /// the binary's name for a binary's.
    pub fn label(&self) -> &'static str {
        match self.target {
            Target::Lib => self.package,
            Target::Bin(name) | Target::Test(name) => name,
        }
    }

    /// Does this run include the test called `test` (libtest's filter rule: a substring
    /// of the name)?
    pub fn selects(&self, test: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| test.contains(f))
    }

    /// Black-box tests start the chapter's binary, which `check` builds first.
    pub fn is_black_box(&self) -> bool {
        self.package == "chapter-tests"
    }
}

impl Exercise {
    /// Every test command `check` runs, one per line.
    pub fn commands(&self) -> Vec<String> {
        self.tests.iter().map(TestRun::command).collect()
    }

    /// The run whose tests are labelled `label` (see [`TestRun::label`]).
    pub fn run_labelled(&self, label: &str) -> Option<&'static TestRun> {
        self.tests.iter().find(|run| run.label() == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exercise_row_is_well_formed() {
        let mut names = std::collections::HashSet::new();
        for e in EXERCISES {
            assert!(names.insert(e.name), "{} is listed twice", e.name);
            assert!(e.anchor.starts_with("solution_"), "{}: anchor", e.name);
            assert!(e.name.starts_with(&e.chapter[..4]), "{}: chapter", e.name);
            // The todo becomes a format-string literal inside todo!().
            assert!(
                !e.todo.contains(['"', '\\', '{', '}', '\n']),
                "{}: the todo text may not hold quotes, braces, backslashes or newlines",
                e.name
            );
            assert!(!e.about.contains('\n'), "{}: one-line description", e.name);
            assert!(e.hints.len() >= 2, "{}: at least two hint levels", e.name);
            assert!(!e.tests.is_empty(), "{}: at least one test command", e.name);
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            // The learner rewrites the chapter's own code, where the chapter's page
            // explains it.
            assert!(
                e.file.starts_with(&format!("chapters/{}/src/", e.chapter)),
                "{}: {} is not in its chapter's crate, chapters/{}",
                e.name,
                e.file,
                e.chapter
            );
            let mut labels = std::collections::HashSet::new();
            for run in e.tests {
                assert!(
                    labels.insert(run.label()),
                    "{}: two test commands are labelled {}, so a wrong answer's `caught by` \
                     line could not say which it means",
                    e.name,
                    run.label()
                );
                let path = match run.target {
                    Target::Test(file) => root.join("tests/tests").join(format!("{file}.rs")),
                    Target::Lib if run.package == "shared" => root.join("shared/src/lib.rs"),
                    Target::Lib => root.join("chapters").join(run.package).join("src/lib.rs"),
                    Target::Bin(_) => root.join("chapters").join(run.package).join("src/main.rs"),
                };
                assert!(
                    path.exists(),
                    "{}: {} does not exist",
                    e.name,
                    path.display()
                );
            }
        }
    }

    /// Each chapter page lists its exercises with the commands `check` really runs, so
    /// the book cannot drift from this table.
    #[test]
    fn the_book_shows_every_exercise_with_its_commands() {
        let book = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src");
        for e in EXERCISES {
            let page = book.join(format!("{}.md", e.chapter));
            let text = std::fs::read_to_string(&page)
                .unwrap_or_else(|err| panic!("{}: {err}", page.display()));
            let check = format!("cargo run -q -p exercise -- check {}\n", e.name);
            let at = text
                .find(&check)
                .unwrap_or_else(|| panic!("{} does not show `{}`", page.display(), check.trim()));
            let shown: Vec<&str> = text[at + check.len()..]
                .lines()
                .map_while(|l| {
                    l.strip_prefix("# runs: ")
                        .or_else(|| l.strip_prefix("#  then: "))
                })
                .collect();
            assert_eq!(
                shown,
                e.commands(),
                "{}: the `# runs:` lines under `check {}`",
                page.display(),
                e.name
            );
        }
    }

    /// No hint hands out the reference: none holds a line of the reference region (code,
    /// not comments, of some length), spaces aside.
    #[test]
    fn no_hint_prints_the_reference_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let squeeze = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        for e in EXERCISES {
            let text = std::fs::read_to_string(root.join(e.file)).unwrap();
            let region = crate::region::find(&text, e.anchor).unwrap();
            let code: Vec<String> = text[region.inner.clone()]
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("//") && l.len() >= 16)
                .map(squeeze)
                .collect();
            for (i, hint) in e.hints.iter().enumerate() {
                let hint = squeeze(hint);
                for line in &code {
                    assert!(
                        !hint.contains(line.as_str()),
                        "{}: hint {} prints the reference line `{line}`",
                        e.name,
                        i + 1
                    );
                }
            }
        }
    }

    #[test]
    fn commands_read_as_a_learner_types_them() {
        let e = find("ch01-spawn").unwrap();
        assert_eq!(
            e.commands(),
            [
                "cargo test -p chapter-tests --test ch01_random_port_fork",
                "cargo test -p chapter-tests --test ch02_ipc_messaging -- \
                 master_and_workers_talk_both_ways each_channel_end_is_held_by_one_process",
                "cargo test -p chapter-tests --test ch07_auto_restart -- \
                 a_slot_that_crashes_at_start_backs_off_then_is_given_up_while_the_other_serves"
            ]
        );
        let unit = &find("ch02-send").unwrap().tests[0];
        assert_eq!(
            unit.command(),
            "cargo test -p ch02-ipc-messaging --lib -- channel::"
        );
        assert_eq!(unit.label(), "ch02-ipc-messaging");
        assert!(unit.selects("channel::tests::closed_and_too_large"));
        assert!(!unit.selects("worker::tests::a_bad_fd_is_named"));
        assert!(find("ch02-send")
            .unwrap()
            .run_labelled("ch02-ipc-messaging")
            .is_some());
        // Unit tests of a module of a chapter's binary (its main.rs), not of its library.
        let bin = &find("ch10-reserve").unwrap().tests[0];
        assert_eq!(
            bin.command(),
            "cargo test -p ch10-reuseport --bin ch10-reuseport -- reserve::"
        );
        assert_eq!(bin.label(), "ch10-reuseport");
    }
}
