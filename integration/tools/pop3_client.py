#!/usr/bin/env python3
"""Python's own POP3 client (poplib) against a server, for the POP3 tests: what a mailbox
looks like through it, as JSON on stdout.

  pop3_client.py fetch HOST PORT USER PASSWORD [plain|stls|ssl] [CA]
      STAT, LIST, UIDL, every message by RETR (with the octets poplib counted), TOP n 2 of
      each, then LIST and STAT again, and QUIT (nothing is deleted).
  pop3_client.py delete HOST PORT USER PASSWORD
      DELE 1, then STAT and LIST; RSET, STAT again; DELE of the last message and QUIT, so
      that the server deletes it. Prints what each step answered.
  pop3_client.py retr-one HOST PORT USER PASSWORD N
      RETR N only; prints {"ok": bool, "error": "..."} when poplib could not read it whole.
"""
import base64
import json
import poplib
import ssl
import sys


def connect(host, port, mode, ca):
    if mode == "ssl":
        ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
        ctx.check_hostname = False
        if not ca:
            ctx.verify_mode = ssl.CERT_NONE
        return poplib.POP3_SSL(host, port, context=ctx, timeout=60)
    p = poplib.POP3(host, port, timeout=60)
    if mode == "stls":
        ctx = ssl._create_unverified_context()
        p.stls(context=ctx)
    return p


def whole(lines):
    return b"".join(line + b"\r\n" for line in lines)


def fetch(host, port, user, password, mode="plain", ca=None):
    p = connect(host, int(port), mode, ca)
    out = {"greeting": p.getwelcome().decode("latin-1")}
    p.user(user)
    p.pass_(password)
    out["capa"] = sorted(p.capa().keys())
    out["stat"] = list(p.stat())
    out["list"] = {}
    for entry in p.list()[1]:
        n, size = entry.split()
        out["list"][n.decode()] = int(size)
    out["uidl"] = {}
    for entry in p.uidl()[1]:
        n, uid = entry.split()
        out["uidl"][n.decode()] = uid.decode()
    out["messages"], out["octets"], out["top"] = {}, {}, {}
    for n in out["list"]:
        _, lines, octets = p.retr(int(n))
        out["messages"][n] = base64.b64encode(whole(lines)).decode()
        out["octets"][n] = octets
        _, lines, _ = p.top(int(n), 2)
        out["top"][n] = base64.b64encode(whole(lines)).decode()
    out["list_after"] = {}
    for entry in p.list()[1]:
        n, size = entry.split()
        out["list_after"][n.decode()] = int(size)
    out["stat_after"] = list(p.stat())
    p.quit()
    return out


def retr_one(host, port, user, password, n):
    p = poplib.POP3(host, int(port), timeout=60)
    p.user(user)
    p.pass_(password)
    try:
        _, lines, _ = p.retr(int(n))
        return {"ok": True, "message": base64.b64encode(whole(lines)).decode()}
    except (poplib.error_proto, OSError, EOFError) as e:
        return {"ok": False, "error": str(e)}


def delete(host, port, user, password):
    p = poplib.POP3(host, int(port), timeout=60)
    p.user(user)
    p.pass_(password)
    out = {"stat": list(p.stat())}
    out["dele"] = p.dele(1).decode()
    out["stat_deleted"] = list(p.stat())
    out["list_deleted"] = [e.decode() for e in p.list()[1]]
    try:
        out["list_1"] = p.list(1).decode()
    except poplib.error_proto as e:
        out["list_1"] = str(e)
    out["rset"] = p.rset().decode()
    out["stat_rset"] = list(p.stat())
    last = out["stat"][0]
    out["dele_last"] = p.dele(last).decode()
    out["quit"] = p.quit().decode()
    return out


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "fetch":
        print(json.dumps(fetch(*args)))
    elif cmd == "delete":
        print(json.dumps(delete(*args)))
    elif cmd == "retr-one":
        print(json.dumps(retr_one(*args)))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
