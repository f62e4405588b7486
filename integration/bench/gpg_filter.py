#!/usr/bin/env python3
"""The comparison point for the benchmark: a content filter in the style of Zeyple and Lacre,
which runs `gpg --encrypt` once per message and passes the result on over SMTP.

usage: gpg_filter.py LISTEN_PORT UPSTREAM_PORT GNUPGHOME RECIPIENT_FINGERPRINT
"""
import socket
import socketserver
import smtplib
import subprocess
import sys

PORT, UP, HOME, RCPT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]


class Handler(socketserver.StreamRequestHandler):
    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        up = smtplib.SMTP("127.0.0.1", UP)
        self.reply("220 gpg-filter")
        sender, rcpts = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                break
            cmd = line.strip().upper()
            if cmd.startswith(b"EHLO") or cmd.startswith(b"HELO"):
                self.reply("250 gpg-filter")
            elif cmd.startswith(b"MAIL"):
                sender, rcpts = line.split(b":", 1)[1].strip().strip(b"<>").decode(), []
                self.reply("250 ok")
            elif cmd.startswith(b"RCPT"):
                rcpts.append(line.split(b":", 1)[1].strip().strip(b"<>").decode())
                self.reply("250 ok")
            elif cmd == b"DATA":
                self.reply("354 go")
                data = []
                while True:
                    l = self.rfile.readline()
                    if l == b".\r\n" or not l:
                        break
                    data.append(l[1:] if l.startswith(b"..") else l)
                try:
                    enc = subprocess.run(
                        ["gpg", "--homedir", HOME, "--batch", "--no-tty", "--trust-model", "always",
                         "--armor", "--encrypt", "-r", RCPT],
                        input=b"".join(data), capture_output=True, timeout=60).stdout
                    up.sendmail(sender, rcpts, b"Subject: [...]\r\nContent-Type: text/plain\r\n\r\n" + enc.replace(b"\n", b"\r\n"))
                    self.reply("250 ok")
                except Exception as e:  # report, never hang the client
                    self.reply("451 filter failed: %s" % type(e).__name__)
            elif cmd == b"QUIT":
                self.reply("221 bye")
                break
            else:
                self.reply("250 ok")
        up.quit()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


Server(("127.0.0.1", PORT), Handler).serve_forever()
