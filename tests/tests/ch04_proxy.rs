//! Chapter 4: the master listens on the public port and proxies each connection to a
//! worker's private port, holding two fds per client while it does.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};

use chapter_tests::*;

const CH04: &str = "ch04-proxy";

/// Starts the chapter and waits for the master's ready line (see `Chapter::start_cluster`).
#[track_caller]
fn start(workers: usize, extra: &[&str]) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    Chapter::start_cluster(CH04, workers, extra)
}

/// The master's fd count with no client connected. The proxy thread creates its epoll
/// fd on its own schedule, so wait for that first; after it, the count only moves with
/// connections.
fn baseline(master: &Chapter) -> usize {
    let pid = master.pid().to_string();
    assert!(
        wait_until(TIMEOUT, || fd_targets(&pid)
            .iter()
            .any(|(_, target)| target.contains("eventpoll"))),
        "the master's proxy thread never created its epoll fd: {:?}",
        fd_targets(&pid)
    );
    fd_count(master.pid())
}

/// Opens a keep-alive connection and has one request answered on it, so that the proxy
/// has certainly opened its side to a worker. Returns the open connection.
fn open_answered(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr).expect("connect to the master");
    write_request(&mut stream, "/", true).expect("send a request");
    let response = read_response(&mut stream).expect("a response through the proxy");
    assert_eq!(response.status, 200, "{response:?}");
    stream
}

/// Waits for the master's fd count to come back to `expected`, or fails with the last
/// count seen.
#[track_caller]
fn assert_fds_return_to(master: &Chapter, expected: usize, what: &str) {
    let mut last = 0;
    let back = wait_until(TIMEOUT, || {
        last = fd_count(master.pid());
        last == expected
    });
    assert!(
        back,
        "{what}: the master should be back to {expected} fds, but holds {last}: {:#?}",
        fd_targets(&master.pid().to_string())
    );
}

#[test]
fn every_worker_serves_through_the_proxy() {
    let (master, addr, forked) = start(3, &[]);
    let mut served: BTreeMap<u32, usize> = BTreeMap::new();
    // New connections go to the workers in turn, so 9 of them reach all 3 workers.
    for _ in 0..9 {
        let response = get(addr);
        let (pid, _) = answered_by(&response, &forked);
        assert_ne!(pid, master.pid(), "the master proxies; a worker answers");
        *served.entry(pid).or_default() += 1;
    }
    assert_eq!(
        served.len(),
        3,
        "every worker should have served: {served:?} (workers {forked:?})"
    );
}

#[test]
fn each_open_connection_costs_the_master_two_fds() {
    const K: usize = 20;
    let (master, addr, _) = start(2, &[]);
    let before = baseline(&master);
    let open: Vec<TcpStream> = (0..K).map(|_| open_answered(addr)).collect();
    let during = fd_count(master.pid());
    assert!(
        (before + 2 * K - 2..=before + 2 * K + 2).contains(&during),
        "with {K} connections open the master should hold about {before} + 2 x {K} fds \
         (client + worker side each), but holds {during}"
    );
    drop(open);
    assert_fds_return_to(&master, before, "after the clients closed");
}

#[test]
fn no_fd_leaks_after_a_thousand_connections() {
    let (master, addr, _) = start(2, &[]);
    let before = baseline(&master);
    for i in 0..1000 {
        let response =
            http_get(addr).unwrap_or_else(|e| panic!("request {i} through the proxy failed: {e}"));
        assert_eq!(response.status, 200, "request {i}: {response:?}");
    }
    assert_fds_return_to(&master, before, "after 1000 closed connections");
}

/// Exercise ch04-limit: past `--max-connections`, a new client gets a 503.
#[test]
fn max_connections_refuses_the_extra_client() {
    let (master, addr, _) = start(2, &["--max-connections", "3"]);
    let mut open: Vec<TcpStream> = (0..3).map(|_| open_answered(addr)).collect();
    let held = fd_count(master.pid());

    // The fourth client sends nothing: the refusal comes unasked, and the master closes
    // a socket with nothing unread in it (so a plain FIN, not a reset).
    let mut extra = connect(addr).expect("connect a fourth client");
    let refused = read_response(&mut extra).unwrap_or_else(|e| {
        panic!(
            "with 3 of 3 connections in use, the fourth client should get a 503 without \
             asking, but reading it failed: {e} (proxied instead of refused?)"
        )
    });
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        refused.body.trim_end(),
        "too many connections",
        "{refused:?}"
    );
    wait_closed(&mut extra).expect("the master closes the refused connection");

    // The three proxied connections still work.
    for stream in &mut open {
        write_request(stream, "/", true).expect("send a second request");
        let response = read_response(stream).expect("a second response");
        assert_eq!(response.status, 200, "{response:?}");
    }

    // Close one, and wait until the master has let go of its two fds: a slot is free.
    drop(open.pop());
    assert_fds_return_to(&master, held - 2, "after one client closed");
    let response = get(addr);
    assert_eq!(response.status, 200, "{response:?}");
    assert!(parse_hello(&response.body).is_some(), "{response:?}");
}

/// A client that connects and never sends anything: the worker drops it after its idle
/// timeout, and the master must then let go of both of its fds too, even though the
/// client itself never closes.
#[test]
fn a_silent_client_does_not_hold_the_masters_fds() {
    let (master, addr, _) = start(2, &["--idle-timeout", "0.3"]);
    let before = baseline(&master);
    let silent: Vec<TcpStream> = (0..5)
        .map(|_| connect(addr).expect("connect a silent client"))
        .collect();
    // The master holds the pairs first (accept and connect happen at once)...
    let mut most = 0;
    wait_until(TIMEOUT, || {
        most = fd_count(master.pid());
        most >= before + 2 * silent.len()
    });
    assert!(
        most >= before + 2 * silent.len(),
        "5 silent clients should cost the master 10 fds for a while; it holds {most} (baseline {before})"
    );
    // ...and lets go once the workers have dropped them, with the clients still open.
    assert_fds_return_to(
        &master,
        before,
        "after the workers dropped 5 silent clients",
    );
    drop(silent);
}
