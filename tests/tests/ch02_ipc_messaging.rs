//! Chapter 2: master and workers talk over a socketpair the worker finds through
//! `CLUSTER_CHANNEL_FD`. Most tests play the master themselves, so they can push
//! thousands of messages, large ones and file descriptors through a real worker.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use ch02_ipc_messaging::channel::Channel;
use chapter_tests::*;

const CH02: &str = "ch02-ipc-messaging";

/// Starts the binary as worker 1 with the test as its master, and reads its first
/// message, `<port> ready`. Returns the worker, the channel and the worker's ready line.
fn start_worker() -> (Chapter, Channel, Ready) {
    let (worker, channel) = Chapter::start_worker(CH02, &["--port", "0", "--workers", "1"]);
    let ready = worker.wait_ready(1)[0];
    let hello = expect_message(&channel, "'<port> ready'");
    assert_eq!(
        hello.text,
        format!("{} ready", ready.addr.port()),
        "the worker's first message names the port of its ready line"
    );
    (worker, channel, ready)
}

/// Sends `echo <payload>` and checks the reply is exactly the same text.
fn echo(channel: &Channel, payload: &str) {
    let sent = format!("echo {payload}");
    channel.send(&sent).expect("send an echo");
    let reply = expect_message(channel, "an echo");
    assert!(reply.text == sent, "the echo came back changed");
}

#[test]
fn master_and_workers_talk_both_ways() {
    let master = Chapter::start(CH02, &["--port", "0", "--workers", "2"]);
    let ready = master.wait_ready(2);
    for worker in &ready {
        let id = worker.id;
        let port = worker.addr.port();
        // Worker to master: the master logs what the worker said, port included.
        master.wait_for(&format!("message from worker {id}: {port} ready"), TIMEOUT);
        // Master to worker: the worker logs the master's answer.
        master.wait_for_line(
            &format!("worker {id} logging 'message from master: ok'"),
            TIMEOUT,
            |l| {
                parse_speaker(l) == Some((id, worker.pid)) && l.ends_with("message from master: ok")
            },
        );
        assert_eq!(get(worker.addr).body, hello_body(worker.pid, id));
    }
}

#[test]
fn ten_thousand_messages_come_back_intact_and_in_order() {
    let (_worker, channel, _) = start_worker();
    const N: usize = 10_000;
    // Send on one thread while this one reads: the worker answers each message as it
    // comes, and if nobody read the answers both sides would block on full buffers.
    let sender = channel.clone();
    let sending = std::thread::spawn(move || {
        for i in 0..N {
            if let Err(e) = sender.send(&format!("echo {i}")) {
                return Err(format!("sending message {i} failed: {e}"));
            }
        }
        Ok(())
    });
    for i in 0..N {
        let reply = recv_timeout(&channel, TIMEOUT)
            .unwrap_or_else(|e| panic!("reply {i} of {N} did not come: {e}"));
        assert_eq!(reply.text, format!("echo {i}"), "reply {i} of {N}");
    }
    sending
        .join()
        .expect("the sending thread panicked")
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_64_kib_message_comes_back_byte_for_byte() {
    let (_worker, channel, _) = start_worker();
    // One-, two-, three- and four-byte UTF-8 characters in a pattern that does not
    // repeat at any short period, so a lost, doubled or shifted chunk shows.
    let alphabet = [
        'a', 'Z', '7', ' ', 'é', 'ß', 'Ж', '中', '文', '€', '🦀', '🚀',
    ];
    let mut payload = String::new();
    let mut i = 0usize;
    while payload.len() < 64 * 1024 {
        payload.push(alphabet[(i * 7 + i / 13) % alphabet.len()]);
        i += 1;
    }
    let sent = format!("echo {payload}");
    channel.send(&sent).expect("send 64 KiB");
    let reply = expect_message(&channel, "the 64 KiB echo");
    assert_eq!(reply.text.len(), sent.len(), "the echo's length");
    assert!(
        reply.text.as_bytes() == sent.as_bytes(),
        "the 64 KiB echo came back with different bytes"
    );
}

#[test]
fn a_worker_exits_when_its_master_closes_the_channel() {
    let (mut worker, channel, _) = start_worker();
    echo(&channel, "still there?");
    drop(channel);
    let status = worker.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(0),
        "the worker should exit cleanly when its channel closes: {}",
        describe(status)
    );
    worker.wait_for("IPC channel closed", TIMEOUT);
}

#[test]
fn fds_sent_unasked_are_closed_not_leaked() {
    let (worker, channel, _) = start_worker();
    echo(&channel, "baseline");
    let pid = worker.pid().to_string();
    let baseline = fd_targets(&pid);
    for i in 0..100 {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        channel
            .send_with_fd(&format!("echo fd {i}"), reader.as_fd())
            .expect("send a message with an fd");
        // Our copies close here; only the worker's copy of the read end may remain.
        drop((reader, writer));
        let reply = expect_message(&channel, "the echo of a message with an fd");
        assert_eq!(reply.text, format!("echo fd {i}"));
        assert!(reply.fd.is_none(), "the worker sent no fd back");
    }
    // The worker closes an fd once it has handled its message, just after replying.
    // Messages are handled in order, so once this echo is back all 100 have been dealt
    // with, and any fd kept would still be open.
    echo(&channel, "after");
    let after = fd_targets(&pid);
    assert_eq!(
        after.len(),
        baseline.len(),
        "the worker's fds before 100 unasked fds: {baseline:?}\nand after: {after:?}"
    );
    // It says so for each one.
    worker.wait_for_n("unasked; closing it", 100, TIMEOUT);
    echo(&channel, "still serving");
}

#[test]
fn an_fd_sent_over_a_channel_arrives_usable() {
    let (master_end, worker_end) = Channel::pair().expect("a channel pair");
    let worker_end = Channel::from_fd(worker_end);
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let addr = listener.local_addr().expect("its address");
    master_end
        .send_with_fd("take this listener", listener.as_fd())
        .expect("send the listener");
    // The sender may close its copy: the socket lives on in the message.
    drop(listener);
    let message = recv_timeout(&worker_end, TIMEOUT).expect("the message with the fd");
    assert_eq!(message.text, "take this listener");
    let received = TcpListener::from(message.fd.expect("an fd came with it"));
    assert_eq!(received.local_addr().expect("its address"), addr);

    let mut client = TcpStream::connect(addr).expect("connect to the passed listener");
    let (mut served, _) = received.accept().expect("accept through the received fd");
    client.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    served
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    served
        .read_exact(&mut buf)
        .expect("read what the client wrote");
    assert_eq!(&buf, b"ping");
}

#[test]
fn a_thousand_fd_round_trips_leak_nothing() {
    let (a, b) = Channel::pair().expect("a channel pair");
    let b = Channel::from_fd(b);
    let (reader, mut writer) = std::io::pipe().expect("a pipe");
    // Count only fds on this pipe: other tests in this process open and close fds of
    // their own at the same time, but none of them can open this pipe.
    let pipe = std::fs::read_link(format!("/proc/self/fd/{}", reader.as_raw_fd()))
        .expect("readlink our pipe")
        .to_string_lossy()
        .into_owned();
    assert!(pipe.starts_with("pipe:["), "{pipe}");
    let open_on_pipe = || {
        fd_targets("self")
            .iter()
            .filter(|(_, target)| *target == pipe)
            .count()
    };
    let before = open_on_pipe();
    assert_eq!(before, 2, "the pipe's two ends");

    for i in 0..1000 {
        a.send_with_fd(&format!("round {i}"), reader.as_fd())
            .expect("send the pipe's read end");
        let message = recv_timeout(&b, TIMEOUT).expect("the message");
        assert_eq!(message.text, format!("round {i}"));
        let mut received = std::fs::File::from(message.fd.expect("the fd came along"));
        // The received fd reads the same pipe.
        writer.write_all(&[i as u8]).expect("write to the pipe");
        let mut byte = [0u8; 1];
        received
            .read_exact(&mut byte)
            .expect("read through the received fd");
        assert_eq!(byte[0], i as u8);
        // `received` (and with it the message's fd) is closed here.
    }
    assert_eq!(
        open_on_pipe(),
        before,
        "fds on our pipe before and after 1000 round trips"
    );
}

/// Exercise ch02-served: the worker answers `served?` with how many requests it served,
/// which is not how many connections it accepted: three requests come on one kept-alive
/// connection, a fourth on a connection of its own.
#[test]
fn worker_counts_what_it_served() {
    let (worker, channel, ready) = start_worker();
    let mut stream = connect(ready.addr).expect("connect to the worker");
    for round in 1..=3 {
        write_request(&mut stream, "/", true).expect("send a request");
        let response = read_response(&mut stream)
            .unwrap_or_else(|e| panic!("response {round} on a kept-alive connection: {e}"));
        assert_eq!(response.body, hello_body(worker.pid(), 1));
    }
    assert_eq!(get(ready.addr).body, hello_body(worker.pid(), 1));
    channel.send("served?").expect("ask the worker");
    let reply = expect_message(&channel, "'served <n>'");
    assert_eq!(
        reply.text, "served 4",
        "4 requests on 2 connections were served"
    );
}

/// Each end of a channel is held by one process: the master closes its copy of the
/// worker's end once the worker is started, and the worker never inherits the master's.
/// Were the master to keep both, a worker's exit would never read as end-of-file.
#[test]
fn each_channel_end_is_held_by_one_process() {
    let master = Chapter::start(CH02, &["--port", "0", "--workers", "2"]);
    let ready = master.wait_ready(2);
    // The master logs a fork once `spawn_worker` has returned, by which time it has
    // closed its copy; a worker can be ready before that.
    master.wait_forked(2);
    let masters = socket_inodes(master.pid());
    for worker in &ready {
        let both: Vec<u64> = socket_inodes(worker.pid)
            .intersection(&masters)
            .copied()
            .collect();
        assert!(
            both.is_empty(),
            "the master (pid {}) and worker {} (pid {}) both hold the socket(s) {both:?}: \
             did the master keep its copy of the worker's end of the channel?\n\
             master: {:#?}\nworker: {:#?}",
            master.pid(),
            worker.id,
            worker.pid,
            fd_targets(&master.pid().to_string()),
            fd_targets(&worker.pid.to_string())
        );
    }
}

/// Packets our own `Channel::send` would never produce (not UTF-8, empty) are reported by
/// the worker and dropped; the worker keeps serving its channel.
#[test]
fn malformed_messages_are_reported_and_the_worker_carries_on() {
    let (worker, channel, _) = start_worker();
    for bad in [&b"\xff\xfe not text"[..], &b""[..]] {
        nix::sys::socket::send(
            channel.as_fd().as_raw_fd(),
            bad,
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("send a raw packet");
    }
    worker.wait_for(
        "a malformed IPC message was dropped: an empty message",
        TIMEOUT,
    );
    assert!(
        worker
            .lines()
            .iter()
            .any(|l| l.contains("a malformed IPC message was dropped") && l.contains("not UTF-8")),
        "the worker should report the non-UTF-8 packet: {:#?}",
        worker.lines()
    );
    // Still alive, still answering.
    echo(&channel, "still here");
    assert!(
        pid_alive(worker.pid()),
        "the worker died of a malformed message"
    );
}
