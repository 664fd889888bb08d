//! Node's IPC channel, seen from the primary's end: what `child_process.fork()` sets up
//! between a parent and a child, rebuilt so that a Rust primary can speak it to a real
//! `node` process.
//!
//! Node's side is `setupChannel` in `lib/internal/child_process.js`, with the `json`
//! serialization of `lib/internal/child_process/serialization.js`:
//!
//! - the channel is one end of a `socketpair(AF_UNIX, SOCK_STREAM)`; the child finds its
//!   end's number in `NODE_CHANNEL_FD` and the format in `NODE_CHANNEL_SERIALIZATION_MODE`;
//! - a message is one line of JSON (`JSON.stringify(message) + '\n'`), so a reader must
//!   cut the byte stream into lines itself;
//! - a message that carries a handle (an fd) is wrapped, `{"cmd":"NODE_HANDLE","type":...,
//!   "msg":...}`, and written in one `sendmsg` with the fd as `SCM_RIGHTS`;
//! - the receiver answers `{"cmd":"NODE_HANDLE_ACK"}`, or `NODE_HANDLE_NACK` if the fd
//!   did not arrive, and until then the sender queues every later message, with a handle
//!   or without: one handle in flight per channel.
//!
//! [`Channel`] does all of that for one worker. It never blocks: a worker that stops
//! reading its channel, or writes what is not a line of JSON, is a [`Fault`] of that
//! worker, and the primary ends the worker, never itself.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde_json::{json, Value};

/// The longest line the primary reads from a worker: 1 MiB. Node's own messages are a few
/// hundred bytes; a program's `process.send()` may be larger, but a line that never ends
/// is a worker gone wrong, and must not fill the primary's memory.
pub const MAX_LINE: usize = 1 << 20;

/// The primary's end of one worker's channel.
pub struct Channel {
    socket: OwnedFd,
    /// Bytes read after the last complete line.
    unread: Vec<u8>,
    /// A handle was sent and its `NODE_HANDLE_ACK` has not come yet.
    in_flight: bool,
    /// What waits for that acknowledgement: lines to write, each with the fd it carries.
    queue: VecDeque<(Vec<u8>, Option<OwnedFd>)>,
}

/// One message read from a worker, with the fd that came with it, if any.
#[derive(Debug)]
pub struct Incoming {
    pub message: Value,
    pub fd: Option<OwnedFd>,
}

/// Why a channel can no longer be used. Each is the worker's fault, or its end.
#[derive(Debug)]
pub enum Fault {
    /// The worker closed its end: it exited, or called `process.disconnect()`.
    Closed,
    /// A line that is not JSON (the text, cut short).
    NotJson(String),
    /// A line of more than [`MAX_LINE`] bytes, ended or not.
    TooLong(usize),
    /// The worker does not read what the primary sends: its end of the socket is full.
    NotReading,
    /// Any other error from the kernel.
    Io(io::Error),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Closed => write!(f, "its IPC channel is closed"),
            Fault::NotJson(line) => write!(f, "it sent a line that is not JSON: {line}"),
            Fault::TooLong(n) => write!(
                f,
                "it sent {n} bytes of one line, over the limit of {MAX_LINE}"
            ),
            Fault::NotReading => write!(
                f,
                "it does not read its IPC channel (the socket is full); messages would be lost"
            ),
            Fault::Io(e) => write!(f, "its IPC channel failed: {e}"),
        }
    }
}

impl Channel {
    /// A connected pair: the primary keeps the [`Channel`], the worker inherits the
    /// [`OwnedFd`] (both ends close-on-exec; chapter 1's spawn clears the flag on the
    /// worker's end, in the worker only). A byte stream, as Node's is: `SOCK_STREAM`.
    // ANCHOR: pair
    pub fn pair() -> io::Result<(Channel, OwnedFd)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // Only our end: Node makes its own end non-blocking when it opens it.
        nix::fcntl::fcntl(
            &ours,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        let channel = Channel {
            socket: ours,
            unread: Vec::new(),
            in_flight: false,
            queue: VecDeque::new(),
        };
        Ok((channel, theirs))
    }
    // ANCHOR_END: pair

    /// Reads everything the worker has sent so far, and cuts it into messages. Returns
    /// the messages, and the fault that ended the reading, if one did: a worker's last
    /// words before it closed its end are still its words.
    // ANCHOR: read
    pub fn read(&mut self) -> (Vec<Incoming>, Option<Fault>) {
        let mut messages = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let (n, fds) = match self.recv(&mut buf) {
                Ok(Some(read)) => read,
                Ok(None) => return (messages, None),
                Err(fault) => return (messages, Some(fault)),
            };
            self.unread.extend_from_slice(&buf[..n]);
            // One fd per chunk at most, Node's reader says: SCM_RIGHTS messages are never
            // merged. It belongs to the NODE_HANDLE line of this chunk.
            let mut fd = fds.into_iter().next();
            while let Some(end) = self.unread.iter().position(|&b| b == b'\n') {
                // Too long is too long, whether its newline came in the same read or not.
                if end > MAX_LINE {
                    return (messages, Some(Fault::TooLong(end)));
                }
                let line: Vec<u8> = self.unread.drain(..=end).collect();
                let message = match serde_json::from_slice::<Value>(&line[..end]) {
                    Ok(message) => message,
                    Err(_) => return (messages, Some(Fault::NotJson(excerpt(&line[..end])))),
                };
                let fd = match message["cmd"] == "NODE_HANDLE" {
                    true => fd.take(),
                    false => None,
                };
                messages.push(Incoming { message, fd });
            }
            if self.unread.len() > MAX_LINE {
                return (messages, Some(Fault::TooLong(self.unread.len())));
            }
        }
    }
    // ANCHOR_END: read

    /// One `recvmsg`: how many bytes, and the fds that came with them; `None` when
    /// nothing is waiting.
    fn recv(&self, buf: &mut [u8]) -> Result<Option<(usize, Vec<OwnedFd>)>, Fault> {
        let mut space = cmsg_space!([RawFd; 4]);
        loop {
            let mut iov = [IoSliceMut::new(buf)];
            // MSG_CMSG_CLOEXEC: an fd a worker sends must not leak into the next worker.
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
            match recvmsg::<()>(self.socket.as_raw_fd(), &mut iov, Some(&mut space), flags) {
                Ok(msg) if msg.bytes == 0 => return Err(Fault::Closed),
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for cmsg in msg.cmsgs().map_err(|e| Fault::Io(e.into()))? {
                        if let ControlMessageOwned::ScmRights(received) = cmsg {
                            // SAFETY: the kernel just installed these fds in our table
                            // for this message; nothing else owns them.
                            fds.extend(
                                received
                                    .into_iter()
                                    .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) }),
                            );
                        }
                    }
                    return Ok(Some((msg.bytes, fds)));
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::ECONNRESET) => return Err(Fault::Closed),
                Err(e) => return Err(Fault::Io(e.into())),
            }
        }
    }

    /// Sends a message without a handle. While a handle waits for its acknowledgement it
    /// waits too, as `_send` queues it in `child_process.js`: messages keep their order.
    pub fn send(&mut self, message: &Value) -> Result<(), Fault> {
        let line = to_line(message);
        let acknowledgement = matches!(
            message["cmd"].as_str(),
            Some("NODE_HANDLE_ACK" | "NODE_HANDLE_NACK")
        );
        match self.in_flight && !acknowledgement {
            true => {
                self.queue.push_back((line, None));
                Ok(())
            }
            false => self.write(&line, None),
        }
    }

    /// Sends `message` with an fd: wrapped as Node wraps it, `{"cmd":"NODE_HANDLE",
    /// "type":"net.Native","msg":message}`, the line and the fd in one `sendmsg`. Only
    /// one handle is in flight on a channel: until the worker's `NODE_HANDLE_ACK`, this
    /// one waits in the queue, with a copy of the fd, so it stays open.
    // ANCHOR: send_handle
    pub fn send_handle(&mut self, message: &Value, fd: BorrowedFd<'_>) -> Result<(), Fault> {
        // "net.Native": a bare libuv handle, as the cluster's primary sends a connection
        // (a TCP wrap); the receiver makes a TCP handle of it whatever the socket is.
        let wrapped = json!({ "cmd": "NODE_HANDLE", "type": "net.Native", "msg": message });
        let line = to_line(&wrapped);
        if self.in_flight {
            let copy = fd.try_clone_to_owned().map_err(Fault::Io)?;
            self.queue.push_back((line, Some(copy)));
            return Ok(());
        }
        self.write(&line, Some(fd))?;
        self.in_flight = true;
        Ok(())
    }
    // ANCHOR_END: send_handle

    /// The worker acknowledged the handle in flight (`NODE_HANDLE_ACK`, or the `NACK` that
    /// says its fd did not arrive): send what waited, up to the next handle.
    // ANCHOR: acknowledged
    pub fn acknowledged(&mut self) -> Result<(), Fault> {
        self.in_flight = false;
        while let Some((line, fd)) = self.queue.pop_front() {
            self.write(&line, fd.as_ref().map(|fd| fd.as_fd()))?;
            if fd.is_some() {
                self.in_flight = true;
                return Ok(());
            }
        }
        Ok(())
    }
    // ANCHOR_END: acknowledged

    /// Writes one line, with its fd, in one `sendmsg`, without waiting. The worker's
    /// end of the socket holds some 200 KB, and the primary sends a few hundred bytes
    /// per connection, each after the worker answered the last one: if it is full, the
    /// worker has stopped reading, and half a line would corrupt the stream.
    fn write(&self, line: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), Fault> {
        let iov = [IoSlice::new(line)];
        let fds: Vec<RawFd> = fd.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        loop {
            match sendmsg::<()>(self.socket.as_raw_fd(), &iov, cmsgs, flags, None) {
                Ok(n) if n == line.len() => return Ok(()),
                Ok(_) | Err(Errno::EAGAIN) => return Err(Fault::NotReading),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(Fault::Closed),
                Err(e) => return Err(Fault::Io(e.into())),
            }
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// `JSON.stringify(message) + '\n'`.
fn to_line(message: &Value) -> Vec<u8> {
    let mut line = message.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// The start of a bad line, for the log: at most 60 characters, as text.
fn excerpt(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{:?}...", &text[..at]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn pair() -> (Channel, UnixStream) {
        let (ours, theirs) = Channel::pair().unwrap();
        (ours, UnixStream::from(theirs))
    }

    #[test]
    fn lines_are_cut_wherever_the_reads_end() {
        let (mut ours, mut theirs) = pair();
        theirs
            .write_all(b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"on")
            .unwrap();
        let (messages, fault) = ours.read();
        assert!(messages.is_empty() && fault.is_none());
        theirs.write_all(b"line\",\"seq\":0}\n{\"a\":1}\n").unwrap();
        let (messages, fault) = ours.read();
        assert!(fault.is_none());
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].message["act"], "online");
        assert_eq!(messages[1].message["a"], 1);
    }

    #[test]
    fn garbage_and_endless_lines_are_faults_and_the_words_before_them_count() {
        let (mut ours, mut theirs) = pair();
        theirs
            .write_all(b"{\"ok\":true}\nthis is not json\n")
            .unwrap();
        let (messages, fault) = ours.read();
        assert_eq!(messages.len(), 1);
        assert!(matches!(fault, Some(Fault::NotJson(ref l)) if l.contains("not json")));

        let fault = fault_after(vec![b'x'; MAX_LINE + 100_000]);
        assert!(matches!(fault, Fault::TooLong(_)), "{fault}");
    }

    /// The fault our end reports while a worker writes `bytes` (from a thread: more than
    /// the socket holds at once).
    fn fault_after(bytes: Vec<u8>) -> Fault {
        let (mut ours, theirs) = pair();
        let writer = std::thread::spawn(move || {
            let mut theirs = theirs;
            let _ = theirs.write_all(&bytes);
        });
        let fault = loop {
            if let (_, Some(fault)) = ours.read() {
                break fault;
            }
        };
        drop(ours);
        writer.join().unwrap();
        fault
    }

    /// A line over the limit whose newline arrives in the same read as its last bytes (a
    /// Node worker's own next message right behind it) is still over the limit.
    #[test]
    fn a_line_over_the_limit_is_too_long_even_with_its_newline() {
        let mut line = vec![b'x'; MAX_LINE + 100];
        line.extend_from_slice(b"{\"cmd\":\"NODE_CLUSTER\"}\n");
        let fault = fault_after(line);
        assert!(matches!(fault, Fault::TooLong(_)), "{fault}");
    }

    #[test]
    fn a_closed_end_is_a_fault() {
        let (mut ours, theirs) = pair();
        drop(theirs);
        assert!(matches!(ours.read(), (_, Some(Fault::Closed))));
        assert!(matches!(ours.send(&json!({})), Err(Fault::Closed)));
    }

    #[test]
    fn one_handle_in_flight_and_the_rest_waits_for_its_ack() {
        let (mut ours, mut theirs) = pair();
        let (a, _a) = UnixStream::pair().unwrap();
        ours.send_handle(&json!({ "n": 1 }), a.as_fd()).unwrap();
        ours.send(&json!({ "n": 2 })).unwrap();
        ours.send_handle(&json!({ "n": 3 }), a.as_fd()).unwrap();
        ours.send(&json!({ "cmd": "NODE_HANDLE_ACK" })).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut got = String::new();
        let _ = theirs.read_to_string(&mut got);
        assert_eq!(
            got,
            "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"n\":1}}\n\
             {\"cmd\":\"NODE_HANDLE_ACK\"}\n",
            "only the first handle, and the acknowledgement that never waits"
        );
        ours.acknowledged().unwrap();
        got.clear();
        let _ = theirs.read_to_string(&mut got);
        assert_eq!(
            got, "{\"n\":2}\n{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"n\":3}}\n",
            "after the ack: what waited, up to and with the next handle"
        );
    }
}
