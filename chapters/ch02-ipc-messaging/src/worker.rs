//! The worker's side of the channel: find the end its master left it, hear the master in
//! the worker's own event loop, and answer it.
//!
//! A Node worker does this without asking: at start-up Node looks for `NODE_CHANNEL_FD`,
//! opens the channel, and gives the process `process.send()` and `process.on('message')`.
//! A worker has one master, so one channel for the whole process; so here, once
//! [`Messages::on_message`] has been given the channel, `server.send(...)` anywhere in the
//! worker reaches the master.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use ch00_server_models::server::Server;
use ch01_random_port_fork::spawn::WORKER_ID_VAR;
use nix::sys::socket::{getsockopt, sockopt, SockType};
use shared::log;

use crate::channel::{Channel, ChannelError, Message};

/// The environment variable that names the fd of the worker's end of the IPC channel.
pub const CHANNEL_FD_VAR: &str = "CLUSTER_CHANNEL_FD";

/// This worker's channel to its master, once [`Messages::on_message`] has it.
static TO_MASTER: OnceLock<Channel> = OnceLock::new();

/// What chapter 2 adds to chapter 0's event loop: the master's messages, and a way to
/// answer.
pub trait Messages: Sized {
    /// Watches the IPC channel in the same loop as the HTTP sockets: each message goes to
    /// `on_message`, which gets the server itself to act on it (reply, add a listener or a
    /// connection, stop). When the channel closes, the master is gone, and the loop ends.
    fn on_message(
        self,
        channel: Channel,
        on_message: impl FnMut(&mut Server, Message) + 'static,
    ) -> io::Result<Self>;

    /// Sends a message to the master (Node's `process.send`). Errors are logged: a worker
    /// whose master is gone will see the channel close and stop.
    fn send(&self, text: &str);
}

impl Messages for Server {
    // ANCHOR: watch_channel
    fn on_message(
        self,
        channel: Channel,
        mut on_message: impl FnMut(&mut Server, Message) + 'static,
    ) -> io::Result<Server> {
        let _ = TO_MASTER.set(channel.clone());
        // The closure owns a handle on the channel: its fd stays open while it is watched.
        let reader = channel.clone();
        self.watch(channel.as_fd(), move |server| {
            read_channel(server, &reader, &mut on_message)
        })
    }
    // ANCHOR_END: watch_channel

    fn send(&self, text: &str) {
        match TO_MASTER.get() {
            Some(channel) => {
                if let Err(e) = channel.send(text) {
                    log!("could not send '{text}' to the master: {e}");
                }
            }
            None => log!("no IPC channel to send '{text}' on"),
        }
    }
}

/// Every message waiting on the channel, each handed to `on_message`.
// ANCHOR: read_channel
fn read_channel(
    server: &mut Server,
    channel: &Channel,
    on_message: &mut impl FnMut(&mut Server, Message),
) {
    loop {
        match channel.try_recv() {
            Ok(Some(message)) => on_message(server, message),
            Ok(None) => return,
            Err(ChannelError::Closed) => {
                log!("IPC channel closed: the master is gone, so this worker exits");
                server.stop();
                return;
            }
            Err(e @ (ChannelError::Malformed(_) | ChannelError::TooLarge(_))) => {
                log!("{e}");
            }
            Err(e) => {
                log!("{e}; this worker exits");
                server.stop();
                return;
            }
        }
    }
}
// ANCHOR_END: read_channel

/// A message this worker has no use for: logged, then dropped, which closes an fd that
/// came with it, so nothing it did not ask for stays open.
pub fn unexpected(text: &str, fd: Option<OwnedFd>) {
    let with = match fd {
        Some(_) => " with an fd (closed)",
        None => "",
    };
    log!("unexpected message '{text}'{with}");
}

/// In a worker: takes ownership of the channel inherited from the master.
///
/// Fails, with an error that names [`CHANNEL_FD_VAR`] and says what it must hold, when the
/// variable is missing or names an fd that is not open or not a `SOCK_SEQPACKET` socket
/// (set by hand, say), and on a second call (the fd has one owner).
// ANCHOR: channel_from_env
pub fn channel_from_env() -> Result<Channel, String> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let what = "the worker's end of the socketpair its master made";
    let value = std::env::var(CHANNEL_FD_VAR).map_err(|_| {
        format!(
            "{CHANNEL_FD_VAR} is not set: a worker is started by its master, which puts \
             the fd of its IPC channel there; run the binary without {WORKER_ID_VAR} to \
             start a master"
        )
    })?;
    let bad = |why: String| format!("{CHANNEL_FD_VAR}={value}: {why}; it must name {what}");
    let fd: RawFd = match value.parse() {
        Ok(fd) if fd > 2 => fd,
        _ => return Err(bad("not an fd number above 2".into())),
    };
    // SAFETY: fcntl F_GETFD only reads the flags of an fd number; an invalid one fails.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(bad(format!("fd {fd} is not open in this process")));
    }
    // SAFETY: the fd is open (checked above); we only borrow it for this one question.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match getsockopt(&borrowed, sockopt::SockType) {
        Ok(SockType::SeqPacket) => {}
        Ok(other) => return Err(bad(format!("fd {fd} is a {other:?} socket"))),
        Err(e) => return Err(bad(format!("fd {fd} is not a socket ({e})"))),
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(format!("the channel in {CHANNEL_FD_VAR} was already taken"));
    }
    // SAFETY: the fd was inherited for this purpose, is an open socket (checked above),
    // and the flag above makes this the only place that ever takes ownership of it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Close-on-exec again, so a program this worker starts does not inherit it.
    // SAFETY: fcntl on an fd we now own.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(Channel::from_fd(owned))
}
// ANCHOR_END: channel_from_env
