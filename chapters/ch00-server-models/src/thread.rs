//! The thread-per-connection model: the main thread accepts, and every connection gets a
//! thread of its own that serves it with blocking I/O and then ends.
//!
//! Threads share one address space, so a new one costs a stack and a kernel task rather
//! than a copy of the process. But each still costs memory that nothing else can use while
//! its client is idle, and with thousands of them the kernel spends its time choosing which
//! one runs next and switching to it.

use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use shared::log::Outcome;

use crate::backoff::{self, Backoff, PAUSE};
use crate::blocking;

/// The stack each connection's thread gets. Rust's default is 2 MiB of address space;
/// serving a hello needs a few KiB, and 10,000 threads of 2 MiB would reserve 20 GiB of
/// address space for nothing. Only the pages a thread touches cost real memory either way.
const STACK_SIZE: usize = 256 * 1024;

/// How many connections are being served, and a way to wait for that number to drop.
#[derive(Default)]
struct Active {
    count: Mutex<usize>,
    dropped: Condvar,
}

impl Active {
    fn lock(&self) -> MutexGuard<'_, usize> {
        // A thread that panicked while holding the lock left a valid count behind.
        self.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until fewer than `max` connections are being served, then counts one more.
    fn enter(&self, max: usize) {
        let mut count = self.lock();
        while *count >= max {
            count = self.dropped.wait(count).unwrap_or_else(|e| e.into_inner());
        }
        *count += 1;
    }

    fn leave(&self) {
        *self.lock() -= 1;
        self.dropped.notify_one();
    }
}

/// Accepts forever, one thread per connection, at most `max_clients` at a time.
// ANCHOR: serve
pub fn serve(listener: TcpListener, max_clients: usize, idle_timeout: Duration) -> Outcome {
    let active = Arc::new(Active::default());
    let mut backoff = Backoff::default();
    let mut number = 0u32;
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's accept queue.
        active.enter(max_clients);
        let stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            Err(e) if backoff::transient(&e) => {
                active.leave();
                continue;
            }
            Err(e) if backoff::out_of_resources(&e) => {
                active.leave();
                backoff.refused("accept failed", &e);
                std::thread::sleep(PAUSE);
                continue;
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("accept failed: {e}")).into()),
        };
        number = number.wrapping_add(1);
        let id = number;
        let done = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(STACK_SIZE)
            .spawn(move || {
                blocking::serve(stream, id, idle_timeout);
                done.leave();
            });
        match spawned {
            Ok(_detached) => backoff.recovered(),
            Err(e) => {
                // Out of threads or memory: the closure, and the connection with it, is
                // dropped, so this client is closed. The others go on.
                active.leave();
                backoff.refused("could not start a thread", &e);
                std::thread::sleep(PAUSE);
            }
        }
    }
}
// ANCHOR_END: serve
