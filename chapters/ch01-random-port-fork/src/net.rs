//! A port of its own for each worker, drawn at random, as the articles' first cluster does.

use std::net::{IpAddr, TcpListener};

use nix::errno::Errno;
use shared::log;
use shared::net::{listen, ListenError};

/// Listens on a port chosen at random, as the workers of chapters 1 and 2 do (Node's
/// example uses `Math.random() * 10000`).
///
/// We draw from 10000–29999: below 1024 needs root, and from 32768 up is where Linux picks
/// the local ports of outgoing connections. Two workers can still draw the same number, so
/// on EADDRINUSE we draw again, and after a few misses let the kernel choose (port 0),
/// which is what a real server should do in the first place.
// ANCHOR: listen_random
pub fn listen_random(host: IpAddr) -> Result<TcpListener, ListenError> {
    for _ in 0..8 {
        let port = rand::random_range(10_000..30_000);
        match listen(host, port) {
            Err(e) if e.errno() == Errno::EADDRINUSE as i32 => {
                log!("port {port} is taken; drawing another");
            }
            result => return result,
        }
    }
    listen(host, 0)
}
// ANCHOR_END: listen_random
