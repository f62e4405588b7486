#!/usr/bin/env bash
# `make run`: the main job on an embedded default. At this stage it shows the foundation end to
# end: an account is made (init), its policy and keys are published (zone lines into a real
# NSD on 127.0.0.1), and a sender resolves Alice's strong address through that DNS.
#
# Settings (environment): DEMO_DIR (default ./run), DEMO_DNS_PORT (default 5353),
# DEMO_KEEP=1 keeps NSD serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/target/debug/meshmail"
DIR="${DEMO_DIR:-$PWD/run}"
PORT="${DEMO_DNS_PORT:-5353}"
DOMAIN=example.test
mkdir -p "$DIR"
step() { printf '\n== %s\n' "$*"; }

step "1. init: Alice's account (policy key, OpenPGP and S/MIME certificates, signed policy)"
if [ -f "$DIR/alice/account.json" ]; then
  echo "(reusing $DIR/alice)"
else
  "$BIN" --home "$DIR/alice" init --address "alice@$DOMAIN"
fi
STRONG=$("$BIN" --home "$DIR/alice" address)
OPENPGP=$("$BIN" --home "$DIR/alice" address --openpgp)
echo "strong address:          $STRONG"
echo "OpenPGP-fingerprint one: $OPENPGP"

step "2. publish: zone lines and HTTPS files for $DOMAIN"
rm -rf "$DIR/publish"
"$BIN" --home "$DIR/alice" policy publish --out "$DIR/publish" | cut -c1-110 | sed 's/$/…/'

step "3. NSD on 127.0.0.1:$PORT serves the zone"
NSD_DIR="$DIR/nsd"
rm -rf "$NSD_DIR"; mkdir -p "$NSD_DIR"
{
  echo "\$ORIGIN $DOMAIN."
  echo "\$TTL 300"
  echo "@ IN SOA ns.$DOMAIN. hostmaster.$DOMAIN. ( 1 3600 600 86400 60 )"
  echo "@ IN NS ns.$DOMAIN."
  echo "ns IN A 127.0.0.1"
  cat "$DIR/publish/zone.txt"
} > "$NSD_DIR/$DOMAIN.zone"
cat > "$NSD_DIR/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$PORT
  port: $PORT
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
nsd-checkzone "$DOMAIN" "$NSD_DIR/$DOMAIN.zone"
nsd -c "$NSD_DIR/nsd.conf"
stop_nsd() { [ -f "$NSD_DIR/nsd.pid" ] && kill "$(cat "$NSD_DIR/nsd.pid")" 2>/dev/null || true; }
trap stop_nsd EXIT
for _ in $(seq 50); do dig +short +time=1 -p "$PORT" @127.0.0.1 "ns.$DOMAIN" A >/dev/null 2>&1 && break; sleep 0.1; done
TXT_NAME=$(awk '/ IN TXT /{print $1}' "$DIR/publish/zone.txt")
echo "dig $TXT_NAME TXT:"
dig +short -p "$PORT" @127.0.0.1 "$TXT_NAME" TXT | cut -c1-100 | sed 's/$/…/'

step "4. resolve: a sender (Bob, empty key store) verifies Alice's policy through DNS"
mkdir -p "$DIR/bob"
"$BIN" --home "$DIR/bob" policy resolve --no-store --dns "127.0.0.1:$PORT" "$STRONG"
echo
"$BIN" --home "$DIR/bob" policy resolve --no-store --dns "127.0.0.1:$PORT" "$OPENPGP" | head -12

step "5. a tampered address is refused (wrong fingerprint: exit 65)"
BAD="${STRONG%?}a"; [ "$BAD" = "$STRONG" ] && BAD="${STRONG%?}b"
set +e
"$BIN" --home "$DIR/bob" policy resolve --no-store --dns "127.0.0.1:$PORT" "$BAD"
echo "exit code: $?"
set -e

if [ "${DEMO_KEEP:-0}" = 1 ]; then
  step "NSD keeps serving on 127.0.0.1:$PORT (Ctrl-C to stop)"
  while sleep 3600; do :; done
fi
