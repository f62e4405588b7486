#!/usr/bin/env bash
# Store benchmark (`make bench`): figures are printed, not asserted.
#
# 1,000 PGP/MIME messages of about 20 KB (encrypted to Alice's X25519 key) in a real Dovecot,
# `UID FETCH 1:* (BODY.PEEK[])`:
#   A. straight from Dovecot (the baseline);
#   B. through the store proxy, a plain client on loopback (the hop alone);
#   C. through the store over TLS as an enrolled device, without X-MESH-RECRYPT;
#   D. the same with X-MESH-RECRYPT (the store computes one partial per message).
# Then the store's peak RSS. Last, one summary line:
#   store hop_ratio=B/A device_tls_ratio=C/A recrypt_ratio=D/A partials_per_s=COUNT/D peak_rss_mb=R
# Then 1, 10 and 100 enrolled devices reading at once, one connection each:
#   store_devices partials_per_s_1=… partials_per_s_10=… partials_per_s_100=… peak_rss_mb=R
# (the partial's arithmetic alone, per core: recrypt_bench, also in `make bench`).
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT="${COUNT:-1000}"
SIZE="${SIZE:-20480}"
BIN="$PWD/target/release/meshmail"
LOAD="$PWD/target/release/examples/imap_load"
STORE_LOAD="$PWD/target/release/examples/store_load"
W="$(mktemp -d /tmp/mm-sb-XXXXXX)"
chmod 755 "$W"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  bash integration/servers/stop.sh "$W/srv" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
source integration/servers/alice_imap.sh

# The store host: its certificate, Alice's public files, its configuration.
"$BIN" certs --out "$W/store-certs" >/dev/null
mkdir -p "$W/store/alice-public"
cp "$W/alice/account.json" "$W/alice/openpgp.asc" "$W/store/alice-public/"
SPORT=$(free_port)
STLS=$(free_port)
cat > "$W/store.toml" <<TOML
[tls]
cert = "$W/store-certs/cert.pem"
key = "$W/store-certs/key.pem"
[store]
listen = "127.0.0.1:$SPORT"
listen_implicit_tls = "127.0.0.1:$STLS"
upstream = "127.0.0.1:$IMAP"
upstream_tls = "starttls"
upstream_ca = "$W/srv/tls/ca.pem"
shares_dir = "$W/store/shares"
alarm_per_hour = 1000000
[[store.account]]
upstream_user = "alice"
public_home = "$W/store/alice-public"
[limits]
# 100 devices at once, with room to spare.
max_connections = 400
TOML
"$BIN" serve --config "$W/store.toml" >/dev/null 2>"$W/store.log" & STORE=$!
PIDS+=($STORE)
wait_port "$SPORT"

# A device, enrolled end to end.
"$BIN" store info --config "$W/store.toml" --out "$W/store.json" >/dev/null
code() { sed -n 's/^code: //p'; }
REQ_CODE=$("$BIN" --home "$W/laptop" device request --out "$W/laptop.req" | code)
REPLY_CODE=$("$BIN" --home "$W/alice" device add "$W/laptop.req" --name laptop \
  --store "$W/store.json" --out "$W/laptop.reply" --code "$REQ_CODE" | code)
"$BIN" --home "$W/laptop" device import "$W/laptop.reply" --code "$REPLY_CODE" >/dev/null
"$BIN" store accept --config "$W/store.toml" "$W/laptop.record" >/dev/null

echo "Store benchmark: $COUNT PGP/MIME messages of about $((SIZE / 1024)) KB"
"$LOAD" populate "$IMAP" alice secret Bench "$W/alice/openpgp.asc" "$COUNT" "$SIZE"
FETCH='UID FETCH 1:* (BODY.PEEK[])'
RECRYPT='UID FETCH 1:* (BODY.PEEK[] X-MESH-RECRYPT)'
best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }
read -r a1 _ < <("$LOAD" time "$IMAP" alice secret Bench "$FETCH")
read -r a2 _ < <("$LOAD" time "$IMAP" alice secret Bench "$FETCH")
read -r b1 _ < <("$LOAD" time "$SPORT" alice secret Bench "$FETCH")
read -r b2 _ < <("$LOAD" time "$SPORT" alice secret Bench "$FETCH")
DEV=("$STORE_LOAD" "127.0.0.1:$STLS" "$W/store-certs/cert.pem" "$W/laptop" alice secret Bench)
read -r c1 _ _ < <("${DEV[@]}" "$FETCH")
read -r c2 _ _ < <("${DEV[@]}" "$FETCH")
read -r d1 _ n1 < <("${DEV[@]}" "$RECRYPT")
read -r d2 _ n2 < <("${DEV[@]}" "$RECRYPT")
A=$(best "$a1" "$a2"); B=$(best "$b1" "$b2"); C=$(best "$c1" "$c2"); D=$(best "$d1" "$d2")
[ "$n1" = "$COUNT" ] && [ "$n2" = "$COUNT" ] || { echo "expected $COUNT partial answers, got $n1/$n2"; exit 1; }
RSS=$(awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$STORE/status")
r() { python3 -c "print(f'{$1 / $2:.2f}')"; }
printf '  A. Dovecot direct                        %6.3f s\n' "$A"
printf '  B. through the store (plain client)       %6.3f s  (%sx)\n' "$B" "$(r "$B" "$A")"
printf '  C. as a device over TLS, no item          %6.3f s  (%sx)\n' "$C" "$(r "$C" "$A")"
printf '  D. as a device with X-MESH-RECRYPT        %6.3f s  (%sx), %s partial answers\n' "$D" "$(r "$D" "$A")" "$n1"
# Messages with partials per second through the store for one device (D's throughput; the
# difference D - C is within the noise of one run, so it is not divided by).
PPS=$(python3 -c "print(int($COUNT / $D))")
printf '  the store peak RSS                        %6s MB\n' "$RSS"
echo "store hop_ratio=$(r "$B" "$A") device_tls_ratio=$(r "$C" "$A") recrypt_ratio=$(r "$D" "$A") partials_per_s=$PPS peak_rss_mb=$RSS"

# What the store sustains with 1, 10 and 100 enrolled devices reading at once: each device its
# own TLS connection and login, the messages split between them by UID, every message with
# X-MESH-RECRYPT (the store looks the device's share up again for each one). All log in first;
# the wall time runs from the moment they are told to go to the last answer.
enrolled=1
enrol_up_to() {
  while [ "$enrolled" -lt "$1" ]; do
    enrolled=$((enrolled + 1))
    local d="$W/dev$enrolled"
    local rc
    rc=$("$BIN" --home "$d" device request --out "$d.req" | code)
    rc=$("$BIN" --home "$W/alice" device add "$d.req" --name "dev$enrolled" \
      --out "$d.reply" --code "$rc" | code)
    "$BIN" --home "$d" device import "$d.reply" --code "$rc" >/dev/null
    "$BIN" store accept --config "$W/store.toml" "$d.record" >/dev/null
  done
}
home_of() { if [ "$1" = 1 ]; then echo "$W/laptop"; else echo "$W/dev$1"; fi; }
together() { # N ITEMS: prints the wall time and the partial answers counted
  local n=$1 items=$2 per=$(( (COUNT + $1 - 1) / $1 )) start end i
  local go="$W/go"
  rm -f "$go" "$go".ready.*
  for i in $(seq 1 "$n"); do
    local lo=$(( (i - 1) * per + 1 )) hi=$(( i * per ))
    [ "$hi" -gt "$COUNT" ] && hi=$COUNT
    STORE_LOAD_GO="$go" "$STORE_LOAD" "127.0.0.1:$STLS" "$W/store-certs/cert.pem" "$(home_of "$i")" \
      alice secret Bench "UID FETCH $lo:$hi ($items)" > "$W/together.$i" &
  done
  local waited=0
  while [ "$(find "$W" -maxdepth 1 -name 'go.ready.*' | wc -l)" -lt "$n" ]; do
    sleep 0.01
    waited=$((waited + 1))
    [ "$waited" -lt 6000 ] || { echo "devices not logged in after 60 s" >&2; exit 1; }
  done
  start=$(date +%s.%N)
  touch "$go"
  wait
  end=$(date +%s.%N)
  echo "$(python3 -c "print($end - $start)") $(cat "$W"/together.* | awk '{s += $3} END {print s}')"
  rm -f "$W"/together.* "$go" "$go".ready.*
}
SUMMARY="store_devices"
echo "  devices reading at once (the $COUNT messages split between them):"
for N in 1 10 100; do
  enrol_up_to "$N"
  read -r p1 _ < <(together "$N" "BODY.PEEK[]")
  read -r p2 _ < <(together "$N" "BODY.PEEK[]")
  read -r q1 m1 < <(together "$N" "BODY.PEEK[] X-MESH-RECRYPT")
  read -r q2 m2 < <(together "$N" "BODY.PEEK[] X-MESH-RECRYPT")
  [ "$m1" = "$COUNT" ] && [ "$m2" = "$COUNT" ] || { echo "expected $COUNT partial answers with $N devices, got $m1/$m2"; exit 1; }
  P=$(best "$p1" "$p2"); Q=$(best "$q1" "$q2")
  RATE=$(python3 -c "print(int($COUNT / $Q))")
  printf '    %3d devices: %6.3f s without the item, %6.3f s with it: %s messages with partials/s\n' "$N" "$P" "$Q" "$RATE"
  SUMMARY="$SUMMARY partials_per_s_$N=$RATE"
done
RSS=$(awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$STORE/status")
echo "$SUMMARY peak_rss_mb=$RSS"
