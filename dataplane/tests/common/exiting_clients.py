"""Processes that exit without closing their sockets.

    exiting_clients.py PORT CHILDREN CONNS

Waits for a line on stdin, then forks CHILDREN processes; each opens CONNS
connections to 127.0.0.1:PORT, sends one request on each and exits at once
(os._exit: no close, no shutdown). When all have exited, makes one more request
on a new connection, reads the response, and prints its status line.
"""
import os
import socket
import sys

port, children, conns = (int(a) for a in sys.argv[1:4])
sys.stdin.readline()
pids = []
for c in range(children):
    pid = os.fork()
    if pid == 0:
        socks = []
        for i in range(conns):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /leak/%d/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (c, i))
            socks.append(s)
        os._exit(0)
    pids.append(pid)
failed = 0
for pid in pids:
    _, status = os.waitpid(pid, 0)
    failed += status != 0
if failed:
    sys.exit(f"{failed} children failed")
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
reply = b""
while b"\r\n\r\n" not in reply and (chunk := s.recv(65536)):
    reply += chunk
s.close()
print(reply.split(b"\r\n", 1)[0].decode(), flush=True)
