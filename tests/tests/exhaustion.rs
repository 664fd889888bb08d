//! Chapters 1–6 when something runs out: fds, a client's patience to read, a worker's
//! room for a handed-off connection. Whatever happens, a process must not die of it, spin
//! on it, or buffer without bound; and once the pressure goes, service is back to normal.
//!
//! CPU and memory appear here only as generous bounds that cannot flake: a spinning
//! process uses most of a CPU, a waiting one almost none.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chapter_tests::*;

/// What a process that waits, rather than spins, may use of one CPU.
const IDLE_CPU: f64 = 0.10;

/// Asserts that process `pid` settles down: within the test's timeout, it uses under
/// [`IDLE_CPU`] over half a second. A process with work left may first finish it; one
/// that spins never gets there.
#[track_caller]
fn settles(pid: u32, who: &str) {
    let mut share = 0.0;
    assert!(
        wait_until(TIMEOUT, || {
            share = cpu_share(pid, Duration::from_millis(500));
            share < IDLE_CPU
        }),
        "{who} (pid {pid}) still uses {:.0}% of a CPU with nothing to do: it spins",
        share * 100.0
    );
}

/// What one client got: who answered `(pid, id)`, or what went wrong.
type Answer = Result<(u32, u32), String>;

/// Clients that each send one keep-alive request, read the answer, and then hold their
/// connection open until [`HeldClients::release`]: the way to fill a server's fd table.
struct HeldClients {
    answers: Arc<Mutex<Vec<Answer>>>,
    released: Arc<(Mutex<bool>, Condvar)>,
    threads: Vec<JoinHandle<()>>,
}

impl HeldClients {
    #[track_caller]
    fn open(addr: SocketAddr, n: usize) -> HeldClients {
        let answers: Arc<Mutex<Vec<_>>> = Arc::default();
        let released: Arc<(Mutex<bool>, Condvar)> = Arc::default();
        let mut threads = Vec::new();
        for i in 0..n {
            // Connecting succeeds even when the server cannot accept: the kernel completes
            // the handshake and queues the connection in the listening socket's backlog.
            let mut stream = connect(addr).unwrap_or_else(|e| panic!("client {i}: {e}"));
            stream
                .set_read_timeout(Some(TIMEOUT * 2))
                .expect("read timeout");
            // A server may answer (a 503) and close before the request is even sent;
            // what it said is still there to read.
            let _ = write_request(&mut stream, "/", true);
            let (answers, released) = (Arc::clone(&answers), Arc::clone(&released));
            threads.push(std::thread::spawn(move || {
                let answer = match read_response(&mut stream) {
                    Ok(r) if r.status == 200 => parse_hello(&r.body).ok_or(r.body),
                    Ok(r) => Err(format!("client {i}: status {}: {}", r.status, r.body)),
                    Err(e) => Err(format!("client {i}: {e}")),
                };
                answers.lock().expect("answers").push(answer);
                let (flag, changed) = &*released;
                let mut go = flag.lock().expect("release flag");
                while !*go {
                    go = changed.wait(go).expect("release flag");
                }
                drop(stream);
            }));
        }
        HeldClients {
            answers,
            released,
            threads,
        }
    }

    fn answered(&self) -> usize {
        self.answers.lock().expect("answers").len()
    }

    /// Lets every client close its connection once it has its answer.
    fn release(&self) {
        let (flag, changed) = &*self.released;
        *flag.lock().expect("release flag") = true;
        changed.notify_all();
    }

    /// Releases every client, waits for all to finish, and returns what each got.
    fn finish(mut self) -> Vec<Answer> {
        self.release();
        for thread in self.threads.drain(..) {
            thread.join().expect("a client thread panicked");
        }
        self.answers.lock().expect("answers").clone()
    }
}

impl Drop for HeldClients {
    fn drop(&mut self) {
        // A failed assertion must not leave threads blocked on the flag.
        self.release();
    }
}

/// Asserts that every client got a `Hello` from one of `pids`.
#[track_caller]
fn all_answered_by(answers: &[Answer], pids: &[u32]) {
    for answer in answers {
        match answer {
            Ok((pid, _)) => assert!(pids.contains(pid), "answered by {pid}, not {pids:?}"),
            Err(e) => panic!("every client must be answered in the end: {e}"),
        }
    }
}

/// Waits until process `pid` is back to `fds` open fds.
#[track_caller]
fn fds_return_to(pid: u32, fds: usize, who: &str) {
    let mut now = 0;
    assert!(
        wait_until(TIMEOUT, || {
            now = fd_count(pid);
            now <= fds
        }),
        "{who} (pid {pid}) should be back to {fds} fds, but holds {now}: {:#?}",
        fd_targets(&pid.to_string())
    );
}

// ---------------------------------------------------------------------------------------
// Out of fds
// ---------------------------------------------------------------------------------------

/// Chapter 6 with `ulimit -n 64`: each worker can hold about 58 connections. 200 clients
/// that hold theirs fill both workers; the next connection the master hands over cannot
/// be installed in the worker's fd table (the kernel drops it, MSG_CTRUNC). The worker
/// must reject it and live on, the master keep it for later and never give up, and every
/// client be served once the first ones close.
#[test]
fn ch06_lives_on_when_its_workers_run_out_of_fds() {
    let args = ["--port", "0", "--workers", "2", "--idle-timeout", "60"];
    let master = Chapter::start_limited("ch06-round-robin", &args, 64);
    let addr = master.wait_master_ready();
    let forked = master.wait_forked(2);
    let pids: Vec<u32> = forked.iter().map(|(_, pid)| *pid).collect();
    let before: Vec<usize> = std::iter::once(master.pid())
        .chain(pids.iter().copied())
        .map(fd_count)
        .collect();

    let clients = HeldClients::open(addr, 200);
    // Both workers fill up, and a hand-off fails for want of an fd.
    assert!(
        wait_until(TIMEOUT, || clients.answered() >= 100),
        "both workers should fill up with about 58 clients each; {} answered",
        clients.answered()
    );
    master.wait_for("rejected a connection", TIMEOUT);
    for pid in &pids {
        assert!(
            pid_alive(*pid),
            "worker {pid} must survive running out of fds"
        );
    }
    assert!(pid_alive(master.pid()), "the master must not exit");
    settles(
        master.pid(),
        "the master, with connections waiting for a worker",
    );
    for pid in &pids {
        settles(*pid, "a worker out of fds");
    }

    // As the first clients close, the waiting ones are handed over and served.
    let answers = clients.finish();
    assert_eq!(answers.len(), 200);
    all_answered_by(&answers, &pids);
    fds_return_to(master.pid(), before[0], "the master");
    for (pid, fds) in pids.iter().zip(&before[1..]) {
        fds_return_to(*pid, *fds, "a worker");
    }
    let response = get(addr);
    answered_by(&response, &forked);
}

/// A worker out of fds stops accepting until one frees: it neither spins on the
/// listener that stays readable nor logs every failed `accept`.
#[track_caller]
fn workers_wait_out_emfile(
    package: &str,
    workers: usize,
    addr_of: impl Fn(&Chapter) -> SocketAddr,
) {
    let n = workers.to_string();
    let args = ["--port", "0", "--workers", &n, "--idle-timeout", "60"];
    let master = Chapter::start_limited(package, &args, 64);
    let addr = addr_of(&master);
    let forked = master.wait_forked(workers);
    let pids: Vec<u32> = forked.iter().map(|(_, pid)| *pid).collect();

    let clients = HeldClients::open(addr, 80 * workers);
    master.wait_for("out of fds", TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || clients.answered() >= 50 * workers),
        "the workers should fill up first; {} answered",
        clients.answered()
    );
    for pid in &pids {
        settles(*pid, "a worker out of fds");
    }
    let complaints = master.count("out of fds");
    assert!(
        complaints <= 2 * workers,
        "one line per episode, not per attempt: {complaints} lines say 'out of fds'"
    );

    let answers = clients.finish();
    all_answered_by(&answers, &pids);
    master.wait_for("accepting again", TIMEOUT);
}

#[test]
fn ch01_a_worker_out_of_fds_waits_instead_of_spinning() {
    workers_wait_out_emfile("ch01-random-port-fork", 1, |master| {
        master.wait_ready(1)[0].addr
    });
}

#[test]
fn ch05_workers_out_of_fds_wait_instead_of_spinning() {
    workers_wait_out_emfile("ch05-handle-passing", 2, Chapter::wait_master_ready);
}

/// With a socket per worker, what the kernel hashes to a worker that is out of fds waits
/// in that worker's own queue until it has fds again: no other worker can take it.
#[test]
fn ch10_workers_out_of_fds_wait_instead_of_spinning() {
    workers_wait_out_emfile("ch10-reuseport", 2, Chapter::wait_master_ready);
}

/// Chapter 4's master out of fds: it stops accepting without spinning, says so once,
/// and accepts again once pairs close. A client it cannot pair for want of an fd hears
/// "too many connections" rather than nothing.
#[test]
fn ch04_the_proxy_out_of_fds_pauses_instead_of_spinning() {
    let args = [
        "--port",
        "0",
        "--workers",
        "2",
        "--idle-timeout",
        "60",
        "--max-connections",
        "1000",
    ];
    let master = Chapter::start_limited("ch04-proxy", &args, 64);
    let addr = master.wait_master_ready();
    let forked = master.wait_forked(2);
    let clients = HeldClients::open(addr, 80);
    master.wait_for("no new connections until one closes", TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || clients.answered() >= 20),
        "the proxy should pair clients until its fds run out; {} answered",
        clients.answered()
    );
    settles(master.pid(), "the proxy out of fds");
    let complaints = master.count("out of fds");
    assert_eq!(complaints, 1, "one line per shortage, not per attempt");

    let answers = clients.finish();
    for answer in &answers {
        match answer {
            Ok((pid, _)) => assert!(forked.iter().any(|(_, p)| p == pid)),
            Err(e) => assert!(
                e.contains("503") && e.contains("too many connections"),
                "a client may be refused for want of fds, but not dropped: {e}"
            ),
        }
    }
    // A new client is served; the accept that finds the queue empty after it ends the
    // shortage. (Without a new client, a listener re-armed on an empty queue has nothing
    // to say, and the shortage would end silently.)
    answered_by(&get(addr), &forked);
    master.wait_for("accepting again", TIMEOUT);
}

// ---------------------------------------------------------------------------------------
// Clients that never read
// ---------------------------------------------------------------------------------------

/// `n` pipelined `GET /` requests, all asking to keep the connection open.
fn pipelined(n: usize) -> Vec<u8> {
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(n)
}

/// Writes `data` to `stream` until it is all sent or a write blocks for a second (the
/// server has stopped reading). Returns how many bytes went out.
fn write_until_blocked(stream: &mut TcpStream, data: &[u8]) -> usize {
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("write timeout");
    let mut sent = 0;
    while sent < data.len() {
        let end = data.len().min(sent + 64 * 1024);
        match stream.write(&data[sent..end]) {
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("writing to the worker failed after {sent} bytes: {e}"),
        }
    }
    sent
}

/// Connects to `addr` with a small receive buffer (16 KiB, and no automatic growth): a
/// client that does not read then stops the server's writes after a few KiB, whatever
/// the machine's TCP buffer sizes.
fn connect_small_window(addr: SocketAddr) -> TcpStream {
    let stream = connect(addr).expect("connect");
    // Setting SO_RCVBUF also stops the kernel growing the buffer.
    socket2::SockRef::from(&stream)
        .set_recv_buffer_size(16 * 1024)
        .expect("setsockopt SO_RCVBUF");
    stream
}

/// Chapter 1 with one worker; returns the master, the worker's pid and its address.
fn one_worker(idle_timeout: &str) -> (Chapter, u32, SocketAddr) {
    let master = Chapter::start(
        "ch01-random-port-fork",
        &["--workers", "1", "--idle-timeout", idle_timeout],
    );
    let ready = master.wait_ready(1)[0];
    (master, ready.pid, ready.addr)
}

/// A client that pipelines requests and never reads their answers: the worker must stop
/// reading it once the unsent answers pass a bound, not buffer them all.
#[test]
fn a_client_that_never_reads_cannot_grow_a_worker() {
    let (_master, worker, addr) = one_worker("30");
    // A fresh worker's memory, once it has served a request.
    get(addr);
    let before = rss_bytes(worker);
    let mut stream = connect_small_window(addr);
    let sent = write_until_blocked(&mut stream, &pipelined(1_000_000));
    let grown = rss_bytes(worker).saturating_sub(before);
    assert!(
        grown < 8 << 20,
        "the worker grew by {} KiB for one client that sent {} KiB and read nothing",
        grown >> 10,
        sent >> 10
    );
    // The worker still serves everyone else.
    get(addr);
}

/// Exercise ch04-flush: chapter 4's proxy in front of a client that pipelines requests and
/// never reads the answers. Writing to it soon fails with EAGAIN: the proxy keeps what it
/// could not write, waits for epoll to say the socket takes more (it never does here), and
/// meanwhile holds no more than a chunk per direction, uses no CPU, and serves everyone else.
#[test]
fn ch04_a_client_that_never_reads_makes_the_proxy_wait_not_spin() {
    let master = Chapter::start(
        "ch04-proxy",
        &["--port", "0", "--workers", "1", "--idle-timeout", "30"],
    );
    let addr = master.wait_master_ready();
    let forked = master.wait_forked(1);
    answered_by(&get(addr), &forked);
    let before = rss_bytes(master.pid());
    let mut stream = connect_small_window(addr);
    let sent = write_until_blocked(&mut stream, &pipelined(1_000_000));
    let grown = rss_bytes(master.pid()).saturating_sub(before);
    assert!(
        grown < 8 << 20,
        "the proxy grew by {} KiB for one client that sent {} KiB and read nothing",
        grown >> 10,
        sent >> 10
    );
    settles(master.pid(), "the proxy with a client that does not read");
    answered_by(&get(addr), &forked);
    drop(stream);
}

/// A client that fills the worker's output, half-closes (or asks to close) and then never
/// reads: the worker must not spin on it, and must close it after the idle timeout. (This
/// is the recipe that used to spin a worker. With backpressure, the worker stops reading
/// long before the end, so the FIN or the close request waits behind unread requests; the
/// next test sends few enough requests that the FIN reaches the worker.)
#[track_caller]
fn never_reads_then(finish: impl FnOnce(&mut TcpStream)) {
    let (_master, worker, addr) = one_worker("5");
    let mut stream = connect_small_window(addr);
    write_until_blocked(&mut stream, &pipelined(60_000));
    finish(&mut stream);
    // The worker answers until the client's buffers are full, then has nothing to do.
    settles(worker, "a worker whose client does not read");
    assert_eq!(
        tcp_connections_of(worker),
        1,
        "the connection should still be open, short of the idle timeout"
    );
    // No progress for the idle timeout, reading or writing: the worker closes it.
    assert!(
        wait_until(TIMEOUT, || tcp_connections_of(worker) == 0),
        "the worker should close a connection that made no progress for the idle timeout"
    );
}

#[test]
fn a_client_that_half_closes_and_never_reads_costs_no_cpu() {
    never_reads_then(|stream| {
        stream.shutdown(Shutdown::Write).expect("half-close");
    });
}

/// Requests that all fit in the worker's receive buffer, then a FIN: the worker sees the
/// end of its input (its side of the connection is in CLOSE_WAIT) while it may still have
/// answers to write to a client that reads nothing. It must not spin on that end, and the
/// connection must go: closed once the answers are handed to the kernel, or at the idle
/// timeout if they never can be.
#[test]
fn a_client_that_half_closes_after_a_few_requests_is_closed_without_spinning() {
    let (_master, worker, addr) = one_worker("5");
    let mut stream = connect_small_window(addr);
    let requests = pipelined(2_000);
    assert_eq!(
        write_until_blocked(&mut stream, &requests),
        requests.len(),
        "2,000 requests (54 KB) should all reach the worker's receive buffer"
    );
    let port = stream.local_addr().expect("our address").port();
    stream.shutdown(Shutdown::Write).expect("half-close");
    let close_wait = || {
        tcp_sockets()
            .iter()
            .any(|s| s.remote.port() == port && s.state == TcpState::CloseWait)
    };
    // Either the worker's side is seen in CLOSE_WAIT, or it has already closed it.
    assert!(
        wait_until(TIMEOUT, || close_wait() || tcp_connections_of(worker) == 0),
        "the worker's side of the connection should see our FIN (CLOSE_WAIT)"
    );
    settles(
        worker,
        "a worker whose client half-closed and reads nothing",
    );
    assert!(
        wait_until(TIMEOUT, || tcp_connections_of(worker) == 0),
        "the worker should close the connection: its client has finished sending"
    );
}

#[test]
fn a_client_that_asks_to_close_then_sends_more_costs_no_cpu() {
    never_reads_then(|stream| {
        let mut tail = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec();
        tail.extend(pipelined(1000));
        write_until_blocked(stream, &tail);
    });
}

// ---------------------------------------------------------------------------------------
// A connection that arrives without its fd
// ---------------------------------------------------------------------------------------

/// Chapter 6's worker, the test playing its master, is sent `newconn` with six fds
/// attached where it has room for four: the kernel cuts the list short (MSG_CTRUNC). The
/// worker must close whatever did arrive, reject the connection, live on, say when it is
/// free again, and then take a real connection.
#[test]
fn ch06_a_worker_rejects_a_connection_whose_fd_was_cut_short() {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::io::IoSlice;
    use std::net::TcpListener;
    use std::os::fd::{AsFd, RawFd};

    let (worker, channel) = Chapter::start_worker("ch06-round-robin", &["--port", "0"]);
    assert_eq!(expect_message(&channel, "online").text, "online");
    let query = expect_message(&channel, "a queryServer");
    let key = query
        .text
        .strip_prefix("queryServer ")
        .unwrap_or_else(|| panic!("expected queryServer, got {}", query.text))
        .to_string();
    let fds_before = fd_count(worker.pid());

    let files: Vec<std::fs::File> = (0..6)
        .map(|_| std::fs::File::open("/dev/null").expect("/dev/null"))
        .collect();
    let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    sendmsg::<()>(
        channel.as_fd().as_raw_fd(),
        &[IoSlice::new(format!("newconn {key}").as_bytes())],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .expect("send newconn with six fds");
    drop(files);
    assert_eq!(
        expect_message(&channel, "the worker's answer").text,
        format!("rejected {key}")
    );
    assert_eq!(
        fd_count(worker.pid()),
        fds_before,
        "the fds that did arrive must be closed: {:?}",
        fd_targets(&worker.pid().to_string())
    );
    assert_eq!(
        expect_message(&channel, "free, once the worker may take connections again").text,
        "free"
    );

    // A real connection now: accepted and served.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let mut client = connect(listener.local_addr().expect("addr")).expect("connect");
    let (conn, _) = listener.accept().expect("accept");
    channel
        .send_with_fd(&format!("newconn {key}"), conn.as_fd())
        .expect("send a real connection");
    drop(conn);
    assert_eq!(
        expect_message(&channel, "the worker's answer").text,
        format!("accepted {key}")
    );
    write_request(&mut client, "/", false).expect("send a request");
    let response = read_response(&mut client).expect("the worker's answer");
    assert_eq!(
        parse_hello(&response.body),
        Some((worker.pid(), 1)),
        "{response:?}"
    );
}

/// A worker with nothing to do sleeps: no connection, no timer, so no wake-up until a
/// client or a message comes. (Its loop sweeps for stalled connections only while it has
/// some.) A busy loop, or a timer left running, shows as wake-ups counted by the kernel.
#[test]
fn an_idle_worker_does_not_wake_up() {
    // An idle timeout of 2 s: a loop that swept regardless would wake every 500 ms.
    let (_master, worker, addr) = one_worker("2");
    // Served once, on a connection closed after the answer: the worker has nothing left.
    get(addr);
    let before = voluntary_switches(worker);
    // A window to count in, not a wait for an event.
    std::thread::sleep(Duration::from_secs(3));
    let woken = voluntary_switches(worker) - before;
    assert!(
        woken <= 2,
        "a worker with no connection and nothing to do was woken {woken} times in 3 s"
    );
    // And it still answers.
    assert!(get(addr).body.contains("Hello world by"));
}

/// A client that pipelines many requests and reads the answers slowly. The worker stops
/// reading while 64 KiB of answers wait unsent; once the client takes them, the requests
/// it had already read must be answered too, although no new byte arrives to wake it.
/// Whether a stream ends in that state depends on the sizes TCP picks for a new
/// connection, so the test runs one stream on each of several new connections.
#[test]
fn answers_held_back_by_a_slow_reader_all_go_out_when_it_reads() {
    let (_master, _worker, addr) = one_worker("30");
    // Enough answers (4.4 MB) to fill the worker's socket buffer, which TCP sizes at a
    // few MB on loopback: with fewer, the worker never has to hold answers back.
    let n = 40_000;
    for connection in 1..=6 {
        let mut stream = connect_small_window(addr);
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        write_request(&mut stream, "/", true).expect("the first request");
        let first = read_response(&mut stream).expect("the first answer");
        let answer = shared::http::Response::ok(first.body.clone()).to_bytes(true);
        let mut writer = stream.try_clone().expect("a second handle for the writer");
        writer
            .set_write_timeout(Some(TIMEOUT))
            .expect("write timeout");
        let sending = std::thread::spawn(move || writer.write_all(&pipelined(n)));
        let mut answers = vec![0u8; n * answer.len()];
        if let Err(e) = stream.read_exact(&mut answers) {
            panic!("connection {connection}: the answers to {n} pipelined requests stopped coming: {e}");
        }
        sending
            .join()
            .expect("the writer panicked")
            .expect("sending the requests");
        assert!(
            answers.chunks(answer.len()).all(|a| a == answer),
            "connection {connection}: an answer differs from {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}
