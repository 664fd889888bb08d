# Sends request after request on one connection and never reads an answer.
# Usage: python3 never-read.py PORT [SECONDS]
import socket
import sys
import time

port = int(sys.argv[1])
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20
request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

conn = socket.create_connection(("127.0.0.1", port))
conn.setblocking(False)
sent, start, last = 0, time.monotonic(), None
while time.monotonic() - start < seconds:
    try:
        sent += conn.send(request * 100)
    except BlockingIOError:
        # The server has stopped reading and every buffer between us is full.
        if last != sent:
            print(f"{time.monotonic() - start:5.1f} s: stuck after {sent} bytes sent")
            last = sent
        time.sleep(0.5)
    except OSError as e:
        print(f"{time.monotonic() - start:5.1f} s: {e}")
        break
