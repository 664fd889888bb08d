#!/usr/bin/env python3
"""What SO_REUSEADDR does and does not do, on Linux, in four tries.

Run it with: python3 book/src/scripts/reuseaddr.py
"""
import socket
import time

ADDR = "127.0.0.1"


def listener(port=0, reuseaddr=False, reuseport=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuseaddr:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((ADDR, port))
    s.listen()
    return s


def attempt(label, **options):
    try:
        s = listener(port, **options)
        print(f"{label}: bound")
        return s
    except OSError as e:
        print(f"{label}: {e}")


# A server answers one client and closes the connection first, then stops. The
# connection's server side stays behind in TIME_WAIT, still holding the port.
server = listener(reuseaddr=True)
port = server.getsockname()[1]
client = socket.create_connection((ADDR, port))
conn, _ = server.accept()
conn.close()  # the server closes first: its side will sit in TIME_WAIT
time.sleep(0.1)
client.close()
server.close()
time.sleep(0.1)
print(f"port {port} now has a TIME_WAIT leftover and no listener")

# 1. Restart without SO_REUSEADDR: refused because of the leftover.
attempt("1. restart without SO_REUSEADDR")
# 2. Restart with SO_REUSEADDR (what Node and our net::listen do): allowed.
first = attempt("2. restart with SO_REUSEADDR   ", reuseaddr=True)
# 3. A second live listener, also with SO_REUSEADDR: refused. This is chapter 3.
attempt("3. second listener, SO_REUSEADDR", reuseaddr=True)
first.close()
# 4. Two listeners that set SO_REUSEPORT too (as --reuseport on does): both allowed.
a = attempt("4. listener with SO_REUSEPORT   ", reuseaddr=True, reuseport=True)
b = attempt("   and a second one beside it   ", reuseaddr=True, reuseport=True)
