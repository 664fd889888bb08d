# Opens COUNT connections to 127.0.0.1:PORT, sends nothing, holds them for SECONDS,
# then closes them all: a crowd of silent clients.
# Usage: python3 hold.py PORT [COUNT [SECONDS]]
import socket
import sys
import time

port = int(sys.argv[1])
count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30

held = []
for _ in range(count):
    # The kernel completes the handshake whether or not the server accepts:
    # a connection waits in the listening socket's queue until it does.
    held.append(socket.create_connection(("127.0.0.1", port)))
print(f"holding {len(held)} connections to port {port} for {seconds:g} s")
time.sleep(seconds)
for conn in held:
    conn.close()
print("closed them all")
