#!/usr/bin/env python3
"""The reference for the sidecar benchmark: the most trivial after-queue filter, an LMTP
server that forwards each message unchanged to the reinjection listener (one connection per
client connection, no parsing) and answers each recipient with the reinjection's reply.

usage: forward_filter.py LISTEN_PORT REINJECT_PORT
"""
import smtplib
import socketserver
import sys

LISTEN, REINJECT = int(sys.argv[1]), int(sys.argv[2])


class Handler(socketserver.StreamRequestHandler):
    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")

    def handle(self):
        try:
            self.serve()
        except (BrokenPipeError, ConnectionResetError):
            pass  # Postfix closed a cached connection.

    def serve(self):
        up = smtplib.SMTP("127.0.0.1", REINJECT)
        self.reply("220 forward filter")
        sender, rcpts = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                break
            cmd = line.decode(errors="replace").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "LHLO":
                self.reply("250-forward\r\n250-PIPELINING\r\n250 8BITMIME")
            elif verb == "MAIL":
                sender, rcpts = cmd[10:].split(">")[0].lstrip("<"), []
                self.reply("250 ok")
            elif verb == "RCPT":
                rcpts.append(cmd[8:].split(">")[0].lstrip("<"))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go")
                data = []
                while True:
                    l = self.rfile.readline()
                    if l in (b".\r\n", b""):
                        break
                    data.append(l[1:] if l.startswith(b"..") else l)
                try:
                    up.sendmail(sender, rcpts, b"".join(data))
                    answer = "250 ok"
                except Exception as e:
                    answer = "451 " + str(e).replace("\n", " ")[:200]
                for _ in rcpts:
                    self.reply(answer)
            elif verb == "QUIT":
                self.reply("221 bye")
                break
            else:
                self.reply("250 ok")
        up.quit()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


Server(("127.0.0.1", LISTEN), Handler).serve_forever()
