#!/usr/bin/env bash
# POP3 benchmark (`make bench`): figures are printed, not asserted.
#
# 1,000 PGP/MIME messages of about 20 KB (encrypted to Alice's X25519 key) in a real Dovecot,
# downloaded by one client (LIST, then RETR of each message in turn):
#   A. straight from Dovecot's POP3 in plaintext, and over STLS: the baselines (ciphertext;
#      meshmail itself talks STLS to Dovecot, so the STLS figure is the one to compare with);
#   B. through meshmail, cold: a fresh process, nothing decrypted yet;
#   C. through meshmail, warm: the same process again (views cached; the ciphertext is still
#      read from the server, so the server's view of the maildrop stays right).
# Then meshmail's peak RSS. Last, one summary line:
#   pop3 cold_ratio=C warm_ratio=W cold_msgs_per_s=M peak_rss_mb=R     (ratios to STLS direct)
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT="${COUNT:-1000}"
SIZE="${SIZE:-20480}"
BIN="$PWD/target/release/meshmail"
IMAP_LOAD="$PWD/target/release/examples/imap_load"
LOAD="$PWD/target/release/examples/pop3_load"
W="$(mktemp -d /tmp/mm-pb-XXXXXX)"
chmod 755 "$W"  # the mail servers run as other users
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  bash integration/servers/stop.sh "$W/srv" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
# Room for every view: the warm run measures the cache, not its size.
IMAP_EXTRA="cache_bytes = 268435456
indexer = false" source integration/servers/alice_imap.sh
POP3=$((BASE + 10))
POP3_PORT=$(free_port)
cat >> "$W/meshmail.toml" <<TOML
[pop3]
listen = "127.0.0.1:$POP3_PORT"
upstream = "127.0.0.1:$POP3"
upstream_tls = "starttls"
upstream_ca = "$W/srv/tls/ca.pem"
TOML
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

echo "POP3 benchmark: $COUNT PGP/MIME messages of about $((SIZE / 1024)) KB"
"$IMAP_LOAD" populate "$IMAP" alice secret INBOX "$W/alice/openpgp.asc" "$COUNT" "$SIZE"

CA="$W/srv/tls/ca.pem"
read -r p1 dbytes n _ _ < <("$LOAD" "$POP3" alice secret)
read -r p2 _ _ pp50 pp99 < <("$LOAD" "$POP3" alice secret)
plain=$(python3 -c "print(min($p1, $p2))")
read -r d1 _ _ _ _ < <("$LOAD" "$POP3" alice secret "$CA")
read -r d2 _ _ dp50 dp99 < <("$LOAD" "$POP3" alice secret "$CA")
direct=$(python3 -c "print(min($d1, $d2))")
echo "A. Dovecot POP3 direct:     ${plain} s in plaintext, ${direct} s over STLS, for $n messages ($((dbytes / 1024)) KB); RETR p50 ${pp50} / ${dp50} ms, p99 ${pp99} / ${dp99} ms"

RUST_LOG="meshmail=info" "$BIN" serve --config "$W/meshmail.toml" >/dev/null 2>>"$W/meshmail.log" & MM=$!
PIDS+=($MM)
wait_port "$POP3_PORT"
read -r cold cbytes cn cp50 cp99 < <("$LOAD" "$POP3_PORT" alice secret)
read -r warm _ _ wp50 wp99 < <("$LOAD" "$POP3_PORT" alice secret)
peak=$(awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$MM/status")
kill "$MM"; wait "$MM" 2>/dev/null || true
echo "B. meshmail cold:           ${cold} s ($(ratio "$cold" "$direct")x STLS direct, $(ratio "$cold" "$plain")x plaintext) for $cn messages ($((cbytes / 1024)) KB decrypted), RETR p50 ${cp50} ms p99 ${cp99} ms"
echo "C. meshmail warm:           ${warm} s ($(ratio "$warm" "$direct")x STLS direct, $(ratio "$warm" "$plain")x plaintext), RETR p50 ${wp50} ms p99 ${wp99} ms"
echo "   meshmail peak RSS:       ${peak} MB"
echo "pop3 cold_ratio=$(ratio "$cold" "$direct") warm_ratio=$(ratio "$warm" "$direct") cold_msgs_per_s=$(python3 -c "print(round($cn / $cold))") peak_rss_mb=$peak"
