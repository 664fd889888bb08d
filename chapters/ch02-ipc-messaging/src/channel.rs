//! The IPC channel between a master and one worker: a Unix `socketpair`.
//!
//! Explained in chapter 2 (messages) and chapter 5 (passing a file descriptor).
//!
//! Node builds its IPC channel the same way: before forking, the parent makes a pair of
//! connected Unix sockets, keeps one end, and lets the child inherit the other, telling it
//! the fd number in `NODE_CHANNEL_FD` (here `CLUSTER_CHANNEL_FD`, see [`crate::worker`]).
//!
//! We ask for `SOCK_SEQPACKET` rather than Node's byte stream: the kernel keeps message
//! boundaries for us (one `send` is one `recv`, never half of one or two glued together),
//! so there is no framing code to get wrong, and a file descriptor sent with `SCM_RIGHTS`
//! arrives with exactly the message it was sent with.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// The largest message we send or accept, in bytes. Larger ones are refused by
/// [`Channel::send`] and reported as [`ChannelError::TooLarge`] by [`Channel::recv`].
pub const MAX_MESSAGE: usize = 128 * 1024;

/// One end of the channel. Cloning it gives another handle on the same socket, so one
/// thread can wait for messages while another sends.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

struct Inner {
    socket: OwnedFd,
    /// Where messages are received, kept between calls: a channel that carries one
    /// message per connection (chapter 6) must not allocate 128 KiB for each.
    buf: Mutex<Vec<u8>>,
}

/// A message as it arrived: its text and, if one came with it, a file descriptor.
#[derive(Debug)]
pub struct Message {
    pub text: String,
    /// The fd that travelled with this message, already open in this process. Dropping
    /// the `Message` closes it, so an fd nobody expected cannot leak.
    ///
    /// `None` also when an fd was sent but could not be installed here because this
    /// process has no fd to spare (the kernel drops it and says so with `MSG_CTRUNC`):
    /// a receiver that expected an fd must treat its absence as "could not take it".
    pub fd: Option<OwnedFd>,
}

/// Why a message could not be sent or received.
#[derive(Debug)]
pub enum ChannelError {
    /// The other process closed its end, most often because it exited.
    Closed,
    /// A message over [`MAX_MESSAGE`] bytes; nothing was delivered.
    TooLarge(usize),
    /// A message that is not UTF-8 text; it was dropped (and any fd with it closed).
    Malformed(String),
    /// Any other error from the operating system.
    Io(io::Error),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Closed => {
                write!(f, "the IPC channel is closed (the other process exited)")
            }
            ChannelError::TooLarge(n) => {
                write!(
                    f,
                    "an IPC message of {n} bytes is over the limit of {MAX_MESSAGE}"
                )
            }
            ChannelError::Malformed(why) => write!(f, "a malformed IPC message was dropped: {why}"),
            ChannelError::Io(e) => write!(f, "IPC channel error: {e}"),
        }
    }
}

impl std::error::Error for ChannelError {}

impl From<Errno> for ChannelError {
    fn from(errno: Errno) -> Self {
        match errno {
            Errno::EPIPE | Errno::ECONNRESET => ChannelError::Closed,
            e => ChannelError::Io(e.into()),
        }
    }
}

impl Channel {
    /// Creates a connected pair: the master keeps the [`Channel`] and hands the
    /// [`OwnedFd`] to the worker it is about to start.
    ///
    /// Both ends are close-on-exec; chapter 1's `spawn_worker` clears the flag on the child's end
    /// only in the child, so no other process inherits it by accident.
    // ANCHOR: pair
    pub fn pair() -> io::Result<(Channel, OwnedFd)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel::from_fd(ours), theirs))
    }
    // ANCHOR_END: pair

    /// Wraps an fd that is one end of a `SOCK_SEQPACKET` socketpair.
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel {
            inner: Arc::new(Inner {
                socket: fd,
                buf: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sends one text message. Blocks only if the other side has stopped reading and
    /// its queue is full.
    pub fn send(&self, text: &str) -> Result<(), ChannelError> {
        self.send_message(text, None)
    }

    /// Sends one text message with a file descriptor attached (`SCM_RIGHTS`). The
    /// receiver gets its own fd for the same open socket or file; ours stays open until we
    /// close it.
    pub fn send_with_fd(&self, text: &str, fd: BorrowedFd<'_>) -> Result<(), ChannelError> {
        self.send_message(text, Some(fd))
    }

    // ANCHOR: send
    fn send_message(&self, text: &str, fd: Option<BorrowedFd<'_>>) -> Result<(), ChannelError> {
        // A zero-length packet would look exactly like end-of-file to the reader.
        if text.is_empty() {
            return Err(ChannelError::Malformed(
                "an empty message cannot be sent".into(),
            ));
        }
        if text.len() > MAX_MESSAGE {
            return Err(ChannelError::TooLarge(text.len()));
        }
        // ANCHOR: solution_ch02_send
        let iov = [IoSlice::new(text.as_bytes())];
        let fds: Vec<RawFd> = fd.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        // MSG_NOSIGNAL: a worker whose master died gets EPIPE here, not a fatal SIGPIPE.
        sendmsg::<()>(
            self.inner.socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
        // ANCHOR_END: solution_ch02_send
    }
    // ANCHOR_END: send

    /// Waits for the next message.
    pub fn recv(&self) -> Result<Message, ChannelError> {
        self.recv_message(MsgFlags::empty())
            .map(|m| m.expect("a blocking receive returns a message or an error"))
    }

    /// Takes the next message if one is waiting, without blocking: `Ok(None)` if there is
    /// none. This is what an event loop calls when epoll says the channel is readable.
    pub fn try_recv(&self) -> Result<Option<Message>, ChannelError> {
        self.recv_message(MsgFlags::MSG_DONTWAIT)
    }

    // ANCHOR: recv
    fn recv_message(&self, flags: MsgFlags) -> Result<Option<Message>, ChannelError> {
        let mut buf = self.inner.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf.resize(MAX_MESSAGE, 0);
        // ANCHOR: solution_ch02_recv
        // Room for a few fds: a peer that sends more than one gets the extras closed.
        let mut space = cmsg_space!([RawFd; 4]);
        // MSG_CMSG_CLOEXEC: a received fd must not leak into processes we start later.
        let flags = flags | MsgFlags::MSG_CMSG_CLOEXEC;
        let (len, msg_flags, mut fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.inner.socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                flags,
            ) {
                // MSG_CTRUNC: not every fd sent could be installed here, most often because
                // our fd table is full. The message itself arrived.
                Ok(msg) if msg.flags.contains(MsgFlags::MSG_CTRUNC) => {
                    break (msg.bytes, msg.flags, Vec::new());
                }
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for cmsg in msg.cmsgs().map_err(ChannelError::from)? {
                        if let ControlMessageOwned::ScmRights(received) = cmsg {
                            for raw in received {
                                // SAFETY: the kernel just installed `raw` in our fd table
                                // for this message; nothing else owns it yet.
                                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                            }
                        }
                    }
                    break (msg.bytes, msg.flags, fds);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        };
        if msg_flags.contains(MsgFlags::MSG_CTRUNC) {
            // Whatever fds did fit are ours to close; the message goes on without them.
            close_received_fds(&space);
        }
        // Zero bytes: either the peer closed its end, or it sent an empty packet (ours
        // never do; see `send_message`). Only a hang-up marks the socket as closed.
        if len == 0 && fds.is_empty() && !msg_flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(match self.hung_up() {
                true => ChannelError::Closed,
                false => ChannelError::Malformed("an empty message".into()),
            });
        }
        if msg_flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(ChannelError::TooLarge(len));
        }
        // Only one fd per message is part of our protocol; any others drop (close) here.
        fds.truncate(1);
        let fd = fds.pop();
        match std::str::from_utf8(&buf[..len]) {
            Ok(text) => Ok(Some(Message {
                text: text.to_string(),
                fd,
            })),
            Err(e) => Err(ChannelError::Malformed(format!(
                "{len} bytes that are not UTF-8 text ({e})"
            ))),
        }
        // ANCHOR_END: solution_ch02_recv
    }
    // ANCHOR_END: recv
}

impl Channel {
    /// Whether the other end has closed: `poll` reports a hang-up without waiting.
    fn hung_up(&self) -> bool {
        // The kernel reports POLLHUP whatever we ask for, once the peer has closed.
        let mut fds = [PollFd::new(self.inner.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            // If we cannot tell, treat it as closed: a worker then exits rather than spin.
            Err(_) => true,
        }
    }
}

/// Closes the fds in an `SCM_RIGHTS` control message that the kernel cut short
/// (`MSG_CTRUNC`). nix will not read such a buffer, but the kernel may still have
/// installed as many fds as it had room for, and each one is ours.
fn close_received_fds(control: &[u8]) {
    let header = std::mem::size_of::<libc::cmsghdr>();
    let align = std::mem::size_of::<usize>();
    // SAFETY: CMSG_LEN is arithmetic on its argument.
    let data_offset = unsafe { libc::CMSG_LEN(0) } as usize;
    let mut at = 0;
    while at + header <= control.len() {
        // SAFETY: `at + header` is within the buffer; read_unaligned copes with any
        // alignment, and every bit pattern is a valid cmsghdr.
        let cmsg: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(control[at..].as_ptr().cast()) };
        let len = cmsg.cmsg_len as usize;
        if len < data_offset || at + len > control.len() {
            return;
        }
        if cmsg.cmsg_level == libc::SOL_SOCKET && cmsg.cmsg_type == libc::SCM_RIGHTS {
            for raw in control[at + data_offset..at + len].chunks_exact(4) {
                let fd = RawFd::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
                // SAFETY: the kernel installed this fd for us with the message; nothing
                // else knows of it, so closing it here is its one and only close.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        at += (len + align - 1) & !(align - 1);
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn messages_keep_their_boundaries() {
        let (a, b) = Channel::pair().unwrap();
        let b = Channel::from_fd(b);
        a.send("one").unwrap();
        a.send("two").unwrap();
        assert_eq!(b.recv().unwrap().text, "one");
        assert_eq!(b.recv().unwrap().text, "two");
        assert!(b.try_recv().unwrap().is_none());
    }

    #[test]
    fn closed_and_too_large() {
        let (a, b) = Channel::pair().unwrap();
        assert!(matches!(
            a.send(&"x".repeat(MAX_MESSAGE + 1)),
            Err(ChannelError::TooLarge(_))
        ));
        drop(b);
        assert!(matches!(a.recv(), Err(ChannelError::Closed)));
        assert!(matches!(a.send("hi"), Err(ChannelError::Closed)));
    }

    #[test]
    fn malformed_packets_are_reported_not_fatal() {
        let (a, b) = Channel::pair().unwrap();
        // Raw packets, as a foreign or buggy peer could send them.
        for bad in [&b"\xff\xfe not UTF-8"[..], &b""[..]] {
            nix::sys::socket::send(b.as_raw_fd(), bad, MsgFlags::empty()).unwrap();
            assert!(
                matches!(a.recv(), Err(ChannelError::Malformed(_))),
                "{bad:?} should be reported as malformed"
            );
        }
        // The channel still works afterwards, and a real close still reads as Closed.
        Channel::from_fd(b.try_clone().unwrap())
            .send("after")
            .unwrap();
        assert_eq!(a.recv().unwrap().text, "after");
        drop(b);
        assert!(matches!(a.recv(), Err(ChannelError::Closed)));
    }

    #[test]
    fn an_fd_travels_with_its_message() {
        let (a, b) = Channel::pair().unwrap();
        let b = Channel::from_fd(b);
        let mut file = tempfile();
        file.write_all(b"shared file").unwrap();
        a.send_with_fd("here", file.as_fd()).unwrap();
        let msg = b.recv().unwrap();
        assert_eq!(msg.text, "here");
        let mut got = std::fs::File::from(msg.fd.unwrap());
        got.rewind().unwrap();
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "shared file");
    }

    /// A peer that ignores the limit (ours never sends more): the message is reported as
    /// too large, not handed on cut short, and the next one still arrives.
    #[test]
    fn a_message_over_the_limit_is_reported_not_cut_short() {
        let (a, b) = Channel::pair().unwrap();
        let big = vec![b'x'; MAX_MESSAGE + 1];
        nix::sys::socket::setsockopt(&b, nix::sys::socket::sockopt::SndBuf, &(4 * MAX_MESSAGE))
            .unwrap();
        nix::sys::socket::send(b.as_raw_fd(), &big, MsgFlags::empty()).unwrap();
        assert!(
            matches!(a.recv(), Err(ChannelError::TooLarge(_))),
            "a message over MAX_MESSAGE must be reported as too large"
        );
        Channel::from_fd(b).send("after").unwrap();
        assert_eq!(a.recv().unwrap().text, "after");
    }

    /// Our protocol carries one fd per message; a peer that sends more gets the others
    /// closed on arrival, not leaked. Two copies of a pipe's write end travel in one
    /// message: once the message and our own copy are gone, the read end must see the
    /// pipe closed.
    #[test]
    fn fds_beyond_the_first_are_closed_on_arrival() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let (a, b) = Channel::pair().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let fds = [writer.as_raw_fd(), writer.as_raw_fd()];
        sendmsg::<()>(
            b.as_raw_fd(),
            &[IoSlice::new(b"two")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(writer);
        let message = a.recv().unwrap();
        assert_eq!(message.text, "two");
        assert!(message.fd.is_some(), "the first fd is the message's");
        drop(message);
        let mut watch = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        poll(&mut watch, PollTimeout::ZERO).unwrap();
        assert!(
            watch[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP)),
            "a write end of the pipe is still open: the second fd of the message leaked"
        );
    }

    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("cfs-channel-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(path).unwrap();
        file
    }
}
