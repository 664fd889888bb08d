"""What the bench scripts' inline python shares: starting a master and reading wrk."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time


def failed_and_total(report):
    """wrk's failed requests (socket errors and non-2xx answers), and all it sent."""
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", report))
    non2xx = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", report))
    total = int(re.search(r"(\d+) requests in", report).group(1))
    return errors + non2xx, total


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Master:
    """A master (ours or a Node program) with 2 workers on a free port, in its own session
    (killed as a group by stop()), its log in a file. Returns once it says it listens."""

    def __init__(self, name, cmd, log_prefix):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", prefix=log_prefix, suffix=".log")
        env = dict(os.environ, PORT=str(self.port), WORKERS="2")
        for var in ("CLUSTER_WORKER_ID", "CLUSTER_CHANNEL_FD", "NODE_UNIQUE_ID"):
            env.pop(var, None)
        # The Node programs read PORT and WORKERS from the environment; ours take options.
        if cmd[0] != "node":
            cmd = cmd + ["--port", str(self.port), "--workers", "2"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.deadline = time.time() + 20
        while "listening on http://" not in self.text():
            if time.time() > self.deadline or self.proc.poll() is not None:
                sys.exit(f"{name} did not start:\n{self.text()}")
            time.sleep(0.05)

    def text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def tcp_sockets(pid):
    """The TCP sockets process `pid` holds, as a list of (state, queued): the kernel's
    state name (LISTEN, ESTABLISHED, CLOSE_WAIT, ...) and, for a connection, the bytes it
    has received that nobody has read yet; for a listening socket, the connections
    waiting in its accept queue (the backlog). From /proc/PID/fd and /proc/net/tcp{,6}."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(int(m.group(1)))
    names = {"0A": "LISTEN", "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
             "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
             "09": "LAST_ACK", "0B": "CLOSING"}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[9]) in inodes:
                found.append((names.get(cols[3], cols[3]), int(cols[4].split(":")[1], 16)))
    return found


def tcp_connections(pid):
    """The TCP connections process `pid` holds, listening sockets left out: see
    tcp_sockets."""
    return [(state, unread) for state, unread in tcp_sockets(pid) if state != "LISTEN"]


def backlog(pid):
    """How many connections wait in the accept queues of the sockets `pid` listens on."""
    return sum(queued for state, queued in tcp_sockets(pid) if state == "LISTEN")
