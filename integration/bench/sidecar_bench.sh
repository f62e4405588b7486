#!/usr/bin/env bash
# Sidecar benchmark (`make bench`): figures are printed, not asserted.
#
# One run, the same real Postfix path each time (smtp-source → Postfix MX → content filter
# over LMTP → reinjection → Postfix → Dovecot LMTP), 5,000 messages of 10 KB:
#   A. a trivial forwarding filter (Python, integration/bench/forward_filter.py): the reference;
#   B. meshmail passing the messages through (a local user without a key);
#   C. meshmail encrypting at rest (a local user with an X25519 OpenPGP key).
# Rates are delivered messages per second, from the first message injected to the last one in
# the Maildir (Postfix and Dovecot on the same two cores bound all three near 250 msg/s); then
# meshmail's own CPU time per message in B and C, and its peak RSS.
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES="${MESSAGES:-5000}"
SIZE="${SIZE:-10240}"
BIN="$PWD/target/release/meshmail"
W="$(mktemp -d /tmp/mm-sc-XXXXXX)"
chmod 755 "$W"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  bash integration/servers/stop.sh "$W/srv" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; exit 1; }
free_base() {
  for _ in $(seq 100); do
    local b=$(( ($(free_port) / 100) * 100 ))
    (( b >= 20000 && b <= 60000 )) || continue
    local ok=1
    for o in 10 24 25 26 43 60 65 87 93 95; do (echo > "/dev/tcp/127.0.0.1/$((b + o))") 2>/dev/null && ok=0; done
    (( ok )) && { echo "$b"; return; }
  done
  echo "no free port range" >&2; exit 1
}

BASE=$(free_base)
FILTER=$(free_port)
FILTER_NEXTHOP="inet:127.0.0.1:$FILTER" bash integration/servers/start.sh "$W/srv" "$BASE" >/dev/null
MX=$((BASE + 25)); REINJECT=$((BASE + 26))

"$BIN" --home "$W/alice" init --address alice@example.test >/dev/null
mkdir -p "$W/keys"
cp "$W/alice/openpgp.asc" "$W/keys/alice@example.test.asc"
cat > "$W/sidecar.toml" <<CONF
[filter]
listen = "127.0.0.1:$FILTER"
reinject = "127.0.0.1:$REINJECT"
local_domains = ["example.test"]
keys_dir = "$W/keys"
mark_secret_file = "$W/mark.key"
[limits]
max_connections = 100
CONF

count() { ls "$W/srv/mail/$1/Maildir/new" 2>/dev/null | wc -l; }
# CPU seconds (user + system) a process has used.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }

# Injects MESSAGES to $1 and prints the delivered rate once all are in $1's Maildir.
run() {
  local user=$1 start end n
  start=$(date +%s.%N)
  /usr/sbin/smtp-source -c -m "$MESSAGES" -s 20 -l "$SIZE" -f load@sink.test -t "$user@example.test" "127.0.0.1:$MX" >/dev/null
  for _ in $(seq 6000); do
    n=$(count "$user"); (( n >= MESSAGES )) && break; sleep 0.1
  done
  end=$(date +%s.%N)
  n=$(count "$user")
  (( n >= MESSAGES )) || { echo "only $n of $MESSAGES delivered to $user" >&2; exit 1; }
  python3 -c "print(round($MESSAGES / ($end - $start)))"
}

python3 integration/bench/forward_filter.py "$FILTER" "$REINJECT" & PIDS+=($!)
wait_port "$FILTER"
REF=$(run carol)
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
sleep 1

"$BIN" serve --config "$W/sidecar.toml" > "$W/meshmail.out" 2> "$W/meshmail.log" & MM=$!; PIDS+=($MM)
wait_port "$FILTER"
C0=$(cpu "$MM")
PASS=$(run bob)
C1=$(cpu "$MM")
ENC=$(run alice)
C2=$(cpu "$MM")
PASS_MS=$(python3 -c "print(round(($C1 - $C0) * 1000 / $MESSAGES, 3))")
ENC_MS=$(python3 -c "print(round(($C2 - $C1) * 1000 / $MESSAGES, 3))")
RSS=$(awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$MM/status")
grep -q 'BEGIN PGP MESSAGE' "$W/srv/mail/alice/Maildir/new/$(ls "$W/srv/mail/alice/Maildir/new" | head -1)" \
  || { echo "alice's mail is not encrypted" >&2; exit 1; }

echo "sidecar: $MESSAGES messages of $SIZE bytes, smtp-source → Postfix → filter → reinjection → Dovecot"
printf '  %-44s %6s msg/s\n' "A. trivial forwarding filter (reference)" "$REF"
printf '  %-44s %6s msg/s\n' "B. meshmail passing through" "$PASS"
printf '  %-44s %6s msg/s\n' "C. meshmail encrypting at rest" "$ENC"
echo "  meshmail CPU per message: $PASS_MS ms passing through, $ENC_MS ms encrypting at rest"
echo "  meshmail peak RSS: $RSS MB"
RATIO=$(python3 -c "print(round($ENC / $PASS, 2))")
echo "sidecar reference_msgs_per_s=$REF pass_msgs_per_s=$PASS encrypt_msgs_per_s=$ENC encrypt_vs_pass=$RATIO cpu_ms_pass=$PASS_MS cpu_ms_encrypt=$ENC_MS peak_rss_mb=$RSS"
