//! The black-box test harness: build a chapter binary, start it, read what it logs, talk to
//! it over real sockets and its IPC channel, and kill everything it started when the test
//! ends, passed or failed.
//!
//! A test never sleeps to let something happen: it waits for the log line or the state it
//! expects, with a deadline, and a failure says what it saw instead.
//!
//! | helper | what it does |
//! |---|---|
//! | [`binary`] | builds a chapter's package (once per test process) and returns its path |
//! | [`Chapter::start`] | starts the binary as a master, in its own process group |
//! | [`Chapter::start_in_session`] | the same, in a session of its own (`setsid`), as a service is started |
//! | [`Chapter::start_worker`] | starts it as worker 1, the test playing its master |
//! | [`Chapter::start_cluster`] | starts a master of chapter 4 on, and waits until it serves |
//! | [`Chapter::wait_for`] and friends | wait for a log line, with a timeout |
//! | [`Chapter::wait_master_ready`], [`Chapter::wait_forked`] | the same, for a master's lines |
//! | [`Ready`], [`parse_ready`], [`parse_forked`] | read the chapters' log lines |
//! | [`http_get`], [`http_get_path`], [`write_request`], [`read_response`] | a minimal HTTP/1.1 client |
//! | [`parse_hello`] | which worker (pid, id) wrote a response body |
//! | [`each_answers`] | asks until each of the given workers has answered |
//! | [`connection_to`], [`HALF_REQUEST`] | a kept-alive connection to a given worker; half a request, which holds a worker that reads it |
//! | [`recv_timeout`] | read one IPC message, with a timeout |
//! | [`pid_alive`], [`parent_pid`], [`fd_count`], [`stopped`], [`wait_until`] | look at processes |
//! | [`pause`], [`resume`] | stop a process (SIGSTOP) and let it go on (SIGCONT) |
//! | [`gets_from_threads`] | many clients at once, each request on a new connection |
//! | [`Chapter::from_command`], [`on_path`] | start a program that is not a chapter (the book's Node.js programs) |
//! | [`listening_inodes`], [`socket_inodes`] | which sockets listen on an address, and which a process holds |
//! | [`tcp_sockets`] | the kernel's TCP table, as `ss -tan` shows it |
//! | [`accept_queue`] | how many connections wait in a listening socket's accept queue |
//! | [`SteadyLoad`] | requests one after another from one or more client threads, each on a new connection or on one kept alive, recording who answered each |
//! | [`Answers`], [`one_handed_to_a_stopped_worker`] | requests answered in any order; a connection a round-robin master has handed to a worker that cannot take it |
//! | [`child_processes`], [`children_of`] | a process's children, and which of them are `<defunct>` |
//! | [`defunct_children`], [`no_defunct_children`] | children exited but not reaped (`<defunct>` in `ps`) |
//! | [`copy_executable`], [`write_script`] | put a program where a test runs it, without ETXTBSY |
//! | [`BinaryCopy`], [`inode`] | a chapter's binary copied to a directory of its own, to rebuild while it runs |
//! | [`refused_at_start`] | a master of chapters 7 to 9 on a port another program holds: one error line, exit 1, nothing left |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ch02_ipc_messaging::channel::{Channel, ChannelError, Message};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long a test waits for something that should take a fraction of a second. Generous,
/// because tests run in parallel on a small machine; a passing test never waits this long.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The substring of every ready line: `... worker N[PID] listening on http://ADDR`.
pub const READY: &str = "listening on http://";

// ---------------------------------------------------------------------------------------
// Building the binaries
// ---------------------------------------------------------------------------------------

/// Where this test executable was built: `(target dir, profile dir)`, e.g.
/// `(target, target/debug)` for `target/debug/deps/ch01_random_port_fork-1234`.
fn build_dirs() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("the test executable knows its own path");
    let profile_dir = exe
        .parent() // deps
        .and_then(Path::parent) // debug, release, or a custom profile's name
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()))
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .unwrap_or_else(|| panic!("unexpected profile dir {}", profile_dir.display()))
        .to_path_buf();
    (target_dir, profile_dir)
}

/// Set only by `exercise verify`: a directory that holds the chapter binaries to start,
/// built beforehand. `verify` builds each version of an exercise once and runs its tests
/// later, from copies, while it builds the next; building here would build whatever the
/// source holds by then. Unset, [`binary`] builds what it needs itself.
pub const BINARIES_VAR: &str = "CHAPTER_TESTS_BINARIES";

/// Builds `package` (whose binary has the same name) with the same profile and target dir
/// as the running test, once per test process, and returns the binary's path. Under
/// `exercise verify`, returns the copy in [`BINARIES_VAR`] instead.
///
/// `CARGO_BIN_EXE_<name>` only exists for a package's own binaries, and `cargo test -p
/// chapter-tests` builds nothing else, so the harness asks cargo itself.
#[track_caller]
pub fn binary(package: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(BINARIES_VAR) {
        let path = Path::new(&dir).join(package);
        if !path.exists() {
            panic!(
                "{BINARIES_VAR}: {package} was not built for this run (no {})",
                path.display()
            );
        }
        return path;
    }
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    // Holding the lock through the build makes parallel tests wait for one build.
    let mut built = lock(&BUILT);
    let result = built
        .entry(package.to_string())
        .or_insert_with(|| build(package))
        .clone();
    drop(built);
    match result {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}

fn build(package: &str) -> Result<PathBuf, String> {
    let (target_dir, profile_dir) = build_dirs();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits inside the workspace")
        .join("Cargo.toml");
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--quiet", "-p", package, "--bin", package])
        .arg("--manifest-path")
        .arg(&workspace)
        .arg("--target-dir")
        .arg(&target_dir)
        .stdin(Stdio::null());
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(custom) => {
            command.args(["--profile", custom]);
        }
        None => return Err(format!("no profile in {}", profile_dir.display())),
    }
    let output = command
        .output()
        .map_err(|e| format!("could not run {cargo:?} to build {package}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build -p {package}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = profile_dir.join(format!("{package}{}", std::env::consts::EXE_SUFFIX));
    match path.exists() {
        true => Ok(path),
        false => Err(format!(
            "cargo built {package} but {} does not exist",
            path.display()
        )),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock leaves consistent data behind.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies the program at `from` to `to`, executable, for a test that runs a copy it can
/// replace as a rebuild does. The copy is written by a child process (`cp`), never by this
/// one: a file this test process holds open for writing is inherited by every child that
/// another test thread forks in that moment, until the child's `exec`, and running the
/// file while any of them holds it fails with ETXTBSY ("Text file busy").
#[track_caller]
pub fn copy_executable(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("could not run cp: {e}"));
    assert!(
        status.success(),
        "cp {} {}: {status}",
        from.display(),
        to.display()
    );
    make_executable(to);
}

/// Writes `script` to a new executable file at `path`, from a child process (`sh`), for the
/// reason [`copy_executable`] gives.
#[track_caller]
pub fn write_script(path: &Path, script: &str) {
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run sh: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(script.as_bytes())
        .expect("write the script to sh");
    drop(stdin);
    let status = child.wait().expect("wait for sh");
    assert!(status.success(), "writing {}: {status}", path.display());
    make_executable(path);
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The inode of the file at `path` (for `/proc/PID/exe`: of the program the process runs,
/// even once it is deleted).
#[track_caller]
pub fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

/// A chapter's binary copied into a directory of its own, so that a test can replace it as
/// `cargo build` does: a new file at the same path, with a new inode. Processes already
/// running keep the old file; the next `exec` of the path (a worker forked later) gets the
/// new one. The directory is removed on drop.
pub struct BinaryCopy {
    package: String,
    /// The copy's own directory.
    pub dir: PathBuf,
    /// The program: the package's name, in [`BinaryCopy::dir`].
    pub path: PathBuf,
}

impl BinaryCopy {
    /// Copies `package`'s binary into a new directory `PACKAGE-TEST-PID` under `tmp` (a test
    /// passes `env!("CARGO_TARGET_TMPDIR")`, which cargo sets for integration tests only).
    #[track_caller]
    pub fn new(package: &str, tmp: &Path, test: &str) -> BinaryCopy {
        let dir = tmp.join(format!("{package}-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create {} for the copy: {e}", dir.display()));
        let copy = BinaryCopy {
            package: package.to_string(),
            path: dir.join(package),
            dir,
        };
        copy.rebuild();
        copy
    }

    /// Puts a fresh copy of the real binary at the path, and returns its inode.
    #[track_caller]
    pub fn rebuild(&self) -> u64 {
        let new = self.dir.join("new");
        copy_executable(&binary(&self.package), &new);
        self.rename_into_place(&new)
    }

    /// Puts a shell script at the path, `body` after `#!/bin/sh`: a build that is broken,
    /// or slow, or different, in the way `body` says. Returns its inode.
    #[track_caller]
    pub fn replace_with_script(&self, body: &str) -> u64 {
        let new = self.dir.join("new");
        write_script(&new, &format!("#!/bin/sh\n{body}\n"));
        self.rename_into_place(&new)
    }

    /// Puts a copy of the real binary beside the path, where a script put there by
    /// [`BinaryCopy::replace_with_script`] can run it, and returns its path.
    #[track_caller]
    pub fn real_binary(&self) -> PathBuf {
        let real = self.dir.join("real");
        copy_executable(&binary(&self.package), &real);
        real
    }

    /// Puts a build at the path that listens on one more port, `extra`: a script that runs
    /// a copy of the real binary with the master's arguments and `--port 0,EXTRA` (the
    /// last `--port` wins), so that a new worker asks for the master's port, then `extra`.
    #[track_caller]
    pub fn with_port(&self, extra: u16) -> u64 {
        let real = self.real_binary();
        self.replace_with_script(&format!(
            "exec '{}' \"$@\" --port 0,{extra}",
            real.display()
        ))
    }

    /// Renames `new` over the path, as a build does, and returns the new file's inode.
    #[track_caller]
    fn rename_into_place(&self, new: &Path) -> u64 {
        std::fs::rename(new, &self.path)
            .unwrap_or_else(|e| panic!("rename {} to {}: {e}", new.display(), self.path.display()));
        inode(&self.path)
    }

    /// Starts the program at the path as [`Chapter::start_cluster`] starts the package's
    /// binary.
    #[track_caller]
    pub fn start_cluster(
        &self,
        workers: usize,
        extra: &[&str],
    ) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
        let name = format!("{} (a copy)", self.package);
        Chapter::cluster(&name, &self.path, workers, extra)
    }
}

impl Drop for BinaryCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// Running a chapter
// ---------------------------------------------------------------------------------------

/// The most lines kept from one output pipe; no test reads anywhere near as many.
const MAX_LINES: usize = 100_000;

/// The lines read so far from one of the child's output pipes.
#[derive(Default)]
struct Lines {
    state: Mutex<LinesState>,
    changed: Condvar,
}

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    /// Every process holding the pipe's write end has exited or closed it.
    closed: bool,
}

impl Lines {
    /// Reads `pipe` line by line on a thread of its own, echoing each line to the test's
    /// stderr (shown when a test fails) with `label` in front.
    fn collect(pipe: impl Read + Send + 'static, label: String) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let filled = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    // A program that logs in an endless loop (a bug under test) must not
                    // fill this process's memory: past the cap, lines are read and dropped.
                    Ok(_) if lock(&filled.state).lines.len() >= MAX_LINES => {}
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        eprintln!("{label}| {line}");
                        let mut state = lock(&filled.state);
                        state.lines.push(line);
                        if state.lines.len() == MAX_LINES {
                            eprintln!(
                                "{label}| ... (more than {MAX_LINES} lines: the rest is dropped)"
                            );
                        }
                        drop(state);
                        filled.changed.notify_all();
                    }
                }
            }
            lock(&filled.state).closed = true;
            filled.changed.notify_all();
        });
        lines
    }

    fn snapshot(&self) -> Vec<String> {
        lock(&self.state).lines.clone()
    }

    /// Waits until `done` finds what it wants in the lines, the pipe closes, or `timeout`.
    fn wait<T>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[String]) -> Option<T>,
    ) -> Result<T, (Vec<String>, bool)> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        loop {
            if let Some(found) = done(&state.lines) {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || left.is_zero() {
                return Err((state.lines.clone(), state.closed));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// A running chapter binary. Dropping it kills its whole process group with SIGKILL and
/// reaps it, so nothing outlives the test, even one that panicked.
pub struct Chapter {
    child: Child,
    name: String,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    status: Option<ExitStatus>,
}

/// The command that runs `program` (a chapter's binary, or a copy of it) as a master with
/// `args`: without the worker variables, whatever the test's own environment holds, the
/// binary is a master.
fn master_command(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_remove(ch01_random_port_fork::spawn::WORKER_ID_VAR)
        .env_remove(ch02_ipc_messaging::worker::CHANNEL_FD_VAR);
    command
}

impl Chapter {
    /// Starts `package`'s binary as a master with `args`, in a process group of its own
    /// (its workers join it).
    #[track_caller]
    pub fn start(package: &str, args: &[&str]) -> Chapter {
        Chapter::spawn(package, master_command(&binary(package), args))
    }

    /// Starts `package`'s binary as worker 1 with `args`, the test playing its master:
    /// the returned [`Channel`] is the master's end of the worker's IPC channel.
    #[track_caller]
    pub fn start_worker(package: &str, args: &[&str]) -> (Chapter, Channel) {
        let (ours, theirs) = Channel::pair().expect("socketpair for the IPC channel");
        let fd = theirs.as_raw_fd();
        let mut command = Command::new(binary(package));
        command
            .args(args)
            .env(ch01_random_port_fork::spawn::WORKER_ID_VAR, "1")
            .env(ch02_ipc_messaging::worker::CHANNEL_FD_VAR, fd.to_string());
        // SAFETY: runs in the child between fork and exec, where only async-signal-safe
        // calls are allowed: fcntl is one, and the closure allocates nothing. It clears
        // close-on-exec on the worker's end of the channel in this child only, so the
        // worker inherits it and no other process the tests start does.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let chapter = Chapter::spawn(&format!("{package} (worker)"), command);
        // Our copy of the worker's end must go, or the worker's exit would never look like
        // end-of-file to us, nor our end's closing to it.
        drop(theirs);
        (chapter, ours)
    }

    /// Starts `package`'s binary as a master with `args` and at most `max_fds` open fds
    /// (`RLIMIT_NOFILE`, as `ulimit -n` or `prlimit --nofile` set it). Its workers inherit
    /// the limit.
    #[track_caller]
    pub fn start_limited(package: &str, args: &[&str], max_fds: u64) -> Chapter {
        let mut command = master_command(&binary(package), args);
        // SAFETY: runs in the child between fork and exec; setrlimit is async-signal-safe
        // and the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: max_fds as libc::rlim_t,
                    rlim_max: max_fds as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Chapter::spawn(&format!("{package} (ulimit -n {max_fds})"), command)
    }

    /// Starts any program, such as the book's Node.js programs, as a [`Chapter`]:
    /// `command` comes with its arguments and environment set. It runs in a process group
    /// of its own, its output is read line by line, and dropping the returned value kills
    /// the whole group. `name` labels its lines and failure messages.
    #[track_caller]
    pub fn from_command(name: &str, command: Command) -> Chapter {
        Chapter::spawn(name, command)
    }

    /// Starts `package`'s binary as a master with `args`, as [`Chapter::start`] does, but
    /// in a session of its own (`setsid`), as a service manager or `setsid(1)` starts a
    /// server. It leads its own process group all the same, so dropping it kills the group.
    ///
    /// The difference shows when the master dies while one of its workers is stopped. When
    /// a process group is *orphaned* (no member has a parent in the same session outside
    /// the group: no shell is left to continue a stopped job) and one of its members is
    /// stopped, the kernel sends every member SIGHUP, then SIGCONT. The group
    /// [`Chapter::start`] makes sits in the tests' session with the test as the master's
    /// parent, so the master's death orphans it, and that SIGHUP ends a stopped worker
    /// whatever its parent-death signal. A master in a session of its own, as a service
    /// runs, gets no such help.
    #[track_caller]
    pub fn start_in_session(package: &str, args: &[&str]) -> Chapter {
        let mut command = master_command(&binary(package), args);
        // SAFETY: runs in the child between fork and exec; setsid is async-signal-safe and
        // the closure allocates nothing. The child is no group leader yet (spawn_in below
        // skips process_group for it), so setsid succeeds.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Chapter::spawn_in(&format!("{package} (setsid)"), command, Group::Session)
    }

    fn spawn(name: &str, command: Command) -> Chapter {
        Chapter::spawn_in(name, command, Group::Own)
    }

    fn spawn_in(name: &str, mut command: Command, group: Group) -> Chapter {
        raise_fd_limit();
        if group == Group::Own {
            command.process_group(0);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name}: {e}"));
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        Chapter {
            stdout: Lines::collect(stdout, format!("{name}[{pid}]")),
            stderr: Lines::collect(stderr, format!("{name}[{pid}] stderr")),
            child,
            name: name.to_string(),
            status: None,
        }
    }

    /// The pid of the process the test started (the master, or the lone worker).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    /// How many stdout lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits for the first stdout line that contains `needle`, and returns it.
    #[track_caller]
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line(&format!("a line containing '{needle}'"), timeout, |l| {
            l.contains(needle)
        })
    }

    /// Waits for the first stdout line for which `matches` is true; `what` describes it
    /// in the panic message.
    #[track_caller]
    pub fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let found = self.stdout.wait(timeout, |lines| {
            lines.iter().find(|l| matches(l.as_str())).cloned()
        });
        match found {
            Ok(line) => line,
            Err((seen, closed)) => self.fail(what, timeout, &seen, closed),
        }
    }

    /// Waits until `n` stdout lines contain `needle`, and returns the first `n` of them.
    #[track_caller]
    pub fn wait_for_n(&self, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
        let found = self.stdout.wait(timeout, |lines| {
            let matching: Vec<String> = lines
                .iter()
                .filter(|l| l.contains(needle))
                .take(n)
                .cloned()
                .collect();
            (matching.len() == n).then_some(matching)
        });
        match found {
            Ok(lines) => lines,
            Err((seen, closed)) => self.fail(
                &format!("{n} lines containing '{needle}'"),
                timeout,
                &seen,
                closed,
            ),
        }
    }

    /// Waits for the `n` ready lines of `n` workers and parses them.
    #[track_caller]
    pub fn wait_ready(&self, n: usize) -> Vec<Ready> {
        let mut ready = Vec::new();
        for line in self.wait_for_n(READY, n, TIMEOUT) {
            match parse_ready(&line) {
                Some(parsed) => ready.push(parsed),
                None => panic!("not a ready line: {line}"),
            }
        }
        ready
    }

    #[track_caller]
    fn fail(&self, what: &str, timeout: Duration, seen: &[String], closed: bool) -> ! {
        let why = match closed {
            true => "its output closed (it exited)".to_string(),
            false => format!("{timeout:?} passed"),
        };
        let mut text = format!(
            "{} (pid {}): expected {what}, but {why}.\nstdout so far:\n",
            self.name,
            self.pid()
        );
        for line in seen {
            let _ = writeln!(text, "    {line}");
        }
        let _ = writeln!(text, "stderr so far:");
        // If the process has exited, let the stderr reader catch up with what it wrote.
        let grace = if closed {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        };
        let stderr = match self.stderr.wait(grace, |_| None::<()>) {
            Err((lines, _)) => lines,
            Ok(()) => unreachable!("the predicate never matches"),
        };
        for line in stderr {
            let _ = writeln!(text, "    {line}");
        }
        panic!("{text}");
    }

    /// Starts a chapter from 4 on with `--port 0 --workers N` and `extra`, and waits until
    /// it serves: returns the master, the public address of its ready line, and the
    /// `(id, pid)` of each worker it forked.
    #[track_caller]
    pub fn start_cluster(
        package: &str,
        workers: usize,
        extra: &[&str],
    ) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
        Chapter::cluster(package, &binary(package), workers, extra)
    }

    #[track_caller]
    fn cluster(
        name: &str,
        program: &Path,
        workers: usize,
        extra: &[&str],
    ) -> (Chapter, SocketAddr, Vec<(u32, u32)>) {
        let n = workers.to_string();
        let mut args = vec!["--port", "0", "--workers", n.as_str()];
        args.extend_from_slice(extra);
        let master = Chapter::spawn(name, master_command(program, &args));
        let addr = master.wait_master_ready();
        let forked = master.wait_forked(workers);
        (master, addr, forked)
    }

    /// Waits for the master's own ready line, which chapters 4 on print once every worker
    /// is serving (`... master[PID] listening on http://ADDR (...)`), and returns `ADDR`.
    #[track_caller]
    pub fn wait_master_ready(&self) -> SocketAddr {
        let line = self.wait_for_line("the master's ready line", TIMEOUT, |l| {
            parse_master(l).is_some() && parse_listen_addr(l).is_some()
        });
        parse_listen_addr(&line).unwrap_or_else(|| panic!("no address in {line}"))
    }

    /// Waits for the master's `n` `forked worker ID (pid PID)` lines: `[(ID, PID)]`.
    #[track_caller]
    pub fn wait_forked(&self, n: usize) -> Vec<(u32, u32)> {
        self.wait_for_n("forked worker", n, TIMEOUT)
            .iter()
            .map(|l| parse_forked(l).unwrap_or_else(|| panic!("not a fork line: {l}")))
            .collect()
    }

    /// Sends `signal` to the started process only (not to its workers).
    #[track_caller]
    pub fn signal(&self, signal: Signal) {
        if let Err(e) = kill(Pid::from_raw(self.pid() as i32), signal) {
            panic!("could not send {signal} to {}: {e}", self.name);
        }
    }

    /// Waits for the started process to exit and returns how it ended.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return status;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let seen = self.lines();
                    self.fail(&format!("{} to exit", self.name), timeout, &seen, false)
                }
                Err(e) => panic!("waiting for {} failed: {e}", self.name),
            }
        }
    }

    /// Waits until stdout reaches end-of-file (every process writing to it is gone), so
    /// that [`Chapter::lines`] is the whole output; returns it.
    #[track_caller]
    pub fn wait_output_closed(&self, timeout: Duration) -> Vec<String> {
        let found = self.stdout.wait(timeout, |_| None::<()>);
        match found {
            Err((lines, true)) => lines,
            Err((seen, false)) => self.fail("its stdout to close", timeout, &seen, false),
            Ok(()) => unreachable!("the predicate never matches"),
        }
    }

    /// Waits until stderr reaches end-of-file, and returns all of it.
    #[track_caller]
    pub fn wait_stderr_closed(&self, timeout: Duration) -> Vec<String> {
        match self.stderr.wait(timeout, |_| None::<()>) {
            Err((lines, true)) => lines,
            Err((seen, false)) => self.fail("its stderr to close", timeout, &seen, false),
            Ok(()) => unreachable!("the predicate never matches"),
        }
    }

    /// Stops a master the way a user does: SIGINT (Ctrl-C), then waits for it to say
    /// `all workers stopped` and exit with code 0. Returns its whole output.
    #[track_caller]
    pub fn interrupt_and_collect(&mut self) -> Vec<String> {
        self.signal(Signal::SIGINT);
        self.collect_after_stop()
    }

    /// Once a master has been told to stop (by whatever signal): waits for it to say
    /// `all workers stopped` and exit with code 0. Returns its whole output.
    #[track_caller]
    pub fn collect_after_stop(&mut self) -> Vec<String> {
        self.wait_for("all workers stopped", TIMEOUT);
        let status = self.wait_exit(TIMEOUT);
        assert_eq!(
            status.code(),
            Some(0),
            "{} should exit 0 after Ctrl-C, but {status}",
            self.name
        );
        self.wait_output_closed(TIMEOUT)
    }
}

/// Where [`Chapter::spawn_in`] puts the started process: leading a process group of its
/// own in the tests' session, or leading a session of its own (and so its group too).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Own,
    Session,
}

impl Drop for Chapter {
    fn drop(&mut self) {
        // The group's id is the started process's pid (process_group(0), or setsid). Its
        // workers are in the group even if it already exited, and stay in it when they are
        // re-parented, so kill the group regardless: SIGKILL ends a stopped one too.
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a process ended, in a few words: `code 2`, `signal 9`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

/// Runs `package` with `args` to the end (for `--help` and bad arguments): returns its exit
/// status, stdout and stderr.
#[track_caller]
pub fn run_to_end(package: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut chapter = Chapter::start(package, args);
    let status = chapter.wait_exit(TIMEOUT);
    let stdout = chapter.wait_output_closed(TIMEOUT).join("\n");
    let stderr = chapter.stderr.wait(TIMEOUT, |_| None::<()>);
    let stderr = match stderr {
        Err((lines, _)) => lines.join("\n"),
        Ok(()) => unreachable!("the predicate never matches"),
    };
    (status, stdout, stderr)
}

/// A port another program holds is the master's failure, not its workers': the first
/// `queryServer` for it fails in the master, and no restart can free the port. The master
/// of `package` (chapters 7 to 9) stops its workers and exits 1 with one error line,
/// without restarting anything, the port asked for alone or after one it could bind.
#[track_caller]
pub fn a_busy_port_ends_the_start(package: &str) {
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let busy = other.local_addr().expect("its address").port();
    refused_at_start(package, &busy.to_string(), busy);
    refused_at_start(package, &format!("0,{busy}"), busy);
}

/// Starts `package` (a master of chapters 7 to 9) with `--port PORTS --workers 2`, where
/// `busy` (one of `ports`) is held by another program, and checks that the master refuses
/// at once: exit 1 with one error line, the same one the other chapters print, its two
/// workers stopped, and nothing restarted, backed off or given up (the way a master that
/// took its own failure for its workers' crashes would take 8 s to end). Not a timing: the
/// proof is that no worker beyond the first two was started.
#[track_caller]
pub fn refused_at_start(package: &str, ports: &str, busy: u16) {
    let mut master = Chapter::start(package, &["--port", ports, "--workers", "2"]);
    let status = master.wait_exit(TIMEOUT);
    let lines = master.wait_output_closed(TIMEOUT);
    let all = lines.join("\n");
    assert_eq!(status.code(), Some(1), "{}\n{all}", describe(status));
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("EADDRINUSE")).collect();
    assert_eq!(errors.len(), 1, "one error line: {all}");
    let expected = format!(
        "] error: listen EADDRINUSE: address already in use 127.0.0.1:{busy} (errno 98): \
         another process holds this port; try --port 0 for a free one"
    );
    assert!(
        errors[0].ends_with(&expected) && parse_master(errors[0]).is_some(),
        "the master's error, as chapters 1 to 6 and 10 print it: {all}"
    );
    assert_eq!(lines.last(), Some(errors[0]), "the last word: {all}");
    let forked: Vec<(u32, u32)> = lines.iter().filter_map(|l| parse_forked(l)).collect();
    assert_eq!(forked.len(), 2, "the two workers and no other: {all}");
    for retry in [
        "restart in",
        "starting a new worker",
        "given up",
        "could not start",
    ] {
        assert!(!all.contains(retry), "no retry ('{retry}'): {all}");
    }
    for (id, pid) in &forked {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("worker {id} (pid {pid}) "))
                    && (l.contains(" was killed by ") || l.contains(" exited with code "))),
            "worker {id}'s end is logged: {all}"
        );
    }
    // The master waited for each exit: nothing of its process group is left.
    assert_eq!(
        killpg(Pid::from_raw(master.pid() as i32), None),
        Err(nix::errno::Errno::ESRCH),
        "a process of the master's group is left: {all}"
    );
}

// ---------------------------------------------------------------------------------------
// Reading the log lines
// ---------------------------------------------------------------------------------------

/// A worker's ready line: `HH:MM:SS.mmm worker ID[PID] listening on http://ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub id: u32,
    pub pid: u32,
    pub addr: SocketAddr,
}

/// Parses a ready line.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let (id, pid) = parse_speaker(line)?;
    let addr = parse_listen_addr(line)?;
    Some(Ready { id, pid, addr })
}

/// The address in `... listening on http://ADDR`.
pub fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(READY)?;
    rest.split_whitespace()
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Who wrote a log line `HH:MM:SS.mmm worker ID[PID] ...`: `(ID, PID)`; `None` for the
/// master's lines.
pub fn parse_speaker(line: &str) -> Option<(u32, u32)> {
    let mut words = line.split_whitespace();
    let _clock = words.next()?;
    if words.next()? != "worker" {
        return None;
    }
    let (id, pid) = words.next()?.split_once('[')?;
    Some((id.parse().ok()?, pid.strip_suffix(']')?.parse().ok()?))
}

/// The pid of the master that wrote a log line `HH:MM:SS.mmm master[PID] ...`.
pub fn parse_master(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    let _clock = words.next()?;
    words
        .next()?
        .strip_prefix("master[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The master's `forked worker ID (pid PID)`: `(ID, PID)`.
pub fn parse_forked(line: &str) -> Option<(u32, u32)> {
    let (_, rest) = line.split_once("forked worker ")?;
    let (id, rest) = rest.split_once(" (pid ")?;
    let (pid, _) = rest.split_once(')')?;
    Some((id.parse().ok()?, pid.parse().ok()?))
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// An HTTP response as the client read it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Connects to `addr` with read and write timeouts set, so no test can hang on a socket.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// Writes `GET path HTTP/1.1`, asking to keep the connection open or to close it.
pub fn write_request(stream: &mut TcpStream, path: &str, keep_alive: bool) -> io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: {connection}\r\n\r\n"
    )
}

/// Reads one response (head, then `Content-Length` bytes of body) from `stream`.
pub fn read_response(stream: &mut TcpStream) -> io::Result<HttpResponse> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(bad("response head over 16 KiB".into()));
        }
        match stream.read(&mut byte)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} bytes of response head: {:?}",
                        head.len(),
                        String::from_utf8_lossy(&head)
                    ),
                ))
            }
            _ => head.push(byte[0]),
        }
    }
    let head = String::from_utf8(head).map_err(|e| bad(format!("head is not text: {e}")))?;
    let mut lines = head.trim_end().split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line '{status_line}'")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| bad(format!("no Content-Length in {head:?}")))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    let body = String::from_utf8(body).map_err(|e| bad(format!("body is not text: {e}")))?;
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// One `GET /` on a fresh connection that asks to be closed afterwards.
pub fn http_get(addr: SocketAddr) -> io::Result<HttpResponse> {
    http_get_path(addr, "/")
}

/// One `GET path` on a fresh connection that asks to be closed afterwards.
pub fn http_get_path(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    let mut stream = connect(addr)?;
    write_request(&mut stream, path, false)?;
    read_response(&mut stream)
}

/// [`http_get`], panicking with the address and the error if it fails.
#[track_caller]
pub fn get(addr: SocketAddr) -> HttpResponse {
    get_path(addr, "/")
}

/// [`http_get_path`], panicking with the address, the path and the error if it fails.
#[track_caller]
pub fn get_path(addr: SocketAddr, path: &str) -> HttpResponse {
    match http_get_path(addr, path) {
        Ok(response) => response,
        Err(e) => panic!("GET http://{addr}{path} failed: {e}"),
    }
}

/// A request's head without its last empty line: a worker that has read it owes an answer
/// once the rest comes, and until then cannot finish leaving.
pub const HALF_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n";

/// A kept-alive connection to `addr` on which worker pid `pid` has answered one request.
/// Connections go to the workers in turn, so a few tries find one.
#[track_caller]
pub fn connection_to(addr: SocketAddr, pid: u32) -> TcpStream {
    for _ in 0..20 {
        let mut stream = connect(addr).expect("connect");
        write_request(&mut stream, "/", true).expect("send a request");
        let response = read_response(&mut stream).expect("an answer");
        if parse_hello(&response.body).map(|(p, _)| p) == Some(pid) {
            return stream;
        }
    }
    panic!("20 connections and none went to pid {pid}");
}

/// `threads` clients at once, each sending `each` requests one after another, every one
/// on a new connection; checks that each answer came from one of the `forked` workers
/// (see [`answered_by`]) and returns who answered each: `(PID, ID)`, in no set order.
#[track_caller]
pub fn gets_from_threads(
    addr: SocketAddr,
    threads: usize,
    each: usize,
    forked: &[(u32, u32)],
) -> Vec<(u32, u32)> {
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let response = http_get(addr).unwrap_or_else(|e| {
                                panic!("client {t}, request {i} was not answered: {e}")
                            });
                            answered_by(&response, forked)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("a client thread panicked"))
            .collect()
    })
}

/// The body every chapter worker answers with.
pub fn hello_body(pid: u32, id: u32) -> String {
    format!("Hello world by {pid} (worker {id})\n")
}

/// Who answered, from a body [`hello_body`] made: `(PID, ID)`.
pub fn parse_hello(body: &str) -> Option<(u32, u32)> {
    let rest = body.strip_prefix("Hello world by ")?.trim_end();
    let (pid, rest) = rest.split_once(" (worker ")?;
    Some((pid.parse().ok()?, rest.strip_suffix(')')?.parse().ok()?))
}

/// The pids of `workers`, `(ID, PID)` pairs as [`Chapter::wait_forked`] returns them.
pub fn pids(workers: &[(u32, u32)]) -> BTreeSet<u32> {
    workers.iter().map(|(_, pid)| *pid).collect()
}

/// Asks `addr` until each of `workers` (`(ID, PID)` pairs) has answered, and fails if
/// another process answers or one of them does not within the timeout. (With other
/// clients about, turns are not ours alone: a fixed number of requests may miss a worker.)
#[track_caller]
pub fn each_answers(addr: SocketAddr, workers: &[(u32, u32)]) {
    let mut seen = BTreeSet::new();
    let all = wait_until(TIMEOUT, || {
        seen.insert(answered_by(&get(addr), workers).0);
        seen == pids(workers)
    });
    assert!(all, "each of {workers:?} should answer; only {seen:?} did");
}

/// Checks that `response` is a 200 from one of the `forked` workers (`(ID, PID)` pairs, as
/// [`Chapter::wait_forked`] returns them) and returns who answered: `(PID, ID)`.
#[track_caller]
pub fn answered_by(response: &HttpResponse, forked: &[(u32, u32)]) -> (u32, u32) {
    assert_eq!(response.status, 200, "{response:?}");
    let (pid, id) = parse_hello(&response.body)
        .unwrap_or_else(|| panic!("not a worker's answer: {:?}", response.body));
    assert!(
        forked.contains(&(id, pid)),
        "worker {id} (pid {pid}) is not among the master's forks {forked:?}"
    );
    (pid, id)
}

/// Reads from `stream` until the peer closes it, discarding data: `Ok(())` at end-of-file
/// (or a reset, which also means closed), an error if it stays open past the stream's
/// read timeout.
pub fn wait_closed(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The IPC channel
// ---------------------------------------------------------------------------------------

/// Waits up to `timeout` for the next message on `channel`.
pub fn recv_timeout(channel: &Channel, timeout: Duration) -> Result<Message, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match channel.try_recv() {
            Ok(Some(message)) => return Ok(message),
            Ok(None) => {}
            Err(ChannelError::Closed) => return Err("the channel closed".into()),
            Err(e) => return Err(e.to_string()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no message within {timeout:?}"));
        }
        let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll failed: {e}")),
        }
    }
}

/// [`recv_timeout`] with [`TIMEOUT`], panicking with `what` if nothing comes.
#[track_caller]
pub fn expect_message(channel: &Channel, what: &str) -> Message {
    match recv_timeout(channel, TIMEOUT) {
        Ok(message) => message,
        Err(e) => panic!("expected {what} from the worker, but {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// Raises this test process's soft fd limit to its hard limit, once: tests that hold
/// hundreds of connections run side by side in one process.
fn raise_fd_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    });
}

/// The fields of `/proc/<pid>/stat` after the command name: `[state, ppid, ...]`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Is process `pid` alive? A zombie (exited, not yet reaped) counts as dead.
pub fn pid_alive(pid: u32) -> bool {
    match stat_fields(pid) {
        Some(fields) => !matches!(fields.first().map(String::as_str), Some("Z" | "X" | "x")),
        None => false,
    }
}

/// The parent pid of process `pid`, as `ps -o ppid` shows it.
pub fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Is process `pid` stopped, by SIGSTOP say (state `T` in `/proc/PID/stat`)?
pub fn stopped(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().map(String::as_str) == Some("T"))
}

/// Stops process `pid` with SIGSTOP and waits until it is stopped: it runs no code, so a
/// test can line up what it will find when it goes on (see [`resume`]).
#[track_caller]
pub fn pause(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP)
        .unwrap_or_else(|e| panic!("SIGSTOP pid {pid}: {e}"));
    assert!(
        wait_until(TIMEOUT, || stopped(pid)),
        "pid {pid} should be stopped after SIGSTOP"
    );
}

/// Lets process `pid`, stopped by [`pause`], go on (SIGCONT).
#[track_caller]
pub fn resume(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT)
        .unwrap_or_else(|e| panic!("SIGCONT pid {pid}: {e}"));
}

/// How many fds process `pid` has open (entries in `/proc/<pid>/fd`).
#[track_caller]
pub fn fd_count(pid: u32) -> usize {
    match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(dir) => dir.count(),
        Err(e) => panic!("cannot list /proc/{pid}/fd: {e}"),
    }
}

/// Each open fd of `process` (a pid, or `self`) and what it points at: `socket:[123]`,
/// `pipe:[456]`, a path.
pub fn fd_targets(process: &str) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{process}/fd")) else {
        return Vec::new();
    };
    let mut targets: Vec<(u32, String)> = dir
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let fd = path.file_name()?.to_str()?.parse().ok()?;
            let target = std::fs::read_link(&path).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    targets.sort();
    targets
}

/// The CPU time process `pid` has used so far, all its threads, user and system
/// (`utime + stime` in `/proc/PID/stat`).
#[track_caller]
pub fn cpu_time(pid: u32) -> Duration {
    let fields = stat_fields(pid).unwrap_or_else(|| panic!("no /proc/{pid}/stat"));
    // After the name: state is field 3 of stat(5), so utime (14) and stime (15) sit at
    // 11 and 12 here.
    let ticks: u64 = [11, 12]
        .iter()
        .map(|&i| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The share of one CPU that process `pid` uses over `window`: about 1.0 for a process
/// that spins, near 0 for one that waits. The window is a measurement, not a wait for
/// something to happen.
#[track_caller]
pub fn cpu_share(pid: u32, window: Duration) -> f64 {
    let (before, start) = (cpu_time(pid), Instant::now());
    std::thread::sleep(window);
    let used = cpu_time(pid).saturating_sub(before);
    used.as_secs_f64() / start.elapsed().as_secs_f64()
}

/// How many times process `pid` has gone to sleep and been woken (its voluntary
/// context switches, all threads, from `/proc/PID/status`).
#[track_caller]
pub fn voluntary_switches(pid: u32) -> u64 {
    let mut total = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/task: {e}"));
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// The resident memory of process `pid`, in bytes (`VmRSS` in `/proc/PID/status`).
#[track_caller]
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// One `/proc/net/tcp{,6}` address, `0100007F:1F90`: the kernel prints each 32-bit word
/// of the address as a native-endian hex number, and the port in plain hex.
pub fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let (ip, port) = text.split_once(':')?;
    let mut bytes = Vec::new();
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_str_radix(port, 16).ok()?))
}

/// The TCP states the tests look for (`st` in `/proc/net/tcp`), and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Listen,
    TimeWait,
    /// The peer has sent its FIN (the other side half-closed); this side has not closed.
    CloseWait,
    Other,
}

/// One TCP socket as the kernel lists it in `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    /// 0 for a socket no process holds any more (TIME_WAIT, for one).
    pub inode: u64,
    /// For a listening socket, the connections waiting in its accept queue; for a
    /// connection, the bytes received and not read yet.
    pub rx_queue: u64,
}

/// Every TCP socket on the machine (in this network namespace), as `ss -tan` lists them.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let parsed = (|| {
                Some(TcpSocket {
                    local: parse_proc_addr(columns.get(1)?)?,
                    remote: parse_proc_addr(columns.get(2)?)?,
                    state: match *columns.get(3)? {
                        "0A" => TcpState::Listen,
                        "06" => TcpState::TimeWait,
                        "08" => TcpState::CloseWait,
                        _ => TcpState::Other,
                    },
                    inode: columns.get(9)?.parse().ok()?,
                    rx_queue: u64::from_str_radix(columns.get(4)?.split_once(':')?.1, 16).ok()?,
                })
            })();
            sockets.extend(parsed);
        }
    }
    sockets
}

/// Every listening TCP socket on this machine: `(address, inode)`.
pub fn listening_sockets() -> Vec<(SocketAddr, u64)> {
    tcp_sockets()
        .into_iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| (s.local, s.inode))
        .collect()
}

/// The TCP connections (not listening sockets) process `pid` holds.
pub fn tcp_connections_held_by(pid: u32) -> Vec<TcpSocket> {
    let mine = socket_inodes(pid);
    tcp_sockets()
        .into_iter()
        .filter(|s| s.state != TcpState::Listen && mine.contains(&s.inode))
        .collect()
}

/// How many TCP connections (not listening sockets) process `pid` holds.
pub fn tcp_connections_of(pid: u32) -> usize {
    tcp_connections_held_by(pid).len()
}

/// How many connections wait in the accept queue of the listening socket with inode
/// `inode`, or `None` if no such socket listens. For a listening socket the kernel prints
/// its accept queue's length in the `rx_queue` half of the `tx_queue:rx_queue` column of
/// `/proc/net/tcp{,6}`: connections whose handshake is done and that nobody has accepted.
pub fn accept_queue(inode: u64) -> Option<u64> {
    tcp_sockets()
        .iter()
        .find(|s| s.state == TcpState::Listen && s.inode == inode)
        .map(|s| s.rx_queue)
}

/// The inodes of the sockets listening on `addr`.
pub fn listening_inodes(addr: SocketAddr) -> Vec<u64> {
    listening_sockets()
        .into_iter()
        .filter(|(a, _)| *a == addr)
        .map(|(_, inode)| inode)
        .collect()
}

/// The inodes of the sockets process `pid` has open (`socket:[123]` in `/proc/PID/fd`).
pub fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    fd_targets(&pid.to_string())
        .iter()
        .filter_map(|(_, target)| {
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The addresses of the listening sockets process `pid` holds.
pub fn listening_addrs_of(pid: u32) -> Vec<SocketAddr> {
    let mine = socket_inodes(pid);
    listening_sockets()
        .into_iter()
        .filter(|(_, inode)| mine.contains(inode))
        .map(|(addr, _)| addr)
        .collect()
}

/// A child of a process, as `/proc` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildProcess {
    pub pid: u32,
    /// It has exited and its parent has not reaped it yet: `<defunct>` in `ps`, state `Z`
    /// in `/proc/PID/stat`.
    pub defunct: bool,
}

/// The children of `pid`, from `/proc/PID/task/*/children` (every thread's), in pid
/// order. A child reaped between that list and its own `/proc/PID/stat` is left out.
pub fn child_processes(pid: u32) -> Vec<ChildProcess> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter_map(|child| {
            let fields = stat_fields(child)?;
            // The parent is checked too: a reaped child's pid may be someone else's by now.
            (fields.get(1)?.parse::<u32>().ok()? == pid).then(|| ChildProcess {
                pid: child,
                defunct: fields.first().map(String::as_str) == Some("Z"),
            })
        })
        .collect()
}

/// The pids of `pid`'s children, `<defunct>` ones included (see [`child_processes`]).
pub fn children_of(pid: u32) -> Vec<u32> {
    child_processes(pid).iter().map(|c| c.pid).collect()
}

/// The children of `pid` that have exited and not been reaped yet: `<defunct>` in `ps`,
/// state `Z` in `/proc/PID/stat`.
pub fn defunct_children(pid: u32) -> Vec<u32> {
    child_processes(pid)
        .iter()
        .filter(|c| c.defunct)
        .map(|c| c.pid)
        .collect()
}

/// Asserts that `master` leaves no child `<defunct>`. A child is a zombie for the instant
/// between its exit and its parent's `waitpid`, so one seen now must be gone soon; one
/// that is still there after the harness's timeout was never reaped.
#[track_caller]
pub fn no_defunct_children(master: u32) {
    let mut seen = Vec::new();
    assert!(
        wait_until(TIMEOUT, || {
            seen = defunct_children(master);
            seen.is_empty()
        }),
        "the master (pid {master}) leaves children <defunct>, never reaped: {seen:?}"
    );
}

/// What one request of a [`SteadyLoad`] got: the pid that answered, or what went wrong
/// (a status other than 200 counts as wrong, with its body).
pub type Reply = Result<u32, String>;

/// Every failed reply of a [`SteadyLoad`].
pub fn failures(replies: &[Reply]) -> Vec<&String> {
    replies.iter().filter_map(|r| r.as_ref().err()).collect()
}

/// Clients that each send one request after another, each from a thread of its own, until
/// stopped or dropped: the "steady load" under which workers are killed and replaced.
/// Every reply is recorded with the client port of its connection (0 if it never
/// connected).
///
/// Started with [`SteadyLoad::start`] or [`SteadyLoad::clients`], each request goes on a
/// new connection (wrk's `Connection: close`). Started with [`SteadyLoad::keep_alive`],
/// each client keeps its connection, as a connection pool does.
pub struct SteadyLoad {
    replies: Arc<Mutex<Vec<(u16, Reply)>>>,
    resent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SteadyLoad {
    /// Starts one client asking `addr` for `/`.
    pub fn start(addr: SocketAddr) -> SteadyLoad {
        SteadyLoad::clients(addr, 1)
    }

    /// Starts `n` clients asking `addr` for `/`, side by side.
    pub fn clients(addr: SocketAddr, n: usize) -> SteadyLoad {
        SteadyLoad::spawn(addr, n, false)
    }

    /// Starts `n` clients asking `addr` for `/`, side by side, each on one kept-alive
    /// connection, sending a request as soon as the last one is answered. A client opens a
    /// new connection when the server says `Connection: close`. It sends a request again
    /// in one case only, counted in [`SteadyLoad::resent`] and not as a reply: the server
    /// closed the connection while it was idle, so the request never reached anyone (it
    /// could not be written, or the server's end-of-file came before any byte of the
    /// answer on a connection that had served before). Any other error, a reset included,
    /// is a failed reply.
    pub fn keep_alive(addr: SocketAddr, n: usize) -> SteadyLoad {
        SteadyLoad::spawn(addr, n, true)
    }

    fn spawn(addr: SocketAddr, n: usize, keep_alive: bool) -> SteadyLoad {
        let replies: Arc<Mutex<Vec<(u16, Reply)>>> = Arc::default();
        let resent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let (replies, resent) = (Arc::clone(&replies), Arc::clone(&resent));
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut kept = None;
                    while !stop.load(Ordering::SeqCst) {
                        let reply = match keep_alive {
                            false => Some(one_request(addr)),
                            true => kept_alive_request(addr, &mut kept),
                        };
                        match reply {
                            Some(reply) => lock(&replies).push(reply),
                            None => {
                                resent.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        SteadyLoad {
            replies,
            resent,
            stop,
            threads,
        }
    }

    /// How many requests have been answered (or failed) so far.
    pub fn count(&self) -> usize {
        lock(&self.replies).len()
    }

    /// Every reply so far, in order.
    pub fn replies(&self) -> Vec<Reply> {
        lock(&self.replies).iter().map(|(_, r)| r.clone()).collect()
    }

    /// Every reply so far, in order, with the client port of its connection.
    pub fn replies_by_port(&self) -> Vec<(u16, Reply)> {
        lock(&self.replies).clone()
    }

    /// How many requests a [`SteadyLoad::keep_alive`] client has sent again so far because
    /// the server had closed its idle connection.
    pub fn resent(&self) -> usize {
        self.resent.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests than now have been answered (or failed).
    #[track_caller]
    pub fn wait_for_more(&self, n: usize) {
        let target = self.count() + n;
        assert!(
            wait_until(TIMEOUT, || self.count() >= target),
            "the load should keep getting answers: {} of {target}; last: {:?}",
            self.count(),
            self.replies().last()
        );
    }

    /// Waits until a reply comes from `pid`, and returns its index.
    #[track_caller]
    pub fn wait_for_pid(&self, pid: u32) -> usize {
        let mut at = None;
        let found = wait_until(TIMEOUT, || {
            at = lock(&self.replies).iter().position(|(_, r)| *r == Ok(pid));
            at.is_some()
        });
        match (found, at) {
            (true, Some(at)) => at,
            _ => panic!(
                "no answer from pid {pid} in {} replies; the last: {:?}",
                self.count(),
                self.replies().last()
            ),
        }
    }

    /// Stops the clients, and returns every reply.
    pub fn stop(mut self) -> Vec<Reply> {
        self.halt();
        self.replies()
    }

    /// Stops the clients and waits for them to end; what they saw stays readable.
    pub fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A request in flight ends within the client's 5 s timeouts.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What a client of a [`SteadyLoad`] makes of a response: the pid that answered, or what
/// went wrong.
fn reply_of(response: HttpResponse) -> Reply {
    match response.status {
        200 => parse_hello(&response.body)
            .map(|(pid, _)| pid)
            .ok_or(response.body),
        status => Err(format!("status {status}: {}", response.body)),
    }
}

/// One `GET /` on a new connection, as [`http_get`] sends it: the client port, and the pid
/// that answered or what went wrong.
fn one_request(addr: SocketAddr) -> (u16, Reply) {
    let mut stream = match connect(addr) {
        Ok(stream) => stream,
        Err(e) => return (0, Err(e.to_string())),
    };
    let port = stream.local_addr().map_or(0, |a| a.port());
    let reply =
        match write_request(&mut stream, "/", false).and_then(|()| read_response(&mut stream)) {
            Ok(response) => reply_of(response),
            Err(e) => Err(e.to_string()),
        };
    (port, reply)
}

/// One `GET /` for a [`SteadyLoad::keep_alive`] client, on its connection `kept` if it has
/// one, else on a new one: the client port and the reply, or `None` if the server had
/// closed `kept` while it was idle and the request is to be sent again. The connection is
/// left in `kept` for the next request unless the server said `Connection: close` or
/// something went wrong.
fn kept_alive_request(addr: SocketAddr, kept: &mut Option<TcpStream>) -> Option<(u16, Reply)> {
    let (mut stream, reused) = match kept.take() {
        Some(stream) => (stream, true),
        // No Nagle: a request goes out in one packet at once, not 40 ms later, so the
        // clients keep the workers busy.
        None => match connect(addr).and_then(|s| s.set_nodelay(true).map(|()| s)) {
            Ok(stream) => (stream, false),
            Err(e) => return Some((0, Err(format!("connect: {e}")))),
        },
    };
    let port = stream.local_addr().map_or(0, |a| a.port());
    let failed = |why: String| Some((port, Err(why)));
    if let Err(e) = write_request(&mut stream, "/", true) {
        return match reused {
            true => None,
            false => failed(format!("write on a new connection: {e}")),
        };
    }
    match stream.peek(&mut [0u8; 1]) {
        Ok(0) if reused => return None,
        Ok(0) => return failed("a new connection closed without an answer".into()),
        Ok(_) => {}
        Err(e) => return failed(format!("waiting for the answer: {e}")),
    }
    let response = match read_response(&mut stream) {
        Ok(response) => response,
        Err(e) => return failed(format!("reading the answer: {e}")),
    };
    if response.header("Connection") != Some("close") {
        *kept = Some(stream);
    }
    Some((port, reply_of(response)))
}

impl Drop for SteadyLoad {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Polls `condition` every few milliseconds until it holds (true) or `timeout` passes
/// (false). For states nothing announces, such as a process being gone.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Requests sent at once, each on a new connection read by a thread of its own: the
/// answers come in the order they arrive.
pub struct Answers {
    answers: std::sync::mpsc::Receiver<Result<HttpResponse, String>>,
}

impl Answers {
    /// Sends `GET path` on `n` new connections to `addr`, one after another without waiting
    /// for any answer. Each connection waits up to [`TIMEOUT`] for its answer.
    #[track_caller]
    pub fn send(addr: SocketAddr, n: usize, path: &str) -> Answers {
        let (tx, answers) = std::sync::mpsc::channel();
        for i in 0..n {
            let mut stream = connect(addr).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            stream
                .set_read_timeout(Some(TIMEOUT))
                .expect("a read timeout");
            write_request(&mut stream, path, false)
                .unwrap_or_else(|e| panic!("send request {i}: {e}"));
            let tx = tx.clone();
            std::thread::spawn(move || {
                let answer = read_response(&mut stream).map_err(|e| match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        format!("request {i}: no answer within {TIMEOUT:?}")
                    }
                    _ => format!("request {i}: closed without an answer ({e})"),
                });
                let _ = tx.send(answer);
            });
        }
        Answers { answers }
    }

    /// The next answer to arrive, or why none did within `timeout`: `closed without an
    /// answer` if the connection was closed, `no answer within` if it was left open.
    pub fn next(&self, timeout: Duration) -> Result<HttpResponse, String> {
        match self.answers.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

/// Stops worker `pid` (SIGSTOP), then sends one request per worker (`workers`, every one
/// free) to the master at `addr`. A free worker gets one connection and is free again only
/// once it acknowledges it, so each worker is handed one: the stopped one can neither take
/// its connection nor acknowledge it, and the others answer theirs. Returns, once they
/// have, and the master (`master_pid`) is seen holding its copy of the connection it
/// handed to the stopped worker, the one answer still to come.
#[track_caller]
pub fn one_handed_to_a_stopped_worker(
    master_pid: u32,
    addr: SocketAddr,
    pid: u32,
    workers: usize,
) -> Answers {
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP the worker");
    assert!(
        wait_until(TIMEOUT, || stopped(pid)),
        "pid {pid} should be stopped"
    );
    let answers = Answers::send(addr, workers, "/");
    for _ in 1..workers {
        match answers.next(TIMEOUT) {
            Ok(response) => assert_ne!(
                parse_hello(&response.body).map(|(p, _)| p),
                Some(pid),
                "the stopped worker cannot answer: {response:?}"
            ),
            Err(e) => panic!("the running workers should answer: {e}"),
        }
    }
    assert!(
        wait_until(TIMEOUT, || tcp_connections_of(master_pid) == 1),
        "the master should hold the connection handed to the stopped worker, and no other; \
         it holds {}",
        tcp_connections_of(master_pid)
    );
    answers
}

// ---------------------------------------------------------------------------------------
// Programs that are not chapter binaries
// ---------------------------------------------------------------------------------------

/// The path of `program` if it is an executable file in a directory on `PATH`.
pub fn on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// `tool` on PATH, for a test that runs it (`node`, `python3`), or `None` after saying
/// on stderr that `what` was skipped. Only on a learner's machine: in CI (`CI` set, as
/// `.ci/run` sets it after installing Node.js) a missing tool fails the test instead, so
/// CI never passes a test it did not run.
#[track_caller]
pub fn tool_or_skip(tool: &str, what: &str) -> Option<PathBuf> {
    if let Some(path) = on_path(tool) {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("`{tool}` is not on PATH, and CI must run {what}: install it (apt-get install nodejs / python3)");
    }
    eprintln!("skipped: `{tool}` is not on PATH, so {what} was not run");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_lines() {
        let ready = "12:00:01.234 worker 2[4125] listening on http://127.0.0.1:23456";
        assert_eq!(
            parse_ready(ready),
            Some(Ready {
                id: 2,
                pid: 4125,
                addr: "127.0.0.1:23456".parse().unwrap()
            })
        );
        let forked = "12:00:01.200 master[4121] forked worker 3 (pid 4126)";
        assert_eq!(parse_forked(forked), Some((3, 4126)));
        assert_eq!(parse_master(forked), Some(4121));
        assert_eq!(parse_speaker(forked), None);
        assert_eq!(parse_ready(forked), None);
        assert_eq!(parse_hello(&hello_body(4125, 2)), Some((4125, 2)));
        assert_eq!(parse_hello("no worker available\n"), None);
    }

    #[test]
    fn this_process_is_alive_and_has_a_parent() {
        let me = std::process::id();
        assert!(pid_alive(me));
        assert!(parent_pid(me).is_some());
        assert!(fd_count(me) >= 3);
        assert!(!pid_alive(u32::MAX));
    }
}
