#!/usr/bin/env bash
# SMTP benchmark (`make bench`): figures are printed, not asserted.
#
# In one run, 5,000 messages of 10 KB over 20 sessions:
#   A. straight to Postfix's smtp-sink (the baseline; also timed with Postfix's smtp-source);
#   B. through meshmail, plaintext recipient;
#   C. through meshmail, encrypting to an X25519 (Cv25519) OpenPGP recipient's strong address
#      (policy from a real NSD);
#   D. through a filter that runs `gpg --encrypt` per message (as Zeyple and Lacre do).
# Then meshmail's peak RSS, and a single 25 MB message encrypted through a fresh meshmail.
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES="${MESSAGES:-5000}"
SESSIONS="${SESSIONS:-20}"
SIZE="${SIZE:-10240}"
BIN="$PWD/target/release/meshmail"
LOAD="$PWD/target/release/examples/smtp_load"
W="$(mktemp -d /tmp/meshmail-bench-XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -f "$W/nsd/nsd.pid" ] && kill "$(cat "$W/nsd/nsd.pid")" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
hwm() { awk '/VmHWM/{print $2/1024 " MB"}' "/proc/$1/status"; }

SINK=$(free_port)
/usr/sbin/smtp-sink -u nobody "127.0.0.1:$SINK" 1000 >/dev/null 2>&1 & PIDS+=($!)
wait_port "$SINK"

# The sender's account (the load does not log in, so it is not used to sign), and the
# recipient: an account whose policy NSD serves.
"$BIN" --home "$W/alice" init --address alice@example.test >/dev/null
"$BIN" --home "$W/bob" init --address bob@example.test >/dev/null
"$BIN" --home "$W/bob" policy publish --out "$W/pub" >/dev/null 2>&1
BOB=$("$BIN" --home "$W/bob" address)
DNS=$(free_port)
mkdir -p "$W/nsd"
{ echo '$ORIGIN example.test.'; echo '$TTL 300'; echo '@ IN SOA ns.example.test. h.example.test. ( 1 3600 600 86400 60 )'
  echo '@ IN NS ns.example.test.'; echo 'ns IN A 127.0.0.1'; grep ' TXT ' "$W/pub/zone.txt"; } > "$W/nsd/example.test.zone"
cat > "$W/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$DNS
  port: $DNS
  do-ip6: no
  username: ""
  chroot: ""
  database: ""
  server-count: 1
  zonesdir: "$W/nsd"
  zonelistfile: "$W/nsd/zone.list"
  xfrdfile: "$W/nsd/xfrd.state"
  xfrdir: "$W/nsd"
  pidfile: "$W/nsd/nsd.pid"
  logfile: "$W/nsd/nsd.log"
remote-control:
  control-enable: no
zone:
  name: example.test
  zonefile: example.test.zone
CONF
nsd -c "$W/nsd/nsd.conf"; wait_port "$DNS"

start_meshmail() { # $1: name, $2: extra config
  local port; port=$(free_port)
  cat > "$W/$1.toml" <<CONF
home = "$W/alice"
upstream_user = "alice"
[smtp]
listen = "127.0.0.1:$port"
upstream = "127.0.0.1:$SINK"
upstream_tls = "none"
[policy]
dns = "127.0.0.1:$DNS"
[encrypt]
default = "never"
$2
CONF
  "$BIN" serve --config "$W/$1.toml" >"$W/$1.out" 2>"$W/$1.log" &
  MPID=$!; PIDS+=($MPID); wait_port "$port"; MPORT=$port
}

echo "meshmail SMTP benchmark: $MESSAGES messages of $SIZE bytes over $SESSIONS sessions ($(nproc) cores)"
printf '%-46s %s\n' "path" "result"
SRC_START=$(date +%s.%N)
/usr/sbin/smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f a@example.test -t b@sink.test "127.0.0.1:$SINK"
SRC_END=$(date +%s.%N)
SOURCE_RATE=$(python3 -c "print('%.0f' % ($MESSAGES/($SRC_END-$SRC_START)))")
printf '%-46s %s\n' "A0. smtp-source -> smtp-sink" "msgs_per_s=$SOURCE_RATE"
A=$("$LOAD" "127.0.0.1:$SINK" "$SESSIONS" "$MESSAGES" "$SIZE" a@example.test b@sink.test)
printf '%-46s %s\n' "A.  load -> smtp-sink (baseline)" "$A"

# Idle RSS of `serve` with both listeners (SMTP and IMAP), policies resolved nowhere yet.
IMAP_IDLE=$(free_port)
start_meshmail idle "[imap]
listen = \"127.0.0.1:$IMAP_IDLE\"
upstream = \"127.0.0.1:1\"
upstream_tls = \"none\""
sleep 1
IDLE_RSS=$(awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$MPID/status")
printf '%-46s %s\n' "    meshmail idle RSS (SMTP + IMAP listeners)" "$IDLE_RSS MB"
# The idle figure depends on the start-up functions being linked together (src/build.rs); names
# that changed since src/startup.order was made are no longer placed (renew it with
# integration/bench/startup_order.sh when many are missing).
ORDER_ALL=$(grep -vc '^#' src/startup.order || true)
ORDER_FOUND=$(comm -12 <(grep -v '^#' src/startup.order | sort -u) \
  <(nm "$BIN" | awk '$2 == "t" || $2 == "T" { print $3 }' | sort -u) | wc -l)
printf '%-46s %s\n' "    start-up functions linked together" "$ORDER_FOUND of $ORDER_ALL in src/startup.order"
kill "$MPID"

start_meshmail plain ""
printf '%-46s %s\n' "B.  load -> meshmail (plaintext) -> smtp-sink" "$("$LOAD" "127.0.0.1:$MPORT" "$SESSIONS" "$MESSAGES" "$SIZE" a@example.test b@sink.test)"
# PERF=file.data: record meshmail's CPU profile (perf, Debian's linux-perf) during C.
if [ -n "${PERF:-}" ]; then perf record -F 1999 -g -p "$MPID" -o "$PERF" 2>/dev/null & PERF_PID=$!; sleep 0.5; fi
C=$("$LOAD" "127.0.0.1:$MPORT" "$SESSIONS" "$MESSAGES" "$SIZE" a@example.test "$BOB")
if [ -n "${PERF:-}" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi
printf '%-46s %s\n' "C.  load -> meshmail (PGP/MIME, X25519) -> sink" "$C"
printf '%-46s %s\n' "    meshmail peak RSS (B and C)" "$(hwm "$MPID")"
kill "$MPID"

mkdir -m 700 "$W/gpg"
gpg --homedir "$W/gpg" --batch --import "$W/bob/openpgp.asc" 2>/dev/null
FPR=$(python3 -c "import json;print(json.load(open('$W/bob/account.json'))['openpgp_fingerprint'])")
FILTER=$(free_port)
python3 integration/bench/gpg_filter.py "$FILTER" "$SINK" "$W/gpg" "$FPR" 2>/dev/null & PIDS+=($!)
wait_port "$FILTER"
D=$("$LOAD" "127.0.0.1:$FILTER" "$SESSIONS" "$((MESSAGES / 5))" "$SIZE" a@example.test bob@example.test 2>/dev/null)
printf '%-46s %s\n' "D.  load -> gpg-per-message filter -> sink" "$D"

start_meshmail big ""
printf '%-46s %s\n' "E.  one 25 MB message, encrypted" "$("$LOAD" "127.0.0.1:$MPORT" 1 1 26214400 a@example.test "$BOB")"
printf '%-46s %s\n' "    meshmail peak RSS (25 MB message)" "$(hwm "$MPID")"
echo "(D sends MESSAGES/5 messages: gpg per message is slow; its msgs_per_s is comparable.)"
# One line to compare runs: C against smtp-source -> smtp-sink (goal >= 0.5) and against the
# gpg filter (goal >= 10), C's p99 over the load tool's own p99 straight to the sink (goal
# <= 5 ms), and the idle RSS (goal <= 15 MB).
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
python3 - "$SOURCE_RATE" "$(field msgs_per_s "$C")" "$(field msgs_per_s "$D")" "$(field p99_ms "$C")" "$(field p99_ms "$A")" "$IDLE_RSS" <<'PY'
import sys
source, c, d, c99, a99, idle = map(float, sys.argv[1:])
print(f"smtp encrypting_ratio={c / source:.2f} gpg_ratio={c / d:.1f} p99_added_ms={c99 - a99:.1f} idle_rss_mb={idle:.1f}")
PY
