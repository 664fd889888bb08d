# A server that knows nothing of Node or of our primary: it speaks systemd's
# socket activation. Its listening socket is fd 3, for this process only if
# LISTEN_PID is its own pid; it says READY=1 on NOTIFY_SOCKET once it serves,
# and on SIGTERM it finishes the request in hand and exits.
#   ch11-node-primary --protocol systemd -- python3 socket-activated.py
import os, select, signal, socket

if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
    raise SystemExit("no socket passed: start me with ch11-node-primary --protocol systemd")
listener = socket.socket(fileno=3)
listener.setblocking(False)
body = f"Hello world by {os.getpid()} (worker {os.environ.get('CLUSTER_WORKER_ID')})\n".encode()

# SIGTERM only wakes the loop (a byte in a pipe): a request in hand is finished first.
wake_read, wake_write = os.pipe()
os.set_blocking(wake_write, False)
signal.set_wakeup_fd(wake_write)
signal.signal(signal.SIGTERM, lambda *_: None)

address = os.environ["NOTIFY_SOCKET"].replace("@", "\0", 1)
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", address)

while wake_read not in select.select([listener, wake_read], [], [])[0]:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        continue  # another worker took it
    with conn:
        conn.setblocking(True)
        request = b""
        while b"\r\n\r\n" not in request and (chunk := conn.recv(4096)):
            request += chunk
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + body)
