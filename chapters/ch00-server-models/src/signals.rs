//! The self-pipe: a signal as one more readable fd of an event loop.
//!
//! Built by the prologue's process model, whose parent waits in `poll` for a client or a
//! signal (SIGCHLD to reap, Ctrl-C to stop). Chapter 9's master catches SIGUSR2 the same
//! way, to reload.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

/// The write end of the pipe that the signal handler writes to. A handler can only reach
/// global state, and may only make async-signal-safe calls such as `write`.
static SIGNAL_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// The self-pipe trick: a signal handler may do almost nothing safely, so it writes the
/// signal's number into a pipe, and the main loop, which waits on that pipe in `poll`
/// alongside the listener, handles it as just another readable fd.
// ANCHOR: signal_pipe
pub struct SignalPipe {
    read: OwnedFd,
    write_fd: RawFd,
    _write: OwnedFd,
}

extern "C" fn on_signal(signal: libc::c_int) {
    // SAFETY: write(2) and errno access are async-signal-safe; errno is saved and
    // restored so the interrupted code does not see ours.
    unsafe {
        let errno = *libc::__errno_location();
        let byte = signal as u8;
        let fd = SIGNAL_WRITE_FD.load(Ordering::Relaxed);
        // A full pipe already says "look at the signals": losing this byte loses nothing.
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

impl SignalPipe {
    /// Installs the handler for each of `signals`: from now on each one that arrives is a
    /// byte in the pipe.
    pub fn install(signals: &[libc::c_int]) -> io::Result<SignalPipe> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let write_fd = write.as_raw_fd();
        SIGNAL_WRITE_FD.store(write_fd, Ordering::Relaxed);
        for &signal in signals {
            // SAFETY: a zeroed sigaction is valid; we fill in the handler and flags, and
            // the handler is async-signal-safe (see `on_signal`).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(SignalPipe {
            read,
            write_fd,
            _write: write,
        })
    }

    /// What to wait on: readable once a signal has arrived.
    pub fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The write end's number, for a child made by a bare `fork` to close its copy.
    pub fn write_fd(&self) -> RawFd {
        self.write_fd
    }

    /// The signals that arrived since the last call.
    pub fn drain(&self) -> Vec<libc::c_int> {
        let mut buf = [0u8; 64];
        let mut signals = Vec::new();
        while let Ok(n @ 1..) = nix::unistd::read(&self.read, &mut buf) {
            signals.extend(buf[..n].iter().map(|&b| libc::c_int::from(b)));
        }
        signals
    }
}
// ANCHOR_END: signal_pipe
