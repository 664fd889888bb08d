//! The prologue's library: the event loop it builds as its last server model, which every
//! worker of the later chapters runs ([`server::Server`]), and the self-pipe that turns a
//! signal into a readable fd ([`signals::SignalPipe`]).

pub mod server;
pub mod signals;
