//! Running cargo: collect what it prints, stop it at a deadline or on Ctrl-C, and leave
//! no process behind when we do.

use std::fs;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Set by Ctrl-C (or SIGTERM) once [`on_interrupt_stop`] has been called.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on, Ctrl-C stops the cargo command that is running (and everything it
/// started) instead of killing this process at once, so that a command that rewrote a
/// source file can put it back before it exits.
///
/// This process also becomes the "subreaper" of what it starts: a chapter worker whose
/// master a test killed is re-parented here rather than to init, so that [`stop`] can
/// still find it if the test itself is stopped before its clean-up ran.
pub fn on_interrupt_stop() {
    // If a handler cannot be set, Ctrl-C keeps its default effect; nothing else changes.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself, successfully or not.
    Exited { success: bool },
    /// It ran past its deadline and was stopped.
    TimedOut(Duration),
    /// Ctrl-C: it was stopped.
    Interrupted,
    /// Stopped as soon as a test failed, as asked (see [`cargo`]'s `first_failure`).
    FirstFailure,
}

/// What a cargo command printed, and how it ended.
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub ended: Ended,
    pub seconds: f64,
}

impl Output {
    pub fn success(&self) -> bool {
        self.ended == Ended::Exited { success: true }
    }

    /// Both streams, stdout first, for a log file.
    pub fn both(&self) -> String {
        format!(
            "{}\n--- stderr ---\n{}",
            self.stdout.trim_end(),
            self.stderr
        )
    }
}

/// Runs `cargo ARGS` in `root` with backtraces off and colours off; with `echo`, passes
/// its output through as it comes. Stops it (and every process under it) after
/// `timeout`, on Ctrl-C, and with `first_failure` as soon as libtest reports a failed
/// test.
pub fn cargo(
    root: &Path,
    args: &[String],
    timeout: Option<Duration>,
    echo: bool,
) -> Result<Output, String> {
    cargo_until(root, args, timeout, echo, false)
}

/// [`cargo`], stopping at the first failed test if `first_failure`.
pub fn cargo_until(
    root: &Path,
    args: &[String],
    timeout: Option<Duration>,
    echo: bool,
    first_failure: bool,
) -> Result<Output, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut full: Vec<String> = args.to_vec();
    // Options go before a `--`, if there is one.
    let at = full.iter().position(|a| a == "--").unwrap_or(full.len());
    full.splice(at..at, ["--color".to_string(), "never".to_string()]);
    let mut command = Command::new(&cargo);
    command.args(&full).current_dir(root);
    let what = format!("cargo {}", args.join(" "));
    run_until(command, &what, timeout, echo, first_failure)
}

/// Runs `command` (`what` names it in errors) as [`cargo_until`] runs cargo: its output
/// collected, backtraces and colours off, stopped with everything under it after
/// `timeout`, on Ctrl-C, and with `first_failure` at the first failed test. `verify`
/// runs test binaries this way, without cargo.
pub fn run_until(
    mut command: Command,
    what: &str,
    timeout: Option<Duration>,
    echo: bool,
    first_failure: bool,
) -> Result<Output, String> {
    let started = Instant::now();
    let mut child = command
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: Ctrl-C in the terminal reaches only us, and we decide
        // how the command stops (see `stop`).
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot run `{what}`: {err}"))?;
    let failed = Arc::new(AtomicBool::new(false));
    let out = child
        .stdout
        .take()
        .map(|s| collect(s, echo, Some(failed.clone())));
    let err = child.stderr.take().map(|s| collect(s, echo, None));
    let deadline = timeout.map(|t| started + t);
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                break Ended::Exited {
                    success: status.success(),
                }
            }
            Ok(None) => {}
            Err(err) => return Err(format!("waiting for `{what}` failed: {err}")),
        }
        if interrupted() {
            stop(child.id());
            break Ended::Interrupted;
        }
        if first_failure && failed.load(Ordering::SeqCst) {
            stop(child.id());
            break Ended::FirstFailure;
        }
        if let (Some(deadline), Some(timeout)) = (deadline, timeout) {
            if Instant::now() >= deadline {
                stop(child.id());
                break Ended::TimedOut(timeout);
            }
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = child.wait();
    let text = |reader: Option<thread::JoinHandle<String>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        stdout: text(out),
        stderr: text(err),
        ended,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads a pipe to its end on a thread of its own, echoing it if asked. For stdout,
/// `failed` is set once a line reports a failed test.
fn collect(
    mut pipe: impl Read + Send + 'static,
    echo: bool,
    failed: Option<Arc<AtomicBool>>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if echo {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        match failed {
                            None => crate::out::stderr(&text),
                            Some(_) => crate::out::stdout(&text),
                        }
                    }
                    let start = all.len();
                    all.extend_from_slice(&buf[..n]);
                    if let Some(failed) = &failed {
                        // The lines this chunk completed, from the last newline before it.
                        let from = all[..start]
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |at| at + 1);
                        let text = String::from_utf8_lossy(&all[from..]);
                        if text
                            .lines()
                            .any(|l| l.starts_with("test ") && l.ends_with(" ... FAILED"))
                        {
                            failed.store(true, Ordering::SeqCst);
                        }
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    })
}

/// Set while commands run side by side (`verify`): a command that is stopped then takes
/// only its own orphans with it, not the others'.
static SIDE_BY_SIDE: AtomicBool = AtomicBool::new(false);

/// From now on, commands may run side by side, each on a thread of its own.
pub fn side_by_side() {
    SIDE_BY_SIDE.store(true, Ordering::SeqCst);
}

/// Kills every process re-parented to this one (see [`on_interrupt_stop`]), with its
/// process group: once no command runs, whatever is left is a leftover.
pub fn sweep_orphans() {
    let me = std::process::id();
    for pid in descendants(me) {
        if parent_of(pid) == Some(me) {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Stops process `root` and every process under it, the chapter binaries a test started
/// included (they run in process groups of their own, so killing cargo's group alone
/// would leave them running). Everything is frozen first, so that no process can start
/// another or be re-parented away while we look, then killed.
fn stop(root: u32) {
    let mut frozen: Vec<u32> = Vec::new();
    loop {
        let mut found = vec![root];
        found.extend(descendants(root));
        let new: Vec<u32> = found.into_iter().filter(|p| !frozen.contains(p)).collect();
        if new.is_empty() || frozen.len() > 10_000 {
            break;
        }
        for pid in &new {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP);
        }
        frozen.extend(new);
    }
    // The process groups of what was frozen: a chapter's master and its workers share one.
    let groups: Vec<u32> = frozen.iter().filter_map(|pid| group_of(*pid)).collect();
    for pid in &frozen {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    // Orphans re-parented to us (see `on_interrupt_stop`), with their process groups. With
    // other commands running beside this one, only those of this command's groups.
    let me = std::process::id();
    let alone = !SIDE_BY_SIDE.load(Ordering::SeqCst);
    for pid in descendants(me) {
        let ours = alone || group_of(pid).is_some_and(|g| groups.contains(&g));
        if parent_of(pid) == Some(me) && ours {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The process group of `pid`, from `/proc/PID/stat`.
fn group_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Every process whose chain of parents leads to `root`, from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            parents.push((pid, ppid));
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for (pid, _) in parents.iter().filter(|(_, ppid)| *ppid == parent) {
            if !found.contains(pid) {
                found.push(*pid);
                queue.push(*pid);
            }
        }
    }
    found
}

/// The parent pid of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stop` also kills every child of this process it finds orphaned, as it must when
    /// the tool stops a command; the tests that start children take turns.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn turn() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn finds_and_stops_a_whole_tree() {
        let _turn = turn();
        // A shell that starts a grandchild in a process group of its own, as the test
        // harness starts a chapter binary, then waits.
        let mut child = Command::new("sh")
            .args(["-c", "setsid sleep 30 & echo started; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 8];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut line)
            .unwrap();
        let mut under = Vec::new();
        for _ in 0..500 {
            under = descendants(child.id());
            if !under.is_empty() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert!(!under.is_empty(), "the grandchild shows up under the shell");
        stop(child.id());
        let _ = child.wait();
        for pid in under {
            let gone = (0..500).any(|_| {
                let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok();
                let dead = state.is_none_or(|s| s.contains(") Z"));
                if !dead {
                    thread::sleep(Duration::from_millis(10));
                }
                dead
            });
            assert!(gone, "process {pid} survived");
        }
    }

    #[test]
    fn collects_output_and_exit_status() {
        let _turn = turn();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = cargo(root, &["--version".to_string()], None, false).unwrap();
        assert!(out.success());
        assert!(out.stdout.starts_with("cargo "), "{}", out.stdout);
    }
}
