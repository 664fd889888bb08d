#!/usr/bin/env bash
# Chapter 7 against Node.js's cluster doing the same re-fork on 'exit'
# (book/node/ch07-restart.js), in one run:
#
#   1. kill -9 of a worker -> first answer from its replacement, in ms. A client asks
#      for / on a new connection, again and again, and the clock stops at the first
#      answer from a pid it has not seen before. Each target is started ROUNDS times
#      and each of its 2 workers is killed once per start: a slot's first restart is
#      immediate in both masters, its second within 30 s waits (the backoff).
#   2. failed requests while a worker dies of /crash under wrk load (kept-alive
#      connections, wrk's defaults): wrk's socket errors and non-2xx answers, the
#      crashing request itself not included (it is sent apart, with curl's job done
#      by python).
#
#   bench/restart.sh                  # ROUNDS=5 DURATION=6 CONNECTIONS=50
#
# Needs python3; the Node.js rows need node, the wrk figure needs wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6}
CONNECTIONS=${CONNECTIONS:-50}

cargo build --release -q -p ch07-auto-restart
export ROUNDS DURATION CONNECTIONS
exec python3 - <<'PY'
import os, re, signal, socket, statistics, subprocess, sys, threading, time
sys.dont_write_bytecode = True  # nothing written into bench/
sys.path.insert(0, "bench")
from common import Master, failed_and_total

ROUNDS, DURATION, CONNECTIONS = (int(os.environ[k]) for k in ("ROUNDS", "DURATION", "CONNECTIONS"))
HAVE_NODE = subprocess.run(["sh", "-c", "command -v node"], capture_output=True).returncode == 0
HAVE_WRK = subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode == 0

class Target(Master):
    """Chapter 7 or the Node program, once both of its workers serve."""
    def __init__(self, name):
        cmd = ["node", "book/node/ch07-restart.js"] if name == "node" else ["target/release/ch07-auto-restart"]
        super().__init__(name, cmd, "restart-")
        while len(self.forked()) < 2:
            if time.time() > self.deadline or self.proc.poll() is not None:
                sys.exit(f"{name} did not start its workers:\n{self.text()}")
            time.sleep(0.05)
        # Every worker serves before the clock starts.
        seen = set()
        while len(seen) < 2 and time.time() < self.deadline:
            seen.add(get(self.port))
    def forked(self):
        return [int(p) for p in re.findall(r"forked worker \d+ \(pid (\d+)\)", self.text())]

def get(port, path="/"):
    """The pid in the answer to one request on a new connection, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        m = re.search(rb"Hello world by (\d+)", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None

def first_answer_from_new(port, known):
    """Seconds until a pid not in `known` answers. Four clients ask at once: a connection
    handed to the dead worker may never be answered (Node's master does not take it
    back), and must not hold up the clock."""
    start, found, lock = time.perf_counter(), [], threading.Lock()
    def probe():
        while not found and time.perf_counter() - start < 10:
            pid = get(port)
            if pid is not None and pid not in known:
                with lock:
                    found.append((time.perf_counter() - start, pid))
            # A request a millisecond per client: ms resolution, without taking the
            # CPU the new worker needs to start.
            time.sleep(0.001)
    threads = [threading.Thread(target=probe) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    if not found:
        sys.exit("no replacement answered within 10 s")
    return min(found)

def kill_to_answer(name):
    times = []
    for _ in range(ROUNDS):
        t = Target(name)
        try:
            known = set(t.forked())
            for victim in sorted(known):
                os.kill(victim, signal.SIGKILL)
                took, pid = first_answer_from_new(t.port, known)
                times.append(took * 1000)
                known.add(pid)
        finally:
            t.stop()
    return times

def failed_during_crash(name):
    t = Target(name)
    try:
        wrk = subprocess.Popen(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s",
                                f"http://127.0.0.1:{t.port}/"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(DURATION / 3)
        # The crash itself, apart from wrk's requests.
        with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
            s.sendall(b"GET /crash HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            s.recv(4096)
        out, _ = wrk.communicate()
    finally:
        t.stop()
    return failed_and_total(out)

targets = ["ch07"] + (["node"] if HAVE_NODE else [])
print(f"{os.cpu_count()} CPUs, 2 workers; {ROUNDS} starts per target, each worker killed once per start")
print()
print(f"{'kill -9 -> first answer from the replacement':<46} {'min':>7} {'median':>7} {'max':>7}  (ms)")
medians = {}
for name in targets:
    times = kill_to_answer(name)
    medians[name] = statistics.median(times)
    print(f"{name:<46} {min(times):7.1f} {statistics.median(times):7.1f} {max(times):7.1f}")
    if os.environ.get("SAMPLES"):
        print("  samples:", " ".join(f"{x:.1f}" for x in times))
if "node" in medians:
    print(f"{'node / ch07 (medians)':<46} {medians['node'] / medians['ch07']:7.1f}x")
print()
if HAVE_WRK:
    print(f"failed requests while a worker dies of /crash (wrk -t2 -c{CONNECTIONS} -d{DURATION}s, kept alive):")
    for name in targets:
        runs = [failed_during_crash(name) for _ in range(3)]
        shown = ", ".join(f"{failed} of {total}" for failed, total in runs)
        print(f"  {name:<8} {shown}")
else:
    print("wrk is not installed: no figure for /crash under load (apt-get install wrk)")
PY
