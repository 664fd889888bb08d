//! The prologue's library: the event loop it builds as its last server model, which every
//! worker of the later chapters runs ([`server::Server`]).

pub mod server;
