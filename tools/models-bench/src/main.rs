//! `models-bench`: loads each of the prologue's server models (and, when they are
//! installed, Node.js and nginx) with more and more kept-alive connections, and records
//! what each costs: requests per second, memory, context switches, and how long a new
//! client waits for its first answer. Writes a CSV, and an SVG chart drawn from it.
//!
//! `bench/models.sh` builds everything and runs it; see there for the usual way in.
//!
//! ```text
//! models-bench --bin target/release [--quick] [--levels 10,100,1000,10000] [--duration 5]
//!              [--node FILE.js] [--nginx] [--machine TEXT] [--date TEXT]
//!              --csv OUT.csv --svg OUT.svg
//! models-bench chart IN.csv OUT.svg
//! ```
//!
//! For every target and level it starts a fresh server and runs `loadgen --duration
//! --hold` with that many connections. Once every connection has had its first answer
//! and waits, idle, it reads the context switches of the server's process tree under
//! `/proc`, then lets the load go; meanwhile a probe opens a new connection every 200 ms
//! and times its first answer. When the time is up, loadgen holds the connections open,
//! idle again, while the switches and the memory are read.

mod chart;
mod procfs;
mod record;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use record::Row;

const USAGE: &str = "Usage: models-bench --bin DIR [--quick] [--levels 10,100,1000,10000] \
[--duration SECS] [--models process,thread,event] [--node FILE.js] [--nginx] \
[--machine TEXT] [--date TEXT] --csv OUT.csv --svg OUT.svg
       models-bench chart IN.csv OUT.svg

Loads each server model with each number of kept-alive connections and records requests/s,
memory, context switches and a new client's wait in OUT.csv, and a chart of them in OUT.svg.
DIR holds the ch00-server-models and loadgen binaries. --quick: 10 and 100 connections,
1 second each.";

/// How long anything may take to start, connect or answer before the run gives up on it.
const PATIENCE: Duration = Duration::from_secs(30);

struct Options {
    bin: PathBuf,
    levels: Vec<usize>,
    duration: Duration,
    models: Vec<String>,
    node: Option<PathBuf>,
    nginx: bool,
    machine: String,
    date: String,
    csv: PathBuf,
    svg: PathBuf,
}

fn main() -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    if words.first().map(String::as_str) == Some("chart") {
        return match words.as_slice() {
            [_, csv, svg] => match chart_from(Path::new(csv), Path::new(svg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            },
            _ => fail("chart takes two paths: IN.csv OUT.svg"),
        };
    }
    let options = match parse(words) {
        Ok(options) => options,
        Err(e) => return fail(&e),
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("models-bench: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

fn parse(words: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        bin: PathBuf::new(),
        levels: vec![10, 100, 1000, 10_000],
        duration: Duration::from_secs(5),
        models: vec!["process".into(), "thread".into(), "event".into()],
        node: None,
        nginx: false,
        machine: "this machine".into(),
        date: "undated".into(),
        csv: PathBuf::new(),
        svg: PathBuf::new(),
    };
    let mut rest = words.into_iter();
    while let Some(word) = rest.next() {
        let mut value = |name: &str| rest.next().ok_or(format!("{name} needs a value"));
        match word.as_str() {
            "--bin" => options.bin = value("--bin")?.into(),
            "--quick" => {
                options.levels = vec![10, 100];
                options.duration = Duration::from_secs(1);
            }
            "--levels" => {
                options.levels = value("--levels")?
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|_| format!("bad level '{n}'")))
                    .collect::<Result<_, _>>()?;
            }
            "--duration" => {
                let secs: f64 = value("--duration")?
                    .parse()
                    .map_err(|_| "--duration takes seconds".to_string())?;
                options.duration = Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or("--duration must be above 0")?;
            }
            "--models" => {
                options.models = value("--models")?.split(',').map(str::to_string).collect();
            }
            "--node" => options.node = Some(value("--node")?.into()),
            "--nginx" => options.nginx = true,
            "--machine" => options.machine = value("--machine")?,
            "--date" => options.date = value("--date")?,
            "--csv" => options.csv = value("--csv")?.into(),
            "--svg" => options.svg = value("--svg")?.into(),
            "-h" | "--help" => return Err("help".into()),
            _ => return Err(format!("unknown argument '{word}'")),
        }
    }
    if options.bin.as_os_str().is_empty() {
        return Err("--bin DIR is needed: where ch00-server-models and loadgen are".into());
    }
    if options.csv.as_os_str().is_empty() || options.svg.as_os_str().is_empty() {
        return Err("--csv and --svg are needed: where to write the results".into());
    }
    if options.levels.is_empty() || options.levels.contains(&0) {
        return Err("--levels takes connection counts above 0, like 10,100".into());
    }
    for model in &options.models {
        if !["process", "thread", "event"].contains(&model.as_str()) {
            return Err(format!(
                "--models: '{model}' is not process, thread or event"
            ));
        }
    }
    Ok(options)
}

/// What to start, and how.
enum Target {
    Model(String),
    Node(PathBuf),
    Nginx,
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Model(model) => model.clone(),
            Target::Node(_) => "node".into(),
            Target::Nginx => "nginx".into(),
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    let mut targets: Vec<Target> = options.models.iter().cloned().map(Target::Model).collect();
    if let Some(file) = &options.node {
        targets.push(Target::Node(file.clone()));
    }
    if options.nginx {
        targets.push(Target::Nginx);
    }
    let mut rows = Vec::new();
    for target in &targets {
        for &level in &options.levels {
            eprint!("{:>8} {:>6} connections: ", target.name(), level);
            let mut row = match measure(options, target, level) {
                Ok(row) => row,
                Err(why) => Row::stopped(&target.name(), level, &why),
            };
            row.date = options.date.clone();
            row.machine = options.machine.clone();
            eprintln!("{}", row.summary());
            rows.push(row);
        }
    }
    record::write(&options.csv, &rows)?;
    std::fs::write(&options.svg, chart::draw(&rows))
        .map_err(|e| format!("cannot write {}: {e}", options.svg.display()))?;
    println!(
        "wrote {} and {}",
        options.csv.display(),
        options.svg.display()
    );
    Ok(())
}

fn chart_from(csv: &Path, svg: &Path) -> Result<(), String> {
    let rows = record::read(csv)?;
    std::fs::write(svg, chart::draw(&rows))
        .map_err(|e| format!("cannot write {}: {e}", svg.display()))
}

/// A server under test, in a process group of its own: dropping it kills the group.
struct Server {
    child: Child,
    addr: SocketAddr,
    _scratch: Option<Scratch>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        // SAFETY: kill() with a negative pid signals that process group; plain integers.
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (children still exiting, a stuck process) goes now.
        // SAFETY: as above.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of our own for nginx's configuration and logs, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(options: &Options, target: &Target, level: usize) -> Result<Server, String> {
    let (mut command, scratch, fixed) = match target {
        Target::Model(model) => {
            let mut command = Command::new(options.bin.join("ch00-server-models"));
            command.args(["--model", model, "--port", "0", "--idle-timeout", "60"]);
            if model != "event" {
                // Room for every connection and the probes.
                let cap = (level + 100).to_string();
                command.args(["--max-clients", &cap]);
            }
            (command, None, None)
        }
        Target::Node(file) => {
            let mut command = Command::new("node");
            command.arg(file).env("PORT", "0");
            (command, None, None)
        }
        Target::Nginx => {
            let (dir, port) = nginx_config(level)?;
            let mut command = Command::new("nginx");
            command
                .arg("-p")
                .arg(&dir.0)
                .arg("-c")
                .arg(dir.0.join("nginx.conf"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            (command, Some(dir), Some(addr))
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    die_with_us(&mut command);
    // A session of its own, and so a process group to kill and, with Linux's autogroup
    // scheduling, a CPU share of its own: the kernel splits the CPUs fairly between the
    // server and the load, however many processes or threads the server runs. Without
    // it, 10,000 server processes would leave the load client a ten-thousandth of a CPU.
    // SAFETY: setsid is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| match libc::setsid() {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", target.name()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let addr = match fixed {
        Some(addr) => {
            let server = Server {
                child,
                addr,
                _scratch: scratch,
            };
            wait_connectable(addr)?;
            return Ok(server);
        }
        None => ready_line(stdout)?,
    };
    Ok(Server {
        child,
        addr,
        _scratch: scratch,
    })
}

/// Has `command`'s process get SIGTERM if this one dies, even by Ctrl-C or kill -9, so an
/// interrupted run leaves no server or load behind.
fn die_with_us(command: &mut Command) {
    // SAFETY: runs between fork and exec; prctl is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Reads the server's output until its `listening on http://ADDR` line; keeps draining it
/// afterwards on a thread, so a server that logs cannot block on a full pipe.
fn ready_line(stdout: impl Read + Send + 'static) -> Result<SocketAddr, String> {
    let (found, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("listening on http://") {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_end_matches('/');
                let _ = found.send(addr.parse::<SocketAddr>().ok());
                break;
            }
        }
        for _ in lines {}
    });
    match wait.recv_timeout(PATIENCE) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err("its ready line had no address".into()),
        Err(_) => Err("it printed no ready line".into()),
    }
}

fn wait_connectable(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on {addr}"))
}

/// nginx with one worker process: one event loop, like our event model and like Node.
fn nginx_config(level: usize) -> Result<(Scratch, u16), String> {
    let dir = std::env::temp_dir().join(format!("models-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| format!("nginx scratch dir: {e}"))?;
    let scratch = Scratch(dir);
    // nginx cannot listen on port 0 and tell us: pick a free port the usual way.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let connections = level * 2 + 256;
    let config = format!(
        "daemon off;\nworker_processes 1;\nworker_rlimit_nofile {connections};\npid nginx.pid;\n\
         error_log logs/error.log;\nevents {{ worker_connections {connections}; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 60s;\n\
         \x20 server {{\n    listen 127.0.0.1:{port} backlog=511;\n\
         \x20   location / {{ return 200 \"Hello world by nginx\\n\"; }}\n  }}\n}}\n"
    );
    std::fs::write(scratch.0.join("nginx.conf"), config).map_err(|e| format!("nginx.conf: {e}"))?;
    Ok((scratch, port))
}

/// One target at one level: start it, load it, sample it, stop it.
/// A child that is killed and reaped when dropped (after a normal `wait`, the kill finds
/// nothing to kill).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(options: &Options, target: &Target, level: usize) -> Result<Row, String> {
    let server = start(options, target, level)?;
    let root = server.child.id();
    let url = format!("http://{}/", server.addr);
    let mut loadgen = Command::new(options.bin.join("loadgen"));
    loadgen
        .args([url.as_str(), "-k", "-c", &level.to_string()])
        .args(["--timeout", "30", "--hold", "--duration"])
        .arg(options.duration.as_secs_f64().to_string());
    die_with_us(&mut loadgen);
    let loadgen = loadgen
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start loadgen: {e}"))?;
    // Killed and reaped however this function returns, an error included.
    let mut loadgen = Reaped(loadgen);
    let loadgen = &mut loadgen.0;
    let stdout = loadgen.stdout.take().ok_or("no stdout from loadgen")?;
    let mut lines = BufReader::new(stdout).lines();
    // Wait for every connection's first answer (loadgen says how many got one).
    let measuring = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("measuring:"))
        .ok_or("loadgen never began measuring")?;
    let open: usize = measuring
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Every connection is open and idle, waiting for our word to start: count the
    // context switches so far, then start the load, and a new client now and then.
    let first = procfs::sample(root, false);
    let mut go = loadgen.stdin.take().ok_or("no stdin for loadgen")?;
    go.write_all(b"go\n")
        .map_err(|e| format!("loadgen did not take the word to start: {e}"))?;
    let probes = Probes::start(server.addr);
    // loadgen's report comes when its time is up; it then holds every connection open,
    // idle, until we close its stdin: the moment to read memory, with no load to slow
    // the reading down.
    let mut report = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let done = line.contains("requests/s;");
        report.push(line);
        if done {
            break;
        }
    }
    // The rest of the report (a row per worker: with the process model, 10,000 rows) must
    // still be read, or loadgen would block writing it and never see its stdin close.
    std::thread::spawn(move || for _ in lines {});
    let fresh = probes.stop();
    let last = procfs::sample(root, true);
    drop(go);
    let _ = loadgen.wait();
    drop(server);

    let (rps, p50, p99, errors) = parse_report(&report)
        .ok_or_else(|| format!("no result from loadgen: {}", report.join(" / ")))?;
    let switches = last.switches_since(&first);
    let mut row = Row::new(&target.name(), level);
    row.open = open;
    row.rps = rps;
    row.p50_ms = p50;
    row.p99_ms = p99;
    row.errors = errors;
    row.rss_mib = last.rss_kib as f64 / 1024.0;
    row.pss_mib = last.pss_kib as f64 / 1024.0;
    row.processes = last.processes;
    row.threads = last.threads;
    row.switches = switches;
    // Counted over the window and the short idle moment after it, which adds next to
    // nothing: per request answered in the window.
    row.switches_per_request = switches as f64 / (rps * options.duration.as_secs_f64()).max(1.0);
    row.set_fresh(&fresh);
    let answered = rps * options.duration.as_secs_f64();
    if open < level {
        row.status = "stopped".into();
        row.note = format!("only {open} of {level} connections got an answer");
    } else if errors as f64 > answered / 100.0 {
        // All connected, but more than 1 request in 100 failed or waited past loadgen's
        // 30 s timeout: this many clients are more than it can serve.
        row.status = "stopped".into();
        row.note =
            format!("{errors} requests failed or waited over 30 s, against {answered:.0} answered");
    }
    Ok(row)
}

fn sleep_until(when: Instant) {
    std::thread::sleep(when.saturating_duration_since(Instant::now()));
}

/// `N answered, E errors in S s: R requests/s; latency p50 A ms, p99 B ms`.
fn parse_report(lines: &[String]) -> Option<(f64, f64, f64, u64)> {
    let line = lines.iter().find(|l| l.contains("requests/s;"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let before = |word: &str| -> Option<f64> {
        let at = words.iter().position(|w| *w == word)?;
        words.get(at.checked_sub(1)?)?.parse().ok()
    };
    let after = |word: &str| -> Option<f64> {
        let at = words.iter().position(|w| *w == word)?;
        words.get(at + 1)?.trim_end_matches(',').parse().ok()
    };
    let errors = before("errors")? as u64;
    Some((before("requests/s;")?, after("p50")?, after("p99")?, errors))
}

/// A new client every 200 ms, each timing its first answer, while the load runs.
struct Probes {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Option<Duration>>>,
}

impl Probes {
    fn start(addr: SocketAddr) -> Probes {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut waits = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                waits.push(probe(addr).ok().map(|()| started.elapsed()));
                sleep_until(started + Duration::from_millis(200));
            }
            waits
        });
        Probes { stop, thread }
    }

    fn stop(self) -> Vec<Option<Duration>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Connects, asks once, and reads the whole answer.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    match answer.starts_with(b"HTTP/1.1 200") {
        true => Ok(()),
        false => Err(std::io::Error::other("not a 200")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loadgen_report() {
        let lines = vec![
            "5.0 s of requests to http://127.0.0.1:1/ from 10 clients, one kept-alive connection per client".to_string(),
            "1000 answered, 3 errors in 5.00 s: 200 requests/s; latency p50 1.50 ms, p99 9.25 ms".to_string(),
        ];
        assert_eq!(parse_report(&lines), Some((200.0, 1.5, 9.25, 3)));
    }
}
