//! Chapter 2's library: the IPC channel between a master and each worker ([`channel`]),
//! the master's loop that hears its workers ([`cluster`]), and the worker's side
//! ([`worker`]).

pub mod channel;
pub mod cluster;
pub mod worker;
