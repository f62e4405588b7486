#!/usr/bin/env python3
"""A real, headless Thunderbird for the tests, driven over Marionette. Every piece of
Thunderbird's internals the tests use is in this file (they change between versions), and the
version is checked first.

  thunderbird.py inbox-subjects PROFILE USER PASSWORD
      Starts Thunderbird on PROFILE (written by `meshmail thunderbird`), stores the password,
      syncs INBOX over IMAP and prints, as JSON, the subjects of the messages in the folder the
      message list shows.

  thunderbird.py pop3-subjects PROFILE USER PASSWORD
      The same for a POP3 account (`meshmail thunderbird --pop3`): downloads new mail into
      the local Inbox, then prints its subjects (and the download's status).

  thunderbird.py send-attached PROFILE USER PASSWORD TO SUBJECT BODY FILE
      Sends one message with FILE attached (TO may list several addresses, comma-separated).

  thunderbird.py read PROFILE USER PASSWORD
      Prints, as JSON, each INBOX message's subject, plain body and attachment names as
      Thunderbird's MIME reader sees them.

  thunderbird.py compose-pills PROFILE ADDRESS...
      Types the addresses into a compose window's To field; prints the recipient pills.

  thunderbird.py search PROFILE USER PASSWORD WORD
      Runs an online (server-side) body search of INBOX; prints the subjects of the hits.

  thunderbird.py send-refused PROFILE USER PASSWORD TO SUBJECT BODY
      Sends one message that the server refuses; prints the send result and the text of the
      dialogs Thunderbird shows.

  thunderbird.py send PROFILE USER PASSWORD TO SUBJECT BODY [DRAFT_SUBJECT]
      Sends one message through the compose backend (SMTP, then the Sent copy over IMAP),
      optionally saves a draft, then prints the subjects the Sent folder's message list shows.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BINARY = "/usr/lib/thunderbird/thunderbird"
# The chrome scripts below were written against this major version.
TESTED_MAJOR = 153


def version():
    out = subprocess.run([BINARY, "--version"], capture_output=True, text=True).stdout
    return out.strip()


class AlertOpen(Exception):
    """A dialog opened while a script ran (Marionette reports it even when told to ignore
    dialogs); the dialog's text comes with it."""


class Marionette:
    """The Marionette wire protocol: `length:json` frames."""

    def __init__(self, port, deadline):
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("Thunderbird's Marionette port never opened")
                time.sleep(0.1)
        self.buf = b""
        self.next_id = 0
        self.read()  # the greeting

    def read(self):
        while b":" not in self.buf:
            self.buf += self.recv()
        size, rest = self.buf.split(b":", 1)
        size = int(size)
        while len(rest) < size:
            rest += self.recv()
        self.buf = rest[size:]
        return json.loads(rest[:size])

    def recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("Thunderbird closed Marionette")
        return chunk

    def call(self, name, params):
        self.next_id += 1
        msg = json.dumps([0, self.next_id, name, params]).encode()
        self.sock.sendall(str(len(msg)).encode() + b":" + msg)
        while True:
            reply = self.read()
            if reply[0] == 1 and reply[1] == self.next_id:
                if reply[2]:
                    if isinstance(reply[2], dict) and reply[2].get("error") == "unexpected alert open":
                        raise AlertOpen(reply[2].get("data", {}).get("text", ""))
                    raise SystemExit(f"{name}: {reply[2]}")
                return reply[3]


def wait_for_port(proc, active_port, deadline):
    """The Marionette port Thunderbird wrote into the profile."""
    while True:
        try:
            with open(active_port) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"Thunderbird exited with {proc.returncode} before Marionette opened")
        if time.time() > deadline:
            raise SystemExit("Thunderbird's Marionette port never opened")
        time.sleep(0.1)


def start(profile):
    """Thunderbird on `profile` with Marionette; returns (process, client)."""
    # Port 0: Thunderbird binds a free port itself and writes it to the profile. A port chosen
    # here could be taken by a Thunderbird of a test running in parallel before ours binds it,
    # and this script would then drive the other test's Thunderbird (a CI run failed that way).
    active_port = os.path.join(profile, "MarionetteActivePort")
    if os.path.exists(active_port):
        os.remove(active_port)
    with open(os.path.join(profile, "user.js"), "a") as f:
        f.write(QUIET_PREFS)
        f.write('user_pref("marionette.port", 0);\n')
    # A home and a temporary directory of its own: Thunderbird writes each outgoing message to
    # $TMPDIR/nsemail.eml before sending it, and two Thunderbirds sharing /tmp sent each other's
    # messages (a CI run delivered the refusal test's text as another test's message).
    home = tempfile.mkdtemp(prefix="tb-home-")
    tmp = os.path.join(home, "tmp")
    os.mkdir(tmp)
    env = dict(os.environ, HOME=home, TMPDIR=tmp, MOZ_HEADLESS="1",
               MOZ_CRASHREPORTER_DISABLE="1", MOZ_DISABLE_AUTO_SAFE_MODE="1")
    proc = subprocess.Popen(
        [BINARY, "--headless", "--marionette", "--remote-allow-system-access", "--no-remote",
         "-profile", profile],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.home = home
    client = Marionette(wait_for_port(proc, active_port, time.time() + 60), time.time() + 60)
    # Marionette takes the capabilities as the parameters themselves. With its default
    # ("dismiss and notify"), a script run while Thunderbird shows a dialog (the refusal the
    # tests read) closes that dialog and returns nothing; "ignore" leaves dialogs alone.
    client.call("WebDriver:NewSession", {"unhandledPromptBehavior": "ignore"})
    client.call("Marionette:SetContext", {"value": "chrome"})
    return proc, client


def run_script(client, script, args, timeout_ms=60000):
    client.call("WebDriver:SetTimeouts", {"script": timeout_ms})
    return client.call("WebDriver:ExecuteAsyncScript", {"script": script, "args": args})["value"]


QUIET_PREFS = """
user_pref("mail.provider.suppress_dialog_on_startup", true);
user_pref("mail.shell.checkDefaultClient", false);
user_pref("mailnews.start_page.enabled", false);
user_pref("mail.rights.version", 1);
user_pref("mail.spotlight.firstRunDone", true);
user_pref("mail.biff.play_sound", false);
user_pref("mail.biff.show_alert", false);
user_pref("mail.inappnotifications.enabled", false);
user_pref("mail.accounthub.thundermail.enabled", false);
user_pref("mailnews.sendInBackground", false);
user_pref("app.update.auto", false);
user_pref("app.update.enabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("services.settings.server", "http://127.0.0.1:9/v1");
user_pref("network.manage-offline-status", false);
user_pref("offline.autoDetect", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("mailnews.auto_config.fetchFromISP.enabled", false);
user_pref("mailnews.auto_config.guess.enabled", false);
user_pref("mail.server.server1.login_at_startup", false);
user_pref("mail.server.server1.check_new_mail", false);
"""

# Chrome-context scripts (Thunderbird internals).
STORE_PASSWORD = """
const [user, pass, done] = arguments;
(async () => {
  for (const origin of ["imap://127.0.0.1", "mailbox://127.0.0.1", "smtp://127.0.0.1"]) {
    const li = Cc["@mozilla.org/login-manager/loginInfo;1"].createInstance(Ci.nsILoginInfo);
    li.init(origin, null, origin, user, pass, "", "");
    await Services.logins.addLoginAsync(li);
  }
  done("ok");
})().catch(e => done("ERROR: " + e));
"""

SEND = """
const [to, subject, body, mode, attachment, done] = arguments;
(async () => {
  const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
  const account = MailServices.accounts.defaultAccount;
  const identity = account.defaultIdentity;
  const fields = Cc["@mozilla.org/messengercompose/composefields;1"]
    .createInstance(Ci.nsIMsgCompFields);
  fields.to = to;
  fields.from = identity.email;
  fields.subject = subject;
  fields.body = body + "\\r\\n";
  const params = Cc["@mozilla.org/messengercompose/composeparams;1"]
    .createInstance(Ci.nsIMsgComposeParams);
  if (attachment) {
    const att = Cc["@mozilla.org/messengercompose/attachment;1"]
      .createInstance(Ci.nsIMsgAttachment);
    att.url = PathUtils.toFileURI(attachment);
    att.name = PathUtils.filename(attachment);
    fields.addAttachment(att);
  }
  params.composeFields = fields;
  params.identity = identity;
  params.type = Ci.nsIMsgCompType.New;
  params.format = Ci.nsIMsgCompFormat.PlainText;
  const compose = MailServices.compose.initCompose(params);
  const result = await new Promise(resolve => {
    compose.RegisterStateListener({
      NotifyComposeFieldsReady() {}, NotifyComposeBodyReady() {},
      ComposeProcessDone(r) { resolve(r); }, SaveInFolderDone() { resolve(0); },
    });
    const how = mode == "draft" ? Ci.nsIMsgCompDeliverMode.SaveAsDraft
                                : Ci.nsIMsgCompDeliverMode.Now;
    compose.sendMsg(how, identity, account.key, null, null);
  });
  done(result == 0 ? "sent" : "ERROR: send failed " + result);
})().catch(e => done("ERROR: " + e));
"""

# Shared by the scripts that read a folder: sync the account's folder list, then the folder
# with `flag`, naming any dialog when a step times out; gives the folder.
SYNC_FOLDER = """
const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
const dialogTexts = () => [...Services.wm.getEnumerator(null)]
  .filter(w => w.document.documentElement.getAttribute("windowtype") == "Dialog" ||
               w.location.href.includes("commonDialog"))
  .map(w => w.document.documentElement.textContent.trim().slice(0, 300));
async function syncFolder(flag) {
  const root = MailServices.accounts.defaultAccount.incomingServer.rootFolder;
  await new Promise((resolve, reject) => {
    MailServices.imap.discoverAllFolders(root, {
      OnStartRunningUrl() {}, OnStopRunningUrl(url, status) { resolve(status); },
    }, null);
    setTimeout(() => reject(new Error("folder discovery timed out; dialogs: " + dialogTexts())),
               30000);
  });
  const folder = root.getFolderWithFlags(flag);
  await new Promise((resolve, reject) => {
    folder.QueryInterface(Ci.nsIMsgImapMailFolder).updateFolderWithListener(null, {
      OnStartRunningUrl() {}, OnStopRunningUrl(url, status) { resolve(status); },
    });
    setTimeout(() => reject(new Error("folder sync timed out; dialogs: " + dialogTexts())), 30000);
  });
  return folder;
}
// Shows `folder` in the main window's message list, once all its rows are there.
async function showFolder(folder) {
  const about3Pane = Services.wm.getMostRecentWindow("mail:3pane").gTabmail.currentAbout3Pane;
  about3Pane.displayFolder(folder.URI);
  const total = folder.getTotalMessages(false);
  for (let i = 0; i < 200 && about3Pane.gDBView?.rowCount != total; i++) {
    await new Promise(r => setTimeout(r, 50));
  }
  return about3Pane;
}
"""

# A server-side (online) body search of INBOX.
ONLINE_SEARCH = SYNC_FOLDER + """
const [word, done] = arguments;
(async () => {
  const inbox = await syncFolder(Ci.nsMsgFolderFlags.Inbox);
  const session = Cc["@mozilla.org/messenger/searchSession;1"]
    .createInstance(Ci.nsIMsgSearchSession);
  session.addScopeTerm(Ci.nsMsgSearchScope.onlineMail, inbox);
  const term = session.createTerm();
  term.attrib = Ci.nsMsgSearchAttrib.Body;
  term.op = Ci.nsMsgSearchOp.Contains;
  const value = term.value;
  value.attrib = Ci.nsMsgSearchAttrib.Body;
  value.str = word;
  term.value = value;
  term.booleanAnd = true;
  session.appendTerm(term);
  const hits = [];
  await new Promise(resolve => {
    session.registerListener({
      onSearchHit(hdr) { hits.push(hdr.mime2DecodedSubject); },
      onSearchDone() { resolve(); },
      onNewSearch() {},
    });
    session.search(null);
  });
  done(hits);
})().catch(e => done("ERROR: " + e));
"""

# Sync INBOX and read each message as Thunderbird's MIME reader (the one its message pane
# uses) sees it: subject, plain body and attachment names.
READ_INBOX = SYNC_FOLDER + """
const [done] = arguments;
(async () => {
  const { MsgHdrToMimeMessage } = ChromeUtils.importESModule(
    "resource:///modules/gloda/MimeMessage.sys.mjs");
  const inbox = await syncFolder(Ci.nsMsgFolderFlags.Inbox);
  const out = [];
  // What the message pane shows for the first message (the user's view).
  const about3Pane = await showFolder(inbox);
  about3Pane.threadTree.selectedIndex = 0;
  const aboutMessage = about3Pane.messageBrowser.contentWindow;
  let pane = null;
  for (let i = 0; i < 200; i++) {
    const doc = aboutMessage.document;
    const subject = doc.getElementById("expandedsubjectBox");
    const body = aboutMessage.getMessagePaneBrowser?.()?.contentDocument?.body;
    const names = () => [...doc.querySelectorAll("#attachmentList .attachmentItem, #attachmentName")]
      .map(e => (e.getAttribute("name") || e.textContent || "").trim())
      .filter(n => n && !n.includes("://"))
      .filter((n, i, all) => all.indexOf(n) == i);
    if (aboutMessage.gMessage && subject && subject.textContent && body && body.innerText) {
      // The attachment list fills in after the body.
      for (let j = 0; j < 60 && names().length == 0 && aboutMessage.gMessage.flags; j++) {
        await new Promise(r => setTimeout(r, 50));
      }
      pane = {
        subject: subject.textContent.trim().replace(/^Subject:?\\s*/, ""),
        body: body.innerText,
        attachments: names(),
      };
      break;
    }
    await new Promise(r => setTimeout(r, 50));
  }
  out.push({ pane });
  for (const hdr of [...inbox.messages]) {
    const mime = await new Promise((resolve, reject) => {
      MsgHdrToMimeMessage(hdr, null, (h, m) => resolve(m), true, { saneBodySize: true });
      setTimeout(() => reject(new Error("reading the message timed out")), 30000);
    });
    out.push({
      subject: hdr.mime2DecodedSubject,
      body: mime ? mime.coerceBodyToPlaintext() : null,
      attachments: mime ? mime.allUserAttachments.map(a => a.name) : [],
    });
  }
  done(out);
})().catch(e => done("ERROR: " + e));
"""

# Type addresses into a real compose window's To field and read back the recipient pills it
# makes (address, and whether Thunderbird marks it invalid).
COMPOSE_PILLS = """
const [addresses, done] = arguments;
(async () => {
  const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const params = Cc["@mozilla.org/messengercompose/composeparams;1"]
    .createInstance(Ci.nsIMsgComposeParams);
  params.composeFields = Cc["@mozilla.org/messengercompose/composefields;1"]
    .createInstance(Ci.nsIMsgCompFields);
  params.type = Ci.nsIMsgCompType.New;
  params.format = Ci.nsIMsgCompFormat.PlainText;
  params.identity = MailServices.accounts.defaultAccount.defaultIdentity;
  MailServices.compose.OpenComposeWindowWithParams(null, params);
  let win = null;
  for (let i = 0; i < 400; i++) {
    win = Services.wm.getMostRecentWindow("msgcompose");
    if (win && win.gLoadingComplete) break;
    await sleep(50);
  }
  if (!win || !win.gLoadingComplete) throw new Error("no compose window");
  const input = win.document.getElementById("toAddrInput");
  input.focus();
  input.value = addresses.join(", ");
  win.pillifyRecipients();
  await sleep(300);
  const pills = [...win.document.querySelectorAll("#addressRowTo mail-address-pill")].map(p => ({
    address: p.emailAddress,
    invalid: p.classList.contains("invalid-address") || p.hasAttribute("invalid"),
  }));
  win.close();
  done(pills);
})().catch(e => done("ERROR: " + e));
"""

# The text of every prompt Thunderbird shows (window-modal dialogs and tab prompts).
DIALOGS = """
const [done] = arguments;
(async () => {
  const texts = () => {
    const out = [];
    for (const w of Services.wm.getEnumerator(null)) {
      const docs = [w.document, ...[...w.document.querySelectorAll("browser, iframe")]
        .map(b => b.contentDocument).filter(Boolean)];
      for (const d of docs) {
        if (d.location && String(d.location.href).includes("commonDialog")) {
          const w2 = d.defaultView;
          let text = "";
          try {
            const a = w2.args || (w2.arguments && w2.arguments[0]);
            if (a) {
              text = a.text || (a.getProperty ? a.getProperty("text") : "") || "";
            }
          } catch (e) {}
          const body = d.getElementById("infoBody");
          if (!text && body) {
            text = body.textContent;
          }
          if (text && text.trim()) {
            out.push(text.trim());
          }
        }
      }
    }
    return out;
  };
  for (let i = 0; i < 200 && texts().length == 0; i++) {
    await new Promise(r => setTimeout(r, 100));
  }
  done(texts());
})().catch(e => done(["ERROR: " + e]));
"""

# Sync a folder (INBOX, or the Sent folder), show it in the message list, read its rows.
INBOX_SUBJECTS = SYNC_FOLDER + """
const [which, done] = arguments;
(async () => {
  const inbox = await syncFolder(
    which == "sent" ? Ci.nsMsgFolderFlags.SentMail : Ci.nsMsgFolderFlags.Inbox);
  const view = (await showFolder(inbox)).gDBView;
  const rows = [];
  for (let i = 0; i < view.rowCount; i++) {
    rows.push(view.cellTextForColumn(i, "subjectCol"));
  }
  done({ rows, folder: [...inbox.messages].map(h => h.mime2DecodedSubject) });
})().catch(e => done("ERROR: " + e));
"""

# A POP3 account: download new mail into the local Inbox, then the Inbox's subjects as the
# message list shows them.
POP3_SUBJECTS = SYNC_FOLDER + """
const [done] = arguments;
(async () => {
  const server = MailServices.accounts.defaultAccount.incomingServer;
  if (server.type != "pop3") throw new Error("not a POP3 account: " + server.type);
  const inbox = server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
  const status = await new Promise((resolve, reject) => {
    server.getNewMessages(inbox, null, {
      OnStartRunningUrl() {}, OnStopRunningUrl(url, status) { resolve(status); },
    });
    setTimeout(() => reject(new Error("POP3 download timed out; dialogs: " + dialogTexts())),
               60000);
  });
  const view = (await showFolder(inbox)).gDBView;
  const rows = [];
  for (let i = 0; i < view.rowCount; i++) {
    rows.push(view.cellTextForColumn(i, "subjectCol"));
  }
  done({ status, rows, folder: [...inbox.messages].map(h => h.mime2DecodedSubject) });
})().catch(e => done("ERROR: " + e));
"""


@contextlib.contextmanager
def thunderbird(profile, user=None, password=None):
    """A running Thunderbird on `profile` (the password stored first when given); quit after."""
    proc, client = start(profile)
    try:
        if user is not None:
            checked(run_script(client, STORE_PASSWORD, [user, password]), "ok")
        yield client
    finally:
        quit(proc, client)


def checked(result, expected=None):
    """A script's result; an `ERROR…` string (or anything but `expected`) ends the run."""
    if (expected is not None and result != expected) or (
            isinstance(result, str) and result.startswith("ERROR")):
        raise SystemExit(result)
    return result


def main():
    v = version()
    major = int(v.split()[-1].split(".")[0]) if v else 0
    if major != TESTED_MAJOR:
        raise SystemExit(f"Thunderbird {v!r}: the scripts here were written for {TESTED_MAJOR}")
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "inbox-subjects":
        profile, user, password = args[:3]
        with thunderbird(profile, user, password) as client:
            print(json.dumps(checked(run_script(client, INBOX_SUBJECTS, ["inbox"]))))
    elif cmd == "pop3-subjects":
        profile, user, password = args[:3]
        with thunderbird(profile, user, password) as client:
            r = run_script(client, POP3_SUBJECTS, [])
            if r is None:
                try:
                    r = {"dialogs": run_script(client, DIALOGS, [])}
                except AlertOpen as alert:
                    r = {"alert": alert.args[0]}
            print(json.dumps(checked(r)))
    elif cmd == "send":
        profile, user, password, to, subject, body = args[:6]
        with thunderbird(profile, user, password) as client:
            checked(run_script(client, SEND, [to, subject, body, "now", None]), "sent")
            if len(args) > 6:
                # And a draft, saved on the server.
                checked(run_script(client, SEND, [to, args[6], body, "draft", None]), "sent")
            print(json.dumps(checked(run_script(client, INBOX_SUBJECTS, ["sent"]))))
    elif cmd == "send-attached":
        profile, user, password, to, subject, body, attachment = args[:7]
        with thunderbird(profile, user, password) as client:
            r = run_script(client, SEND, [to, subject, body, "now", attachment])
            if r != "sent":
                raise SystemExit(f"{r}: {run_script(client, DIALOGS, [])}")
            print(json.dumps(r))
    elif cmd == "read":
        profile, user, password = args[:3]
        with thunderbird(profile, user, password) as client:
            print(json.dumps(checked(run_script(client, READ_INBOX, []))))
    elif cmd == "compose-pills":
        with thunderbird(args[0]) as client:
            print(json.dumps(checked(run_script(client, COMPOSE_PILLS, [args[1:]]))))
    elif cmd == "search":
        profile, user, password, word = args[:4]
        with thunderbird(profile, user, password) as client:
            print(json.dumps(checked(run_script(client, ONLINE_SEARCH, [word]))))
    elif cmd == "send-refused":
        profile, user, password, to, subject, body = args[:6]
        with thunderbird(profile, user, password) as client:
            # The refusal dialog can open while the send script still runs (Marionette then
            # reports it with its text) or after it ended (then it is read from the window).
            try:
                r = run_script(client, SEND, [to, subject, body, "now", None])
                dialogs = None
            except AlertOpen as alert:
                r, dialogs = "ERROR: a dialog opened while sending", [alert.args[0]]
            # Under load the first read can come back empty (null) while the prompt is still
            # being opened; read again rather than report no dialog.
            for _ in range(3):
                if dialogs:
                    break
                try:
                    dialogs = run_script(client, DIALOGS, [])
                except AlertOpen as alert:
                    dialogs = [alert.args[0]]
                if not dialogs:
                    time.sleep(1)
            print(json.dumps({"result": r, "dialogs": dialogs}))
    else:
        raise SystemExit(f"unknown command {cmd}")


def quit(proc, client):
    try:
        client.call("Marionette:Quit", {"flags": ["eForceQuit"]})
    except SystemExit:
        pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(proc.home, ignore_errors=True)


if __name__ == "__main__":
    main()
