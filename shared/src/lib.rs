//! The helpers of *Cluster from Scratch* that no chapter teaches, used by many: the
//! command line, the log line, listening on a port with a clear error, and the
//! `Hello world by <pid>` responder. Every idea the book teaches lives in the crate of the
//! chapter that teaches it.
//!
//! | module | what |
//! |---|---|
//! | [`args`] | the common command line: `--host`, `--port`, `--idle-timeout` |
//! | [`log`](mod@log) | one line per lifecycle event, with the time, who speaks and its pid |
//! | [`net`] | listening on a port; an error that says what to do |
//! | [`http`] | just enough HTTP/1.1 to answer `Hello world by <pid>` |

pub mod args;
pub mod http;
pub mod log;
pub mod net;
