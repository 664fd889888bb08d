//! What the process and thread models do when the machine says no.
//!
//! A server that is out of file descriptors (`EMFILE`), out of processes or out of
//! threads (`EAGAIN` from `fork` or `clone`) must not crash, and must not retry at once
//! either: the connection that could not be served is still there, so the retry fails the
//! same way, thousands of times a second, and every failure writes a log line. Instead it
//! stops accepting for a moment, logs once for the whole episode, and says when it is over.

use std::io;
use std::time::Duration;

use nix::errno::Errno;
use shared::log;

/// How long to stop accepting after the machine refused us something.
pub const PAUSE: Duration = Duration::from_millis(100);

/// Is this `accept` error worth only a retry: a signal, or a client that gave up while it
/// was waiting in the queue?
pub fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO)
    )
}

/// Is this the machine running out of something (fds, kernel memory) rather than a bug?
pub fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM | Errno::EAGAIN)
    )
}

/// One episode of refusals: logged when it starts and when it ends, not for each refusal.
// ANCHOR: backoff
#[derive(Default)]
pub struct Backoff {
    /// How many connections were refused in the current episode, if one is under way.
    refused: Option<u64>,
}

impl Backoff {
    /// Something failed for want of `what`; the caller pauses for [`PAUSE`].
    pub fn refused(&mut self, what: &str, e: &io::Error) {
        match &mut self.refused {
            Some(n) => *n += 1,
            None => {
                log!("{what}: {e}; pausing new connections until it passes");
                self.refused = Some(1);
            }
        }
    }

    /// A connection was served again: the episode, if there was one, is over.
    pub fn recovered(&mut self) {
        if let Some(n) = self.refused.take() {
            log!("serving new connections again (refused meanwhile: {n})");
        }
    }
}
// ANCHOR_END: backoff
