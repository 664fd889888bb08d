//! Chapter 4: the master listens on the public port and proxies each connection to a
//! worker's private port, holding two fds per client while it does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use chapter_tests::*;
use socket2::{Domain, Socket, Type};

const CH04: &str = "ch04-proxy";

/// Starts the chapter and waits for the master's ready line (see `Chapter::start_cluster`).
#[track_caller]
fn start(workers: usize, extra: &[&str]) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
    Chapter::start_cluster(CH04, workers, extra)
}

/// The master's fd count with no client connected. The master has two epolls, its
/// cluster's and its proxy thread's, and the thread creates its own on its own schedule:
/// wait for both first; after that, the count only moves with connections.
fn baseline(master: &Chapter) -> usize {
    let pid = master.pid().to_string();
    let epolls = || {
        fd_targets(&pid)
            .iter()
            .filter(|(_, target)| target.contains("eventpoll"))
            .count()
    };
    assert!(
        wait_until(TIMEOUT, || epolls() >= 2),
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
    // New connections go to the workers in turn, so a few reach all 3 workers. A worker
    // that does not complete the handshake within a second (on a machine loaded far past
    // its CPUs) is skipped for that connection: 30 leave room for that.
    for _ in 0..30 {
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

/// Megabytes each way through one connection: 100,000 pipelined requests up, their
/// answers down, with a client that reads through a small window. The proxy meets partial
/// writes and full buffers on both sides, and must lose, reorder or duplicate nothing.
#[test]
fn megabytes_pass_both_ways_intact() {
    const N: usize = 100_000;
    // A slow reader is still a reader: give the workers time to wait for it.
    let (_master, addr, forked) = start(2, &["--idle-timeout", "60"]);
    let mut stream = connect(addr).expect("connect to the master");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("read timeout");
    shrink_receive_buffer(&stream);
    let mut writer = stream.try_clone().expect("a second handle for the writer");
    writer
        .set_write_timeout(Some(TIMEOUT))
        .expect("write timeout");
    // The writer runs beside the reader: a client that wrote everything before reading
    // would deadlock against any server that stops reading while its answers wait.
    let one = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
    let sending = std::thread::spawn(move || {
        let batch = one.repeat(1000);
        for _ in 0..N / 1000 {
            writer.write_all(&batch)?;
        }
        Ok::<usize, std::io::Error>(N * one.len())
    });
    // One connection, one worker: all N answers are the same bytes. Read the first to
    // learn them, then the rest in bulk, and compare.
    let first = read_response(&mut stream).expect("the first response");
    answered_by(&first, &forked);
    let expected = shared::http::Response::ok(first.body.clone()).to_bytes(true);
    let mut rest = vec![0u8; (N - 1) * expected.len()];
    stream
        .read_exact(&mut rest)
        .unwrap_or_else(|e| panic!("reading {} more bytes of answers: {e}", rest.len()));
    for (i, answer) in rest.chunks(expected.len()).enumerate() {
        assert!(
            answer == expected,
            "response {} of {N} differs from the first: {:?}",
            i + 2,
            String::from_utf8_lossy(answer)
        );
    }
    let sent = sending
        .join()
        .expect("the writer panicked")
        .expect("writing failed");
    assert!(sent > 2 << 20, "{sent} bytes up");
}

/// Once the master has seen a worker die, every connection goes to the others.
#[test]
fn after_a_worker_dies_the_others_serve_everyone() {
    let (master, addr, forked) = start(3, &[]);
    let (victim_id, victim) = forked[1];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL a worker");
    // A connection that reached the dying worker's queue dies with it; once the master
    // knows, no connection goes there again.
    master.wait_for(
        &format!("worker {victim_id} (pid {victim}) was killed"),
        TIMEOUT,
    );
    let survivors: Vec<(u32, u32)> = forked.iter().copied().filter(|w| w.1 != victim).collect();
    for i in 0..30 {
        let response = http_get(addr).unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        answered_by(&response, &survivors);
    }
}

/// Sets a client socket's receive buffer to 16 KiB (which also stops the kernel growing
/// it), so that the server's writes to it go out a little at a time.
fn shrink_receive_buffer(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_recv_buffer_size(16 * 1024)
        .expect("SO_RCVBUF");
}

/// A client that connects and never sends anything: the worker drops it after its idle
/// timeout, and the master must then let go of both of its fds too, even though the
/// client itself never closes.
#[test]
fn a_silent_client_does_not_hold_the_masters_fds() {
    // Long enough that the pairs are certainly seen before the workers drop them, even
    // on a loaded machine; the test waits for both states, never for the timeout itself.
    let (master, addr, _) = start(2, &["--idle-timeout", "2"]);
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

/// Splits a stream of HTTP responses into `(status, body)` pairs; an error says where the
/// stream stops making sense (a response cut short, or bytes that are not one).
fn split_responses(mut bytes: &[u8]) -> Result<Vec<(u16, String)>, String> {
    let mut responses = Vec::new();
    while !bytes.is_empty() {
        let n = responses.len();
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(format!("response {n} has no complete head"))?;
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(format!(
                "response {n} starts with {:?}",
                &head[..head.len().min(40)]
            ))?;
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .ok_or(format!("response {n} has no Content-Length: {head:?}"))?;
        let body = bytes
            .get(end + 4..end + 4 + length)
            .ok_or(format!("response {n} is cut short"))?;
        responses.push((status, String::from_utf8_lossy(body).into_owned()));
        bytes = &bytes[end + 4 + length..];
    }
    Ok(responses)
}

/// Exercise ch04-flush: a client that takes its answers slowly. It announces a small
/// segment size and a small receive buffer, pipelines thousands of requests, and reads
/// the answers far slower than the worker writes them: the master's writes to it must
/// stop half-way (EAGAIN) again and again, and go on when epoll says the socket is
/// writable. Every answer arrives, whole and in order.
#[test]
fn pipelined_answers_arrive_whole_when_the_proxy_must_wait_to_write() {
    const N: usize = 5000;
    let (_master, addr, forked) = start(1, &[]);
    let (_, pid) = forked[0];
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("a socket");
    socket.set_tcp_mss(536).expect("TCP_MAXSEG");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), TIMEOUT)
        .expect("connect to the master");
    let mut stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("a read timeout");
    stream
        .set_write_timeout(Some(TIMEOUT))
        .expect("a write timeout");

    let mut requests = Vec::new();
    for i in 1..=N {
        let connection = if i == N { "close" } else { "keep-alive" };
        write!(
            requests,
            "GET / HTTP/1.1\r\nHost: test\r\nConnection: {connection}\r\n\r\n"
        )
        .expect("format a request");
    }
    // Written on a thread while this one reads: the answers come back as the requests go.
    let mut writer = stream.try_clone().expect("a second handle on the socket");
    let sending = std::thread::spawn(move || writer.write_all(&requests));
    // Read nothing until the socket's receive buffer is full, so the master's send
    // buffer fills behind it, then read one byte at a time: answers keep coming faster
    // than they are taken, and the master must hold them back.
    let mut peeked = [0u8; 8192];
    assert!(
        wait_until(TIMEOUT, || stream
            .peek(&mut peeked)
            .is_ok_and(|n| n >= 4096)),
        "the first answers never filled the client's receive buffer"
    );
    let mut received = Vec::new();
    let read = loop {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => break Ok(received.len()),
            Ok(_) => received.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let sent = sending.join().expect("the writing thread panicked");
    let responses = split_responses(&received);
    let whole = responses.as_ref().map_or(0, Vec::len);
    assert!(
        read.is_ok() && sent.is_ok() && whole == N,
        "{N} pipelined requests should get {N} whole answers, then the connection closes; \
         got {whole} ({} bytes; {}), reading ended with {read:?}, writing with {sent:?}; \
         the last: {:?}",
        received.len(),
        responses
            .as_ref()
            .err()
            .cloned()
            .unwrap_or("the answers parse".into()),
        responses.as_ref().ok().and_then(|r| r.last())
    );
    for (i, (status, body)) in responses.unwrap_or_default().iter().enumerate() {
        assert!(
            *status == 200 && *body == hello_body(pid, 1),
            "answer {i} of {N} is {status} {body:?}"
        );
    }
}

/// Exercise ch04-copy: a client that sends its request and then shuts down its sending
/// side (`shutdown(SHUT_WR)`, as `nc -N` does) still gets its answer. The master passes
/// the end-of-file on to the worker as a half-close, not as the end of the exchange; the
/// worker answers, closes, and that end-of-file comes back to the client.
#[test]
fn a_half_closed_client_still_gets_its_answer() {
    let (_master, addr, forked) = start(2, &[]);
    let mut stream = connect(addr).expect("connect to the master");
    // Keep-alive: only the end-of-file tells the worker that no request follows.
    write_request(&mut stream, "/", true).expect("send a request");
    stream.shutdown(Shutdown::Write).expect("half-close");
    let response = read_response(&mut stream)
        .unwrap_or_else(|e| panic!("no answer after the client's half-close: {e}"));
    answered_by(&response, &forked);
    wait_closed(&mut stream)
        .expect("the connection should close once the client's end-of-file has reached the worker");
}
