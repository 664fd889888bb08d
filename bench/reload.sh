#!/usr/bin/env bash
# Chapter 9's rolling reload against Node.js's cluster doing the articles' SIGUSR2 reload
# (book/node/ch09-reload.js), in one run, under wrk load:
#
#   For each target, 2 workers, RUNS times per kind of load: wrk runs for DURATION
#   seconds; a third of the way in, the master gets SIGUSR2. Reported: wrk's failed
#   requests (socket errors and non-2xx answers) out of all it sent, and how long the
#   reload took by the master's own clock (SIGUSR2 -> the last new worker serving), from
#   its `reload done: ... in N ms` line.
#
#   Two kinds of load: kept-alive connections (wrk's default), and a new connection per
#   request (wrk sends `Connection: close`).
#
#   bench/reload.sh                  # RUNS=3 DURATION=6 CONNECTIONS=50
#
# Needs python3 and wrk; the Node.js rows need node.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-6}
CONNECTIONS=${CONNECTIONS:-50}

command -v wrk >/dev/null || { echo "bench/reload.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p ch09-rolling-reload
export RUNS DURATION CONNECTIONS
exec python3 - <<'PY'
import os, re, signal, subprocess, sys, time
sys.dont_write_bytecode = True  # nothing written into bench/
sys.path.insert(0, "bench")
from common import Master, failed_and_total

RUNS, DURATION, CONNECTIONS = (int(os.environ[k]) for k in ("RUNS", "DURATION", "CONNECTIONS"))
HAVE_NODE = subprocess.run(["sh", "-c", "command -v node"], capture_output=True).returncode == 0

def Target(name):
    """Chapter 9 or the Node program doing the articles' SIGUSR2 reload."""
    cmd = ["node", "book/node/ch09-reload.js"] if name == "node" else ["target/release/ch09-rolling-reload"]
    return Master(name, cmd, "reload-")

def one_run(name, close):
    """wrk against a fresh target, SIGUSR2 a third of the way in: (failed, total, ms)."""
    t = Target(name)
    try:
        cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s"]
        if close:
            cmd += ["-H", "Connection: close"]
        wrk = subprocess.Popen(cmd + [f"http://127.0.0.1:{t.port}/"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(DURATION / 3)
        os.kill(t.proc.pid, signal.SIGUSR2)
        out, _ = wrk.communicate()
    finally:
        t.stop()
    failed, total = failed_and_total(out)
    done = re.search(r"reload done: \d+ workers? replaced in (\d+) ms", t.text())
    return failed, total, int(done.group(1)) if done else None

def span(values):
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"

targets = ["ch09"] + (["node"] if HAVE_NODE else [])
wrk_version = re.search(r"\d+\.\d+\.\d+", subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout)
wrk_version = f"wrk {wrk_version.group(0) if wrk_version else '?'}"
node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() if HAVE_NODE else "no node"
print(f"{os.cpu_count()} CPUs, Linux {os.uname().release}, {wrk_version}, node {node_version}")
print(f"2 workers; SIGUSR2 {DURATION / 3:.1f} s into wrk -t2 -c{CONNECTIONS} -d{DURATION}s; {RUNS} runs each")
print()
print(f"{'':<6} {'load':<22} {'failed requests':<40} reload (ms)")
for close in (False, True):
    load = "new connection each" if close else "kept-alive"
    for name in targets:
        runs = [one_run(name, close) for _ in range(RUNS)]
        failed = ", ".join(f"{f} of {total}" for f, total, _ in runs)
        times = [ms for _, _, ms in runs]
        took = span([ms for ms in times if ms is not None]) if any(ms is not None for ms in times) else "-"
        if None in times:
            took += f" ({times.count(None)} not done)"
        print(f"{name:<6} {load:<22} {failed:<40} {took}")
PY
