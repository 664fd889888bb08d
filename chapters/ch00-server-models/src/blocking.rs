//! Serving one connection with blocking I/O, as the process and thread models do.
//!
//! Here a `read` simply waits until the client sends something, so the code is a plain
//! loop: read, parse, answer, repeat. That simplicity is what these two models buy with a
//! whole process or thread per connection: while this function waits, the process or
//! thread running it can do nothing else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use shared::http::{self, Parsed, Response};

/// Serves HTTP requests on `stream` until the client closes it, asks to close it, sends
/// something that is not HTTP (400), or stays silent too long.
///
/// `worker` is the id the answer names. A client must send each whole request within
/// `idle_timeout` of the previous answer (or of connecting); one that trickles a byte at
/// a time is dropped within twice that, so no client can hold its process or thread
/// forever.
// ANCHOR: serve
pub fn serve(mut stream: TcpStream, worker: u32, idle_timeout: Duration) {
    // One system call per connection, not per read: every read gives up after
    // `idle_timeout`, and the deadline below catches a client that keeps it alive a byte
    // at a time. The write timeout stops a client that never reads its answers.
    if stream.set_read_timeout(Some(idle_timeout)).is_err()
        || stream.set_write_timeout(Some(idle_timeout)).is_err()
    {
        return;
    }
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut deadline = Instant::now() + idle_timeout;
    loop {
        match http::parse(&input) {
            Parsed::Request { request, used } => {
                input.drain(..used);
                let answer = http::hello(worker).to_bytes(request.keep_alive);
                if stream.write_all(&answer).is_err() || !request.keep_alive {
                    return;
                }
                deadline = Instant::now() + idle_timeout;
            }
            Parsed::Bad(why) => {
                let answer = Response {
                    status: 400,
                    body: format!("bad request: {why}\n"),
                };
                let _ = stream.write_all(&answer.to_bytes(false));
                return; // dropping the stream closes the connection
            }
            // `parse` answers Bad before `input` outgrows one largest request, so this
            // buffer stays bounded whatever the client sends.
            Parsed::Partial if Instant::now() >= deadline => return,
            Parsed::Partial => match stream.read(&mut chunk) {
                Ok(0) => return, // the client closed its end
                Ok(n) => input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return, // timed out, or the connection broke
            },
        }
    }
}
// ANCHOR_END: serve
