#!/usr/bin/env python3
"""A deliberately broken IMAP server for one test: after LOGIN it answers the next command
with malformed responses, chosen by the login name. A real Dovecot cannot be made to send
them, hence this stand-in (plaintext, loopback only).

  junk         binary junk lines, then a normal tagged OK
  hugeliteral  a FETCH announcing a 4 GB literal, 2 MB of it, then closes
  longline     a 3 MB line without an end, then closes
  badfetch     a FETCH of an encrypted message whose literal is shorter than announced

With CERT and KEY it offers STARTTLS, and injects a plaintext response right after its
STARTTLS reply (a STARTTLS response injection, which meshmail must refuse).

usage: fake_imap.py PORT [CERT KEY]
"""
import socket
import sys
import threading

import ssl

PORT = int(sys.argv[1])
CAPS = b"IMAP4rev1 LITERAL+ IDLE AUTH=PLAIN"
TLS = None
if len(sys.argv) > 3:
    TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS.load_cert_chain(sys.argv[2], sys.argv[3])
    CAPS += b" STARTTLS"


def serve(conn):
    conn.sendall(b"* OK [CAPABILITY " + CAPS + b"] fake ready\r\n")
    f = conn.makefile("rb")
    mode = None
    while True:
        line = f.readline()
        if not line:
            return
        parts = line.strip().split(b" ")
        tag, cmd = parts[0], (parts[1].upper() if len(parts) > 1 else b"")
        if cmd == b"STARTTLS" and TLS is not None:
            conn.sendall(tag + b" OK Begin TLS\r\n* OK [ALERT] injected in plaintext\r\n")
            conn = TLS.wrap_socket(conn, server_side=True)
            f = conn.makefile("rb")
            continue
        if cmd == b"CAPABILITY":
            conn.sendall(b"* CAPABILITY " + CAPS + b"\r\n" + tag + b" OK done\r\n")
        elif cmd == b"LOGIN":
            mode = parts[2].decode()
            conn.sendall(tag + b" OK [CAPABILITY " + CAPS + b"] logged in\r\n")
        elif cmd in (b"SELECT", b"EXAMINE"):
            conn.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" + tag + b" OK [READ-WRITE] done\r\n")
        elif cmd == b"LOGOUT":
            conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
            return
        elif mode == "junk":
            conn.sendall(b"\x00\xff\xfe junk\r\n* \x01\x02 FETCH (((\r\n+\r\n" + tag + b" OK done\r\n")
        elif mode == "hugeliteral":
            conn.sendall(b"* 1 FETCH (UID 1 BODY[] {4000000000}\r\n")
            for _ in range(32):
                conn.sendall(b"x" * 65536)
            conn.close()
            return
        elif mode == "longline":
            for _ in range(48):
                conn.sendall(b"* OK " + b"y" * 65536)
            conn.close()
            return
        elif mode == "badfetch":
            body = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b--\r\n"
            conn.sendall(b"* 1 FETCH (UID 1 BODYSTRUCTURE ((\"application\" \"pgp-encrypted\" NIL NIL NIL \"7bit\" 10) \"encrypted\" (\"protocol\" \"application/pgp-encrypted\" \"boundary\" \"b\") NIL NIL NIL) BODY[] {" + str(len(body) + 40).encode() + b"}\r\n" + body)
            conn.sendall(tag + b" OK done\r\n")
        else:
            conn.sendall(tag + b" OK done\r\n")


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", PORT))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
