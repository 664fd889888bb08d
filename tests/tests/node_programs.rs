//! The book's Node.js programs (`book/node/*.js`) run too. Each page shows the same stage
//! written for Node, included from a file under `book/node/`, and these tests start each
//! file with `node` on a free port, wait for its ready line, and check that it does what
//! the page says: who answers, which process is whose child, who holds the listening
//! socket.
//!
//! Without `node` on `PATH` every test says that it skipped (on stderr) and passes (in CI,
//! with `CI` set, it fails instead): the Rust chapters do not need Node.js.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chapter_tests::*;

/// The book's Node.js programs.
fn program(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../book/node")
        .join(file)
}

/// Starts `node book/node/FILE` with `PORT=0`, `WORKERS=2` and `env`, or returns `None`
/// (after saying so) when `node` is not installed.
#[track_caller]
fn start(file: &str, env: &[(&str, &str)]) -> Option<Chapter> {
    let node = tool_or_skip("node", &format!("book/node/{file}"))?;
    let mut command = Command::new(node);
    command
        .arg(program(file))
        .env("PORT", "0")
        .env("WORKERS", "2")
        // Whatever the test's own environment says, the program starts as a master, and
        // the cluster module picks its default policy unless a test asks otherwise.
        .env_remove("CLUSTER_WORKER_ID")
        .env_remove("NODE_UNIQUE_ID")
        .env_remove("NODE_CLUSTER_SCHED_POLICY");
    for (name, value) in env {
        command.env(name, value);
    }
    Some(Chapter::from_command(&format!("node {file}"), command))
}

/// GETs `addr` and checks the answer's shape, `Hello world by <pid> (worker <id>)`, and
/// that the pid is a child of `master`: returns `(pid, id)`.
#[track_caller]
fn hello_from_child(addr: SocketAddr, master: &Chapter) -> (u32, u32) {
    let response = get(addr);
    assert_eq!(response.status, 200, "{response:?}");
    let (pid, id) = parse_hello(&response.body)
        .unwrap_or_else(|| panic!("not a worker's answer: {:?}", response.body));
    assert_eq!(
        parent_pid(pid),
        Some(master.pid()),
        "the answer came from pid {pid}, which is not a child of the master {}",
        master.pid()
    );
    (pid, id)
}

/// Chapters 1 and 2: each worker listens on a port of its own and answers there itself.
#[track_caller]
fn every_worker_answers_on_its_own_port(master: &Chapter) {
    let ready = master.wait_ready(2);
    let ports: BTreeSet<u16> = ready.iter().map(|r| r.addr.port()).collect();
    assert_eq!(ports.len(), 2, "two workers, two ports: {ready:?}");
    for worker in &ready {
        let answer = hello_from_child(worker.addr, master);
        assert_eq!(
            answer,
            (worker.pid, worker.id),
            "{worker:?} answered as {answer:?}"
        );
    }
}

#[test]
fn ch01_each_forked_worker_serves_its_own_random_port() {
    let Some(master) = start("ch01-fork.js", &[]) else {
        return;
    };
    every_worker_answers_on_its_own_port(&master);
}

#[test]
fn ch02_workers_say_ready_and_the_master_answers_ok() {
    let Some(master) = start("ch02-ipc.js", &[]) else {
        return;
    };
    every_worker_answers_on_its_own_port(&master);
    let heard = master.wait_for_n("message from master: ok", 2, TIMEOUT);
    let said: BTreeSet<u32> = heard
        .iter()
        .filter_map(|l| parse_speaker(l))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        said,
        BTreeSet::from([1, 2]),
        "each worker hears ok: {heard:?}"
    );
    assert_eq!(master.count(" ready"), 2, "{:?}", master.lines());
}

#[test]
fn ch03_one_worker_binds_and_the_others_die_of_eaddrinuse() {
    let Some(master) = start("ch03-eaddrinuse.js", &[("WORKERS", "3")]) else {
        return;
    };
    let winner = master.wait_ready(1)[0];
    master.wait_for_n("exited with code 1", 2, TIMEOUT);
    for _ in 0..3 {
        let answer = hello_from_child(winner.addr, &master);
        assert_eq!(answer, (winner.pid, winner.id));
    }
    // Node prints the uncaught error itself, on the losers' stderr.
    let stderr = master.stderr_lines().join("\n");
    assert!(
        stderr.contains("Error: listen EADDRINUSE: address already in use")
            && stderr.contains("errno: -98"),
        "Node's own EADDRINUSE report on stderr:\n{stderr}"
    );
    assert_eq!(master.count(READY), 1, "{:?}", master.lines());
}

#[test]
fn ch04_the_master_proxies_to_each_worker_in_turn() {
    let Some(master) = start("ch04-proxy.js", &[]) else {
        return;
    };
    let addr = master.wait_master_ready();
    let ids: Vec<u32> = (0..4).map(|_| hello_from_child(addr, &master).1).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        2,
        "both workers serve: {ids:?}"
    );
    assert!(ids.windows(2).all(|w| w[0] != w[1]), "turns: {ids:?}");
}

/// The sockets listening on `addr`: exactly one, or the test fails.
#[track_caller]
fn the_listener(addr: SocketAddr) -> u64 {
    match listening_inodes(addr)[..] {
        [inode] => inode,
        ref found => panic!("one socket should listen on {addr}, found {found:?}"),
    }
}

/// Checks who holds the one listening socket on `addr`: the master or not, and every
/// worker that answered.
#[track_caller]
fn check_holders(master: &Chapter, addr: SocketAddr, master_holds: bool, workers: &[u32]) {
    let listener = the_listener(addr);
    assert_eq!(
        socket_inodes(master.pid()).contains(&listener),
        master_holds,
        "does the master hold the listening socket {listener}? {:?}",
        fd_targets(&master.pid().to_string())
    );
    for &pid in workers {
        assert!(
            socket_inodes(pid).contains(&listener),
            "worker pid {pid} should hold the listening socket {listener}"
        );
    }
}

#[test]
fn ch05_the_articles_experiment_leaves_the_socket_to_the_workers() {
    let Some(master) = start("ch05-send-server.js", &[]) else {
        return;
    };
    let addr = master.wait_master_ready();
    let answers: Vec<(u32, u32)> = (0..6).map(|_| hello_from_child(addr, &master)).collect();
    let pids: BTreeSet<u32> = answers.iter().map(|&(pid, _)| pid).collect();
    // The master sent its socket and closed its own copy: only workers hold it now.
    let pids: Vec<u32> = pids.into_iter().collect();
    check_holders(&master, addr, false, &pids);
}

#[test]
fn cluster_shared_handle_keeps_the_socket_in_the_master_too() {
    let Some(master) = start("cluster.js", &[("NODE_CLUSTER_SCHED_POLICY", "none")]) else {
        return;
    };
    let addr = master.wait_master_ready();
    assert!(master.lines().iter().any(|l| l.contains("policy none")));
    let pids: BTreeSet<u32> = (0..6).map(|_| hello_from_child(addr, &master).0).collect();
    // SharedHandle: the master bound the socket, sent it to each worker that asked, and
    // keeps its own copy for as long as a worker uses it.
    check_holders(&master, addr, true, &pids.into_iter().collect::<Vec<_>>());
}

#[test]
fn cluster_round_robin_the_master_accepts_and_every_worker_serves() {
    let Some(master) = start("cluster.js", &[]) else {
        return;
    };
    let addr = master.wait_master_ready();
    assert!(master.lines().iter().any(|l| l.contains("policy rr")));
    let ids: BTreeSet<u32> = (0..20).map(|_| hello_from_child(addr, &master).1).collect();
    assert_eq!(
        ids,
        BTreeSet::from([1, 2]),
        "both workers serve in 20 requests"
    );
    // RoundRobinHandle: only the master holds the listening socket.
    check_holders(&master, addr, true, &[]);
    for line in master.lines() {
        if let Some((_, pid)) = parse_forked(&line) {
            assert!(
                !socket_inodes(pid).contains(&the_listener(addr)),
                "worker pid {pid} should not hold the listening socket"
            );
        }
    }
}

#[test]
fn cluster_every_worker_listens_on_each_port_it_asks_for() {
    let Some(master) = start("cluster.js", &[("PORT", "0,0")]) else {
        return;
    };
    master.wait_master_ready();
    let ready = master.wait_for_n(READY, 2, TIMEOUT);
    let addrs: BTreeSet<SocketAddr> = ready.iter().filter_map(|l| parse_listen_addr(l)).collect();
    assert_eq!(
        addrs.len(),
        2,
        "two listen() calls, two addresses: {ready:?}"
    );
    for addr in addrs {
        let ids: BTreeSet<u32> = (0..10).map(|_| hello_from_child(addr, &master).1).collect();
        assert_eq!(ids, BTreeSet::from([1, 2]), "both workers serve {addr}");
    }
}

/// The version of `node` on `PATH`, `(major, minor)`.
fn node_version() -> Option<(u32, u32)> {
    let output = Command::new(on_path("node")?)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let mut parts = text.trim().trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Chapter 10: `listen({ exclusive: true, reusePort: true })` in every cluster worker. From
/// Node 22.12 and 23.1 on, every worker listens on a socket of its own and the master holds
/// none; before, the option is ignored, one worker binds and the others die of
/// EADDRINUSE, which the program reports with the version.
#[test]
fn ch10_every_worker_listens_itself_where_node_has_reuse_port() {
    let Some(master) = start("ch10-reuseport.js", &[]) else {
        return;
    };
    let Some((major, minor)) = node_version() else {
        panic!("node is on PATH but `node --version` says nothing readable");
    };
    let reuse_port = major > 23 || (major == 23 && minor >= 1) || (major == 22 && minor >= 12);
    if reuse_port {
        let addr = master.wait_master_ready();
        let sockets = listening_inodes(addr);
        assert_eq!(
            sockets.len(),
            2,
            "a socket per worker on {addr}: {sockets:?}"
        );
        assert!(
            socket_inodes(master.pid()).is_disjoint(&sockets.iter().copied().collect()),
            "the master holds none of them"
        );
        let ids: BTreeSet<u32> = (0..30).map(|_| hello_from_child(addr, &master).1).collect();
        assert_eq!(ids, BTreeSet::from([1, 2]), "both workers serve: {ids:?}");
    } else {
        let winner = master.wait_ready(1)[0];
        let refused = master.wait_for("EADDRINUSE", TIMEOUT);
        assert!(
            refused.contains("reusePort needs 22.12 or 23.1"),
            "the loser says why: {refused}"
        );
        master.wait_for("exited (1)", TIMEOUT);
        assert_eq!(
            listening_inodes(winner.addr).len(),
            1,
            "one socket on the port"
        );
        assert_eq!(
            hello_from_child(winner.addr, &master),
            (winner.pid, winner.id)
        );
    }
}

/// Asks `addr` until a worker other than `old` answers, and returns it: `(pid, id)`.
#[track_caller]
fn answered_by_another(addr: SocketAddr, master: &Chapter, old: u32) -> (u32, u32) {
    let mut answer = (old, 0);
    assert!(
        wait_until(TIMEOUT, || {
            answer = hello_from_child(addr, master);
            answer.0 != old
        }),
        "only pid {old} answers"
    );
    answer
}

#[test]
fn ch07_a_killed_worker_is_restarted_and_a_throwing_one_leaves_gracefully() {
    let Some(master) = start("ch07-restart.js", &[("MIN_UPTIME", "0")]) else {
        return;
    };
    let addr = master.wait_master_ready();
    let forked: Vec<(u32, u32)> = master
        .wait_for_n("forked worker", 2, TIMEOUT)
        .iter()
        .filter_map(|l| parse_forked(l))
        .collect();
    let (id, pid) = forked[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill -9 a worker");
    master.wait_for(
        &format!("worker {id} (pid {pid}) exited (SIGKILL)"),
        TIMEOUT,
    );
    master.wait_for("slot 1: restart in 0 ms", TIMEOUT);
    let (new_pid, new_id) = master
        .wait_for_n("forked worker", 3, TIMEOUT)
        .last()
        .and_then(|l| parse_forked(l))
        .map(|(id, pid)| (pid, id))
        .expect("a third fork line");
    assert!(
        wait_until(TIMEOUT, || hello_from_child(addr, &master)
            == (new_pid, new_id)),
        "the replacement (pid {new_pid}) serves"
    );

    // A throw in a handler: a 500 for that request, and the worker leaves.
    let response = http_get_path(addr, "/crash").expect("/crash is answered");
    assert_eq!(response.status, 500, "{response:?}");
    master.wait_for("is leaving (its handler threw", TIMEOUT);
    master.wait_for("exited (1), after disconnect", TIMEOUT);
    master.wait_for_n("forked worker", 4, TIMEOUT);
    answered_by_another(addr, &master, pid);
}

#[test]
fn ch08_a_hung_worker_is_a_zombie_and_is_replaced() {
    let env = [("HEARTBEAT_MS", "200"), ("KILL_TIMEOUT", "1000")];
    let Some(master) = start("ch08-heartbeat.js", &env) else {
        return;
    };
    let addr = master.wait_master_ready();
    let mut stream = connect(addr).expect("connect");
    write_request(&mut stream, "/hang", false).expect("send /hang");
    let line = master.wait_for("/hang: spinning forever", TIMEOUT);
    let (id, pid) = parse_speaker(&line).unwrap_or_else(|| panic!("who hangs? {line}"));
    master.wait_for(&format!("worker {id} (pid {pid}) is a zombie"), TIMEOUT);
    master.wait_for(
        &format!("worker {id} (pid {pid}) exited (SIGTERM)"),
        TIMEOUT,
    );
    master.wait_for_n("forked worker", 3, TIMEOUT);
    answered_by_another(addr, &master, pid);
}

/// Chapter 9: the articles' reload. Each worker in turn is disconnected, its replacement
/// forked once it has exited, and the next turn comes when that one listens; a SIGUSR2
/// during a reload is refused.
#[test]
fn ch09_sigusr2_replaces_every_worker_one_after_the_other() {
    let Some(master) = start("ch09-reload.js", &[]) else {
        return;
    };
    let addr = master.wait_master_ready();
    let old: Vec<(u32, u32)> = master.wait_forked(2);
    master.signal(nix::sys::signal::SIGUSR2);
    master.wait_for("SIGUSR2: replacing 2 workers one at a time", TIMEOUT);
    master.signal(nix::sys::signal::SIGUSR2);
    master.wait_for("reload done: 2 workers replaced", TIMEOUT);
    master.wait_for("SIGUSR2 during a reload: refused", TIMEOUT);
    let new = master.wait_forked(4)[2..].to_vec();
    // The old worker of each turn exits before its replacement is forked.
    let lines = master.lines();
    for ((old_id, old_pid), (new_id, _)) in old.iter().zip(&new) {
        let exited = format!("worker {old_id} (pid {old_pid}) exited (0)");
        let forked = format!("forked worker {new_id} ");
        let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
        assert!(
            at(&exited) < at(&forked) && at(&exited).is_some(),
            "worker {old_id} goes before worker {new_id} comes: {lines:#?}"
        );
    }
    let answered: BTreeSet<u32> = (0..10).map(|_| hello_from_child(addr, &master).0).collect();
    let new_pids: BTreeSet<u32> = new.iter().map(|(_, pid)| *pid).collect();
    assert!(
        answered.is_subset(&new_pids),
        "only the new workers {new:?} answer: {answered:?}"
    );
}
