//! How the thread and event models stop. They have no child to stop: when the process
//! ends, the kernel closes every socket it held. So Ctrl-C (SIGINT) and SIGTERM end the
//! process as they end any program, `node server.js` included; it only says so first, in
//! one log line like every chapter's.
//!
//! The line is written from the signal handler itself, which may interrupt the program
//! anywhere, even inside `malloc` or while another thread holds the lock on stdout. So it
//! uses nothing that allocates or locks: the time is formatted on the handler's own stack,
//! and one `write(2)` prints it.

use std::fmt::Write;
use std::io;

/// The signals that stop the server.
const STOP: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Ctrl-C and SIGTERM: one log line, then the signal's own default action, which ends the
/// process. SIGCHLD keeps its default. Set explicitly, because a shell starts a background
/// job with Ctrl-C ignored, and an ignored signal stays ignored in every program it starts.
pub fn log_then_end_on_signals() -> io::Result<()> {
    crate::process::default_signals();
    for signal in STOP {
        // SAFETY: a zeroed sigaction is valid; we fill in the handler, and the handler
        // only makes async-signal-safe calls (see `log_then_end`).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = log_then_end as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

// ANCHOR: log_then_end
extern "C" fn log_then_end(signal: libc::c_int) {
    let name = match signal {
        libc::SIGINT => "Ctrl-C (SIGINT)",
        _ => "SIGTERM",
    };
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime and getpid are async-signal-safe; the first writes only to
    // `now`, which lives on this stack.
    let pid = unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
        libc::getpid()
    };
    let ms = (now.tv_sec as u64 % 86_400) * 1000 + now.tv_nsec as u64 / 1_000_000;
    // The same `HH:MM:SS.mmm master[pid]` as every log line, built on the stack: no
    // allocation. A line too long for the buffer is cut short, never a panic.
    let mut line = StackLine::default();
    let _ = writeln!(
        line,
        "{:02}:{:02}:{:02}.{:03} master[{pid}] {name}: the server stops, and the kernel \
         closes every connection it held",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    );
    // SAFETY: write(2), signal(2) and raise(3) are async-signal-safe. With the default
    // action back, raising the signal again ends the process as if we had never caught
    // it: its parent sees it killed by SIGINT or SIGTERM, as a shell expects.
    unsafe {
        libc::write(1, line.bytes.as_ptr().cast(), line.len);
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}
// ANCHOR_END: log_then_end

/// A line of text in a fixed buffer on the stack.
struct StackLine {
    bytes: [u8; 160],
    len: usize,
}

impl Default for StackLine {
    fn default() -> StackLine {
        StackLine {
            bytes: [0; 160],
            len: 0,
        }
    }
}

impl Write for StackLine {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}
