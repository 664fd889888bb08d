//! Lifecycle logging: one line per event, with the time, who is speaking and its pid.
//!
//! Explained in chapter 1. Every line looks like
//! `12:00:01.234 master[4121] worker 2 (pid 4125) online`, so a reader can follow master
//! and workers interleaved in one terminal, and a test can wait for a line it expects.
//! Workers inherit the master's stdout, so all processes write to the same terminal; each
//! line is written with a single `write` so lines from different processes do not mix.

use std::error::Error;
use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a chapter's `master` and `worker` functions return: an exit code, or an error for
/// [`exit_code`] to report.
pub type Outcome = Result<ExitCode, Box<dyn Error>>;

/// This process's worker id, once it knows it is a worker; 0 in a master.
static WORKER: AtomicU32 = AtomicU32::new(0);

/// From now on this process's lines say `worker ID` instead of `master`: called as soon
/// as a process learns it is a worker (chapter 1's `master_or_worker`).
pub fn speak_as_worker(id: u32) {
    WORKER.store(id, Ordering::SeqCst);
}

/// Prints one log line: `HH:MM:SS.mmm role[pid] message`.
///
/// ```no_run
/// shared::log!("worker {} (pid {}) online", 2, 4125);
/// ```
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}

/// The name of a process that is neither master nor worker, once [`speak_as`] gave it.
static NAME: OnceLock<&'static str> = OnceLock::new();

/// From now on this process's lines say `name` (chapter 6b's `agent`): for a helper
/// process a master starts beside its workers.
pub fn speak_as(name: &'static str) {
    let _ = NAME.set(name);
}

/// Who is speaking: `master`, or `worker 3` once [`speak_as_worker`] was called, or the
/// name [`speak_as`] gave.
fn role() -> String {
    if let Some(name) = NAME.get() {
        return name.to_string();
    }
    match WORKER.load(Ordering::SeqCst) {
        0 => "master".to_string(),
        id => format!("worker {id}"),
    }
}

/// Writes one line; used by [`log!`].
pub fn line(message: fmt::Arguments<'_>) {
    let text = format!(
        "{} {}[{}] {}\n",
        clock(),
        role(),
        std::process::id(),
        message
    );
    // One write_all on a locked stdout: one line, never interleaved with another
    // process's line. A closed stdout (the reader went away) must not kill the server.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The wall-clock time of day in UTC, `HH:MM:SS.mmm`.
fn clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Turns what a chapter's `master` or `worker` returned into the process's exit code,
/// logging the error, if any, in words a learner can act on.
pub fn exit_code(result: Outcome) -> ExitCode {
    match result {
        Ok(code) => code,
        // Ctrl-C during start-up: a requested stop, not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::Interrupted) =>
        {
            crate::log!("{e}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::log!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `1 worker serves`, `3 workers serve`: for ready lines.
pub fn serve(n: usize) -> String {
    match n {
        1 => "1 worker serves".to_string(),
        n => format!("{n} workers serve"),
    }
}

/// `1 worker`, `3 workers`: for log lines that count workers.
pub fn workers(n: usize) -> String {
    match n {
        1 => "1 worker".to_string(),
        n => format!("{n} workers"),
    }
}
