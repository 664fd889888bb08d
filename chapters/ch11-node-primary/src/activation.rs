//! Any program, not only Node: systemd's socket activation (`sd_listen_fds(3)`) and
//! readiness notification (`sd_notify(3)`), the conventions a program already speaks if
//! it can run as a socket-activated service.
//!
//! - The listening socket is the program's fd 3 (`SD_LISTEN_FDS_START`), and
//!   `LISTEN_FDS=1` says how many there are.
//! - `LISTEN_PID` is the pid of the process they are meant for: a program checks it
//!   against its own pid, so that a child it starts does not take the fds for its own.
//!   The pid exists only after `fork`, so the variable is written in the child, between
//!   `fork` and `exec`, as systemd writes it.
//! - `NOTIFY_SOCKET` names a Unix datagram socket; the program sends `READY=1` there when
//!   it serves. The primary asks the kernel for each sender's credentials
//!   (`SO_PASSCRED`), so it knows which worker is ready.

use std::ffi::{OsStr, OsString};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

/// The fd a socket-activated program finds its first socket at.
pub const LISTEN_FDS_START: RawFd = 3;

/// The primary's notification socket.
pub struct Notify {
    socket: UnixDatagram,
    /// Its name as `NOTIFY_SOCKET` gives it: `@` for Linux's abstract namespace, where a
    /// name is no file, so nothing is left behind when the primary dies.
    name: String,
}

impl Notify {
    /// Binds the abstract socket `name` (without its `@`).
    pub fn bind(name: &str) -> io::Result<Notify> {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let socket = UnixDatagram::bind_addr(&addr)?;
        socket.set_nonblocking(true)?;
        setsockopt(&socket, sockopt::PassCred, &true)?;
        Ok(Notify {
            socket,
            name: format!("@{name}"),
        })
    }

    /// What `NOTIFY_SOCKET` says.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every notification waiting: who sent it (its pid, from the kernel) and what it
    /// says (`READY=1`, `STATUS=...`, one per line).
    // ANCHOR: notifications
    pub fn receive(&self) -> Vec<(u32, String)> {
        let mut notes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut space = cmsg_space!(libc::ucred);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
            let fd = self.socket.as_raw_fd();
            let (bytes, sender) = match recvmsg::<()>(fd, &mut iov, Some(&mut space), flags) {
                Ok(msg) => {
                    let cmsgs = msg.cmsgs().into_iter().flatten();
                    let sender = cmsgs.into_iter().find_map(|cmsg| match cmsg {
                        ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid() as u32),
                        _ => None,
                    });
                    (msg.bytes, sender)
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return notes,
            };
            let text = String::from_utf8_lossy(&buf[..bytes]).into_owned();
            if let Some(pid) = sender {
                notes.push((pid, text));
            }
        }
    }
    // ANCHOR_END: notifications
}

impl AsFd for Notify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The command that runs `program` with `args` as a socket-activated worker: `listener`
/// becomes its fd 3, and its environment is ours with `vars` and `LISTEN_FDS=1` and
/// `LISTEN_PID`, the child's own pid, written after the fork.
// ANCHOR: command
pub fn command(
    program: &OsStr,
    args: &[OsString],
    listener: RawFd,
    vars: &[(&str, String)],
) -> Command {
    let mut env = Environment::new(vars);
    let mut command = Command::new(program);
    command.args(args);
    // No `command.env(..)` at all: std then execs with the process's `environ`, which the
    // closure below points at the environment built here, LISTEN_PID included.
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: dup2, fcntl and getpid are, and it allocates
    // nothing. It writes into memory built before the fork, the child's own copy of it.
    unsafe {
        command.pre_exec(move || {
            if listener == LISTEN_FDS_START {
                // Already fd 3: dup2 would do nothing, and leave it close-on-exec.
                if libc::fcntl(listener, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(listener, LISTEN_FDS_START) == -1 {
                return Err(io::Error::last_os_error());
            }
            env.install(libc::getpid() as u32);
            Ok(())
        });
    }
    command
}
// ANCHOR_END: command

/// An environment built before the fork: `NAME=value` strings and the null-terminated
/// array of pointers to them that `execve` reads, with room in `LISTEN_PID=` for the pid.
struct Environment {
    strings: Vec<Vec<u8>>,
    pointers: Vec<*const libc::c_char>,
    /// Which of `strings` is `LISTEN_PID=`.
    pid: usize,
}

// SAFETY: the pointers point into `strings`, which the struct owns and never moves (a
// `Vec<u8>`'s heap buffer stays put); it is used by one thread at a time.
unsafe impl Send for Environment {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Environment {}

/// Room for any pid's digits.
const PID_DIGITS: usize = 20;

impl Environment {
    fn new(vars: &[(&str, String)]) -> Environment {
        let ours = [
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
        ];
        let mut strings: Vec<Vec<u8>> = std::env::vars_os()
            .filter(|(name, _)| {
                let name = name.to_string_lossy();
                !ours.contains(&name.as_ref()) && !vars.iter().any(|(v, _)| *v == name)
            })
            .map(|(name, value)| pair(&name, &value))
            .collect();
        strings.extend(
            vars.iter()
                .map(|(name, value)| pair(OsStr::new(name), OsStr::new(value))),
        );
        strings.push(b"LISTEN_FDS=1\0".to_vec());
        let pid = strings.len();
        let mut slot = b"LISTEN_PID=".to_vec();
        slot.resize(slot.len() + PID_DIGITS + 1, 0);
        strings.push(slot);
        let mut pointers: Vec<*const libc::c_char> =
            strings.iter().map(|s| s.as_ptr().cast()).collect();
        pointers.push(std::ptr::null());
        Environment {
            strings,
            pointers,
            pid,
        }
    }

    /// In the child: writes `pid` into `LISTEN_PID=`, and makes this the environment the
    /// coming `exec` passes on. No allocation, no lock.
    fn install(&mut self, pid: u32) {
        let slot = &mut self.strings[self.pid];
        let start = b"LISTEN_PID=".len();
        let mut digits = [0u8; PID_DIGITS];
        let mut n = pid;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            n /= 10;
            len += 1;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            slot[start + i] = digits[len - 1 - i];
        }
        slot[start + len] = 0;
        extern "C" {
            static mut environ: *const *const libc::c_char;
        }
        // SAFETY: only this thread runs in the child; `pointers` lives in the closure,
        // which lives until exec.
        unsafe { environ = self.pointers.as_ptr() };
    }
}

/// `NAME=value\0`.
fn pair(name: &OsStr, value: &OsStr) -> Vec<u8> {
    let mut s = name.as_bytes().to_vec();
    s.push(b'=');
    s.extend_from_slice(value.as_bytes());
    s.push(0);
    s
}
