#!/usr/bin/env python3
"""A small HTTPS server for tests: serves ROOT/<Host>/<path> (query string ignored), so one
process stands in for several hosts (example.test, openpgpkey.example.test).

usage: https_server.py ROOT PORT CERT KEY
"""
import http.server
import os
import ssl
import sys

ROOT, PORT, CERT, KEY = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        path = self.path.split("?")[0]
        full = os.path.realpath(os.path.join(ROOT, host, path.lstrip("/")))
        if not full.startswith(os.path.realpath(ROOT) + os.sep) or not os.path.isfile(full):
            self.send_error(404)
            return
        with open(full, "rb") as f:
            body = f.read()
        self.send_response(200)
        kind = "application/jose" if "/mmm-udf/" in path else "application/octet-stream"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
