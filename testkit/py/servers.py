# Test peers for the capture tests.
#   servers.py https PORT CERT KEY   HTTPS server: GET -> fixed body, POST -> sha256 of body
#   servers.py post URL SIZE         HTTPS client (http.client, SSL_write_ex/SSL_read_ex):
#                                    POSTs SIZE deterministic bytes, prints sha256 sent and reply
import hashlib, http.client, http.server, random, ssl, sys, time

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

main()
