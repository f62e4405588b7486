#!/usr/bin/env python3
"""IMAP checks for the integration tests, with Python's imaplib as the client.

  append HOST PORT USER PASS MAILBOX FILE...
      APPENDs each file (bytes as they are; flags from $IMAP_FLAGS, internal date from
      $IMAP_DATE, e.g. '"01-Jan-2026 12:34:56 +0000"') and prints the UIDs
      (APPENDUID), one per line.

  compare MESHMAIL_PORT DOVECOT_PORT USER PASS MAILBOX ORACLE_MAILBOX PAIRS ITEMS
      PAIRS is "uid:oracle_uid,...": a message through meshmail and its plaintext twin stored
      directly on Dovecot. ITEMS is a list of FETCH items separated by '|'. Every item is fetched
      on its own from both sides and compared byte for byte (sequence number, UID and FLAGS
      removed). Prints each mismatch; exits 1 when there is one.

  search PORT USER PASS MAILBOX uid|seq QUERY...
      Prints the sorted numbers each (UID) SEARCH answers, one line per query.

  tls PORT starttls|implicit CAFILE login|plain USER PASS MAILBOX UID ITEM
      Like fetch, over TLS to meshmail (certificate checked against CAFILE), logging in with
      LOGIN or AUTHENTICATE PLAIN.

  fetch PORT USER PASS MAILBOX UID ITEM
      Prints the raw response of one UID FETCH (for tests that look at one answer).

  dump PORT USER PASS MAILBOX
      Prints one JSON line per message: uid, flags, internal date and the message (base64).
"""

import base64
import imaplib
import json
import os
import re
import sys


def connect(port, user, password, mailbox, readonly=True):
    m = imaplib.IMAP4("127.0.0.1", int(port))
    m.login(user, password)
    typ, _ = m.select(mailbox, readonly=readonly)
    if typ != "OK":
        raise SystemExit(f"cannot select {mailbox}")
    return m


def flatten(data):
    out = b""
    for part in data:
        if isinstance(part, tuple):
            out += part[0] + part[1]
        elif part is not None:
            out += part
    return out


def normalize(raw):
    raw = re.sub(rb"^\d+ \(", b"(", raw)
    raw = re.sub(rb"UID \d+ ?", b"", raw)
    raw = re.sub(rb"FLAGS \([^)]*\) ?", b"", raw)
    raw = re.sub(rb" \)$", b")", raw)
    return raw


def fetch(m, uid, item):
    typ, data = m.uid("FETCH", uid, f"({item})")
    if typ != "OK":
        return f"{typ} {data}".encode()
    return flatten(data)


def main():
    cmd = sys.argv[1]
    if cmd == "append":
        host, port, user, password, mailbox = sys.argv[2:7]
        m = imaplib.IMAP4(host, int(port))
        m.login(user, password)
        m.create(mailbox)
        for path in sys.argv[7:]:
            with open(path, "rb") as f:
                body = f.read()
            flags = os.environ.get("IMAP_FLAGS")
            date = os.environ.get("IMAP_DATE")
            typ, data = m.append(mailbox, flags, date, body)
            if typ != "OK":
                raise SystemExit(f"APPEND failed: {data}")
            uid = re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1).decode()
            print(uid)
        m.logout()
    elif cmd == "compare":
        mport, dport, user, password, mailbox, oracle, pairs, items = sys.argv[2:10]
        via = connect(mport, user, password, mailbox)
        direct = connect(dport, user, password, oracle)
        bad = 0
        for pair in pairs.split(","):
            uid, ouid = pair.split(":")
            for item in items.split("|"):
                got = normalize(fetch(via, uid, item))
                want = normalize(fetch(direct, ouid, item))
                if got != want:
                    bad += 1
                    print(f"MISMATCH uid {uid} / oracle {ouid} {item}:\n  meshmail: {got[:600]!r}\n  dovecot:  {want[:600]!r}")
        via.logout()
        direct.logout()
        print(f"compared {len(pairs.split(','))} messages, {len(items.split('|'))} items, {bad} mismatches")
        sys.exit(1 if bad else 0)
    elif cmd == "search":
        # search PORT USER PASS MAILBOX (uid|seq) QUERY...: one line of numbers per query.
        port, user, password, mailbox, kind = sys.argv[2:7]
        m = connect(port, user, password, mailbox)
        for query in sys.argv[7:]:
            if kind == "uid":
                typ, data = m.uid("SEARCH", query)
            else:
                typ, data = m.search(None, query)
            if typ != "OK":
                print(f"{typ} {data}")
                continue
            print(" ".join(sorted((data[0] or b"").decode().split(), key=int)))
        m.logout()
    elif cmd == "tls":
        # tls PORT starttls|implicit CAFILE login|plain USER PASS MAILBOX UID ITEM
        port, mode, cafile, mech, user, password, mailbox, uid, item = sys.argv[2:11]
        import ssl
        ctx = ssl.create_default_context(cafile=cafile)
        if mode == "implicit":
            m = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ctx)
        else:
            m = imaplib.IMAP4("127.0.0.1", int(port))
            m.starttls(ssl_context=ctx)
        if mech == "plain":
            m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + password.encode())
        else:
            m.login(user, password)
        m.select(mailbox, readonly=True)
        sys.stdout.buffer.write(fetch(m, uid, item))
        m.logout()
    elif cmd == "stale-search":
        # stale-search MESHMAIL_PORT DOVECOT_PORT USER PASS MAILBOX SEEN_UID UNSEEN_UID QUERY...
        # A session through meshmail; another, straight to Dovecot, expunges SEEN_UID (the
        # first session is told, by a NOOP) and then UNSEEN_UID (it is not told yet), so its
        # SEARCHes answer in its own numbering, which is neither the UIDs nor a fresh
        # session's. One line of numbers per query.
        mport, dport, user, password, mailbox, seen, unseen = sys.argv[2:9]
        queries = sys.argv[9:]
        via = connect(mport, user, password, mailbox, readonly=False)
        other = connect(dport, user, password, mailbox, readonly=False)
        for uid in (seen, unseen):
            other.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
            other.expunge()
            if uid == seen:
                via.noop()
        other.logout()
        for query in queries:
            typ, data = via.search(None, query)
            print(" ".join(sorted((data[0] or b"").decode().split(), key=int)))
        via.logout()
    elif cmd == "fetch":
        port, user, password, mailbox, uid, item = sys.argv[2:8]
        m = connect(port, user, password, mailbox, readonly=False)
        sys.stdout.buffer.write(fetch(m, uid, item))
        m.logout()
    elif cmd == "dump":
        port, user, password, mailbox = sys.argv[2:6]
        m = connect(port, user, password, mailbox)
        typ, data = m.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
        if typ != "OK":
            raise SystemExit(f"FETCH failed: {data}")
        for i, part in enumerate(data):
            if not isinstance(part, tuple):
                continue
            head, body = part
            # Items after the literal come in the next element (e.g. b' FLAGS (\\Seen))').
            if i + 1 < len(data) and isinstance(data[i + 1], bytes):
                head = head + data[i + 1]
            uid = int(re.search(rb"UID (\d+)", head).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split()
            date = re.search(rb'INTERNALDATE "([^"]*)"', head).group(1).decode()
            print(json.dumps({"uid": uid, "flags": sorted(f for f in flags if f != "\\Recent"),
                              "date": date, "body": base64.b64encode(body).decode()}))
        m.logout()
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
