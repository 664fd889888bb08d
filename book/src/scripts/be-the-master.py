#!/usr/bin/env python3
"""Play the master of chapter 2 by hand: make the socketpair, start one worker with its
end inherited, read what it says, answer, then close our end and watch it exit.

Run from the workspace root after `cargo build -p ch02-ipc-messaging`:
    python3 book/src/scripts/be-the-master.py
"""
import os
import socket
import subprocess

# One connected pair of Unix sockets that keep message boundaries.
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

# Start a worker: the same two variables our master sets. pass_fds keeps `theirs` open
# across exec (Python makes every other fd close-on-exec).
env = dict(os.environ, CLUSTER_WORKER_ID="1", CLUSTER_CHANNEL_FD=str(theirs.fileno()))
worker = subprocess.Popen(
    ["./target/debug/ch02-ipc-messaging"], env=env, pass_fds=[theirs.fileno()]
)
theirs.close()  # the worker has its copy; ours would keep the channel open forever

print("worker says:", ours.recv(65536).decode())       # "<port> ready"
ours.send(b"echo hello from python")
print("worker says:", ours.recv(65536).decode())       # the same text back
ours.send(b"served?")
print("worker says:", ours.recv(65536).decode())       # "served 0"

ours.close()  # the "master" is gone: the worker reads end-of-file and exits
print("worker exit code:", worker.wait())
