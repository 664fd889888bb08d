//! Chapter 1's library: a master and its workers. A worker is this same program run again
//! ([`spawn`]); the master's loop starts workers, hears of their exits and stops them all
//! ([`cluster`]); each worker draws a port of its own ([`net`]); `--workers` says how
//! many ([`workers`]).

pub mod cluster;
pub mod net;
pub mod spawn;
pub mod workers;
