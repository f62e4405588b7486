#!/usr/bin/env python3
"""Sends one message with Python's smtplib and prints what the server said, as JSON.

usage: send_mail.py PORT FROM RCPTS MESSAGE_FILE [--login USER:PASS --ca CA] [--notify N]
       [--helo NAME]

RCPTS is comma-separated. With --login, STARTTLS (verified against CA) then AUTH.
Prints {"refused": {rcpt: [code, text]}} when the message was taken for the others,
{"error": [code, text]} when it was not taken at all.
"""
import json
import smtplib
import ssl
import sys

port, sender, rcpts, path = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4]
args = sys.argv[5:]
opt = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
message = open(path, "rb").read()
rcpt_options = [f"NOTIFY={opt['--notify']}"] if "--notify" in opt else []

s = smtplib.SMTP("127.0.0.1", port, local_hostname=opt.get("--helo", "client.example"), timeout=120)
try:
    if "--login" in opt:
        ctx = ssl.create_default_context(cafile=opt["--ca"])
        s.starttls(context=ctx)
        user, password = opt["--login"].split(":", 1)
        s.login(user, password)
    refused = s.sendmail(sender, rcpts, message, rcpt_options=rcpt_options)
    print(json.dumps({"refused": {k: [v[0], v[1].decode()] for k, v in refused.items()}}))
except smtplib.SMTPRecipientsRefused as e:
    print(json.dumps({"error": [0, "all refused"], "refused": {k: [v[0], v[1].decode()] for k, v in e.recipients.items()}}))
except smtplib.SMTPResponseException as e:
    print(json.dumps({"error": [e.smtp_code, e.smtp_error.decode(errors="replace")]}))
finally:
    try:
        s.quit()
    except Exception:
        pass
