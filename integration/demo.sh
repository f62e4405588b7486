#!/usr/bin/env bash
# `make run`: the main job on an embedded default. It grows with each capability; today:
#   1. init: accounts for alice@ and bob@example.test
#   2. publish: their policies as zone lines, served by a real NSD on 127.0.0.1
#   3. resolve: a sender verifies Bob's strong address through that DNS (and a wrong
#      fingerprint is refused)
#   4. serve: private Postfix + Dovecot, meshmail in front as Alice's outgoing server; a
#      message to Bob's strong address leaves encrypted, and Bob's mailbox holds ciphertext
#
# Settings (environment): DEMO_DIR (default ./run), DEMO_BASE (port base, default 20000: NSD on
# BASE+53, meshmail SMTP on BASE+1587-ish, see the summary), DEMO_KEEP=1 keeps everything
# running (for Thunderbird or a script) until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/target/debug/meshmail"
DIR="${DEMO_DIR:-$PWD/run}"
BASE="${DEMO_BASE:-20000}"
DNS_PORT=$((BASE + 53))
SMTP_PORT=$((BASE + 88))
DOMAIN=example.test
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
step() { printf '\n== %s\n' "$*"; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -f "$DIR/nsd/nsd.pid" ] && kill "$(cat "$DIR/nsd/nsd.pid")" 2>/dev/null || true
  bash integration/servers/stop.sh "$DIR/servers" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "1. init: accounts (policy key, OpenPGP and S/MIME certificates, signed policy)"
for who in alice bob; do
  if [ -f "$DIR/$who/account.json" ]; then
    echo "(reusing $DIR/$who)"
  else
    "$BIN" --home "$DIR/$who" init --address "$who@$DOMAIN" | head -2
  fi
done
BOB=$("$BIN" --home "$DIR/bob" address)
echo "Bob's strong address: $BOB"

step "2. publish: zone lines for $DOMAIN, served by NSD on 127.0.0.1:$DNS_PORT"
rm -rf "$DIR/publish-alice" "$DIR/publish-bob"
"$BIN" --home "$DIR/alice" policy publish --out "$DIR/publish-alice" >/dev/null 2>&1
"$BIN" --home "$DIR/bob" policy publish --out "$DIR/publish-bob" 2>/dev/null | cut -c1-110 | sed 's/$/…/'
NSD_DIR="$DIR/nsd"
rm -rf "$NSD_DIR"; mkdir -p "$NSD_DIR"
{
  echo "\$ORIGIN $DOMAIN."; echo "\$TTL 300"
  echo "@ IN SOA ns.$DOMAIN. hostmaster.$DOMAIN. ( 1 3600 600 86400 60 )"
  echo "@ IN NS ns.$DOMAIN."; echo "ns IN A 127.0.0.1"
  cat "$DIR/publish-alice/zone.txt" "$DIR/publish-bob/zone.txt"
} > "$NSD_DIR/$DOMAIN.zone"
cat > "$NSD_DIR/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$DNS_PORT
  port: $DNS_PORT
  do-ip6: no
  username: ""
  chroot: ""
  database: ""
  server-count: 1
  zonesdir: "$NSD_DIR"
  zonelistfile: "$NSD_DIR/zone.list"
  xfrdfile: "$NSD_DIR/xfrd.state"
  xfrdir: "$NSD_DIR"
  pidfile: "$NSD_DIR/nsd.pid"
  logfile: "$NSD_DIR/nsd.log"
remote-control:
  control-enable: no
zone:
  name: $DOMAIN
  zonefile: $DOMAIN.zone
CONF
nsd-checkzone "$DOMAIN" "$NSD_DIR/$DOMAIN.zone" >/dev/null
nsd -c "$NSD_DIR/nsd.conf"
for _ in $(seq 50); do dig +short +time=1 -p "$DNS_PORT" @127.0.0.1 "ns.$DOMAIN" A >/dev/null 2>&1 && break; sleep 0.1; done

step "3. resolve: Alice's side verifies Bob's policy through DNS"
mkdir -p "$DIR/stranger"
"$BIN" --home "$DIR/stranger" policy resolve --no-store --dns "127.0.0.1:$DNS_PORT" "$BOB" | head -14
echo "  …"
BAD="${BOB%?}a"; [ "$BAD" = "$BOB" ] && BAD="${BOB%?}b"
set +e
"$BIN" --home "$DIR/stranger" policy resolve --no-store --dns "127.0.0.1:$DNS_PORT" "$BAD"
echo "a wrong fingerprint: exit code $?"
set -e

step "4. serve: Postfix + Dovecot on 127.0.0.1:$BASE+…, meshmail in front on 127.0.0.1:$SMTP_PORT"
bash integration/servers/start.sh "$DIR/servers" "$BASE" >"$DIR/servers.log" 2>&1
cat > "$DIR/meshmail.toml" <<CONF
home = "$DIR/alice"
upstream_user = "alice"
[smtp]
listen = "127.0.0.1:$SMTP_PORT"
upstream = "127.0.0.1:$((BASE + 87))"
upstream_tls = "starttls"
upstream_ca = "$DIR/servers/tls/ca.pem"
[policy]
dns = "127.0.0.1:$DNS_PORT"
CONF
"$BIN" check-config "$DIR/meshmail.toml"
"$BIN" -v serve --config "$DIR/meshmail.toml" >"$DIR/meshmail.out" 2>"$DIR/meshmail.log" &
PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$DIR/meshmail.out" 2>/dev/null && break; sleep 0.1; done
swaks --server "127.0.0.1:$SMTP_PORT" --auth PLAIN --auth-user alice --auth-password secret \
  --from "alice@$DOMAIN" --to "$BOB" --header "Subject: the demo's secret subject" \
  --body "Only Bob can read this." | grep -E '^( ->  RCPT|<-  250 2\.(1\.5|0\.0))'
for _ in $(seq 50); do
  MSG=$(curl -s "imap://127.0.0.1:$((BASE + 43))/INBOX;UID=1" -u bob:secret || true)
  [ -n "$MSG" ] && break; sleep 0.2
done
echo "What Bob's mailbox (Dovecot) holds:"
printf '%s\n' "$MSG" | grep -E '^(Subject|Content-Type):|BEGIN PGP MESSAGE' | sed 's/^/  /'
printf '%s\n' "$MSG" | grep -q "secret subject" && { echo "LEAK: the Subject is in the clear"; exit 1; }
echo "  (the Subject and body exist only inside the encrypted part)"

IMAP_PORT=$((BASE + 143))
POP3_PORT=$((BASE + 110))
step "5. read: Bob's own meshmail in front of his mailbox (IMAP on 127.0.0.1:$IMAP_PORT, POP3 on 127.0.0.1:$POP3_PORT)"
cat > "$DIR/bob.toml" <<CONF
home = "$DIR/bob"
upstream_user = "bob"
[imap]
listen = "127.0.0.1:$IMAP_PORT"
upstream = "127.0.0.1:$((BASE + 43))"
upstream_tls = "starttls"
upstream_ca = "$DIR/servers/tls/ca.pem"
[pop3]
listen = "127.0.0.1:$POP3_PORT"
upstream = "127.0.0.1:$((BASE + 10))"
upstream_tls = "starttls"
upstream_ca = "$DIR/servers/tls/ca.pem"
CONF
"$BIN" check-config "$DIR/bob.toml"
"$BIN" -v serve --config "$DIR/bob.toml" >"$DIR/bob.out" 2>"$DIR/bob.log" &
PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$DIR/bob.out" 2>/dev/null && break; sleep 0.1; done
VIEW=$(curl -s "imap://127.0.0.1:$IMAP_PORT/INBOX;UID=1" -u bob:secret)
echo "What Bob's mail client sees through meshmail:"
printf '%s\n' "$VIEW" | grep -E '^(Meshmail-Result|Subject):|Only Bob' | sed 's/^/  /'
printf '%s\n' "$VIEW" | grep -q "secret subject" || { echo "the view is not decrypted"; exit 1; }
POPPED=$(curl -s "pop3://127.0.0.1:$POP3_PORT/1" -u bob:secret)
echo "The same message fetched with POP3 through meshmail:"
printf '%s\n' "$POPPED" | grep -E '^(Meshmail-Result|Subject):' | sed 's/^/  /'
printf '%s\n' "$POPPED" | grep -q "secret subject" || { echo "the POP3 view is not decrypted"; exit 1; }

if [ "${DEMO_KEEP:-0}" = 1 ]; then
  step "running: meshmail SMTP 127.0.0.1:$SMTP_PORT (Alice), IMAP 127.0.0.1:$IMAP_PORT and POP3 127.0.0.1:$POP3_PORT (Bob),"
  echo "   users alice / bob, password secret, no TLS on loopback; Dovecot IMAP 127.0.0.1:$((BASE + 43));"
  echo "   NSD 127.0.0.1:$DNS_PORT. Ctrl-C stops everything."
  wait
fi
