//! Chapter 10: every worker listens on the same port with a socket of its own
//! (`SO_REUSEPORT`); the kernel spreads the connections among the sockets, and the master
//! holds none of them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use chapter_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CH10: &str = "ch10-reuseport";

/// Starts the chapter and waits for the master's ready line (see `Chapter::start_cluster`).
#[track_caller]
fn start(workers: usize) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    Chapter::start_cluster(CH10, workers, &[])
}

#[track_caller]
fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("could not send {signal} to pid {pid}: {e}"));
}

/// The one listening socket on `addr` that process `pid` holds: its inode.
#[track_caller]
fn own_listener(pid: u32, addr: SocketAddr) -> u64 {
    let mine = socket_inodes(pid);
    let held: Vec<u64> = listening_inodes(addr)
        .into_iter()
        .filter(|inode| mine.contains(inode))
        .collect();
    match held[..] {
        [inode] => inode,
        _ => panic!(
            "pid {pid} should hold exactly one socket listening on {addr}, holds {held:?}: {:#?}",
            fd_targets(&pid.to_string())
        ),
    }
}

/// The `(id, pid)` of worker `id`'s replacement: the master logs `worker NEW listens in
/// slot S, ...` once the new worker's socket is open, and forked it just before.
#[track_caller]
fn replacement_in_slot(master: &Chapter, slot: usize) -> (u32, u32) {
    nth_replacement_in_slot(master, slot, 1)
}

/// Like [`replacement_in_slot`], for the `n`th worker to replace one in slot `slot`.
#[track_caller]
fn nth_replacement_in_slot(master: &Chapter, slot: usize, n: usize) -> (u32, u32) {
    let lines = master.wait_for_n(&format!("listens in slot {slot},"), n, TIMEOUT);
    let line = &lines[n - 1];
    let id: u32 = line
        .split_once("] worker ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no worker id in {line}"));
    let pid = master
        .lines()
        .iter()
        .filter_map(|l| parse_forked(l))
        .find(|(forked, _)| *forked == id)
        .map(|(_, pid)| pid)
        .unwrap_or_else(|| panic!("worker {id} was never forked: {:#?}", master.lines()));
    (id, pid)
}

#[test]
fn each_worker_listens_on_a_socket_of_its_own_and_the_master_on_none() {
    const N: usize = 3;
    let (master, addr, forked) = start(N);
    let sockets = listening_inodes(addr);
    assert_eq!(
        sockets.len(),
        N,
        "{N} workers, {N} sockets listening on {addr} (/proc/net/tcp): {sockets:?}"
    );
    // Each worker holds one of them in /proc/<pid>/fd, and no two hold the same one:
    // nothing was shared or passed, every worker opened its own.
    let held: BTreeSet<u64> = forked
        .iter()
        .map(|(_, pid)| own_listener(*pid, addr))
        .collect();
    assert_eq!(
        held,
        sockets.iter().copied().collect(),
        "each worker holds a different one of the {N} sockets"
    );
    assert_eq!(
        listening_addrs_of(master.pid()),
        Vec::<SocketAddr>::new(),
        "the master holds no listening socket: {:#?}",
        fd_targets(&master.pid().to_string())
    );
}

#[test]
fn every_worker_serves_under_load() {
    const THREADS: usize = 8;
    const EACH: usize = 30;
    let (_master, addr, forked) = start(3);
    let mut served: BTreeMap<u32, usize> = BTreeMap::new();
    for (_, id) in gets_from_threads(addr, THREADS, EACH, &forked) {
        *served.entry(id).or_default() += 1;
    }
    // The hash picks a socket at random for each connection: with 240 connections over
    // 3 sockets, a worker left out would happen about once in 10^42 runs.
    let ids: BTreeSet<u32> = forked.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        served.keys().copied().collect::<BTreeSet<u32>>(),
        ids,
        "every worker answers some of the {} requests: {served:?}",
        THREADS * EACH
    );
    assert_eq!(served.values().sum::<usize>(), THREADS * EACH);
}

/// What a reader thread saw: an answer from some pid, or an error.
type Seen = Result<u32, String>;

/// A worker that stops accepting (SIGSTOP) still gets its share of new connections: the
/// kernel completes their handshakes and queues them on its socket, where no other
/// worker can take them. When the worker dies, its socket closes and exactly those
/// connections are lost; every other one is answered. With `net.ipv4.tcp_migrate_req`
/// set, the kernel moves them to another socket of the group instead, and none is lost.
#[test]
fn a_workers_exit_loses_only_the_connections_queued_on_its_socket() {
    const MIN_QUEUED: u64 = 3;
    const MAX_CLIENTS: usize = 300;
    const BATCH: usize = 12;
    let (master, addr, forked) = start(3);
    let (_, victim) = forked[1];
    let socket = own_listener(victim, addr);
    signal(victim, Signal::SIGSTOP);
    assert!(
        wait_until(TIMEOUT, || stopped(victim)),
        "pid {victim} should be stopped"
    );

    // Connections with a request sent, until a few wait on the stopped worker's socket.
    // The queue is read between batches: /proc/net/tcp is slow to read on a machine with
    // many sockets.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mut readers = Vec::new();
    let queued = || accept_queue(socket).unwrap_or(0);
    while readers.len() < MAX_CLIENTS && (readers.is_empty() || queued() < MIN_QUEUED) {
        for _ in 0..BATCH {
            let mut stream: TcpStream = connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(TIMEOUT))
                .expect("a longer read timeout");
            write_request(&mut stream, "/", false).expect("send a request");
            let seen = Arc::clone(&seen);
            readers.push(std::thread::spawn(move || {
                let outcome = match read_response(&mut stream) {
                    Ok(r) => parse_hello(&r.body).map(|(pid, _)| pid).ok_or(r.body),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Err(format!("no answer: {e}")),
                    Err(e) => Err(e.to_string()),
                };
                seen.lock().expect("seen").push(outcome);
            }));
        }
    }
    let clients = readers.len();
    let waiting = queued();
    assert!(
        waiting >= MIN_QUEUED,
        "{clients} connections, and only {waiting} queued on the stopped worker's socket"
    );
    // Everything else is answered by the two running workers; the queued ones wait.
    let answered = || seen.lock().expect("seen").len();
    assert!(
        wait_until(TIMEOUT, || answered() == clients - waiting as usize),
        "{clients} clients, {waiting} queued on the stopped worker: {} answered, {:?}",
        answered(),
        seen.lock().expect("seen")
    );
    assert_eq!(
        queued(),
        waiting,
        "the queue does not move while the worker is stopped"
    );

    signal(victim, Signal::SIGKILL);
    master.wait_for(&format!("(pid {victim}) was killed by SIGKILL"), TIMEOUT);
    for reader in readers {
        reader.join().expect("a reader thread panicked");
    }
    let seen = seen.lock().expect("seen").clone();
    let lost: Vec<&String> = seen.iter().filter_map(|s| s.as_ref().err()).collect();
    for pid in seen.iter().flatten() {
        assert_ne!(*pid, victim, "the stopped worker answered nothing");
    }
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .is_ok_and(|v| v.trim() == "1");
    let expected = if migrate { 0 } else { waiting as usize };
    assert_eq!(
        lost.len(),
        expected,
        "of {clients} connections, {waiting} waited on the dead worker's socket \
         (tcp_migrate_req {}): exactly those are lost, and no other: {lost:?}",
        u8::from(migrate)
    );
    // Its slot serves again, with a new socket.
    let (_, new_pid) = replacement_in_slot(&master, 2);
    own_listener(new_pid, addr);
    for i in 0..20 {
        let response = http_get(addr).unwrap_or_else(|e| panic!("request {i} after: {e}"));
        assert_eq!(response.status, 200, "{response:?}");
    }
}

#[test]
fn a_dead_worker_is_replaced_by_one_with_a_socket_of_its_own() {
    const BURST: usize = 12;
    const MAX_BURSTS: usize = 50;
    let (master, addr, forked) = start(2);
    let (_, victim) = forked[0];
    let old = own_listener(victim, addr);
    signal(victim, Signal::SIGKILL);
    let (new_id, new_pid) = replacement_in_slot(&master, 1);
    let new = own_listener(new_pid, addr);
    let sockets = listening_inodes(addr);
    assert!(
        !sockets.contains(&old) && sockets.len() == 2,
        "the dead worker's socket {old} is gone and the new one {new} listens: {sockets:?}"
    );
    // The new socket gets its share: bursts of connections until it has answered one.
    for _ in 0..MAX_BURSTS {
        let ids: Vec<u32> = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..BURST)
                .map(|_| scope.spawn(move || parse_hello(&get(addr).body).map(|(_, id)| id)))
                .collect();
            clients
                .into_iter()
                .filter_map(|c| c.join().expect("a client thread panicked"))
                .collect()
        });
        if ids.contains(&new_id) {
            return;
        }
    }
    panic!("worker {new_id} (pid {new_pid}) never answered in {MAX_BURSTS} bursts");
}

/// The master keeps the port bound (never listening) for as long as it runs: with every
/// worker gone and the master not yet able to replace them, nobody answers on the port,
/// but no other program can take it either.
#[test]
fn the_port_stays_reserved_while_no_worker_listens() {
    let (master, addr, forked) = start(2);
    // A stopped master cannot start replacements.
    signal(master.pid(), Signal::SIGSTOP);
    assert!(wait_until(TIMEOUT, || stopped(master.pid())));
    for (_, pid) in &forked {
        signal(*pid, Signal::SIGKILL);
    }
    assert!(
        wait_until(TIMEOUT, || listening_inodes(addr).is_empty()),
        "no socket should listen on {addr} with every worker dead: {:?}",
        listening_inodes(addr)
    );
    let refused = TcpStream::connect(addr).map(drop).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    // std binds with SO_REUSEADDR, as Node does; it does not help against the master's
    // bound socket.
    match std::net::TcpListener::bind(addr) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}"),
        Ok(_) => panic!("another program could bind {addr}: the master's reservation is gone"),
    }
    signal(master.pid(), Signal::SIGCONT);
    replacement_in_slot(&master, 1);
    replacement_in_slot(&master, 2);
    assert_eq!(listening_inodes(addr).len(), 2);
    assert_eq!(get(addr).status, 200);
}

/// Chapter 7's restart options hold here too. With `--min-uptime 60`, every death counts
/// as a death at start, whatever the machine's load: the first restart comes at once, the
/// second after `--restart-delay`, and a third death in a row is beyond `--max-restarts`.
#[test]
fn the_restart_options_of_chapter_7_are_honoured() {
    let options = [
        "--min-uptime",
        "60",
        "--max-restarts",
        "2",
        "--restart-delay",
        "0.25",
    ];
    let (master, addr, forked) = Chapter::start_cluster(CH10, 2, &options);
    let (_, mut victim) = forked[0];
    for (n, expected) in [
        (1, "slot 1: a new worker in 0 ms"),
        (2, "slot 1: a new worker in 250 ms"),
    ] {
        signal(victim, Signal::SIGKILL);
        let said = master.wait_for_n("slot 1: ", n, TIMEOUT);
        assert!(
            said[n - 1].contains(expected),
            "expected '{expected}': {said:#?}"
        );
        (_, victim) = nth_replacement_in_slot(&master, 1, n);
    }
    signal(victim, Signal::SIGKILL);
    master.wait_for("slot 1: 3 crashes at start in a row; giving up", TIMEOUT);
    // Slot 2 still serves, so the master goes on.
    assert_eq!(get(addr).status, 200);
    assert!(
        master.count("a new worker in") == 2 && pid_alive(master.pid()),
        "no restart after giving up, and the master stays: {:#?}",
        master.lines()
    );
}

#[test]
fn ctrl_c_stops_every_worker_and_starts_none() {
    let (mut master, _addr, forked) = start(2);
    let lines = master.interrupt_and_collect();
    for (id, pid) in &forked {
        assert!(!pid_alive(*pid), "worker {id} (pid {pid}) is still alive");
    }
    assert!(
        lines.iter().all(|l| !l.contains("listens in slot")),
        "no worker is started while the master stops: {lines:#?}"
    );
}

#[test]
fn a_killed_master_leaves_no_worker() {
    let (master, _addr, forked) = start(2);
    signal(master.pid(), Signal::SIGKILL);
    for (id, pid) in &forked {
        assert!(
            wait_until(TIMEOUT, || !pid_alive(*pid)),
            "worker {id} (pid {pid}) outlived its master"
        );
    }
}

/// A worker started by hand, without the address its master would have reserved, says
/// what it lacks and exits.
#[test]
fn a_worker_without_its_address_says_so() {
    let (mut worker, _channel) = Chapter::start_worker(CH10, &["--port", "0"]);
    let status = worker.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", describe(status));
    let out = worker.wait_output_closed(TIMEOUT).join("\n");
    assert!(
        out.contains("CLUSTER_REUSEPORT_ADDR"),
        "the error names the variable: {out}"
    );
}

/// Another program listens on the port without `SO_REUSEPORT`: the master cannot reserve
/// it, says so in one line, and forks nothing.
#[test]
fn a_port_held_by_another_program_is_refused_before_any_fork() {
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = other.local_addr().expect("its address").port().to_string();
    let (status, stdout, _) = run_to_end(CH10, &["--port", &port, "--workers", "2"]);
    assert_eq!(status.code(), Some(1), "{}\n{stdout}", describe(status));
    assert!(
        stdout.contains("EADDRINUSE") && stdout.contains("try --port 0"),
        "a clear error: {stdout}"
    );
    assert!(
        !stdout.contains("forked worker"),
        "nothing forked: {stdout}"
    );
}
