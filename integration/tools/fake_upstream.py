#!/usr/bin/env python3
"""A deliberately misbehaving SMTP submission server for one test: after its STARTTLS reply it
sends extra plaintext (a STARTTLS response injection), then speaks TLS normally and accepts
everything. A real server cannot be made to do this, hence this stand-in.

usage: fake_upstream.py PORT CERT KEY
"""
import socket
import ssl
import sys
import threading

PORT, CERT, KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)


def lines(f):
    while True:
        line = f.readline()
        if not line:
            return
        yield line


def serve(conn):
    conn.sendall(b"220 fake ESMTP\r\n")
    f = conn.makefile("rb")
    for line in lines(f):
        cmd = line.strip().upper()
        if cmd.startswith(b"EHLO"):
            conn.sendall(b"250-fake\r\n250-STARTTLS\r\n250 SIZE 10000000\r\n")
        elif cmd == b"STARTTLS":
            # The injection: a fake EHLO answer that would shrink SIZE if it were believed.
            conn.sendall(b"220 go ahead\r\n250-fake\r\n250-SIZE 1000\r\n250 AUTH PLAIN\r\n")
            break
        else:
            conn.sendall(b"530 STARTTLS first\r\n")
    tls = ctx.wrap_socket(conn, server_side=True)
    f = tls.makefile("rb")
    in_data = False
    for line in lines(f):
        if in_data:
            if line == b".\r\n":
                in_data = False
                tls.sendall(b"250 2.0.0 queued\r\n")
            continue
        cmd = line.strip().upper()
        if cmd.startswith(b"EHLO"):
            tls.sendall(b"250-fake\r\n250-SIZE 10000000\r\n250-8BITMIME\r\n250 AUTH PLAIN\r\n")
        elif cmd.startswith(b"AUTH"):
            tls.sendall(b"235 2.7.0 ok\r\n")
        elif cmd == b"DATA":
            in_data = True
            tls.sendall(b"354 go\r\n")
        elif cmd == b"QUIT":
            tls.sendall(b"221 bye\r\n")
            break
        else:
            tls.sendall(b"250 ok\r\n")
    tls.close()


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", PORT))
srv.listen(5)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
