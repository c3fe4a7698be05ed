"""Threads blocked inside SSL_read, to be killed there.

    stuck_readers.py PORT THREADS

Opens THREADS TLS connections to 127.0.0.1:PORT, then, once a line arrives on
stdin (the agent's probes are attached by then), has a thread per connection
wait in a read that never returns (the server sends nothing). Prints "ready"
once every thread is in its read, then sleeps until killed.
"""
import socket
import ssl
import sys
import threading
import time

port, count = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl._create_unverified_context()


def reader(s):
    s.recv(1)


# Connect one at a time (the server accepts from a short backlog).
conns = []
for _ in range(count):
    raw = socket.create_connection(("127.0.0.1", port))
    conns.append(ctx.wrap_socket(raw, server_hostname="localhost"))
# A thread that entered SSL_read before the probes were attached has no
# in-flight entry: start the reads only when told.
sys.stdin.readline()
for s in conns:
    threading.Thread(target=reader, args=(s,), daemon=True).start()
# Let the last threads reach their read.
time.sleep(3)
print("ready", flush=True)
time.sleep(3600)
