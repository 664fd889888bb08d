//! A worker's graceful exit: tell the master first, take no new connection, finish what
//! it holds, then exit.
//!
//! Explained in chapter 7; the workers of chapters 8 and 9 leave the same way.
//!
//! The articles' pattern for Node: a worker catches `uncaughtException`, tells its master
//! (the `suicide` message, `exitedAfterDisconnect` in today's cluster module), closes its
//! server so that it takes no new connection, lets the open ones finish, and exits; the
//! master starts the replacement as soon as it hears, not when the exit comes. A worker
//! whose memory grows past a limit leaves the same way. Here:
//!
//! - [`leave`] is that sequence: the message `leaving WHY` to the master, then
//!   [`Server::drain`];
//! - [`on_panic`] calls it from the server's crash hook, our `uncaughtException`;
//! - `memory_limit` checks the worker's resident memory every second (`--max-rss`);
//! - [`from_master`] obeys the master's `drain`, the same exit ordered from outside
//!   (Ctrl-C on the master), and `drain MS`, chapter 9's: the worker is replaced while
//!   the service goes on, so an idle connection gets MS milliseconds for one more
//!   request (`Server::drain_lingering`);
//! - [`serve`] puts them together with chapter 6's round-robin worker: the worker of
//!   chapters 7 to 9.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ch00_server_models::server::Server;
use ch02_ipc_messaging::channel::{Channel, Message};
use ch02_ipc_messaging::worker::Messages;
use ch06_round_robin::round_robin;
use shared::args::ListenMany;
use shared::http::{Request, Response};
use shared::log;
use shared::log::Outcome;

/// How often a worker with `--max-rss` looks at its own memory.
pub const MEMORY_CHECK: Duration = Duration::from_secs(1);

/// Set when this worker leaves because something went wrong (a panic, too much memory):
/// it then exits with code 1, as the articles' `process.exit(1)`; after the master's
/// `drain` order it exits with 0.
static IN_TROUBLE: AtomicBool = AtomicBool::new(false);

/// Leaves: tells the master why, so that it stops sending connections and starts a
/// replacement at once, then drains. [`Server::run`] returns once the last open
/// connection is done.
// ANCHOR: leave
pub fn leave(server: &mut Server, why: &str) {
    if server.is_draining() {
        return;
    }
    IN_TROUBLE.store(true, Ordering::SeqCst);
    // ANCHOR: solution_ch07_leave
    // The master first: until it hears, it may hand us more connections.
    server.send(&format!("leaving {why}"));
    server.drain();
    // ANCHOR_END: solution_ch07_leave
}
// ANCHOR_END: leave

/// Node's `process.on('uncaughtException', ...)`: when a handler panics, the request that
/// made it panic gets a 500, and the worker leaves.
// ANCHOR: on_panic
pub fn on_panic(server: Server) -> Server {
    server.on_crash(|server| {
        log!("a handler panicked: leaving, and telling the master first");
        leave(server, "its handler panicked");
    })
}
// ANCHOR_END: on_panic

/// The articles' memory check (`process.memoryUsage().rss` against a limit), PM2's
/// `max_memory_restart`: once a second, a worker over `max_mb` MB of resident memory
/// leaves. 0 is no limit.
// ANCHOR: memory_limit
pub fn memory_limit(server: Server, max_mb: u64) -> Server {
    if max_mb == 0 {
        return server;
    }
    server.every(MEMORY_CHECK, move |server| {
        let Ok(rss) = rss_bytes() else { return };
        if rss > max_mb << 20 && !server.is_draining() {
            let why = format!("RSS {} MB is over --max-rss {max_mb}", rss >> 20);
            log!("{why}: leaving, and telling the master first");
            leave(server, &why);
        }
    })
}
// ANCHOR_END: memory_limit

/// The master's order to leave: the same graceful exit, with nothing to report. `drain`
/// closes idle connections at once (the master is stopping); `drain MS` gives them MS
/// milliseconds for a last request (chapter 9: a new worker serves in this one's place).
/// Returns any other message, for the chapter to handle.
pub fn from_master(server: &mut Server, message: Message) -> Option<Message> {
    let linger = match message.text.split_once(' ') {
        None if message.text == "drain" => Duration::ZERO,
        Some(("drain", ms)) => match ms.parse() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => return Some(message),
        },
        _ => return Some(message),
    };
    match linger.is_zero() {
        true => {
            log!("the master says drain: finishing what this worker holds, then exiting");
            server.drain();
        }
        false => {
            log!(
                "the master says drain: a new worker serves in this one's place; finishing \
                 what this worker holds (an idle connection gets {} ms for one more request), \
                 then exiting",
                linger.as_millis()
            );
            server.drain_lingering(linger);
        }
    }
    None
}

/// The exit code once [`Server::run`] has returned: 1 after leaving in trouble, 0 after an
/// order from the master (or the master's end).
pub fn exit_code() -> ExitCode {
    match IN_TROUBLE.load(Ordering::SeqCst) {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

/// This process's resident memory, in bytes (`process.memoryUsage().rss` in Node): the
/// second number in `/proc/self/statm`, in pages.
pub fn rss_bytes() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other("no resident size in /proc/self/statm"))?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Ok(pages * page)
}

/// The worker of chapters 7 to 9: chapter 6's round-robin worker (it asks the master to
/// listen where `listen` says, and takes the connections it is handed), answering with
/// `handler`, that leaves gracefully on a panic, over `max_rss` MB (`--max-rss`), or when
/// the master says `drain`. After its last `queryServer` it says `ready`: the master knows
/// then of every address it wants. Messages of the chapter's own go to `on_message`.
// ANCHOR: serve
pub fn serve(
    id: u32,
    listen: &ListenMany,
    max_rss: u64,
    channel: Channel,
    handler: impl FnMut(&Request) -> Response + 'static,
    mut on_message: impl FnMut(&mut Server, Message) + 'static,
) -> Outcome {
    let server = Server::new(id, listen.idle_timeout)?
        .handler(handler)
        .on_message(channel, move |server, message| {
            let Some(message) = round_robin::from_master(server, message) else {
                return;
            };
            if let Some(message) = from_master(server, message) {
                on_message(server, message);
            }
        })?
        .on_fds_freed(|server| server.send("free"));
    let server = memory_limit(on_panic(server), max_rss);
    server.send("online");
    round_robin::listen_via_master(&server, listen.host, &listen.ports);
    // Every address asked for: once the master has answered them all, count on us.
    server.send("ready");
    server.run()?;
    Ok(exit_code())
}
// ANCHOR_END: serve
