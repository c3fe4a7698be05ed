"""Test HTTP(S) server for tapwire's end-to-end tests.

Usage: http_server.py PORT [CERT KEY]

HTTP/1.1 with keep-alive. Paths:
  /small            "hello from tapwire\n" with Content-Length
  /chunked          three chunks, Transfer-Encoding: chunked
  /big              2 MiB of deterministic bytes (byte i = (i * 7 + 3) % 251)
  anything else     echoes the request body back (POST) or "ok\n"
"""
import http.server
import ssl
import sys


def big_body():
    return bytes((i * 7 + 3) % 251 for i in range(2 << 20))


BIG = big_body()
CHUNKS = [b"first chunk;", b" second chunk;", b" third and last chunk\n"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = BIG if self.path == "/big" else (
            b"hello from tapwire\n" if self.path == "/small" else b"ok\n")
        ctype = "application/octet-stream" if self.path == "/big" else "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    port = int(sys.argv[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if len(sys.argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
