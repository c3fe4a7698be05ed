"""A server for many short connections: answers each request head with an
empty 200 and reads until the peer goes away.

    answering_server.py PORT
"""
import selectors
import socket
import sys

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
sel = selectors.DefaultSelector()
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(4096)
listener.setblocking(False)
sel.register(listener, selectors.EVENT_READ)
pending = {}
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is listener:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            conn.setblocking(False)
            pending[conn] = b""
            sel.register(conn, selectors.EVENT_READ)
            continue
        try:
            data = s.recv(65536)
        except (BlockingIOError, ConnectionError):
            data = b""
        if not data:
            sel.unregister(s)
            pending.pop(s, None)
            s.close()
            continue
        buf = pending[s] + data
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            try:
                s.sendall(REPLY)
            except (BlockingIOError, ConnectionError):
                pass
        pending[s] = buf
