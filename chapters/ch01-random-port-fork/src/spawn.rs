//! Starting a worker: re-run this same binary, and tell the copy it is a worker.
//!
//! Explained in chapter 1: re-executing instead of a bare `fork`, and a worker that dies
//! with its master. Chapter 2 hands the worker an fd to inherit, its end of the IPC
//! channel; chapter 9's reload relies on [`exe`], the program's path, so that a new worker
//! runs the program on disk now.
//!
//! Node's `cluster.fork()` starts `process.execPath` again with the same script and sets
//! `NODE_UNIQUE_ID` in the child's environment; `cluster.isPrimary` is just "that variable
//! is not set". We do the same with [`WORKER_ID_VAR`]. An fd the worker inherits travels
//! as Node's channel does: its number in a variable (`NODE_CHANNEL_FD`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode};
use std::sync::OnceLock;

use shared::log;
use shared::log::Outcome;

/// The environment variable that makes a process a worker, and gives its id (1, 2, ...).
pub const WORKER_ID_VAR: &str = "CLUSTER_WORKER_ID";
/// Every chapter's `main`, once its options are parsed: run `worker` if this process is
/// a worker, `master` if not. Both get the chapter's `Options`: a worker parsed the same
/// command line as its master.
// ANCHOR: master_or_worker
pub fn master_or_worker<Options>(
    options: &Options,
    master: fn(&Options) -> Outcome,
    worker: fn(u32, &Options) -> Outcome,
) -> ExitCode {
    // Am I a worker? The same question as Node's `cluster.isPrimary`, asked the same way:
    // is the variable the master sets for its workers in my environment?
    let result = match role() {
        Ok(Some(id)) => {
            // From here on, this process's log lines say `worker ID`.
            log::speak_as_worker(id);
            worker(id, options)
        }
        Ok(None) => master(options),
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(2);
        }
    };
    log::exit_code(result)
}
// ANCHOR_END: master_or_worker

/// The whole `main` of every chapter after this one: parse the chapter's `Options` (a clap
/// `Parser`), then [`master_or_worker`]. Chapter 1 writes the two steps out.
pub fn run<Options: clap::Parser>(
    master: fn(&Options) -> Outcome,
    worker: fn(u32, &Options) -> Outcome,
) -> ExitCode {
    master_or_worker(&Options::parse(), master, worker)
}

/// Master or worker, from the environment: `Ok(None)` for a master, `Ok(Some(id))` for
/// worker `id`, and an error that names the variable when it is set to anything but a
/// worker id (a learner who sets it by hand must not silently get a master).
// ANCHOR: role
fn role() -> Result<Option<u32>, String> {
    static ROLE: OnceLock<Result<Option<u32>, String>> = OnceLock::new();
    ROLE.get_or_init(|| {
        let Some(value) = std::env::var_os(WORKER_ID_VAR) else {
            return Ok(None);
        };
        match value.to_str().and_then(|v| v.parse::<u32>().ok()) {
            Some(id) if id > 0 => Ok(Some(id)),
            _ => Err(format!(
                "{WORKER_ID_VAR}={value:?} is not a worker id: a master sets it to 1, 2, ... \
                 for the workers it starts; unset it to start a master"
            )),
        }
    })
    .clone()
}
// ANCHOR_END: role

/// A worker as its master sees it.
pub struct Worker {
    pub id: u32,
    pub pid: u32,
    // Kept so the handle is not dropped early; the master reaps the worker with
    // `waitpid` on `pid` (see `crate::cluster`), not through this.
    _child: Child,
}

/// An fd for the worker to inherit, and the variable that tells it the fd's number:
/// chapter 2's IPC channel, given the way Node gives `NODE_CHANNEL_FD`.
pub struct Inherit {
    pub var: &'static str,
    pub fd: OwnedFd,
}

/// Starts worker `id` by running this binary again with the same arguments.
///
/// `theirs`, if given, is an fd the worker inherits (chapter 2: its end of the IPC
/// channel). `env` adds variables of the chapter's own (chapter 7 tells a worker which
/// start it is).
// ANCHOR: spawn
pub fn spawn_worker(
    id: u32,
    theirs: Option<Inherit>,
    env: &[(&str, String)],
) -> io::Result<Worker> {
    // ANCHOR: solution_ch01_spawn
    let mut command = Command::new(exe()?);
    command
        .args(std::env::args_os().skip(1))
        .env(WORKER_ID_VAR, id.to_string());
    if let Some(theirs) = &theirs {
        command.env(theirs.var, theirs.fd.as_raw_fd().to_string());
    }
    command.envs(env.iter().map(|(name, value)| (name, value)));
    let inherit = theirs.as_ref().map(|theirs| theirs.fd.as_raw_fd());
    let master = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; `prepare_child` makes only such calls
    // (fcntl, signal, prctl, getppid, _exit) and allocates nothing.
    unsafe {
        command.pre_exec(move || prepare_child(inherit, master));
    }
    let child = command.spawn()?;
    // `theirs` is dropped here: the master closes its copy of the worker's end, so when
    // the worker exits, the master's end reads end-of-file.
    Ok(Worker {
        id,
        pid: child.id(),
        _child: child,
    })
    // ANCHOR_END: solution_ch01_spawn
}
// ANCHOR_END: spawn

/// Starts worker `id` running `command`, any program rather than this one (chapter 11
/// starts `node app.js`), with the same care as [`spawn_worker`]: `theirs`, if given, is
/// inherited and named in its variable, and `prepare_child` runs in the child, so the
/// worker dies with its master. `command` comes with its arguments and environment, and
/// with any `pre_exec` of its own, which runs before `prepare_child`.
pub fn spawn_command(id: u32, mut command: Command, theirs: Option<Inherit>) -> io::Result<Worker> {
    if let Some(theirs) = &theirs {
        command.env(theirs.var, theirs.fd.as_raw_fd().to_string());
    }
    let inherit = theirs.as_ref().map(|theirs| theirs.fd.as_raw_fd());
    let master = std::process::id();
    // SAFETY: as in `spawn_worker`: `prepare_child` makes only async-signal-safe calls.
    unsafe {
        command.pre_exec(move || prepare_child(inherit, master));
    }
    let child = command.spawn()?;
    Ok(Worker {
        id,
        pid: child.id(),
        _child: child,
    })
}

/// The path of this program, as it was when the master first asked: every worker runs
/// what is at that path *now*. Rebuild the binary while the master runs, and the next
/// worker started runs the new code (chapter 9's reload); the kernel's own name for the
/// running file would by then say `(deleted)`.
// ANCHOR: exe
pub fn exe() -> io::Result<PathBuf> {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    EXE.get_or_init(|| std::env::current_exe().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| io::Error::other(format!("cannot find this program's path: {e}")))
}
// ANCHOR_END: exe

/// Runs in the child after `fork`, before `exec`.
// ANCHOR: prepare_child
fn prepare_child(inherit: Option<i32>, master: u32) -> io::Result<()> {
    // The channel fd was made close-on-exec so that no other child inherits it. In this
    // one child we clear the flag, so it survives the exec.
    if let Some(fd) = inherit {
        // SAFETY: fcntl on an fd we own, with plain integer arguments.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    // Ctrl-C in a terminal sends SIGINT to every process in the foreground group, workers
    // included. Workers ignore it (an ignored signal stays ignored across exec), so the
    // master alone decides how they stop: SIGTERM, in order, with their exits logged.
    // SAFETY: signal() with SIG_IGN is async-signal-safe and touches no memory.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // Ask the kernel to kill us when the master dies, even by kill -9, so no worker is
    // left serving on its own. SIGKILL rather than SIGTERM: a running worker dies of
    // either (it does not catch SIGTERM), but a stopped one (kill -STOP) would keep
    // SIGTERM pending until something continued it, and with its master gone nothing
    // may ever do so. SIGKILL cannot be blocked or caught, and ends a stopped process
    // too. If the master already died before this line ran, our parent is no longer the
    // master: give up now.
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl and getppid take plain integers; _exit never returns.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != master {
                libc::_exit(1);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = master;
    Ok(())
}
// ANCHOR_END: prepare_child
