//! Chapter 11: a Rust primary driving real, unmodified Node.js workers over Node's own
//! cluster protocol, and any program through systemd's socket activation.
//!
//! Every test runs real `node` processes. Node.js is required here: without it the tests
//! fail and say how to install it, for this chapter is about Node.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chapter_tests::*;
use nix::sys::signal::Signal;

const PACKAGE: &str = "ch11-node-primary";

/// `node`, or a failure that says how to get it.
#[track_caller]
/// Whether `tool` is installed: see the harness's `tool_or_skip`.
fn installed(tool: &str) -> bool {
    tool_or_skip(tool, "chapter 11's tests").is_some()
}

fn node() -> PathBuf {
    on_path("node").unwrap_or_else(|| {
        panic!(
            "chapter 11 drives real Node.js workers, and `node` is not on PATH: install \
             Node.js 20 or later (Debian and Ubuntu: apt-get install nodejs), then run the \
             tests again"
        )
    })
}

/// A file of the book's: `book/node/app.js`, `book/src/scripts/socket-activated.py`.
fn book_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../book")
        .join(path)
}

/// A Node program of a test's own, written to a temporary file that is removed when the
/// value is dropped.
struct Script(PathBuf);

impl Script {
    fn new(name: &str, text: &str) -> Script {
        let dir = std::env::temp_dir().join(format!("ch11-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a test's Node program");
        Script(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The worker's half of `book/node/app.js`, with `before_listen` run first in worker
/// `cluster.worker.id`s the test names, and `after_listen` once the server listens.
fn app_with(worker_ids: &[u32], before_listen: &str, after_listen: &str) -> String {
    format!(
        "const cluster = require('node:cluster');\n\
         const http = require('node:http');\n\
         const fs = require('node:fs');\n\
         const odd = {worker_ids:?}.includes(cluster.worker.id);\n\
         const server = http.createServer((req, res) => {{\n\
         \x20 res.end(`Hello world by ${{process.pid}} (worker ${{cluster.worker.id}})\\n`);\n\
         }});\n\
         if (odd) {{ {before_listen} }}\n\
         server.listen(process.env.PORT, () => {{ if (odd) {{ {after_listen} }} }});\n"
    )
}

/// Starts the primary with `--port 0 --workers N`, `extra` options, and `-- program...`;
/// waits for its ready line. Returns it, the address, and the `(id, pid)` of each worker
/// of the first round.
#[track_caller]
fn start(
    workers: usize,
    extra: &[&str],
    program: &[&str],
) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    let n = workers.to_string();
    let mut args = vec!["--port", "0", "--workers", n.as_str()];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(program);
    let master = Chapter::start(PACKAGE, &args);
    let addr = master.wait_master_ready();
    let forked = master.wait_forked(workers);
    (master, addr, forked)
}

/// The primary's command line for two workers running `node PROGRAM`, with `extra`
/// options of its own before the `--`.
fn two_node_workers(extra: &[&str], program: &str) -> Vec<String> {
    let node = node();
    let mut args = vec!["--port", "0", "--workers", "2"];
    args.extend_from_slice(extra);
    args.extend(["--", node.to_str().unwrap(), program]);
    args.into_iter().map(String::from).collect()
}

/// `args` as `Chapter::start` takes them.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The primary running `node book/node/app.js`.
#[track_caller]
fn start_app(workers: usize, extra: &[&str]) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    let node = node();
    let app = book_file("node/app.js");
    start(
        workers,
        extra,
        &[node.to_str().unwrap(), app.to_str().unwrap()],
    )
}

/// The command name of process `pid` (`node`, `python3`).
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `ch11-node-primary --status --port PORT`: what it prints.
#[track_caller]
fn status(port: u16) -> String {
    let output = Command::new(binary(PACKAGE))
        .args(["--status", "--port", &port.to_string()])
        .output()
        .expect("run --status");
    assert!(output.status.success(), "--status failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The pid that answered one GET, checked to be one of `forked`.
#[track_caller]
fn pid_of(addr: SocketAddr, forked: &[(u32, u32)]) -> u32 {
    answered_by(&get(addr), forked).0
}

#[test]
fn the_unmodified_app_serves_through_our_primary() {
    if !installed("node") {
        return;
    }
    let (master, addr, forked) = start_app(2, &[]);
    each_answers(addr, &forked);
    for (id, pid) in &forked {
        assert_eq!(comm(*pid), "node", "worker {id} is a Node.js process");
        assert_eq!(
            parent_pid(*pid),
            Some(master.pid()),
            "and our primary's child"
        );
    }
    // Node took the worker branch: it said online and listening, in its own protocol.
    master.wait_for_n("online", 2, TIMEOUT);
    master.wait_for_n(&format!("listening on port {}", addr.port()), 2, TIMEOUT);
    // The primary holds the listening socket; the Node workers hold none.
    let listener = listening_inodes(addr);
    assert_eq!(listener.len(), 1, "one listening socket on {addr}");
    assert!(socket_inodes(master.pid()).contains(&listener[0]));
    for (_, pid) in &forked {
        assert!(!socket_inodes(*pid).contains(&listener[0]), "round-robin");
    }
    let table = status(addr.port());
    for (id, pid) in &forked {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("no row for worker {id}:\n{table}"));
        assert!(
            row.contains(&pid.to_string()) && row.contains("serving"),
            "{table}"
        );
        assert!(row.contains("MB"), "its RSS: {table}");
    }
}

#[test]
fn a_plain_single_process_program_is_a_worker_too() {
    if !installed("node") {
        return;
    }
    // It never requires 'cluster': with NODE_UNIQUE_ID set, Node sets the worker up
    // before the program runs, and its listen() asks the primary.
    let program = Script::new(
        "plain.js",
        "require('node:http').createServer((req, res) => \
         res.end(`Hello world by ${process.pid} (worker 0)\\n`)).listen(process.env.PORT);\n",
    );
    let node = node();
    let (_master, addr, forked) = start(2, &[], &[node.to_str().unwrap(), program.path()]);
    let mut seen = BTreeSet::new();
    assert!(
        wait_until(TIMEOUT, || {
            let body = get(addr).body;
            seen.insert(parse_hello(&body).map(|(pid, _)| pid));
            seen.len() == 2
        }),
        "both workers answer: {seen:?}"
    );
    assert_eq!(
        seen,
        forked.iter().map(|(_, pid)| Some(*pid)).collect(),
        "the answers come from the forked workers"
    );
}

#[test]
fn connections_alternate_between_the_node_workers() {
    if !installed("node") {
        return;
    }
    let (_master, addr, forked) = start_app(2, &[]);
    let pids: Vec<u32> = (0..8).map(|_| pid_of(addr, &forked)).collect();
    for pair in pids.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "one after the other, never twice in a row: {pids:?}"
        );
    }
    assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 2, "{pids:?}");
    // The status counts them: 4 connections each.
    assert_eq!(taken(addr.port()), ["4", "4"]);
}

/// The `connections` column of `--status`, for each serving worker in order.
fn taken(port: u16) -> Vec<String> {
    let table = status(port);
    let counts: Vec<String> = table
        .lines()
        .filter(|l| l.contains("serving"))
        .filter_map(|l| l.split_whitespace().nth(7))
        .map(str::to_string)
        .collect();
    assert!(!counts.is_empty(), "no serving worker in {table}");
    counts
}

#[test]
fn a_node_worker_killed_with_sigkill_is_replaced() {
    if !installed("node") {
        return;
    }
    let (master, addr, forked) = start_app(2, &[]);
    let (_, victim) = forked[0];
    kill_pid(victim, Signal::SIGKILL);
    let line = master.wait_for("forked worker 3", TIMEOUT);
    let (_, new) = parse_forked(&line).expect("a fork line");
    master.wait_for("worker 3 listening on port", TIMEOUT);
    let now = [forked[1], (3, new)];
    each_answers(addr, &now);
    assert!(
        master.count(&format!("worker 1 (pid {victim}) was killed by SIGKILL")) == 1,
        "the primary saw how it died"
    );
    assert_eq!(comm(new), "node");
}

#[test]
fn a_reload_under_steady_load_loses_nothing_and_replaces_every_pid() {
    if !installed("node") {
        return;
    }
    let (master, addr, forked) = start_app(2, &[]);
    let load = SteadyLoad::start(addr);
    load.wait_for_more(20);
    master.signal(Signal::SIGUSR2);
    master.wait_for("reload done: 2 workers replaced", TIMEOUT);
    let new: Vec<(u32, u32)> = master
        .wait_for_n("forked worker", 4, TIMEOUT)
        .iter()
        .filter_map(|l| parse_forked(l))
        .filter(|(id, _)| *id > 2)
        .collect();
    for (_, pid) in &new {
        load.wait_for_pid(*pid);
    }
    let start = load.count();
    load.wait_for_more(20);
    let replies = load.stop();
    assert!(
        failures(&replies).is_empty(),
        "no request may fail during a reload: {:?}",
        failures(&replies)
    );
    let old = pids(&forked);
    assert!(
        replies[start..]
            .iter()
            .all(|r| !old.contains(r.as_ref().unwrap())),
        "after the reload only new workers answer"
    );
    for (_, pid) in &forked {
        assert!(
            wait_until(TIMEOUT, || !pid_alive(*pid)),
            "old pid {pid} is gone"
        );
    }
    // Each new worker served before its old one was told to go.
    let lines = master.lines();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}"))
    };
    let leaves = |(id, pid): (u32, u32)| format!("worker {id} (pid {pid}) is leaving");
    assert!(at("worker 3 serves") < at(&leaves(forked[0])));
    assert!(at("worker 4 serves") < at(&leaves(forked[1])));
    assert!(
        at(&leaves(forked[0])) < at("forked worker 4"),
        "one at a time"
    );
}

#[test]
fn a_worker_that_sends_garbage_is_killed_and_replaced_while_the_other_serves() {
    if !installed("node") {
        return;
    }
    // Worker 1 writes a line that is not JSON on its own channel, once it serves. Node's
    // own primary dies of such a line (JSON.parse throws in its channel reader).
    let program = Script::new(
        "garbage.js",
        &app_with(
            &[1],
            "",
            "fs.writeSync(process.channel.fd, 'this is not json\\n');",
        ),
    );
    let args = two_node_workers(&[], program.path());
    let master = Chapter::start(PACKAGE, &strs(&args));
    let forked = master.wait_forked(2);
    let (_, bad) = forked[0];
    master.wait_for(
        &format!("worker 1 (pid {bad}): it sent a line that is not JSON: \"this is not json\"; killing it"),
        TIMEOUT,
    );
    master.wait_for(
        &format!("worker 1 (pid {bad}) was killed by SIGKILL"),
        TIMEOUT,
    );
    let addr = master.wait_master_ready();
    let line = master.wait_for("forked worker 3", TIMEOUT);
    let (_, new) = parse_forked(&line).expect("a fork line");
    master.wait_for("worker 3 listening on port", TIMEOUT);
    each_answers(addr, &[forked[1], (3, new)]);
    assert!(pid_alive(master.pid()), "the primary lives on");
}

#[test]
fn a_worker_whose_line_never_ends_is_killed_at_the_limit() {
    if !installed("node") {
        return;
    }
    let program = Script::new(
        "endless.js",
        &app_with(
            &[1],
            "",
            "const x = Buffer.alloc(1100000, 'x'); let at = 0; \
             while (at < x.length) { try { at += fs.writeSync(process.channel.fd, x, at); } \
             catch (e) { if (e.code !== 'EAGAIN') throw e; } }",
        ),
    );
    let args = two_node_workers(&[], program.path());
    let master = Chapter::start(PACKAGE, &strs(&args));
    let forked = master.wait_forked(2);
    let (_, bad) = forked[0];
    master.wait_for(&format!("worker 1 (pid {bad}): it sent"), TIMEOUT);
    master.wait_for(
        "of one line, over the limit of 1048576; killing it",
        TIMEOUT,
    );
    master.wait_for("forked worker 3", TIMEOUT);
    master.wait_for("worker 3 listening on port", TIMEOUT);
}

#[test]
fn a_worker_that_never_listens_is_given_up_at_the_listen_timeout() {
    if !installed("node") {
        return;
    }
    // Worker 1 runs, says online, and never calls listen().
    let program = Script::new(
        "silent.js",
        &app_with(&[1], "setInterval(() => {}, 1e6); return;", ""),
    );
    let program_text = std::fs::read_to_string(&program.0).unwrap();
    // `return` at the top of a CommonJS module ends it: no listen for worker 1.
    assert!(program_text.contains("return;"));
    let args = two_node_workers(
        &["--listen-timeout", "1", "--max-restarts", "0"],
        program.path(),
    );
    let master = Chapter::start(PACKAGE, &strs(&args));
    let forked = master.wait_forked(2);
    let (_, silent) = forked[0];
    master.wait_for(
        &format!("worker 1 (pid {silent}) did not serve within --listen-timeout 1 s: stopping it"),
        TIMEOUT,
    );
    master.wait_for("slot 1 is given up", TIMEOUT);
    let addr = master.wait_master_ready();
    assert!(
        master.wait_master_ready_line().contains("1 of 2"),
        "one slot serves"
    );
    assert!(wait_until(TIMEOUT, || !pid_alive(silent)));
    assert_eq!(pid_of(addr, &forked), forked[1].1, "worker 2 serves on");
    assert_eq!(master.count("forked worker"), 2, "slot 1 was not restarted");
}

#[test]
fn a_worker_at_its_max_connections_sends_a_connection_back_and_another_takes_it() {
    if !installed("node") {
        return;
    }
    // Worker 1 takes one connection at a time (server.maxConnections = 1): while it holds
    // one, it answers every newconn with accepted: false, and the primary deals the
    // connection to worker 2 instead.
    let program = Script::new("full.js", &app_with(&[1], "server.maxConnections = 1;", ""));
    let node = node();
    let (master, addr, forked) = start(2, &[], &[node.to_str().unwrap(), program.path()]);
    let (_, full) = forked[0];
    let _held = connection_to(addr, full);
    for _ in 0..6 {
        assert_eq!(pid_of(addr, &forked), forked[1].1, "worker 2 answers all");
    }
    assert!(pid_alive(master.pid()));
    // A connection sent back is not one taken: worker 1 took the one it holds, and only
    // that one (worker 2 took the six, and any that `connection_to` opened on the way).
    let counts = taken(addr.port());
    assert_eq!(
        counts[0], "1",
        "worker 1 took only the held connection: {counts:?}"
    );
    assert!(counts[1].parse::<u32>().is_ok_and(|n| n >= 6), "{counts:?}");
}

#[test]
fn node_workers_die_with_a_killed_primary_even_a_stopped_one() {
    if !installed("node") {
        return;
    }
    let (master, _addr, forked) = start_app(2, &[]);
    let (_, stopped_pid) = forked[0];
    pause(stopped_pid);
    assert!(wait_until(TIMEOUT, || stopped(stopped_pid)));
    master.signal(Signal::SIGKILL);
    for (_, pid) in &forked {
        assert!(
            wait_until(TIMEOUT, || !pid_alive(*pid)),
            "worker pid {pid} outlived its primary"
        );
    }
}

#[test]
fn ctrl_c_lets_every_node_worker_finish_and_exit_zero() {
    if !installed("node") {
        return;
    }
    let (mut master, addr, forked) = start_app(2, &[]);
    each_answers(addr, &forked);
    let lines = master.interrupt_and_collect();
    for (id, pid) in &forked {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("worker {id} (pid {pid}) exited with code 0"))),
            "worker {id} was disconnected and exited on its own: {lines:#?}"
        );
    }
}

#[test]
fn policy_none_gives_each_node_worker_the_listening_socket() {
    if !installed("node") {
        return;
    }
    let (master, addr, forked) = start_app(2, &["--policy", "none"]);
    let listener = listening_inodes(addr);
    assert_eq!(listener.len(), 1, "one listening socket on {addr}");
    for (_, pid) in &forked {
        assert!(
            wait_until(TIMEOUT, || socket_inodes(*pid).contains(&listener[0])),
            "worker pid {pid} holds the listening socket"
        );
    }
    assert!(
        socket_inodes(master.pid()).contains(&listener[0]),
        "and so does the primary"
    );
    pid_of(addr, &forked);
}

#[test]
fn the_python_program_via_listen_fds_serves_and_reloads() {
    if !installed("python3") {
        return;
    }
    let script = book_file("src/scripts/socket-activated.py");
    let python = on_path("python3").expect("python3 on PATH");
    let (master, addr, forked) = start(
        2,
        &["--protocol", "systemd"],
        &[python.to_str().unwrap(), script.to_str().unwrap()],
    );
    each_answers(addr, &forked);
    for (_, pid) in &forked {
        assert!(comm(*pid).starts_with("python3"), "{}", comm(*pid));
    }
    master.wait_for_n("is ready (READY=1)", 2, TIMEOUT);
    let load = SteadyLoad::start(addr);
    load.wait_for_more(20);
    master.signal(Signal::SIGUSR2);
    master.wait_for("reload done: 2 workers replaced", TIMEOUT);
    let new: Vec<u32> = master
        .wait_for_n("forked worker", 4, TIMEOUT)
        .iter()
        .filter_map(|l| parse_forked(l))
        .filter(|(id, _)| *id > 2)
        .map(|(_, pid)| pid)
        .collect();
    for pid in &new {
        load.wait_for_pid(*pid);
    }
    let replies = load.stop();
    assert!(
        failures(&replies).is_empty(),
        "no request may fail during a reload: {:?}",
        failures(&replies)
    );
    for (_, pid) in &forked {
        assert!(
            wait_until(TIMEOUT, || !pid_alive(*pid)),
            "old pid {pid} is gone"
        );
    }
}

/// Sends `signal` to process `pid`.
#[track_caller]
fn kill_pid(pid: u32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("could not send {signal} to {pid}: {e}"));
}

trait ReadyLine {
    fn wait_master_ready_line(&self) -> String;
}

impl ReadyLine for Chapter {
    /// The master's ready line itself.
    #[track_caller]
    fn wait_master_ready_line(&self) -> String {
        self.wait_for_line("the master's ready line", TIMEOUT, |l| {
            parse_master(l).is_some() && parse_listen_addr(l).is_some()
        })
    }
}

/// Out of fds (`ulimit -n 64`, the Node workers too): 120 clients that connect and hold
/// their connections fill every fd table. The primary says so once, does not spin on a
/// socket it cannot accept from, and a worker whose fd did not arrive rests and is tried
/// again: once the clients have gone, both workers serve again. (Before, both workers were
/// left out of the rotation for good once each had missed an fd.)
#[test]
fn out_of_fds_the_primary_waits_without_spinning_and_both_workers_serve_again() {
    if !installed("node") {
        return;
    }
    let app = book_file("node/app.js");
    let args = two_node_workers(&[], app.to_str().unwrap());
    let master = Chapter::start_limited(PACKAGE, &strs(&args), 64);
    let addr = master.wait_master_ready();
    let forked = master.wait_forked(2);
    let held: Vec<std::net::TcpStream> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    master.wait_for("out of fds (accept:", TIMEOUT);
    let share = cpu_share(master.pid(), Duration::from_millis(500));
    assert!(
        share < 0.10,
        "the primary uses {:.0}% of a CPU while it cannot accept: it spins",
        share * 100.0
    );
    drop(held);
    let mut seen = BTreeSet::new();
    assert!(
        wait_until(TIMEOUT, || {
            if let Ok(response) = http_get(addr) {
                seen.insert(answered_by(&response, &forked).1);
            }
            seen.len() == 2
        }),
        "after the clients left, only workers {seen:?} of 2 answered"
    );
    master.wait_for("fds available again; accepting again", TIMEOUT);
    assert_eq!(
        master.count("out of fds (accept:"),
        1,
        "one line for the episode"
    );
}

/// Ctrl-C or SIGTERM while out of fds: connections the primary accepted wait for workers
/// that cannot take them, and would wait for ever; `--kill-timeout` after the signal the
/// primary stops waiting, says how many found no worker, kills what is left, and exits.
#[test]
fn a_stop_while_out_of_fds_ends_within_the_kill_timeout() {
    if !installed("node") {
        return;
    }
    let app = book_file("node/app.js");
    let args = two_node_workers(&["--kill-timeout", "1"], app.to_str().unwrap());
    let mut master = Chapter::start_limited(PACKAGE, &strs(&args), 64);
    let addr = master.wait_master_ready();
    let held: Vec<std::net::TcpStream> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    master.wait_for("out of fds (accept:", TIMEOUT);
    // A worker's fd table is full too: what the primary holds can go nowhere.
    master.wait_for("did not receive a connection's fd", TIMEOUT);
    master.signal(Signal::SIGTERM);
    let status = master.wait_exit(TIMEOUT);
    assert!(status.success(), "{}", describe(status));
    let lines = master.lines();
    assert!(
        lines.iter().any(|l| l.contains("all workers stopped")),
        "{lines:#?}"
    );
    drop(held);
}
