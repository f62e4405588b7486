#!/usr/bin/env python3
"""A submission server that drops the connection at a chosen moment, for the tests of "never a
lost recipient": a real Postfix cannot be made to hang up between two transactions of one
session. Plain SMTP on loopback; AUTH PLAIN/LOGIN accepted for any password.

Every message it accepts is written to OUT_DIR/<n>.eml with the envelope first:
    X-Envelope-From: <...>
    X-Envelope-To: <...>   (one line per recipient)
After a message that contains the line "X-Drop-After: yes" is accepted (250), the connection is
closed at once, so whatever meshmail sends next on it is lost.

usage: flaky_upstream.py PORT OUT_DIR
"""
import os
import socket
import sys
import threading

PORT, OUT = int(sys.argv[1]), sys.argv[2]
os.makedirs(OUT, exist_ok=True)
lock = threading.Lock()
count = [0]


def serve(conn):
    f = conn.makefile("rb")
    conn.sendall(b"220 flaky ESMTP\r\n")
    sender, rcpts = None, []
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.strip().upper()
        if cmd.startswith(b"EHLO"):
            conn.sendall(b"250-flaky\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n"
                         b"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n")
        elif cmd.startswith(b"AUTH"):
            conn.sendall(b"235 2.7.0 Authentication successful\r\n")
        elif cmd.startswith(b"MAIL FROM:"):
            sender, rcpts = line.strip()[10:].split(b" ")[0], []
            conn.sendall(b"250 2.1.0 Ok\r\n")
        elif cmd.startswith(b"RCPT TO:"):
            rcpts.append(line.strip()[8:].split(b" ")[0])
            conn.sendall(b"250 2.1.5 Ok\r\n")
        elif cmd == b"DATA":
            conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            data = []
            while True:
                l = f.readline()
                if not l or l == b".\r\n":
                    break
                data.append(l[1:] if l.startswith(b"..") else l)
            body = b"".join(data)
            with lock:
                count[0] += 1
                n = count[0]
            head = b"X-Envelope-From: " + sender + b"\r\n"
            head += b"".join(b"X-Envelope-To: " + r + b"\r\n" for r in rcpts)
            with open(os.path.join(OUT, "%d.eml.tmp" % n), "wb") as out:
                out.write(head + body)
            os.rename(os.path.join(OUT, "%d.eml.tmp" % n), os.path.join(OUT, "%d.eml" % n))
            conn.sendall(b"250 2.0.0 Ok: queued\r\n")
            if b"\r\nX-Drop-After: yes\r\n" in b"\r\n" + body:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
                return
        elif cmd == b"QUIT":
            conn.sendall(b"221 2.0.0 Bye\r\n")
            return
        else:
            conn.sendall(b"250 2.0.0 Ok\r\n")


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", PORT))
s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
