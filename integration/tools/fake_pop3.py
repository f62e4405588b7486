#!/usr/bin/env python3
"""A deliberately broken POP3 server for one test: it logs anyone in and lists one encrypted
message, but answers RETR (and TOP) with the start of the message and then closes the
connection. A real Dovecot cannot be made to stop in the middle of a message, hence this
stand-in (plaintext, loopback only).

usage: fake_pop3.py PORT
"""
import socket
import sys
import threading

PORT = int(sys.argv[1])
HEAD = (b"From: a@example.test\r\nSubject: [...]\r\n"
        b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n"
        b"\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n")


def serve(conn):
    conn.sendall(b"+OK fake ready\r\n")
    f = conn.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.strip().split(b" ")[0].upper()
        if cmd in (b"USER", b"PASS", b"NOOP"):
            conn.sendall(b"+OK\r\n")
        elif cmd == b"CAPA":
            conn.sendall(b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n")
        elif cmd == b"STAT":
            conn.sendall(b"+OK 1 5000\r\n")
        elif cmd == b"LIST":
            conn.sendall(b"+OK\r\n1 5000\r\n.\r\n")
        elif cmd == b"UIDL":
            conn.sendall(b"+OK\r\n1 cut-short\r\n.\r\n")
        elif cmd in (b"RETR", b"TOP"):
            conn.sendall(b"+OK 5000 octets\r\n" + HEAD + b"hQEMA" * 100 + b"\r\n")
            conn.close()
            return
        elif cmd == b"QUIT":
            conn.sendall(b"+OK bye\r\n")
            return
        else:
            conn.sendall(b"-ERR unknown\r\n")


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", PORT))
    s.listen(16)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
