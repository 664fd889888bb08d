//! The process-per-connection model: the parent accepts, and every connection gets a
//! child process of its own, made with a bare `fork()`, that serves it and exits.
//!
//! `fork` without `exec` hands the child a copy of everything the parent has, the accepted
//! connection included, so the child can start serving at once. That is only safe while
//! the parent has a single thread: `fork` copies the memory of every thread but brings
//! along only the one that called it, so a lock held by any other thread (the allocator's,
//! stdout's) would stay locked forever in the child. This parent therefore starts no
//! thread at all. Not even a Ctrl-C handler thread: signals reach it through a pipe.
//!
//! A child that has exited stays in the process table as a zombie until its parent
//! collects its exit status with `waitpid`. The parent does that for every child, as soon
//! as the kernel tells it one ended (SIGCHLD), so none is ever left behind.

use std::collections::HashSet;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use shared::log;
use shared::log::Outcome;

use crate::backoff::{self, Backoff, PAUSE};
use crate::blocking;
use ch00_server_models::signals::SignalPipe;

/// How long children get to finish after SIGTERM before the parent sends SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Accepts forever, one child process per connection, at most `max_clients` at a time,
/// until SIGINT or SIGTERM; then stops every child and reaps it.
// ANCHOR: serve
pub fn serve(listener: TcpListener, max_clients: usize, idle_timeout: Duration) -> Outcome {
    listener.set_nonblocking(true)?;
    let signals = SignalPipe::install(&SIGNALS)?;
    let mut children: HashSet<Pid> = HashSet::new();
    let mut backoff = Backoff::default();
    let mut paused_until: Option<Instant> = None;
    let mut number = 0u32;
    loop {
        // Watch the listener only while we may take a new client: below the cap, and not
        // pausing after a refusal. Otherwise new clients wait in the kernel's queue.
        if paused_until.is_some_and(|until| Instant::now() >= until) {
            paused_until = None;
        }
        let accepting = children.len() < max_clients && paused_until.is_none();
        let mut fds = vec![PollFd::new(signals.read_end(), PollFlags::POLLIN)];
        if accepting {
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        }
        // Wait for a signal or a client; while paused, only until the pause is over.
        let timeout = match paused_until {
            Some(until) => PollTimeout::try_from(until.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e).into()),
        }
        let client_waiting = accepting
            && fds[1]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
        drop(fds);

        for signal in signals.drain() {
            if signal == libc::SIGINT || signal == libc::SIGTERM {
                stop_children(&mut children);
                return Ok(ExitCode::SUCCESS);
            }
        }
        // SIGCHLD or not, collect every child that has exited: no zombie stays behind.
        reap(&mut children);

        if client_waiting {
            if let Err(pause) = accept_and_fork(
                &listener,
                &signals,
                &mut children,
                &mut number,
                idle_timeout,
                &mut backoff,
            ) {
                paused_until = Some(Instant::now() + pause);
            }
        }
    }
}
// ANCHOR_END: serve

/// Takes one waiting client and forks a child to serve it. `Err(pause)` when the machine
/// refused a file descriptor or a process: then stop accepting for `pause`.
// ANCHOR: accept_and_fork
fn accept_and_fork(
    listener: &TcpListener,
    signals: &SignalPipe,
    children: &mut HashSet<Pid>,
    number: &mut u32,
    idle_timeout: Duration,
    backoff: &mut Backoff,
) -> Result<(), Duration> {
    let stream = match listener.accept() {
        Ok((stream, _peer)) => stream,
        // Another wake-up took it, or the client gave up while waiting: nothing to do.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || backoff::transient(&e) => return Ok(()),
        Err(e) => {
            backoff.refused("accept failed", &e);
            return Err(PAUSE);
        }
    };
    *number = number.wrapping_add(1);
    let parent = std::process::id();
    // SAFETY: this process has one thread (it never starts another), so the child gets a
    // consistent copy of every lock and of the allocator, and may run ordinary Rust code.
    // The child never returns from `child`, so it never runs the parent's code below.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => child(stream, *number, idle_timeout, listener, signals, parent),
        Ok(ForkResult::Parent { child }) => {
            // The child has its own copy of the connection; the parent closes its copy
            // here, when `stream` is dropped, or the client would never see it close.
            children.insert(child);
            backoff.recovered();
            Ok(())
        }
        Err(e) => {
            // Out of processes or memory (EAGAIN, ENOMEM): close this client, pause.
            backoff.refused("fork failed", &io::Error::from(e));
            Err(PAUSE)
        }
    }
}
// ANCHOR_END: accept_and_fork

/// The child's whole life: serve the one connection, then `_exit`. It must never return,
/// or it would carry on in the parent's accept loop as a second parent.
// ANCHOR: child
fn child(
    stream: TcpStream,
    number: u32,
    idle_timeout: Duration,
    listener: &TcpListener,
    signals: &SignalPipe,
    parent: u32,
) -> ! {
    // The copies of the parent's fds that this child has no business with. Closing the
    // listener matters: a child holding it would keep the port open after the parent
    // exits.
    // SAFETY: closing fds this process holds; their Rust owners are never dropped here,
    // because this function ends with _exit.
    unsafe {
        libc::close(listener.as_raw_fd());
        libc::close(signals.read_end().as_raw_fd());
        libc::close(signals.write_fd());
    }
    default_signals();
    // Die with the parent, even if it is killed with kill -9 and cannot stop us itself:
    // by SIGKILL, which ends a stopped child too (SIGTERM would wait for a SIGCONT).
    #[cfg(target_os = "linux")]
    // SAFETY: prctl and getppid take plain integers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1
            || libc::getppid() as u32 != parent
        {
            libc::_exit(1);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    // A panic must not unwind out of this function into the parent's code path.
    let served = std::panic::catch_unwind(move || blocking::serve(stream, number, idle_timeout));
    // SAFETY: _exit ends this process at once, without running the parent's destructors
    // or atexit handlers a second time.
    unsafe { libc::_exit(if served.is_ok() { 0 } else { 1 }) }
}
// ANCHOR_END: child

/// Collects every child that has exited, without waiting for those still running.
// ANCHOR: reap
fn reap(children: &mut HashSet<Pid>) {
    // ANCHOR: solution_ch00_reap
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    children.remove(&pid);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return, // ECHILD: no children at all
        }
    }
    // ANCHOR_END: solution_ch00_reap
}
// ANCHOR_END: reap

/// Ctrl-C or SIGTERM: SIGTERM to every child, SIGKILL to any still there after [`GRACE`],
/// and every one reaped before the parent exits.
// ANCHOR: stop_children
fn stop_children(children: &mut HashSet<Pid>) {
    match children.len() {
        1 => log!("stopping 1 connection process"),
        n => log!("stopping {n} connection processes"),
    }
    for child in children.iter() {
        let _ = kill(*child, Signal::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while !children.is_empty() {
        if Instant::now() >= deadline {
            for child in children.iter() {
                let _ = kill(*child, Signal::SIGKILL);
            }
        }
        // Block until one exits; waitpid wakes for each child that does.
        match waitpid(None, None) {
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    children.remove(&pid);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => children.clear(), // ECHILD: every child is already reaped
        }
    }
    log!("every connection process has exited; the server stops");
}
// ANCHOR_END: stop_children

/// The signals this parent listens for.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD];

/// Ctrl-C, SIGTERM and SIGCHLD do what they do in any program: the first two end the
/// process at once. For a child of this model, and for the thread and event models, which
/// have no child to stop: when the process ends, the kernel closes all its sockets. Set
/// explicitly, because a shell starts a background job with Ctrl-C ignored, and an
/// ignored signal stays ignored in every program it starts.
pub fn default_signals() {
    for signal in SIGNALS {
        // SAFETY: resetting a disposition to SIG_DFL touches no memory of ours.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}
