"""Uploads enough to overload small rings: CONNS connections, each sending
REQUESTS POSTs of BODY_BYTES bytes one after another (each request, head and
body, in one write) and reading each answer's head.

    overload_client.py PORT CONNS REQUESTS BODY_BYTES
        waits for a line on stdin, then sends; prints "done" when every
        request has been answered, then waits for stdin to close
"""
import socket
import sys
import threading

port, conns, requests, size = (int(a) for a in sys.argv[1:5])
body = bytes(i % 251 for i in range(size))
sys.stdin.readline()
failures = []


def upload(c):
    s = socket.create_connection(("127.0.0.1", port))
    for n in range(requests):
        head = b"POST /upload/%d/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
            c, n, size)
        s.sendall(head + body)
        reply = b""
        while not reply.endswith(b"\r\n\r\n"):
            more = s.recv(4096)
            if not more:
                failures.append((c, n))
                return
            reply += more
    s.close()


threads = [threading.Thread(target=upload, args=(c,)) for c in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("failed %r" % failures if failures else "done", flush=True)
sys.stdin.read()
