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
