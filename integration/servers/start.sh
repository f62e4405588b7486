#!/usr/bin/env bash
# Start a PRIVATE Postfix + Dovecot instance for meshmail's integration tests.
#
#   start.sh ROOT BASE
#
# ROOT  absolute directory (created if missing) that receives every config,
#       queue, mailbox, log and pid file of this instance; nothing in /etc is
#       changed and the system-wide postfix/dovecot are never touched.
# BASE  base port; everything listens on 127.0.0.1 only:
#
#   BASE+25  Postfix smtpd (MX): STARTTLS offered, no AUTH, accepts mail for
#            example.test (-> Dovecot LMTP) and sink.test (-> BASE+60)
#   BASE+87  Postfix submission: STARTTLS required, then AUTH PLAIN/LOGIN
#            (Dovecot SASL); only authenticated clients may send
#   BASE+65  Postfix submissions: implicit TLS, same rules as BASE+87
#   BASE+24  Dovecot LMTP
#   BASE+43  Dovecot IMAP (STARTTLS available, plaintext LOGIN allowed)
#   BASE+93  Dovecot IMAPS
#   BASE+10  Dovecot POP3 (STARTTLS available, plaintext USER/PASS allowed)
#   BASE+95  Dovecot POP3S
#   BASE+60  NOT opened here: relay target for sink.test
#            (e.g. `/usr/sbin/smtp-sink -u nobody -c 127.0.0.1:$((BASE+60)) 100 &`;
#            as root, smtp-sink refuses to run without -u)
#
# Users: alice, bob, carol, dave, erin, frank @example.test (env USERS overrides),
# password "secret" each
# (IMAP/POP3/SMTP AUTH login name is the local part, e.g. "alice";
# "alice@example.test" works too).
#
# TLS: ROOT/tls/ca.pem is the test CA -- clients must trust THIS file.
#      ROOT/tls/cert.pem + key.pem is the server (leaf) certificate, signed by
#      the CA, for DNS:localhost, DNS:mx.example.test, IP:127.0.0.1 with
#      extendedKeyUsage serverAuth.  (rustls/webpki refuses a self-signed
#      CA:TRUE certificate used as an end-entity certificate, hence CA + leaf.)
#      ROOT/tls/ca.key is kept so tests can sign further certificates.
#
# Env:  MESSAGE_SIZE_LIMIT  Postfix message_size_limit in bytes (default 10240000)
#       FILTER_NEXTHOP      turns on the MTA sidecar set-up (config/postfix-master.cf): the
#                           MX (BASE+25) and submission (BASE+87) hand every message to
#                           meshmail's filter at this LMTP next hop (inet:127.0.0.1:PORT or
#                           unix:/path), which reinjects into BASE+26 (no content_filter,
#                           XFORWARD allowed, twice the size limit)
#       POLICY_SERVICE      with FILTER_NEXTHOP: inet:127.0.0.1:PORT of meshmail's policy
#                           service, asked at RCPT by the submission smtpd
#
# Domains: example.test (the users' mailboxes), sink.test (relayed to BASE+60: outbound mail,
# e.g. into `smtp-sink -D`, which records each RCPT's parameters).
# Aliases: team@example.test -> alice, bob.  recipient_delimiter = +.
#
# Prints exactly one line "ready" on stdout on success; diagnostics go to stderr.
# Re-running with the same ROOT stops the running instance of that ROOT first,
# keeps mailboxes and the TLS files, and rewrites all configuration.
# Stop with: stop.sh ROOT
#
# Logs: ROOT/postfix.log, ROOT/dovecot/dovecot.log
# Postfix tools need the config dir, e.g.
#   postqueue -c ROOT/postfix -p      (show queue)
#   postqueue -c ROOT/postfix -f      (retry deferred mail now)
#
# Based on /work/shared/reference/test-servers.md ("Private instances on high
# ports"); comments marked "pitfall" refer to its Pitfalls section.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "start.sh: $*" >&2; exit 1; }
log() { echo "start.sh: $*" >&2; }

[ "$#" -eq 2 ] || die "usage: start.sh ROOT BASE"
ROOT="$1"
BASE="$2"

case "$ROOT" in
  /*) ;;
  *) die "ROOT must be an absolute path (got '$ROOT')" ;;
esac
# The path is pasted into main.cf, master.cf and dovecot.conf, where blanks,
# commas, '$' and '%' mean something.
[[ "$ROOT" =~ ^[A-Za-z0-9/._+-]+$ ]] || die "ROOT may only contain A-Z a-z 0-9 / . _ + - (got '$ROOT')"
[[ "$BASE" =~ ^[0-9]+$ ]] || die "BASE must be a number (got '$BASE')"
(( BASE >= 1024 && BASE + 95 <= 65535 )) || die "BASE must be in 1024..65440 (got $BASE)"

MESSAGE_SIZE_LIMIT="${MESSAGE_SIZE_LIMIT:-10240000}"
[[ "$MESSAGE_SIZE_LIMIT" =~ ^[0-9]+$ ]] || die "MESSAGE_SIZE_LIMIT must be a number of bytes (got '$MESSAGE_SIZE_LIMIT')"

export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
for tool in postfix dovecot openssl runuser; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done

PORT_SMTP=$((BASE + 25))
PORT_SUBMISSION=$((BASE + 87))
PORT_SUBMISSIONS=$((BASE + 65))
PORT_LMTP=$((BASE + 24))
PORT_IMAP=$((BASE + 43))
PORT_IMAPS=$((BASE + 93))
PORT_POP3=$((BASE + 10))
PORT_POP3S=$((BASE + 95))
PORT_SINK=$((BASE + 60))
PORT_REINJECT=$((BASE + 26))
FILTER_NEXTHOP="${FILTER_NEXTHOP:-}"
POLICY_SERVICE="${POLICY_SERVICE:-}"
[[ "$FILTER_NEXTHOP" =~ ^(|inet:127\.0\.0\.1:[0-9]+|unix:/[A-Za-z0-9/._+-]+)$ ]] || die "bad FILTER_NEXTHOP '$FILTER_NEXTHOP'"
[[ "$POLICY_SERVICE" =~ ^(|inet:127\.0\.0\.1:[0-9]+)$ ]] || die "bad POLICY_SERVICE '$POLICY_SERVICE'"
ALL_PORTS="$PORT_SMTP $PORT_SUBMISSION $PORT_SUBMISSIONS $PORT_LMTP $PORT_IMAP $PORT_IMAPS $PORT_POP3 $PORT_POP3S"

USERS="${USERS:-alice bob carol dave erin frank}"
PASSWORD="secret"
for u in $USERS; do
  # becomes a directory name, a passwd-file line and a Postfix map key
  [[ "$u" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "bad user name in USERS: '$u'"
done

mkdir -p "$ROOT"
ROOT="$(cd "$ROOT" && pwd -P)"   # canonical path: stop.sh matches processes by it

# Unix socket paths are limited to 107 bytes; Dovecot's sockets live in
# ROOT/dovecot/run (e.g. .../auth-postfix, .../anvil-auth-penalty,
# .../login/imap-hibernate), so keep ROOT short.
(( ${#ROOT} <= 64 )) || die "ROOT is too long (${#ROOT} > 64 chars) for unix socket paths: $ROOT"

# If this ROOT already runs an instance (re-run), stop it first: Dovecot refuses
# to start twice on one base_dir and Postfix would keep its old ports.
"$HERE/stop.sh" "$ROOT" >&2

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for p in $ALL_PORTS; do
  if port_open "$p"; then
    die "port $p on 127.0.0.1 is already in use (another instance with an overlapping BASE?)"
  fi
done

# Directory layout -----------------------------------------------------------
# ROOT must be world-searchable: Postfix daemons run as "postfix", Dovecot's
# auth as "dovecot", and mail delivery/IMAP as "nobody" (mktemp -d makes 0700).
chmod 0755 "$ROOT"
if ! runuser -u nobody -- test -x "$ROOT"; then
  die "user 'nobody' cannot reach $ROOT: every parent directory needs o+x"
fi

TLS="$ROOT/tls"
PF_CONF="$ROOT/postfix"
PF_QUEUE="$ROOT/pfqueue"
PF_DATA="$ROOT/pfdata"
DV="$ROOT/dovecot"
MAIL="$ROOT/mail"

# Queue directory: owned by root and not group/world writable (Postfix's
# post-install creates the subdirectories with the right owners at start).
mkdir -p "$TLS" "$PF_CONF" "$PF_QUEUE" "$PF_DATA" "$DV/run" "$DV/state" "$MAIL"
chown root:root "$PF_CONF" "$PF_QUEUE"
chmod 0755 "$PF_CONF" "$PF_QUEUE" "$DV" "$DV/state"
# data_directory: owned by postfix, 0700.
chown postfix:postfix "$PF_DATA"
chmod 0700 "$PF_DATA"
# base_dir: Dovecot's master creates its sockets here (login/ etc.).  Start
# from an empty one: Dovecot leaves its unix sockets behind on shutdown, and a
# stale anvil-auth-penalty socket costs 5 s (see auth_failure_delay below).
# Safe: stop.sh above has ended every process of this instance.
rm -rf "$DV/run"
mkdir -p "$DV/run"
chown root:root "$DV/run"
chmod 0755 "$DV/run"

# TLS: CA + leaf ---------------------------------------------------------------
tls_ok() {
  [ -s "$TLS/ca.pem" ] && [ -s "$TLS/cert.pem" ] && [ -s "$TLS/key.pem" ] &&
    openssl verify -CAfile "$TLS/ca.pem" -purpose sslserver "$TLS/cert.pem" >/dev/null 2>&1 &&
    openssl x509 -in "$TLS/cert.pem" -noout -checkend 86400 >/dev/null 2>&1 &&
    [ "$(openssl x509 -in "$TLS/cert.pem" -noout -pubkey 2>/dev/null)" = \
      "$(openssl pkey -in "$TLS/key.pem" -pubout 2>/dev/null)" ]
}

if tls_ok; then
  log "reusing TLS files in $TLS"
else
  # Own minimal config so the system openssl.cnf (which may add its own
  # extensions to "req -x509") does not matter.
  cat > "$TLS/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = dn
prompt             = no
[ dn ]
CN = localhost
[ ca_ext ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
[ leaf_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, DNS:mx.example.test, IP:127.0.0.1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
EOF
  umask_saved="$(umask)"
  umask 077
  openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -config "$TLS/openssl.cnf" -extensions ca_ext -subj "/CN=meshmail test CA" \
    -set_serial "0x$(openssl rand -hex 16)" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
  openssl req -new -newkey rsa:2048 -nodes -sha256 \
    -config "$TLS/openssl.cnf" -subj "/CN=localhost" \
    -keyout "$TLS/key.pem" -out "$TLS/cert.csr" 2>/dev/null
  openssl x509 -req -in "$TLS/cert.csr" -sha256 -days 3650 \
    -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$TLS/openssl.cnf" -extensions leaf_ext -out "$TLS/cert.pem" 2>/dev/null
  umask "$umask_saved"
  rm -f "$TLS/cert.csr"
  chmod 0644 "$TLS/ca.pem" "$TLS/cert.pem"
  chmod 0600 "$TLS/key.pem" "$TLS/ca.key"
  tls_ok || die "TLS certificate generation failed"
fi
# Convenience for clients that want leaf + CA in one file.
cat "$TLS/cert.pem" "$TLS/ca.pem" > "$TLS/fullchain.pem"

# Mailboxes --------------------------------------------------------------------
# Pitfall: each user's home must exist first -- mail processes run as nobody
# and cannot create it below a root-owned directory.
chown nobody:nogroup "$MAIL"
chmod 0755 "$MAIL"
for u in $USERS; do
  mkdir -p "$MAIL/$u"
  chown nobody:nogroup "$MAIL/$u"
  chmod 0700 "$MAIL/$u"
done

# Dovecot ------------------------------------------------------------------------
: > "$DV/users.tmp"
for u in $USERS; do
  echo "$u:{PLAIN}$PASSWORD::::::" >> "$DV/users.tmp"
done
chmod 0644 "$DV/users.tmp"   # read by the auth process (user dovecot)
mv -f "$DV/users.tmp" "$DV/users"

# Pitfall: Dovecot rejects "{" followed by a setting on the same line, so every
# block below has one setting per line.
cat > "$DV/dovecot.conf" <<EOF
# Generated by integration/servers/start.sh -- private test instance.
# Own instance name: shows up in process titles and keeps doveadm apart
# from the system Dovecot.
instance_name = meshmail-test-$BASE
base_dir = $DV/run
state_dir = $DV/state
protocols = imap pop3 lmtp
listen = 127.0.0.1
log_path = $DV/dovecot.log
# Used in LMTP's Received: header and DSNs (default: the machine's hostname).
hostname = mx.example.test

ssl = yes
ssl_cert = <$TLS/cert.pem
ssl_key = <$TLS/key.pem

# Plaintext LOGIN/USER+PASS allowed without TLS (tests use both).
disable_plaintext_auth = no
auth_mechanisms = plain login
# Failed logins normally wait 2 s before the reply, and anvil's "auth
# penalty" then grows the delay per client IP up to 15 s (measured: 4.5 s on
# the 2nd wrong password).  Everything here comes from 127.0.0.1, so tests
# that check wrong passwords (IMAP, POP3, and SMTP AUTH via Postfix) would
# crawl and slow down unrelated tests (login_trusted_networks=127.0.0.0/8
# does NOT avoid it in 2.3.19: measured 15 s for IMAP and 10 s for SMTP AUTH
# with it set).  auth_failure_delay off, and the penalty disabled the
# documented way: mode 0 on anvil's anvil-auth-penalty listener.  The socket
# file must then not exist at all (ENOENT = silently disabled); a stale one
# left by an earlier run makes the auth process retry it for 5 s (ECONNREFUSED)
# -- start.sh therefore empties base_dir before every start.
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

mail_location = maildir:~/Maildir
mail_fsync = never
# Default is 10 connections per user+IP; everything here comes from 127.0.0.1.
protocol imap {
  mail_max_userip_connections = 1000
}
protocol pop3 {
  mail_max_userip_connections = 1000
}

namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
}

# "alice" and "alice@example.test" both log in as alice (%n = local part).
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $DV/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$MAIL/%n
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $PORT_IMAP
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $PORT_IMAPS
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $PORT_POP3
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $PORT_POP3S
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $PORT_LMTP
  }
}
# Pitfall: Postfix's own private/auth socket cannot serve SASL here (Dovecot
# starts first and Postfix has no chroot), so Postfix uses this socket in
# Dovecot's run directory. 0666: smtpd runs as user postfix.
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
EOF

# Postfix ------------------------------------------------------------------------
: > "$PF_CONF/vmailbox.tmp"
for u in $USERS; do
  echo "$u@example.test OK" >> "$PF_CONF/vmailbox.tmp"
done
mv -f "$PF_CONF/vmailbox.tmp" "$PF_CONF/vmailbox"
printf 'team@example.test alice@example.test, bob@example.test\n' > "$PF_CONF/virtual"

# The sidecar set-up takes mail to the users' fingerprint addresses at the MX (prefix form
# under a wildcard MX, suffix form); meshmail rewrites it to the mailbox.
STRONG_DOMAINS=""
if [ -n "$FILTER_NEXTHOP" ]; then
  cat > "$PF_CONF/strong-domains.regexp" <<'EOF'
/^(xx|mm)--[a-z0-9-]+\.example\.test$/ OK
/^example\.test\.(xx|mm)--[a-z0-9-]+$/ OK
EOF
  STRONG_DOMAINS=", regexp:$PF_CONF/strong-domains.regexp"
fi

# Pitfall: setting config_directory inside main.cf warns; every postfix
# command gets "-c $PF_CONF" instead.  All paths absolute.
cat > "$PF_CONF/main.cf" <<EOF
# Generated by integration/servers/start.sh -- private test instance.
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DATA
# Shared, read-only Debian files (postfix-files, post-install, dynamicmaps.cf).
meta_directory = /etc/postfix

# Pitfall: Postfix exits 1 WITHOUT any message if maillog_file is outside
# maillog_file_prefixes (default /var, /dev/stdout).
maillog_file = $ROOT/postfix.log
maillog_file_prefixes = $ROOT

myhostname = mx.example.test
mydomain = example.test
mydestination =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# 127.0.0.0/8 is also what exempts test/benchmark clients from anvil's
# per-client connection/rate limits (smtpd_client_*_limit_exceptions).
mynetworks = 127.0.0.0/8
biff = no
append_dot_mydomain = no
smtputf8_enable = yes
# No DNS on this machine (loopback only): next hops are all literal IPs.
smtp_dns_support_level = disabled

virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:$PF_CONF/vmailbox
virtual_alias_maps = texthash:$PF_CONF/virtual
recipient_delimiter = +
virtual_transport = lmtp:inet:127.0.0.1:$PORT_LMTP

relay_domains = sink.test$STRONG_DOMAINS
transport_maps = inline:{ sink.test=smtp:[127.0.0.1]:$PORT_SINK }

message_size_limit = $MESSAGE_SIZE_LIMIT
# Both must be 0 (unlimited) or >= message_size_limit, else large messages fail.
mailbox_size_limit = 0
virtual_mailbox_limit = 0

smtpd_tls_cert_file = $TLS/cert.pem
smtpd_tls_key_file = $TLS/key.pem
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DV/run/auth-postfix

# Fast retries so deferred mail (e.g. smtp-sink not yet up) moves quickly.
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 60s
EOF

# The sidecar set-up (FILTER_NEXTHOP): what the entry services add, and the reinjection
# listener with its own cleanup (a larger size limit: encryption grows a message ~1.4x).
ENTRY_FILTER=""
SUBMISSION_POLICY=""
SIDECAR_SERVICES=""
if [ -n "$FILTER_NEXTHOP" ]; then
  ENTRY_FILTER="  -o content_filter=meshfilter:$FILTER_NEXTHOP"
  if [ -n "$POLICY_SERVICE" ]; then
    SUBMISSION_POLICY="  -o smtpd_recipient_restrictions=check_policy_service,$POLICY_SERVICE,permit_sasl_authenticated,reject"
  fi
  SIDECAR_SERVICES="# meshmail's filter: LMTP, so each recipient gets its own reply.
meshfilter unix - - n - 10 lmtp
  -o lmtp_send_xforward_command=yes
  -o lmtp_data_done_timeout=1200s
  -o max_use=20
# Reinjection: not filtered again, aliases already expanded at the entry, XFORWARD allowed.
127.0.0.1:$PORT_REINJECT inet n - n - - smtpd
  -o syslog_name=postfix/reinject
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters,no_address_mappings
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=
  -o smtpd_data_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
  -o message_size_limit=$((MESSAGE_SIZE_LIMIT * 2))
  -o cleanup_service_name=cleanup-reinject
cleanup-reinject unix n - n - 0 cleanup
  -o message_size_limit=$((MESSAGE_SIZE_LIMIT * 2))
"
  ALL_PORTS="$ALL_PORTS $PORT_REINJECT"
fi

# Chroot column "n" for every service: Debian's stock chroot would need
# system files copied into the queue directory.
# Only the services Postfix needs plus the three listeners.
cat > "$PF_CONF/master.cf" <<EOF
# Generated by integration/servers/start.sh -- private test instance.
# service type  private unpriv  chroot  wakeup  maxproc command + args
#
# MX: STARTTLS offered, no AUTH; accepts mail only for its own domains
# (example.test, sink.test) even from 127.0.0.1.
127.0.0.1:$PORT_SMTP inet n - n - - smtpd
  -o syslog_name=postfix/smtp
  -o smtpd_relay_restrictions=reject_unauth_destination
$ENTRY_FILTER
127.0.0.1:$PORT_SUBMISSION inet n - n - - smtpd
  -o syslog_name=postfix/submission
$ENTRY_FILTER
$SUBMISSION_POLICY
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$PORT_SUBMISSIONS inet n - n - - smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
  -o syslog_name=postfix/\$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
# Required for maillog_file.
postlog   unix-dgram n  -       n       -       1       postlogd
$SIDECAR_SERVICES
EOF

# Start ------------------------------------------------------------------------
dump_logs() {
  {
    echo "---- tail $ROOT/postfix.log"
    tail -n 40 "$ROOT/postfix.log" 2>/dev/null || true
    echo "---- tail $DV/dovecot.log"
    tail -n 40 "$DV/dovecot.log" 2>/dev/null || true
  } >&2
}

# The daemons must NOT inherit our stdout/stderr: the Dovecot master keeps
# them open, so a caller that reads start.sh's output through a pipe (e.g.
# Rust's Command::output()) would wait for EOF forever.  Their start-up
# messages go to ROOT/startup.log instead (shown on failure).
STARTUP_LOG="$ROOT/startup.log"
: > "$STARTUP_LOG"
if ! dovecot -c "$DV/dovecot.conf" </dev/null >>"$STARTUP_LOG" 2>&1; then
  cat "$STARTUP_LOG" >&2
  dump_logs
  "$HERE/stop.sh" "$ROOT" >&2 || true
  die "dovecot failed to start"
fi
if ! postfix -c "$PF_CONF" start </dev/null >>"$STARTUP_LOG" 2>&1; then
  cat "$STARTUP_LOG" >&2
  dump_logs
  "$HERE/stop.sh" "$ROOT" >&2 || true
  die "postfix failed to start (an empty log usually means a main.cf path problem)"
fi

deadline=$((SECONDS + 30))
for p in $ALL_PORTS; do
  until port_open "$p"; do
    if (( SECONDS >= deadline )); then
      log "timeout: port $p not accepting connections after 30 s"
      cat "$STARTUP_LOG" >&2
      dump_logs
      "$HERE/stop.sh" "$ROOT" >&2 || true   # leave no half-started instance
      exit 1
    fi
    sleep 0.1
  done
done

echo ready
