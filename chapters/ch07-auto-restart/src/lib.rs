//! Chapter 7's library: the books of a master that restarts its workers
//! ([`supervisor`]), the master that keeps them serving ([`keeper`]), and a worker's
//! graceful exit ([`graceful`]).

pub mod graceful;
pub mod keeper;
pub mod supervisor;
