#!/usr/bin/env python3
"""Counts the messages of a mailbox by Message-ID, with imaplib.

usage: count_ids.py PORT USER PASSWORD [MAILBOX]

Prints {"<message-id>": count, ...} as JSON.
"""
import imaplib
import json
import re
import sys

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
mailbox = sys.argv[4] if len(sys.argv) > 4 else "INBOX"
m = imaplib.IMAP4("127.0.0.1", port)
m.login(user, password)
m.select(mailbox, readonly=True)
counts = {}
typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
if typ == "OK":
    for item in data:
        if isinstance(item, tuple):
            found = re.search(rb"<[^>]+>", item[1])
            key = found.group(0).decode() if found else "(none)"
            counts[key] = counts.get(key, 0) + 1
m.logout()
print(json.dumps(counts))
