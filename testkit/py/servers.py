# Test peers for the capture tests.
#   servers.py https PORT CERT KEY   HTTPS server: GET -> fixed body, POST -> sha256 of body
#   servers.py post URL SIZE         HTTPS client (http.client, SSL_write_ex/SSL_read_ex):
#                                    POSTs SIZE deterministic bytes, prints sha256 sent and reply
#   servers.py splice PORT DIR       plain HTTP/1.1 server moving bodies with os.splice:
#                                    GET /NAME -> DIR/NAME, file -> pipe -> socket;
#                                    POST -> body socket -> pipe -> /dev/null, replies its size
import hashlib, http.client, http.server, os, random, socket, ssl, sys, time

BODY = b"hello from tls server\n"

def payload(size):
    return random.Random(42).randbytes(size)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def do_POST(self):
        n = int(self.headers["Content-Length"])
        data = self.rfile.read(n)
        body = hashlib.sha256(data).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

def read_head(conn):
    """The request head, read whole and no body byte with it (peeked first)."""
    while True:
        seen = conn.recv(65536, socket.MSG_PEEK)
        if not seen:
            return None
        end = seen.find(b"\r\n\r\n")
        if end >= 0:
            break
        time.sleep(0.001)
    head = b""
    while len(head) < end + 4:
        head += conn.recv(end + 4 - len(head))
    return head.decode()

def splice_all(src, dst, n, offset=None):
    """Moves n bytes from src to dst through a new pipe with os.splice."""
    r, w = os.pipe()
    try:
        done = 0
        while done < n:
            got = os.splice(src, w, n - done, offset_src=None if offset is None else offset + done)
            if got == 0:
                raise EOFError("splice source ended")
            left = got
            while left:
                left -= os.splice(r, dst, left)
            done += got
    finally:
        os.close(r)
        os.close(w)

def splice_server(port, root):
    srv = socket.create_server(("127.0.0.1", port))
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            while True:
                head = read_head(conn)
                if head is None:
                    break
                method, path = head.split(" ")[:2]
                fields = dict(l.split(": ", 1) for l in head.split("\r\n")[1:] if ": " in l)
                if method == "GET":
                    name = os.path.join(root, path.lstrip("/"))
                    size = os.path.getsize(name)
                    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
                    with open(name, "rb") as f:
                        splice_all(f.fileno(), conn.fileno(), size, offset=0)
                else:
                    n = int(fields["Content-Length"])
                    with open(os.devnull, "wb") as sink:
                        splice_all(conn.fileno(), sink.fileno(), n)
                    body = str(n).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

def main():
    mode = sys.argv[1]
    if mode == "https":
        port, cert, key = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        print("listening", flush=True)
        srv.serve_forever()
    elif mode == "post":
        port, size = int(sys.argv[2]), int(sys.argv[3])
        delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
        time.sleep(delay)
        data = payload(size)
        ctx = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
        conn.request("POST", "/upload", body=data, headers={"Content-Type": "application/octet-stream"})
        reply = conn.getresponse().read().decode()
        conn.close()
        print(hashlib.sha256(data).hexdigest(), reply, flush=True)
    elif mode == "splice":
        splice_server(int(sys.argv[2]), sys.argv[3])

main()
