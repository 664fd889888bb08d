//! What the chapters of *Cluster from Scratch* share: each module is one idea, taught once
//! in the chapter its doc comment names and reused by every chapter after it.
//!
//! | module | idea | chapter |
//! |---|---|---|
//! | [`args`] | the common command line | 1 |
//! | [`log`](mod@log) | one line per lifecycle event | 1 |
//! | [`spawn`] | master or worker? start a worker by re-running this binary (the program on disk now) | 1, 2, 9 |
//! | [`cluster`] | the master's loop: fork, events, shutdown; sending an fd to a worker; a signal as an event | 1, 2, 5, 6, 9 |
//! | [`http`] | the `Hello world by <pid>` responder | 1 |
//! | [`server`] | the worker's single-threaded event loop; adopting a socket or a connection; draining, and lingering for a last request | 1, 2, 5, 6, 7, 9 |
//! | [`net`] | binding a port, EADDRINUSE, `SO_REUSEADDR` and `SO_REUSEPORT`; reserving a port | 1, 3, 10 |
//! | [`channel`] | the IPC channel, messages and fds | 2, 5 |
//! | [`round_robin`] | the master accepts, the workers take turns (Node's `RoundRobinHandle`); a leaving worker is retired | 6, 7 |
//! | [`supervisor`] | restart a dead worker, with backoff; give up on a crash loop | 7 |
//! | [`graceful`] | a worker's graceful exit: tell the master, drain, exit | 7, 9 |
//! | [`keeper`] | the master that keeps its workers serving: restarts, leaving workers, a draining stop; a stuck worker stopped with signals; a replacement that serves before the old worker drains | 7, 8, 9 |

pub mod args;
pub mod channel;
pub mod cluster;
pub mod graceful;
pub mod http;
pub mod keeper;
pub mod log;
pub mod net;
pub mod round_robin;
pub mod server;
pub mod spawn;
pub mod supervisor;
