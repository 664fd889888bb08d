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
#   3. failed requests when a worker is killed with kill -9 a third of the way into a
#      wrk run, each request on a connection of its own (-H 'Connection: close'), then
#      kept alive; 3 runs each. And where the connections were at that moment: the
#      worker is stopped (SIGSTOP) for the few ms it takes to list the sockets it holds
#      (the connections it had taken: they die with it, and with them each request it
#      had not answered), then killed. A connection its master had handed it and that
#      it had not acknowledged is still the master's: chapter 7's master logs it as
#      taken back and gives it to another worker; a connection still open in the master
#      once the load is over was never given back, and its client waits until its own
#      timeout (wrk does not count it as failed).
#
#   bench/restart.sh                  # ROUNDS=5 DURATION=6 CONNECTIONS=50
#   STEPS=3 bench/restart.sh          # only step 3 (default STEPS="1 2 3")
#
# Needs python3; the Node.js rows need node, the wrk figure needs wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6}
CONNECTIONS=${CONNECTIONS:-50}
STEPS=${STEPS:-1 2 3}

cargo build --release -q -p ch07-auto-restart
export ROUNDS DURATION CONNECTIONS STEPS
exec python3 - <<'PY'
import os, re, signal, socket, statistics, subprocess, sys, threading, time
sys.dont_write_bytecode = True  # nothing written into bench/
sys.path.insert(0, "bench")
from common import Master, backlog, failed_and_total, tcp_connections

ROUNDS, DURATION, CONNECTIONS = (int(os.environ[k]) for k in ("ROUNDS", "DURATION", "CONNECTIONS"))
STEPS = os.environ["STEPS"].split()
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

def killed_under_load(name, keep_alive):
    """kill -9 of one worker a third of the way into a wrk run. Returns wrk's failed and
    total requests; where the connections were at the kill: held by the killed worker
    (how many, and how many of them with a request it had not read), held by the master
    (waiting for a worker, or handed to one and not acknowledged yet), in the listening
    socket's backlog; then the connections the master logged as taken back from the
    dead worker, and those still open in the master once the load is over."""
    t = Target(name)
    try:
        close = [] if keep_alive else ["-H", "Connection: close"]
        wrk = subprocess.Popen(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", *close,
                                f"http://127.0.0.1:{t.port}/"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(DURATION / 3)
        victim = t.forked()[0]
        os.kill(victim, signal.SIGSTOP)
        held = tcp_connections(victim)
        in_master = len(tcp_connections(t.proc.pid))
        queued = backlog(t.proc.pid)
        os.kill(victim, signal.SIGKILL)
        out, _ = wrk.communicate()
        # What the master still holds once wrk has closed its connections and the last
        # answers are out.
        time.sleep(0.5)
        left_open = len(tcp_connections(t.proc.pid))
        taken_back = t.text().count("died before taking its connection")
    finally:
        t.stop()
    failed, total = failed_and_total(out)
    unread = sum(1 for _, waiting in held if waiting)
    return failed, total, len(held), unread, in_master, queued, taken_back, left_open

targets = ["ch07"] + (["node"] if HAVE_NODE else [])
if "1" in STEPS:
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
else:
    print(f"{os.cpu_count()} CPUs, 2 workers")
if not HAVE_WRK and ("2" in STEPS or "3" in STEPS):
    print()
    print("wrk is not installed: no figures under load (apt-get install wrk)")
if HAVE_WRK and "2" in STEPS:
    print()
    print(f"failed requests while a worker dies of /crash (wrk -t2 -c{CONNECTIONS} -d{DURATION}s, kept alive):")
    for name in targets:
        runs = [failed_during_crash(name) for _ in range(3)]
        shown = ", ".join(f"{failed} of {total}" for failed, total in runs)
        print(f"  {name:<8} {shown}")
if HAVE_WRK and "3" in STEPS:
    print()
    print(f"kill -9 of a worker {DURATION / 3:.0f} s into wrk -t2 -c{CONNECTIONS} -d{DURATION}s, 3 runs per row:")
    print("  where the connections were at the kill: held by the killed worker (of them, with a")
    print("  request it had not read), by the master, in the backlog. Then: taken back (handed")
    print("  to the dead worker, never acknowledged, given to another), left open (still open")
    print("  in the master after the run: never answered)")
    print(f"  {'':<23} {'failed':>16}  {'worker (unread)':>15} {'master':>6} {'backlog':>7}"
          f"  {'taken back':>10} {'left open':>9}")
    for keep_alive in (False, True):
        for name in targets:
            mode = "kept alive" if keep_alive else "Connection: close"
            for run in range(3):
                failed, total, held, unread, master, queued, back, left = killed_under_load(name, keep_alive)
                label = f"{name:<5} {mode:<17}" if run == 0 else ""
                print(f"  {label:<23} {failed:4} of {total:7}  {held:6} ({unread:5}) {master:6} {queued:7}"
                      f"  {back:10} {left:9}", flush=True)
PY
