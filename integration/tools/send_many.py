#!/usr/bin/env python3
"""Sends N messages over C parallel SMTP connections, as fast as the server takes them.

usage: send_many.py PORT N C PREFIX RCPTS [SIZE]

Each message gets Message-ID <PREFIX-i@load.test>; RCPTS is comma-separated; SIZE is the
approximate body size in bytes (default 2000). Prints {"accepted": a, "failed": f} as JSON.
"""
import json
import smtplib
import sys
import threading

port, n, c, prefix, rcpts = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5].split(",")
size = int(sys.argv[6]) if len(sys.argv) > 6 else 2000
counts = {"accepted": 0, "failed": 0}
lock = threading.Lock()
line = ("load test line " * 5)[:76] + "\r\n"


def message(i):
    head = (
        f"From: load@sink.test\r\nTo: {', '.join(rcpts)}\r\nSubject: load {i}\r\n"
        f"Message-ID: <{prefix}-{i}@load.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n"
    )
    return (head + line * max(1, size // len(line))).encode()


def worker(k):
    s = None
    for i in range(k, n, c):
        for attempt in range(3):
            try:
                if s is None:
                    s = smtplib.SMTP("127.0.0.1", port, local_hostname="load.example", timeout=120)
                s.sendmail("load@sink.test", rcpts, message(i))
                with lock:
                    counts["accepted"] += 1
                break
            except Exception:
                s = None
        else:
            with lock:
                counts["failed"] += 1
    if s is not None:
        try:
            s.quit()
        except Exception:
            pass


threads = [threading.Thread(target=worker, args=(k,)) for k in range(c)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(counts))
