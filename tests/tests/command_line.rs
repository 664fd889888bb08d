//! What a learner may type, or set by hand: every bad value gets one clear line that names
//! the option and the value, and exit code 2 before any worker is forked; a worker's
//! environment set by hand is refused in words that name the variable.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use ch01_random_port_fork::spawn::WORKER_ID_VAR;
use ch02_ipc_messaging::worker::CHANNEL_FD_VAR;
use chapter_tests::*;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Runs `package` with `args`, expects exit code 2 with `expected` in the first line of its
/// stderr, and no worker forked.
#[track_caller]
fn refused(package: &str, args: &[&str], expected: &str) {
    // `--port 0` first: if the check ever stopped refusing, no fixed port would be taken.
    let args = [&["--port", "0"], args].concat();
    let args = args.as_slice();
    let (status, stdout, stderr) = run_to_end(package, args);
    assert_eq!(
        status.code(),
        Some(2),
        "{package} {args:?} should exit 2, but {}\nstdout: {stdout}\nstderr: {stderr}",
        describe(status)
    );
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(expected),
        "{package} {args:?}: stderr should start with one line saying '{expected}':\n{stderr}"
    );
    assert!(
        stderr.contains("--help"),
        "the error says where to read more:\n{stderr}"
    );
    assert!(
        !stdout.contains("forked worker"),
        "nothing may be forked before the arguments are checked:\n{stdout}"
    );
}

#[test]
fn too_many_workers_are_refused_with_the_limit() {
    refused(
        "ch01-random-port-fork",
        &["--workers", "100000"],
        "'100000' for '--workers <N>': 100000 means 100000 workers; this tutorial starts at \
         most 128",
    );
    refused("ch06-round-robin", &["--workers", "5000"], "at most 128");
    refused("ch10-reuseport", &["--workers", "129"], "at most 128");
    let (_, help, _) = run_to_end("ch01-random-port-fork", &["--help"]);
    assert!(help.contains("at most"), "--help states the limit:\n{help}");
}

#[test]
fn on_off_options_take_only_on_or_off() {
    refused(
        "ch05-handle-passing",
        &["--exclusive", "maybe"],
        "'maybe' for '--exclusive <on|off>'",
    );
    refused(
        "ch03-eaddrinuse",
        &["--reuseport", "yes"],
        "'yes' for '--reuseport <on|off>'",
    );
    // The values it takes follow, once.
    let (_, _, stderr) = run_to_end("ch03-eaddrinuse", &["--port", "0", "--reuseport", "yes"]);
    assert_eq!(
        stderr.matches("[possible values: on, off]").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn chapter_options_are_checked_before_any_fork() {
    refused(
        "ch04-proxy",
        &["--port", "0", "--max-connections", "abc"],
        "'abc' for '--max-connections <N|auto>'",
    );
    refused(
        "ch04-proxy",
        &["--port", "0", "--max-connections", "0"],
        "'0' for '--max-connections <N|auto>': 0 would refuse every client",
    );
    refused(
        "ch06-round-robin",
        &["--port", "0", "--workers", "2", "--weights", "1,2,3"],
        "--weights gives 3 weights for 2 workers",
    );
    refused(
        "ch06-round-robin",
        &["--port", "0", "--weights", "2,x"],
        "'2,x' for '--weights <W1,W2,...>'",
    );
}

/// The supervision options of chapters 7 and 8, and chapter 8's heartbeat.
#[test]
fn keeping_options_are_checked_before_any_fork() {
    let bad: [(&str, &[&str], &str); 10] = [
        (
            "ch07-auto-restart",
            &["--kill-timeout", "0"],
            "'0' for '--kill-timeout <SECS>': must be above 0",
        ),
        (
            "ch07-auto-restart",
            &["--kill-timeout", "soon"],
            "'soon' for '--kill-timeout <SECS>'",
        ),
        (
            "ch07-auto-restart",
            &["--min-uptime", "-1"],
            "'-1' for '--min-uptime <SECS>'",
        ),
        (
            "ch07-auto-restart",
            &["--restart-delay", "20"],
            "'20' for '--restart-delay <SECS>': above the wait's cap of 15 s",
        ),
        (
            "ch07-auto-restart",
            &["--max-restarts", "5000"],
            "'5000' for '--max-restarts <N>': 5000 is not in 0..=1000",
        ),
        (
            "ch07-auto-restart",
            &["--max-rss", "lots"],
            "'lots' for '--max-rss <MB>'",
        ),
        (
            "ch07-auto-restart",
            &["--max-rss", "2000000"],
            "'2000000' for '--max-rss <MB>': 2000000 is not in 0..=1048576",
        ),
        (
            "ch07-auto-restart",
            &["--crash-at-start", "-2"],
            "'-2' for '--crash-at-start <K>'",
        ),
        (
            "ch08-heartbeat",
            &["--heartbeat-ms", "5"],
            "'5' for '--heartbeat-ms <MS>': 5 is not in 10..=3600000",
        ),
        (
            "ch08-heartbeat",
            &["--pong-from-thread", "yes"],
            "'yes' for '--pong-from-thread <on|off>'",
        ),
    ];
    for (package, args, expected) in bad {
        let mut words = vec!["--port", "0"];
        words.extend_from_slice(args);
        refused(package, &words, expected);
    }
    let (_, help, _) = run_to_end("ch07-auto-restart", &["--help"]);
    for option in [
        "--kill-timeout",
        "kill_timeout",
        "--max-rss",
        "max_memory_restart",
    ] {
        assert!(help.contains(option), "--help names {option}:\n{help}");
    }
}

/// Chapter 3 hands one port to every worker on purpose: the hint must not tell someone
/// who asked for `--port 0` to try `--port 0`.
#[test]
fn eaddrinuse_in_chapter_3_does_not_suggest_port_0() {
    let master = Chapter::start("ch03-eaddrinuse", &["--port", "0", "--workers", "2"]);
    let line = master.wait_for("EADDRINUSE", TIMEOUT);
    assert!(
        !line.contains("--port 0"),
        "the hint is wrong for chapter 3: {line}"
    );
    master.wait_for("failed to bind", TIMEOUT);
}

/// Ctrl-C while the master is still forking: it stops forking, stops the workers it has,
/// and leaves nothing behind.
#[test]
fn ctrl_c_during_start_up_is_honoured() {
    let mut master = Chapter::start("ch02-ipc-messaging", &["--workers", "64"]);
    master.wait_forked(1);
    master.signal(Signal::SIGINT);
    let status = master.wait_exit(TIMEOUT);
    assert!(
        matches!(status.code(), Some(0 | 130)),
        "the master should exit 0 or 130 after Ctrl-C, but {}",
        describe(status)
    );
    let group = Pid::from_raw(master.pid() as i32);
    assert!(
        wait_until(TIMEOUT, || killpg(group, None).is_err()),
        "every worker must be gone after Ctrl-C during start-up"
    );
}

// ---------------------------------------------------------------------------------------
// A worker's environment, set by hand
// ---------------------------------------------------------------------------------------

/// Starts `package` as a worker with `vars` and `fd` inherited as fd `fd`'s own number;
/// expects it to exit non-zero within a few seconds, naming `var` in what it prints.
#[track_caller]
fn worker_refuses(package: &str, vars: &[(&str, String)], inherit: Option<OwnedFd>, var: &str) {
    let mut command = Command::new(binary(package));
    command.args(["--port", "0"]);
    for (name, value) in vars {
        command.env(name, value);
    }
    if let Some(fd) = &inherit {
        let raw = fd.as_raw_fd();
        // SAFETY: runs between fork and exec; fcntl is async-signal-safe and nothing is
        // allocated. It lets the worker inherit this one fd.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut worker = Chapter::from_command(&format!("{package} (hand-made worker)"), command);
    drop(inherit);
    let status = worker.wait_exit(Duration::from_secs(5));
    assert!(
        !status.success(),
        "a worker with a bad environment must fail, but {}",
        describe(status)
    );
    let said = worker.wait_output_closed(TIMEOUT).join("\n")
        + &worker.wait_stderr_closed(TIMEOUT).join("\n");
    assert!(
        said.contains(var),
        "the error should name {var}:\nstdout+stderr: {said}"
    );
}

#[test]
fn a_worker_id_that_is_not_a_number_is_refused() {
    worker_refuses(
        "ch01-random-port-fork",
        &[(WORKER_ID_VAR, "abc".into())],
        None,
        WORKER_ID_VAR,
    );
}

#[test]
fn a_channel_fd_that_is_a_pipe_is_refused() {
    // Close-on-exec: other tests start processes in parallel, which must not inherit it.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let fd = read.as_raw_fd().to_string();
    worker_refuses(
        "ch02-ipc-messaging",
        &[(WORKER_ID_VAR, "1".into()), (CHANNEL_FD_VAR, fd)],
        Some(read),
        CHANNEL_FD_VAR,
    );
    drop(write);
}

#[test]
fn a_channel_fd_that_is_dev_null_is_refused() {
    let null: OwnedFd = std::fs::File::open("/dev/null").expect("/dev/null").into();
    let fd = null.as_raw_fd().to_string();
    worker_refuses(
        "ch06-round-robin",
        &[(WORKER_ID_VAR, "1".into()), (CHANNEL_FD_VAR, fd)],
        Some(null),
        CHANNEL_FD_VAR,
    );
}

#[test]
fn a_channel_fd_that_is_not_open_is_refused() {
    worker_refuses(
        "ch05-handle-passing",
        &[(WORKER_ID_VAR, "1".into()), (CHANNEL_FD_VAR, "999".into())],
        None,
        CHANNEL_FD_VAR,
    );
}

/// Chapter 9's reload options.
#[test]
fn reload_options_are_checked_before_any_fork() {
    let bad: [(&[&str], &str); 4] = [
        (
            &["--listen-timeout", "0"],
            "'0' for '--listen-timeout <SECS>': must be above 0",
        ),
        (
            &["--listen-timeout", "4000"],
            "'4000' for '--listen-timeout <SECS>': must be above 0 and at most 3600",
        ),
        (
            &["--listen-timeout", "soon"],
            "'soon' for '--listen-timeout <SECS>'",
        ),
        (
            &["--crash-from-start", "-1"],
            "'-1' for '--crash-from-start <N>'",
        ),
    ];
    for (args, expected) in bad {
        let mut words = vec!["--port", "0"];
        words.extend_from_slice(args);
        refused("ch09-rolling-reload", &words, expected);
    }
    let (_, help, _) = run_to_end("ch09-rolling-reload", &["--help"]);
    for option in ["--listen-timeout", "listen_timeout", "--crash-from-start"] {
        assert!(help.contains(option), "--help names {option}:\n{help}");
    }
}

/// Chapter 10's master restarts workers by chapter 7's rules, and takes its options.
#[test]
fn restart_options_of_chapter_10_are_listed_and_checked() {
    let (_, help, _) = run_to_end("ch10-reuseport", &["--help"]);
    for option in ["--restart-delay", "--min-uptime", "--max-restarts"] {
        assert!(help.contains(option), "--help names {option}:\n{help}");
    }
    refused(
        "ch10-reuseport",
        &["--max-restarts", "5000"],
        "'5000' for '--max-restarts <N>'",
    );
    refused(
        "ch10-reuseport",
        &["--min-uptime", "soon"],
        "'soon' for '--min-uptime <SECS>'",
    );
}

/// What `--help` offers: chapters 6 to 9 say that `--port` takes a list, and no row shows
/// an empty default.
#[test]
fn help_agrees_with_itself() {
    for package in [
        "ch06-round-robin",
        "ch07-auto-restart",
        "ch08-heartbeat",
        "ch09-rolling-reload",
    ] {
        let (status, help, _) = run_to_end(package, &["--help"]);
        assert_eq!(status.code(), Some(0), "{package} --help exits 0");
        assert!(
            help.contains("--port <PORT[,PORT]>"),
            "{package}: --port should take a list:\n{help}"
        );
        assert!(
            !help.contains("[default: ]"),
            "{package}: an empty default:\n{help}"
        );
    }
}
