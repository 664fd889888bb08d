//! Chapter 3: every worker binds the same port; the first wins and the others fail with
//! EADDRINUSE, unless SO_REUSEPORT lets them all bind it.

use chapter_tests::*;

const CH03: &str = "ch03-eaddrinuse";

#[test]
fn one_worker_binds_the_port_and_the_others_get_eaddrinuse() {
    let master = Chapter::start(CH03, &["--port", "0", "--workers", "3"]);
    // The summary comes once every worker has answered, so by then every ready line and
    // every error line has been written.
    let summary = master.wait_for("failed to bind", TIMEOUT);
    assert!(
        summary.contains("1 worker listening (worker "),
        "one worker wins: {summary}"
    );
    assert!(
        summary.contains("2 failed to bind with EADDRINUSE"),
        "two lose with EADDRINUSE: {summary}"
    );

    let lines = master.lines();
    let ready: Vec<Ready> = lines.iter().filter_map(|l| parse_ready(l)).collect();
    assert_eq!(ready.len(), 1, "exactly one ready line: {lines:#?}");
    let winner = ready[0];

    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("EADDRINUSE") && l.contains("(errno 98)"))
        .collect();
    assert_eq!(errors.len(), 2, "two EADDRINUSE errors: {lines:#?}");
    for error in errors {
        let (id, pid) =
            parse_speaker(error).unwrap_or_else(|| panic!("a worker's error line: {error}"));
        assert_ne!(id, winner.id, "the winner did not fail");
        assert!(
            error.contains(&format!(
                "Error: listen EADDRINUSE: address already in use {}",
                winner.addr
            )),
            "the error names the contested address {}: {error}",
            winner.addr
        );
        // Each loser exits with code 1, and the master sees it.
        let who = format!("worker {id} (pid {pid})");
        let exit = master.wait_for_line(
            &format!("the master's line on {who}'s exit"),
            TIMEOUT,
            |l| l.contains(&who) && !l.contains("forked"),
        );
        assert!(
            exit.ends_with(&format!("{who} exited with code 1")),
            "a worker that could not bind should exit with code 1: {exit}"
        );
        assert!(
            wait_until(TIMEOUT, || !pid_alive(pid)),
            "worker {id} (pid {pid}) is gone"
        );
    }

    let response = get(winner.addr);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, hello_body(winner.pid, winner.id));
}

/// Exercise ch03-reuseport: with SO_REUSEPORT every worker binds the same port.
#[test]
fn reuseport_lets_every_worker_bind() {
    let master = Chapter::start(
        CH03,
        &["--reuseport", "on", "--port", "0", "--workers", "2"],
    );
    let summary = master.wait_for("failed to bind", TIMEOUT);
    assert!(
        summary.contains("2 workers listening (workers ") && summary.contains("0 failed"),
        "the master counts 2 listening, 0 failed: {summary}"
    );
    let ready = master.wait_ready(2);
    assert_eq!(
        ready[0].addr, ready[1].addr,
        "both workers listen on the same address"
    );
    assert_ne!(ready[0].pid, ready[1].pid);
    assert_eq!(master.count("EADDRINUSE"), 0, "{:#?}", master.lines());
    let response = get(ready[0].addr);
    assert_eq!(response.status, 200);
    assert!(
        ready
            .iter()
            .any(|r| response.body == hello_body(r.pid, r.id)),
        "one of the two workers answers: {:?}",
        response.body
    );
}

/// What SO_REUSEADDR is for, since it does not let two live sockets share a port: a
/// server restarted on its port must bind it while connections of its last run still sit
/// in TIME_WAIT. Node sets it on every listening socket, and so do we.
#[test]
fn a_restarted_server_binds_its_port_despite_time_wait() {
    let mut first = Chapter::start(CH03, &["--port", "0", "--workers", "1"]);
    let winner = first.wait_ready(1)[0];
    // With `Connection: close` the worker closes first, so its end of the connection,
    // on the server's port, is the one that waits in TIME_WAIT.
    let mut stream = connect(winner.addr).expect("connect to the worker");
    write_request(&mut stream, "/", false).expect("send a request");
    let response = read_response(&mut stream).expect("a response");
    assert_eq!(response.status, 200, "{response:?}");
    wait_closed(&mut stream).expect("the worker closes after Connection: close");
    drop(stream);
    assert!(
        wait_until(TIMEOUT, || tcp_sockets()
            .iter()
            .any(|s| s.local == winner.addr && s.state == TcpState::TimeWait)),
        "a connection on {} should be in TIME_WAIT after the worker closed it",
        winner.addr
    );
    first.interrupt_and_collect();

    let port = winner.addr.port().to_string();
    let second = Chapter::start(CH03, &["--port", &port, "--workers", "1"]);
    let summary = second.wait_for("failed to bind", TIMEOUT);
    assert!(
        summary.contains("1 worker listening (worker ") && summary.contains("0 failed"),
        "restarted on port {port} with a connection in TIME_WAIT there, the worker should \
         bind it (SO_REUSEADDR): {summary}\n{:#?}",
        second.lines()
    );
}
