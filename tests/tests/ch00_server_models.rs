//! Chapter 0, the prologue: one server, three models (a process per connection, a thread
//! per connection, one event loop), each answering like every later chapter.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chapter_tests::*;
use nix::sys::signal::Signal;

const CH00: &str = "ch00-server-models";
const MODELS: [&str; 3] = ["process", "thread", "event"];

/// Starts one model on a free port and waits for its ready line.
fn start(model: &str, extra: &[&str]) -> (Chapter, SocketAddr) {
    let mut args = vec!["--model", model, "--port", "0"];
    args.extend_from_slice(extra);
    let server = Chapter::start(CH00, &args);
    let addr = server.wait_master_ready();
    (server, addr)
}

/// Four requests on one kept-alive connection; returns who answered each `(pid, id)`.
fn four_on_one_connection(addr: SocketAddr) -> Vec<(u32, u32)> {
    let mut stream = connect(addr).expect("connect to the server");
    (0..4)
        .map(|round| {
            write_request(&mut stream, "/", round < 3).expect("send a request");
            let response = read_response(&mut stream)
                .unwrap_or_else(|e| panic!("answer {round} on a kept-alive connection: {e}"));
            assert_eq!(response.status, 200, "{response:?}");
            parse_hello(&response.body)
                .unwrap_or_else(|| panic!("not a hello: {:?}", response.body))
        })
        .collect()
}

#[test]
fn each_model_answers_200_requests_from_50_concurrent_clients() {
    for model in MODELS {
        let (server, addr) = start(model, &[]);
        let answers: Vec<Vec<(u32, u32)>> = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..50)
                .map(|_| scope.spawn(move || four_on_one_connection(addr)))
                .collect();
            clients
                .into_iter()
                .map(|c| c.join().expect("a client thread"))
                .collect()
        });
        assert_eq!(answers.iter().map(Vec::len).sum::<usize>(), 200);
        // One connection is served by one worker from start to end.
        for connection in &answers {
            assert!(
                connection.iter().all(|who| *who == connection[0]),
                "{model}: one connection, several workers: {connection:?}"
            );
        }
        let pids: BTreeSet<u32> = answers.iter().map(|c| c[0].0).collect();
        let ids: BTreeSet<u32> = answers.iter().map(|c| c[0].1).collect();
        match model {
            // A child process per connection: 50 pids, none of them the server's.
            "process" => {
                assert_eq!(pids.len(), 50, "process: a pid per connection: {pids:?}");
                assert!(!pids.contains(&server.pid()), "the parent served a client");
                assert_eq!(ids.len(), 50, "process: an id per connection: {ids:?}");
            }
            // A thread per connection: one pid, 50 connection numbers.
            "thread" => {
                assert_eq!(pids, BTreeSet::from([server.pid()]));
                assert_eq!(ids.len(), 50, "thread: an id per connection: {ids:?}");
            }
            // One loop serves everyone: one pid, worker 0.
            _ => {
                assert_eq!(pids, BTreeSet::from([server.pid()]));
                assert_eq!(ids, BTreeSet::from([0]));
            }
        }
    }
}

#[test]
fn the_process_model_leaves_no_zombie() {
    let (server, addr) = start("process", &[]);
    std::thread::scope(|scope| {
        for _ in 0..20 {
            scope.spawn(move || {
                for _ in 0..5 {
                    let response = get(addr);
                    assert_eq!(response.status, 200, "{response:?}");
                }
            });
        }
    });
    // Every client has closed its connection: every child has exited, and the parent
    // must have collected each one's exit status, leaving nothing in /proc.
    let mut left = Vec::new();
    let gone = wait_until(TIMEOUT, || {
        left = child_processes(server.pid());
        left.is_empty()
    });
    let zombies: Vec<u32> = left.iter().filter(|c| c.defunct).map(|c| c.pid).collect();
    assert!(
        gone,
        "children of the server still there: {left:?} (zombies: {zombies:?})"
    );
    assert_eq!(get(addr).status, 200, "the server still serves");
}

#[test]
fn a_malformed_request_gets_400_and_the_connection_closes() {
    for model in MODELS {
        let (_server, addr) = start(model, &[]);
        let mut stream = connect(addr).expect("connect to the server");
        stream.write_all(b"hello\r\n\r\n").expect("send garbage");
        let response = read_response(&mut stream).expect("an answer to garbage");
        assert_eq!(response.status, 400, "{model}: {response:?}");
        wait_closed(&mut stream)
            .unwrap_or_else(|e| panic!("{model}: the connection should close after a 400: {e}"));
        assert_eq!(get(addr).status, 200, "{model}: the server still serves");
    }
}

#[test]
fn ctrl_c_stops_the_server_and_leaves_no_process_behind() {
    for model in MODELS {
        let (mut server, addr) = start(model, &[]);
        // Clients that stay connected: in the process model, three live children.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut stream = connect(addr).expect("connect to the server");
            write_request(&mut stream, "/", true).expect("send a request");
            read_response(&mut stream).expect("an answer");
            held.push(stream);
        }
        let kids = children_of(server.pid());
        if model == "process" {
            assert_eq!(kids.len(), 3, "a child per held connection: {kids:?}");
        }
        server.signal(Signal::SIGINT);
        let status = server.wait_exit(TIMEOUT);
        match model {
            // The parent stops and reaps its children itself, then exits 0.
            "process" => {
                assert_eq!(status.code(), Some(0), "process: {status}");
                server.wait_for("every connection process has exited", TIMEOUT);
            }
            // No child to stop: Ctrl-C ends the process, as it ends `node server.js`,
            // once it has said so.
            _ => {
                assert_eq!(describe(status), "signal 2", "{model}");
                server.wait_for("Ctrl-C (SIGINT): the server stops", TIMEOUT);
            }
        }
        for kid in kids {
            assert!(
                wait_until(TIMEOUT, || !pid_alive(kid)),
                "{model}: child {kid} outlived Ctrl-C"
            );
        }
        for mut stream in held {
            wait_closed(&mut stream).expect("a held connection closes with the server");
        }
    }
}

#[test]
fn a_silent_client_is_dropped_after_the_idle_timeout() {
    for model in MODELS {
        let (_server, addr) = start(model, &["--idle-timeout", "0.3"]);
        let start = Instant::now();
        let mut stream = connect(addr).expect("connect to the server");
        wait_closed(&mut stream)
            .unwrap_or_else(|e| panic!("{model}: a silent client should be dropped: {e}"));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(4),
            "{model}: dropped after {waited:?}, expected about 0.3 s"
        );
    }
}

#[test]
fn at_max_clients_the_next_client_waits_its_turn() {
    for model in ["process", "thread"] {
        let (_server, addr) = start(model, &["--max-clients", "2"]);
        let mut first = connect(addr).expect("connect");
        let mut second = connect(addr).expect("connect");
        for stream in [&mut first, &mut second] {
            write_request(stream, "/", true).expect("send");
            read_response(stream).expect("an answer below the cap");
        }
        // The third is accepted by the kernel, but no worker takes it yet.
        let mut third = connect(addr).expect("connect");
        write_request(&mut third, "/", false).expect("send");
        third
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("set a timeout");
        let early = read_response(&mut third);
        assert!(
            matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "{model}: a third client was served past --max-clients 2: {early:?}"
        );
        // One client leaves: the third gets its turn.
        drop(first);
        third
            .set_read_timeout(Some(TIMEOUT))
            .expect("set a timeout");
        let response = read_response(&mut third).expect("an answer once a slot is free");
        assert_eq!(response.status, 200, "{model}: {response:?}");
    }
}

/// Exercise ch00-reap: children that end together are all collected at the next look.
/// The server is stopped while five of its children end (their clients close): the five
/// SIGCHLDs merge into one, as signals of a kind do while one is pending. Once the server
/// runs again and has served one more client, none of the five may be left.
#[test]
fn children_that_end_together_are_all_collected_at_once() {
    let (server, addr) = start("process", &[]);
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = connect(addr).expect("connect to the server");
        write_request(&mut stream, "/", true).expect("send a request");
        read_response(&mut stream).expect("an answer");
        held.push(stream);
    }
    let five = children_of(server.pid());
    assert_eq!(five.len(), 5, "a child per held client: {five:?}");
    pause(server.pid());
    drop(held);
    assert!(
        wait_until(TIMEOUT, || five.iter().all(|pid| !pid_alive(*pid))),
        "the five children should end once their clients close"
    );
    resume(server.pid());
    // Serving this client, the server has looked at least once since it woke up.
    assert_eq!(get(addr).status, 200);
    let left: Vec<u32> = children_of(server.pid())
        .into_iter()
        .filter(|pid| five.contains(pid))
        .collect();
    assert!(
        left.is_empty(),
        "children that ended together are still there, zombies: {left:?}"
    );
}

/// Exercise ch00-reap: a child killed by a signal is collected like one that exited, and
/// its place under `--max-clients` is free again. The only child of a server that takes
/// one client at a time is killed with SIGKILL while it holds its client: the next client
/// must be served.
#[test]
fn a_child_killed_by_a_signal_frees_its_place() {
    let (server, addr) = start("process", &["--max-clients", "1"]);
    let mut first = connect(addr).expect("connect");
    write_request(&mut first, "/", true).expect("send");
    read_response(&mut first).expect("an answer");
    let kids = child_processes(server.pid());
    let [ChildProcess {
        pid: child,
        defunct: false,
    }] = kids[..]
    else {
        panic!("one child, serving the first client: {kids:?}")
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child as i32), Signal::SIGKILL)
        .expect("kill -9 the child");
    let mut second = connect(addr).expect("connect");
    write_request(&mut second, "/", false).expect("send");
    let response = read_response(&mut second)
        .unwrap_or_else(|e| panic!("the killed child's place should be free: {e}"));
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn options_that_do_not_apply_are_refused_clearly() {
    let (status, _, stderr) = run_to_end(CH00, &["--workers", "2", "--port", "0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: --workers does not apply here: each model is one server"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage:"), "the usage follows:\n{stderr}");

    // Checked with the other arguments: one line, exit 2, nothing bound.
    let (status, _, stderr) = run_to_end(CH00, &["--model", "fork", "--port", "0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'fork' for '--model <MODEL>'"), "{stderr}");
    assert!(
        stderr.contains("[possible values: process, thread, event]"),
        "{stderr}"
    );

    let args = ["--model", "event", "--max-clients", "5", "--port", "0"];
    let (status, _, stderr) = run_to_end(CH00, &args);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("process and thread models only"),
        "{stderr}"
    );

    let (status, stdout, _) = run_to_end(CH00, &["--help"]);
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("--model <MODEL>") && stdout.contains("--max-clients <N>"));
    assert!(
        !stdout.contains("--workers <"),
        "--help offers no option that is refused:\n{stdout}"
    );
}
