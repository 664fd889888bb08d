//! Node's `child_process` has four ways to start a child: `spawn`, `exec`, `execFile` and
//! `fork`. Each function below does what one of them does, with `std::process::Command`,
//! and prints what it got, so that the differences show: a shell or not, output read as it
//! comes or kept until the child ends, and a child that is this same program again.
//! `book/node/ch01-four-ways.js` makes the same four calls in Node.
//!
//!   cargo run -p ch01-random-port-fork --example four_ways

use std::io::{self, BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

use ch01_random_port_fork::spawn::{spawn_worker, WORKER_ID_VAR};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{getppid, Pid};

// ANCHOR: spawn
/// `spawn('seq', ['3'])`: the program itself, no shell. Its stdout is a pipe that we read
/// while it runs, a line at a time, as Node hands out `'data'` events.
fn spawn() -> io::Result<()> {
    let mut child = Command::new("seq")
        .arg("3")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout was asked to be a pipe");
    for line in BufReader::new(stdout).lines() {
        println!("spawn:    read {:?} while seq runs", line?);
    }
    println!("spawn:    {}", child.wait()?);
    Ok(())
}
// ANCHOR_END: spawn

// ANCHOR: exec
/// `exec('echo one two three | wc -w', cb)`: one string, run by `/bin/sh -c`, so the pipe
/// works. The output is kept until the shell exits, and handed over whole.
fn exec() -> io::Result<()> {
    let output = Command::new("/bin/sh")
        .args(["-c", "echo one two three | wc -w"])
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("exec:     {:?}, {}", stdout.trim(), output.status);
    Ok(())
}
// ANCHOR_END: exec

// ANCHOR: exec_file
/// `execFile('echo', ['one two three | wc -w'], cb)`: the same words, but no shell. `echo`
/// gets them as one argument and prints them; `|` is just a character. Output kept, as
/// with `exec`.
fn exec_file() -> io::Result<()> {
    let output = Command::new("echo").arg("one two three | wc -w").output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("execFile: {:?}, {}", stdout.trim(), output.status);
    Ok(())
}
// ANCHOR_END: exec_file

// ANCHOR: fork
/// `fork(__filename)`: this same program again, told in its environment that it is a
/// child. That is chapter 1's `spawn_worker`, so we call it rather than copy it. (Node's
/// `fork` also opens an IPC channel; `spawn_worker` passes one on from chapter 2.)
fn fork() -> io::Result<()> {
    let worker = spawn_worker(1, None, &[])?;
    // The master's way to wait for a worker (`Cluster` does it in a thread per worker).
    match waitpid(Pid::from_raw(worker.pid as i32), None)? {
        WaitStatus::Exited(_, code) => {
            println!("fork:     worker {} exit status: {code}", worker.id)
        }
        other => println!("fork:     worker {} ended: {other:?}", worker.id),
    }
    Ok(())
}
// ANCHOR_END: fork

/// One of the four ways.
type Way = fn() -> io::Result<()>;

fn main() -> ExitCode {
    // The copy that `fork` started: say who we are, and end.
    if let Some(id) = std::env::var_os(WORKER_ID_VAR) {
        println!(
            "fork:     I am worker {} (pid {}), the same program started again by pid {}",
            id.to_string_lossy(),
            std::process::id(),
            getppid()
        );
        return ExitCode::SUCCESS;
    }
    // One after the other, in the order of the page, each printing what it got.
    let ways: [(&str, Way); 4] = [
        ("spawn", spawn),
        ("exec", exec),
        ("execFile", exec_file),
        ("fork", fork),
    ];
    for (name, way) in ways {
        if let Err(e) = way() {
            eprintln!(
                "{name} failed: {e} (this example runs seq, /bin/sh and echo: are they installed?)"
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
