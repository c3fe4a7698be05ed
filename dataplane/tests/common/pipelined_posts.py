"""Pipelined POSTs to a server that reads every byte and never responds.

    pipelined_posts.py server PORT
        accepts connections and reads each to its end; prints "listening"
    pipelined_posts.py client PORT CONNS POSTS BODY_BYTES
        waits for a line on stdin, then opens CONNS connections and on each
        sends POSTS requests of BODY_BYTES bytes back to back; prints "sent"
        when every byte is written, then waits for stdin to close
"""
import socket
import sys
import threading

mode, port = sys.argv[1], int(sys.argv[2])

if mode == "server":
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    print("listening", flush=True)

    def drain(conn):
        buf = bytearray(1 << 20)
        while conn.recv_into(buf):
            pass

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
else:
    conns, posts, size = (int(a) for a in sys.argv[3:6])
    body = bytes(i % 251 for i in range(size))
    sys.stdin.readline()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]

    def send(i, s):
        for n in range(posts):
            head = b"POST /upload/%d/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
                i, n, size)
            s.sendall(head)
            s.sendall(body)

    threads = [threading.Thread(target=send, args=(i, s)) for i, s in enumerate(socks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("sent", flush=True)
    sys.stdin.read()
