//! Chapter 6's library: Node's round-robin handle, the master's side and the worker's
//! ([`round_robin`]).

pub mod round_robin;
