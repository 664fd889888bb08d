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
    /// The hints `hint NAME` gives, one level at a time, from a nudge to nearly the answer.
    pub hints: &'static [&'static str],
    /// The test commands `check NAME` runs, in order.
    pub tests: &'static [TestRun],
}

/// One `cargo test` command.
pub struct TestRun {
    /// The package: `chapter-tests` (black-box tests) or `shared` (its unit tests).
    pub package: &'static str,
    pub target: Target,
    /// libtest filters: a test runs if its name contains any of them; none runs all.
    pub filters: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The package's unit tests: `--lib`.
    Lib,
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

/// The unit tests of the `shared` crate whose names contain `filter` (a module path).
const fn shared_unit(filter: &'static [&'static str]) -> TestRun {
    TestRun {
        package: "shared",
        target: Target::Lib,
        filters: filter,
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
            "`waitpid(None, Some(WaitPidFlag::WNOHANG))` collects one exited child, or says \
             `StillAlive` when none has exited; ask again until it does, and forget each \
             collected pid in `children`, which the parent counts against --max-clients.",
            "Loop: `StillAlive` returns; any other `Ok(status)` removes `status.pid()` from \
             `children`; `Err(Errno::EINTR)` asks again; any other error (ECHILD: no \
             children) returns.",
        ],
        tests: &[black_box("ch00_server_models", &[])],
    },
    Exercise {
        name: "ch01-spawn",
        chapter: "ch01-random-port-fork",
        file: "shared/src/spawn.rs",
        function: "spawn_worker",
        anchor: "solution_ch01_spawn",
        about: "start a worker: run this same program again, telling the copy its id and its end of the IPC channel",
        todo: "start worker `id` as a copy of this program, with its end of a new channel if `with_channel`, and return it",
        hints: &[
            "A worker is this same program, run again with the same arguments: `std::env` \
             knows both which program is running and its arguments. The copy learns that it \
             is a worker, and which one, from its environment (`WORKER_ID_VAR`), as a Node \
             worker does from `NODE_UNIQUE_ID`.",
            "Build a `std::process::Command` for `std::env::current_exe()?`, with \
             `std::env::args_os().skip(1)` as its arguments and `WORKER_ID_VAR` set to \
             `id`. With `with_channel`, make `Channel::pair()?` first: the master keeps the \
             `Channel`, the worker inherits the `OwnedFd`, and that fd's number goes in \
             `CHANNEL_FD_VAR`. Spawn it, and return `Worker { id, pid: child.id(), channel, \
             _child: child }`.",
            "Both ends of the pair are close-on-exec, so the worker would lose its end at \
             exec. In an `unsafe` block (with a `// SAFETY:` comment), call \
             `command.pre_exec(move || prepare_child(inherit, master))`, where `inherit` is \
             the raw fd of the worker's end (an `Option<i32>`) and `master` is \
             `std::process::id()`: `prepare_child` clears close-on-exec on that one fd, and \
             makes the worker die with its master. After `spawn()`, let the master's copy \
             of the worker's end drop: while the master holds it too, the worker's exit \
             never reads as end-of-file.",
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
        ],
    },
    Exercise {
        name: "ch01-percent",
        chapter: "ch01-random-port-fork",
        file: "shared/src/args.rs",
        function: "workers_for_share",
        anchor: "solution_ch01_percent",
        about: "turn `--workers 50%` into a number of workers, from the number of CPUs",
        todo: "return how many workers `percent` percent of `cpus` CPUs is",
        hints: &[
            "A share of the CPUs is rarely a whole number: 150% of 1 CPU is 1.5 workers, \
             10% of 2 CPUs is 0.2. Decide how to round, and what the fewest workers is.",
            "Round to the nearest whole worker (1.5 is 2, 1.2 is 1), and never return fewer \
             than 1: `--workers 10%` on a small machine still starts one worker. Integer \
             division rounds down, so compute in `f64`.",
            "`cpus as f64 * f64::from(percent) / 100.0`, then `.round()`, `as usize`, and \
             `.max(1)`.",
        ],
        tests: &[
            shared_unit(&["args::"]),
            black_box("ch01_random_port_fork", &["workers_as_a_share_of_the_cpus"]),
        ],
    },
    Exercise {
        name: "ch02-send",
        chapter: "ch02-ipc-messaging",
        file: "shared/src/channel.rs",
        function: "Channel::send_message",
        anchor: "solution_ch02_send",
        about: "send one IPC message, and the file descriptor that goes with it, as one packet",
        todo: "send `text`, and `fd` if there is one, to the other end as one message",
        hints: &[
            "The socket is `SOCK_SEQPACKET`: the kernel keeps message boundaries, so one \
             send is one message. No framing (no newline, no length prefix): send the \
             text's bytes as they are, in one call. A file descriptor travels in that same \
             call, as ancillary data.",
            "`nix::sys::socket::sendmsg::<()>(self.socket.as_raw_fd(), &iov, cmsgs, flags, \
             None)`: `iov` is `[IoSlice::new(text.as_bytes())]`; `cmsgs` is empty, or \
             `[ControlMessage::ScmRights(&fds)]`, with `fds` a slice of the one `RawFd`, \
             when `fd` is `Some`.",
            "Pass `MsgFlags::MSG_NOSIGNAL`: a send to a channel whose other end is gone \
             must fail with EPIPE (the `?` turns it into `ChannelError::Closed`), not kill \
             the process with SIGPIPE. Then `Ok(())`.",
        ],
        tests: &[
            shared_unit(&["channel::"]),
            black_box("ch02_ipc_messaging", &[]),
        ],
    },
    Exercise {
        name: "ch02-recv",
        chapter: "ch02-ipc-messaging",
        file: "shared/src/channel.rs",
        function: "Channel::recv_message",
        anchor: "solution_ch02_recv",
        about: "receive one IPC message and the fd that came with it; tell a closed channel from a bad packet",
        todo: "receive the next message and any fd that came with it, or say why there is none",
        hints: &[
            "One `recvmsg` call reads one whole message, with any file descriptors sent \
             with it. Give it a buffer of `MAX_MESSAGE` bytes and room for a few fds. Then \
             sort out what came: nothing yet (only with `MSG_DONTWAIT`: `Ok(None)`), zero \
             bytes, a message cut short, text that is not UTF-8, or a good message.",
            "`recvmsg::<()>(fd, &mut iov, Some(&mut space), flags | \
             MsgFlags::MSG_CMSG_CLOEXEC)`, with `iov` being `[IoSliceMut::new(&mut buf)]` \
             and `space` being `cmsg_space!([RawFd; 4])`, in a loop: EINTR, again; EAGAIN, \
             `Ok(None)`; other errors, `Err(e.into())`. Every fd in a \
             `ControlMessageOwned::ScmRights` is now open in this process: wrap each at \
             once in `OwnedFd::from_raw_fd` (`unsafe`, with a `// SAFETY:` comment), or it \
             leaks. Keep the first; the others drop, which closes them.",
            "Zero bytes and no fd: the peer hung up only if `self.hung_up()` says so \
             (`ChannelError::Closed`); otherwise someone sent an empty packet \
             (`ChannelError::Malformed`). `MSG_TRUNC` in the returned flags: \
             `ChannelError::TooLarge(len)`. Then `buf.truncate(len)` and \
             `String::from_utf8`: `Ok(Some(Message { text, fd }))`, or `Malformed`.",
        ],
        tests: &[
            shared_unit(&["channel::"]),
            black_box("ch02_ipc_messaging", &[]),
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
             than connections accepted? See `shared::server::Stats`.",
            "Answer with a message to the master, not a log line: `server.send(...)`, with \
             the text `served N`.",
            "`server.send(&format!(\"served {}\", server.stats().served));`",
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
            "`ListenError`'s `Display` already reads like Node's message: `log!` it after \
             `Error: `. The master expects the message `error CODE ERRNO`: `e.code()` and \
             `e.errno()`.",
            "`log!(\"Error: {e}\");`, then `channel.send(&format!(\"error {} {}\", \
             e.code(), e.errno()))?;`, and return `Ok(ExitCode::FAILURE)`, which is exit \
             code 1.",
        ],
        tests: &[black_box("ch03_eaddrinuse", &[])],
    },
    Exercise {
        name: "ch03-reuseport",
        chapter: "ch03-eaddrinuse",
        file: "shared/src/net.rs",
        function: "listen_with",
        anchor: "solution_ch03_reuseport",
        about: "open a listening socket as Node does (SO_REUSEADDR), and with `--reuseport on` let every worker bind one port",
        todo: "make a TCP socket, set its options, bind it to `addr` and listen on it",
        hints: &[
            "A listening socket is made in steps: socket, options, bind, listen; an option \
             changes what bind does only if it is set before bind. `SO_REUSEADDR` lets a \
             restarted server bind while connections of its last run sit in TIME_WAIT; only \
             `SO_REUSEPORT` lets two live sockets share a port.",
            "With socket2: `Socket::new(Domain::for_address(addr), Type::STREAM, \
             Some(Protocol::TCP))?`, then `set_reuse_address(true)` always and \
             `set_reuse_port(true)` when `reuse_port`, then `bind(&addr.into())` and \
             `listen(BACKLOG)`.",
            "End with `Ok(socket.into())`: a `socket2::Socket` turns into a std \
             `TcpListener`.",
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
            "EPOLLOUT on side `from`: what the other side sent can go out now, so flush it. \
             EPOLLIN or EPOLLHUP: side `from` has something, bytes or end-of-file. Read at \
             most one chunk, and only once the previous chunk from that side has gone out: \
             then a fast sender cannot fill the master's memory (backpressure).",
            "Read into a 64 KiB array. `Ok(n)`: append it to `self.pending[from]` and \
             `self.flush(from)?`. `Ok(0)`: side `from` is done (`self.done[from] = true`), \
             but that is only a half-close: the other side may still have an answer to \
             send. `WouldBlock`: nothing to read after all. `Interrupted`: again. EPOLLERR, \
             or any other error: return `Err`, and the caller drops the pair.",
            "At end-of-file, pass it on once nothing from that side is left to write: if \
             `self.pending[from]` is empty, `self.sides[1 - \
             from].shutdown(Shutdown::Write)` (flush does the same when it empties the \
             buffer later). Return `Ok(())`.",
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
            "Loop while `self.pending[from]` is not empty: `self.sides[1 - \
             from].write(&self.pending[from])`. `Ok(n)`: remove the first `n` bytes \
             (`drain(..n)`). `WouldBlock`: return `Ok(())`; `update_interest` then asks for \
             EPOLLOUT. `Interrupted`: again. Any other error: return it.",
            "`write_all` will not do: on `WouldBlock` it stops with an error, and you \
             cannot tell how much went. Once all is written and `self.done[from]`, pass the \
             end-of-file on: `shutdown(Shutdown::Write)` on the other side. Return \
             `Ok(())`.",
        ],
        tests: &[black_box("ch04_proxy", &[])],
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
            "`if open >= max { let _ = client.write_all(BUSY); return true; } false`",
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
             master's copy: the socket stays open, held by the workers. The master is ready \
             once every worker says it accepts.",
            "`net::listen(args.host, args.port)?`; `Cluster::new()?` and `cluster.fork()?` \
             per worker; for each `id` in `cluster.ids()`, `cluster.send_with_fd(id, \
             \"server\", listener.as_fd())?`; then `drop(listener)`, and log `sent the \
             listening socket ...`. Each worker answers `listening` once it accepts on it.",
            "The loop: `let event = cluster.next_event();` on `Event::Shutdown`, call \
             `summarize(&mut cluster)` first; `if let Some(code) = \
             cluster.ends_here(&event)`, return `Ok(code)`; count the `listening` messages, \
             and when every worker has sent one, `log!(\"listening on http://{addr} \
             (...)\")`: the ready line.",
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
            "`TcpListener::from(fd)` takes over the `OwnedFd`; \
             `server.add_listener_with(listener, exclusive)` starts accepting on it (with \
             `EPOLLEXCLUSIVE` under `--exclusive on`).",
            "On `Ok`, `server.send(\"listening\")`; on `Err`, `log!` the error (the master \
             will not count this worker as ready).",
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
            "`cluster.send(id, \"stats?\")` for each `id` in `cluster.ids()`; each worker \
             answers `accepted N`. Collect them with \
             `cluster.next_event_timeout(time_left)` until there is one per worker or the \
             deadline has passed.",
            "Then one line per worker: `log!(\"worker {id} accepted {n} of {total} \
             connections ({share:.0}%)\")`, `total` being the sum of all the answers.",
        ],
        tests: &[black_box(
            "ch05_handle_passing",
            &["master_reports_the_spread_on_shutdown"],
        )],
    },
    Exercise {
        name: "ch06-handoff",
        chapter: "ch06-round-robin",
        file: "shared/src/round_robin.rs",
        function: "RoundRobin::distribute",
        anchor: "solution_ch06_handoff",
        about: "hand a waiting connection's fd to a free worker, and keep it until the worker acknowledges",
        todo: "send `conn` to worker `id`, and keep it until the worker answers",
        hints: &[
            "The worker gets its own fd for the connection. The master keeps its copy until \
             the worker acknowledges, so nothing is lost if the worker dies first; and if \
             the send fails, the worker is gone, but the connection must not be lost \
             either.",
            "`cluster.send_with_fd(id, &format!(\"newconn {}\", self.key), conn.as_fd())`; on \
             `Ok`, keep `conn` in `self.sent` under `id`.",
            "On `Err`, log it and put `conn` back at the front of `self.waiting`; do not \
             put the worker back on the free list.",
        ],
        tests: &[black_box("ch06_round_robin", &[])],
    },
    Exercise {
        name: "ch06-weights",
        chapter: "ch06-round-robin",
        file: "shared/src/round_robin.rs",
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
            "With turns left, put the worker at the front of `self.free`; at zero, refill \
             its turn and put it at the back.",
        ],
        tests: &[black_box("ch06_round_robin", &["weights_skew_the_turns"])],
    },
    Exercise {
        name: "ch07-backoff",
        chapter: "ch07-auto-restart",
        file: "shared/src/supervisor.rs",
        function: "next_delay",
        anchor: "solution_ch07_backoff",
        about: "the wait before a slot's next restart: at once, then restart_delay, then half again each time, up to a cap",
        todo: "return the wait of the slot's next restart, given that this one waits delay",
        hints: &[
            "delay is what the restart being scheduled now waits; return what the next one \
             will wait. A slot's first restart is immediate (its delay is zero); if that \
             worker dies too, the next waits policy.restart_delay; every one after that \
             waits policy.growth times longer, and never more than policy.max_delay.",
            "Two cases: delay is zero (only the immediate first restart has happened), or it \
             is not. Multiplying zero by 1.5 gives zero forever: the first case needs \
             policy.restart_delay itself.",
            "match delay.is_zero() { true => policy.restart_delay, false => \
             delay.mul_f64(policy.growth) }.min(policy.max_delay)",
        ],
        tests: &[
            shared_unit(&["supervisor::"]),
            black_box(
                "ch07_auto_restart",
                &["a_slot_that_crashes_at_start_backs_off_then_is_given_up_while_the_other_serves"],
            ),
        ],
    },
    Exercise {
        name: "ch07-leave",
        chapter: "ch07-auto-restart",
        file: "shared/src/graceful.rs",
        function: "leave",
        anchor: "solution_ch07_leave",
        about: "a worker that must go (a panic, too much memory) tells its master first, then finishes what it holds",
        todo: "tell the master why this worker is leaving, then drain",
        hints: &[
            "Two things, in an order that matters: the master must stop handing this worker \
             connections and start its replacement, and the worker must stop taking new \
             connections but finish the ones it holds. Until the master hears, it still \
             counts the worker as free.",
            "The master expects the message `leaving WHY`; Server::drain does the rest and \
             makes run() return once the last connection is done.",
            "server.send(&format!(\"leaving {why}\")); then server.drain();",
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
            "missed counts the pings sent to this worker since its last pong; pong() sets it \
             back to 0. At a beat, a count of 1 or more means the last ping went unanswered \
             for a whole interval: a missed beat. Judge first, then count the ping this beat \
             sends.",
            "At MISSED (3) the worker is a zombie: return true, and beat() does the rest. \
             Otherwise, if it missed any, log it (the tests read `worker N missed a \
             heartbeat (K of 3 in a row)`), add the ping to the count, and return false.",
            "if *missed >= MISSED { return true; } if *missed > 0 { log!(\"worker {id} \
             missed a heartbeat ({missed} of {MISSED} in a row)\"); } *missed += 1; false",
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
            "step runs after every event of the master's loop. A turn is self.turn: the \
             old worker, and the new one forked to replace it. Until the new one serves, \
             nothing may happen to the old one: return, and the next event calls step \
             again. Once it serves, the old one drains, and the next old worker's turn \
             begins at once. When none is left, the reload is done.",
            "keeper.serving(new) says whether the new worker serves (it has joined every \
             round-robin handle: alive is not enough). keeper.drain(old, why) gives the new \
             one the old one's slot and tells the old one to drain. keeper.replace(old) \
             forks the next replacement: Ok(Some(new)) starts a turn, with a deadline \
             listen_timeout from now; Ok(None) means that old worker is gone already, so \
             skip it; Err means no worker can be forked, so stop. Loop while \
             self.running: self.end and self.stop end the reload.",
            "while self.running { if let Some(turn) = &self.turn { if \
             !keeper.serving(turn.new) { return; } keeper.drain(turn.old, why); \
             self.replaced += 1; self.turn = None; } let Some(old) = \
             self.todo.pop_front() else { return self.end(keeper, done) }; match \
             keeper.replace(old) { Ok(Some(new)) => self.turn = Some(Turn { old, new, \
             deadline }), Ok(None) => log!(skipped), Err(e) => return self.stop(keeper, \
             why) } }",
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
             socket, as any server does. Other workers already listen on that port, so \
             the bind succeeds only if every socket on it, this one too, asked to share \
             the port before binding.",
            "net::listen_with(addr.ip(), addr.port(), true)? makes the socket, sets \
             SO_REUSEADDR and SO_REUSEPORT, binds and listens. Then log the ready line, \
             `listening on http://ADDR`, with the address the socket really has \
             (listener.local_addr()?).",
            "server.add_listener(listener)?; then server.send(\"listening\"): the master \
             prints its own ready line once every worker has said it. Return Ok(server).",
        ],
        tests: &[black_box("ch10_reuseport", &[])],
    },
    Exercise {
        name: "ch10-reserve",
        chapter: "ch10-reuseport",
        file: "shared/src/net.rs",
        function: "reserve",
        anchor: "solution_ch10_reserve",
        about: "the master keeps the port for its workers: a socket bound with SO_REUSEPORT that never listens",
        todo: "make a socket that holds `addr` for SO_REUSEPORT listeners and never takes a connection",
        hints: &[
            "A socket holds a port from bind on; it takes connections only once it listens. \
             The workers must still be able to bind beside it, so it has to ask to share \
             the port before it binds, with the same option their sockets use, and with \
             nothing that would let other programs in too.",
            "socket2: Socket::new(Domain::for_address(addr), Type::STREAM, \
             Some(Protocol::TCP))?, then set_reuse_port(true)? and bind(&addr.into())?. \
             Return Ok(Reservation { socket }).",
            "No listen: a listening socket would join the workers' group and get its share \
             of connections that nobody accepts. And no SO_REUSEADDR: with it, any program \
             that sets only SO_REUSEADDR could bind the port beside a socket that never \
             listens, then listen on it.",
        ],
        tests: &[
            shared_unit(&["net::"]),
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
    /// lines: `ch04_proxy` for a test file, the package name for unit tests.
    pub fn label(&self) -> &'static str {
        match self.target {
            Target::Lib => self.package,
            Target::Test(name) => name,
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
            for run in e.tests {
                if let Target::Test(file) = run.target {
                    let path = root.join("tests/tests").join(format!("{file}.rs"));
                    assert!(
                        path.exists(),
                        "{}: {} does not exist",
                        e.name,
                        path.display()
                    );
                }
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

    #[test]
    fn commands_read_as_a_learner_types_them() {
        let e = find("ch01-spawn").unwrap();
        assert_eq!(
            e.commands(),
            [
                "cargo test -p chapter-tests --test ch01_random_port_fork",
                "cargo test -p chapter-tests --test ch02_ipc_messaging -- \
                 master_and_workers_talk_both_ways each_channel_end_is_held_by_one_process"
            ]
        );
        let unit = &find("ch01-percent").unwrap().tests[0];
        assert_eq!(unit.command(), "cargo test -p shared --lib -- args::");
        assert_eq!(unit.label(), "shared");
        assert!(unit.selects("args::tests::a_share_of_the_cpus"));
        assert!(!unit.selects("channel::tests::closed_and_too_large"));
        assert!(find("ch01-percent")
            .unwrap()
            .run_labelled("shared")
            .is_some());
    }
}
