#!/usr/bin/env bash
# Chapter 11: three primaries for the same unmodified Node.js program, book/node/app.js,
# with 2 workers each, in one run:
#
#   node   Node's own primary (the program's cluster.isPrimary branch)
#   pm2    PM2's cluster mode, `pm2 start app.js -i 2` (its daemon is the primary)
#   ch11   ours, `ch11-node-primary --workers 2 -- node app.js`
#
# Measured for each:
#   1. requests per second under wrk -t2 -c50 for DURATION s, kept alive, then with a
#      new connection per request (-H 'Connection: close');
#   2. the primary's CPU time per connection during the second run, from
#      /proc/PID/stat, and the primary's resident memory (VmRSS) after both;
#   3. failed requests (wrk's socket errors and non-2xx answers) when the workers are
#      reloaded a third of the way into a wrk run, kept alive and new connection each:
#      `pm2 reload app` against our SIGUSR2 (Node's own primary has no reload);
#   4. kill -9 of a worker -> the first answer from its replacement, in ms: a client
#      asks again and again, each request on a new connection, until a pid it has not
#      seen answers (Node's own primary, as the articles write it, restarts nothing).
#
#   bench/node-primary.sh            # DURATION=5 CONNECTIONS=50
#
# Needs python3, node and npm (PM2 is installed with npm into target/bench-pm2 the first
# time), and wrk (apt-get install wrk) or, without it, tools/loadgen for the rates.
# Nothing is left running: every process is killed by its group, and PM2's daemon with
# `pm2 kill`.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-50}
PM2_PREFIX=${PM2_PREFIX:-target/bench-pm2}

command -v node >/dev/null || { echo "bench/node-primary.sh needs node" >&2; exit 1; }
if [ ! -x "$PM2_PREFIX/bin/pm2" ]; then
    echo "installing PM2 into $PM2_PREFIX (npm install -g --prefix)" >&2
    npm install -g --silent --prefix "$PM2_PREFIX" pm2 >&2
fi
cargo build --release -q -p ch11-node-primary
command -v wrk >/dev/null || cargo build --release -q -p loadgen
PM2_HOME=$(mktemp -d -t bench-pm2-home.XXXXXX)
export PM2_HOME PM2="$PM2_PREFIX/bin/pm2" DURATION CONNECTIONS
trap '"$PM2" kill >/dev/null 2>&1 || true; rm -rf "$PM2_HOME"' EXIT
python3 - <<'PY'
import json, os, re, signal, socket, subprocess, sys, tempfile, time
sys.dont_write_bytecode = True  # nothing written into bench/
sys.path.insert(0, "bench")
from common import failed_and_total, free_port

DURATION, CONNECTIONS = int(os.environ["DURATION"]), int(os.environ["CONNECTIONS"])
PM2 = os.environ["PM2"]
APP = os.path.abspath("book/node/app.js")
HAVE_WRK = subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode == 0
TICK = os.sysconf("SC_CLK_TCK")

def get(port):
    """One GET on a new connection: the pid that answered, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        m = re.search(rb"Hello world by (\d+)", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK

def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

class Target:
    def __init__(self, name):
        self.name, self.port = name, free_port()
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"node-primary-{name}-", suffix=".log")
        env = dict(os.environ, PORT=str(self.port), WORKERS="2")
        for var in ("NODE_UNIQUE_ID", "NODE_CHANNEL_FD", "CLUSTER_WORKER_ID"):
            env.pop(var, None)
        self.proc = None
        if name == "pm2":
            subprocess.run([PM2, "start", APP, "-i", "2", "--name", "app"], env=env,
                           stdout=self.log, stderr=subprocess.STDOUT, check=True)
            self.primary = int(open(os.path.join(os.environ["PM2_HOME"], "pm2.pid")).read())
        else:
            cmd = ["node", APP] if name == "node" else [
                "target/release/ch11-node-primary", "--workers", "2", "--port", str(self.port),
                "--", "node", APP]
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
            self.primary = self.proc.pid
        deadline = time.time() + 20
        while len(self.pids()) < 2 or get(self.port) is None:
            if time.time() > deadline:
                sys.exit(f"{name} did not start its 2 workers:\n{self.text()}")
            time.sleep(0.05)
        # Every worker serves before anything is measured.
        seen = set()
        while seen != set(self.pids()) and time.time() < deadline:
            seen.add(get(self.port))

    def pids(self):
        """The workers' pids: the primary's node children, or PM2's list."""
        if self.name == "pm2":
            out = subprocess.run([PM2, "jlist"], capture_output=True, text=True).stdout
            try:
                return [p["pid"] for p in json.loads(out) if p.get("pid")]
            except ValueError:
                return []
        out = subprocess.run(["pgrep", "-P", str(self.primary)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def text(self):
        self.log.seek(0)
        return self.log.read()

    def reload(self):
        if self.name == "pm2":
            subprocess.Popen([PM2, "reload", "app"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            os.kill(self.primary, signal.SIGUSR2)

    def stop(self):
        if self.name == "pm2":
            subprocess.run([PM2, "delete", "all"], capture_output=True)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            # Our workers lead groups of their own and die with their primary; wait.
            deadline = time.time() + 5
            while subprocess.run(["pgrep", "-f", APP], capture_output=True).returncode == 0 \
                    and time.time() < deadline:
                time.sleep(0.05)

def load(port, close, seconds):
    """Requests per second and (failed, total) of one run against `port`."""
    if HAVE_WRK:
        cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s"]
        if close:
            cmd += ["-H", "Connection: close"]
        out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        return rate, failed_and_total(out)
    cmd = ["target/release/loadgen", f"http://127.0.0.1:{port}", "-c", str(CONNECTIONS),
           "--duration", str(seconds)] + ([] if close else ["-k"])
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"(\d+) answered, (\d+) errors in [\d.]+ s: ([\d.]+) requests/s", out)
    return float(m.group(3)), (int(m.group(2)), int(m.group(1)) + int(m.group(2)))

def measure(name):
    t = Target(name)
    try:
        r = {}
        r["kept"], _ = load(t.port, False, DURATION)
        cpu0 = cpu_seconds(t.primary)
        r["close"], (_, total) = load(t.port, True, DURATION)
        r["cpu_us"] = (cpu_seconds(t.primary) - cpu0) / max(total, 1) * 1e6
        r["rss"] = rss_mb(t.primary)
        for close in (False, True):
            if name == "node":
                r[f"reload_{close}"] = None
                continue
            cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s"] + (["-H", "Connection: close"] if close else [])
            wrk = subprocess.Popen(cmd + [f"http://127.0.0.1:{t.port}/"], stdout=subprocess.PIPE, text=True)
            time.sleep(DURATION / 3)
            t.reload()
            out, _ = wrk.communicate()
            r[f"reload_{close}"] = failed_and_total(out)
            deadline = time.time() + 20
            while len(t.pids()) != 2 and time.time() < deadline:
                time.sleep(0.05)
        seen = set(t.pids())
        victim = seen.pop()
        time.sleep(0.5)  # the reloaded workers have settled
        seen = set(t.pids())
        start = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        took = None
        while time.monotonic() - start < 10:
            pid = get(t.port)
            if pid is not None and pid not in seen:
                took = (time.monotonic() - start) * 1000
                break
        r["restart_ms"] = took
        return r
    finally:
        t.stop()

node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
pm2_version = subprocess.run([PM2, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
wrk = re.search(r"\d+\.\d+\.\d+", subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout) if HAVE_WRK else None
tool = f"wrk {wrk.group(0) if wrk else '?'}" if HAVE_WRK else "loadgen"
print(f"{os.cpu_count()} CPUs, Linux {os.uname().release}, node {node_version}, pm2 {pm2_version}, {tool}")
print(f"2 workers of book/node/app.js each; -c{CONNECTIONS}, {DURATION} s per load; "
      f"load average {os.getloadavg()[0]:.1f} at the start")
print()
results = {name: measure(name) for name in ("node", "pm2", "ch11")}
def cell(v, fmt):
    return "-" if v is None else fmt(v)
rows = [
    ("requests/s, kept alive", "kept", lambda v: f"{v:.0f}"),
    ("requests/s, new connection each", "close", lambda v: f"{v:.0f}"),
    ("primary's CPU per connection (us)", "cpu_us", lambda v: f"{v:.1f}"),
    ("primary's RSS (MB)", "rss", lambda v: f"{v:.1f}"),
    ("failed in a reload, kept alive", "reload_False", lambda v: f"{v[0]} of {v[1]}"),
    ("failed in a reload, new conn each", "reload_True", lambda v: f"{v[0]} of {v[1]}"),
    ("kill -9 -> replacement answers (ms)", "restart_ms", lambda v: f"{v:.0f}"),
]
print(f"{'':<38}{'node':>16}{'pm2':>16}{'ch11':>16}")
for label, key, fmt in rows:
    print(f"{label:<38}" + "".join(f"{cell(results[n][key], fmt):>16}" for n in ("node", "pm2", "ch11")))
print(f"load average {os.getloadavg()[0]:.1f} at the end")
PY
