#!/usr/bin/env bash
# IMAP benchmark (`make bench`): figures are printed, not asserted.
#
# 1,000 PGP/MIME messages of about 20 KB (encrypted to Alice's X25519 key) in a real Dovecot.
#   A. `UID FETCH 1:* (BODY.PEEK[])` straight from Dovecot: the baseline (ciphertext);
#   G. arrival: the messages are delivered to INBOX while `serve` runs (a client logged in
#      once, so the indexer has a login); once the indexer has them, the client's first FETCH;
#   H. the indexer's throughput: a restart with an empty index, a catch-up of 1,000 messages;
#   B. cold through meshmail with the indexer off (nothing decrypted yet), then warm;
#   C. a Thunderbird-style header sync, warm; D. a BODY search;
#   E. a first header sync with an empty index and the indexer off, then the search;
#   F. mbsync pulling 10,000 messages (SYNC_COUNT) into an empty Maildir.
# Then meshmail's peak RSS and the p50/p99 time to decrypt one message (from its debug log).
# Last, one summary line:
#   imap arrival_ratio=A cold_ratio=C header_sync_empty_ratio=H index_msgs_per_s=I peak_rss_mb=R
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT="${COUNT:-1000}"
SIZE="${SIZE:-20480}"
BIN="$PWD/target/release/meshmail"
LOAD="$PWD/target/release/examples/imap_load"
W="$(mktemp -d /tmp/mm-ib-XXXXXX)"
chmod 755 "$W"  # the mail servers run as other users
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  bash integration/servers/stop.sh "$W/srv" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
hwm_mb() { awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
PEAK=0
note_peak() { PEAK=$(python3 -c "print(max($PEAK, $(hwm_mb "$1")))"); }
IMAP_EXTRA="cache_bytes = 268435456" source integration/servers/alice_imap.sh
# The same account with the indexer off: what a client faster than the indexer meets.
sed 's/^\[imap\]$/[imap]\nindexer = false/' "$W/meshmail.toml" > "$W/meshmail-noindexer.toml"
MM=""
start_meshmail() { # config log-level
  [ -n "$MM" ] && { kill "$MM"; wait "$MM" 2>/dev/null || true; }
  RUST_LOG="meshmail=$2" "$BIN" serve --config "$1" >/dev/null 2>>"$W/meshmail.log" & MM=$!
  PIDS+=($MM)
  wait_port "$PORT"
}
stop_meshmail() { note_peak "$MM"; kill "$MM"; wait "$MM" 2>/dev/null || true; MM=""; }
# Waits until the indexer's log says it indexed N messages of MAILBOX in all; prints the last
# "caught up" line's per_second.
wait_indexed() { # mailbox count
  python3 - "$W/meshmail.log" "$1" "$2" <<'PY'
import re, sys, time
log, mailbox, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + 600
while time.time() < deadline:
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(log).read())
    lines = [l for l in text.splitlines() if "IMAP index caught up" in l and re.search(r'mailbox="?%s"?\b' % re.escape(mailbox), l)]
    done = sum(int(re.search(r"indexed=(\d+)", l).group(1)) for l in lines)
    if done >= want:
        print(re.search(r'per_second="?(\d+)', lines[-1]).group(1))
        sys.exit(0)
    time.sleep(0.2)
sys.exit("the indexer did not catch up")
PY
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

echo "IMAP benchmark: $COUNT PGP/MIME messages of about $((SIZE / 1024)) KB"
"$LOAD" populate "$IMAP" alice secret Bench "$W/alice/openpgp.asc" "$COUNT" "$SIZE"

FETCH='UID FETCH 1:* (BODY.PEEK[])'
HEADERS='UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID Content-Type)])'
SEARCH='UID SEARCH BODY xylophone'
read -r direct dbytes < <("$LOAD" time "$IMAP" alice secret Bench "$FETCH")
read -r direct2 _ < <("$LOAD" time "$IMAP" alice secret Bench "$FETCH")
best_direct=$(python3 -c "print(min($direct, $direct2))")
# Dovecot's first header sync of the mailbox (it parses the headers and caches them), the
# baseline for meshmail's first sync; then a repeat, from Dovecot's cache.
read -r hdirect _ < <("$LOAD" time "$IMAP" alice secret Bench "$HEADERS")
read -r hdirect2 _ < <("$LOAD" time "$IMAP" alice secret Bench "$HEADERS")

# G. Arrival: meshmail runs, a client logs in once (the indexer starts with its login and
#    keeps INBOX in IDLE), the messages are delivered, the indexer decrypts them as they come.
start_meshmail "$W/meshmail.toml" debug
"$LOAD" time "$PORT" alice secret INBOX "NOOP" >/dev/null
"$LOAD" populate "$IMAP" alice secret INBOX "$W/alice/openpgp.asc" "$COUNT" "$SIZE"
wait_indexed INBOX "$COUNT" >/dev/null
read -r adirect _ < <("$LOAD" time "$IMAP" alice secret INBOX "$FETCH")
read -r adirect2 _ < <("$LOAD" time "$IMAP" alice secret INBOX "$FETCH")
adirect=$(python3 -c "print(min($adirect, $adirect2))")
before=$(grep -c "view built" "$W/meshmail.log" || true)
read -r arrival abytes < <("$LOAD" time "$PORT" alice secret INBOX "$FETCH")
after=$(grep -c "view built" "$W/meshmail.log" || true)
stop_meshmail

# H. The indexer's throughput: an empty index, a client selects Bench, the indexer catches up.
rm -rf "$W/alice/imap-index"
start_meshmail "$W/meshmail.toml" info
"$LOAD" time "$PORT" alice secret Bench "NOOP" >/dev/null
rate=$(wait_indexed Bench "$COUNT")
stop_meshmail

# B–D. The indexer off, an empty index: the cold path.
rm -rf "$W/alice/imap-index"
start_meshmail "$W/meshmail-noindexer.toml" debug
out=$("$LOAD" time "$PORT" alice secret Bench "$FETCH" "$FETCH" "$FETCH" "$HEADERS" "$SEARCH")
cold=$(sed -n 1p <<<"$out" | cut -d' ' -f1); mbytes=$(sed -n 1p <<<"$out" | cut -d' ' -f2)
warm=$(sed -n 3p <<<"$out" | cut -d' ' -f1); wbytes=$(sed -n 3p <<<"$out" | cut -d' ' -f2)
headers=$(sed -n 4p <<<"$out" | cut -d' ' -f1); hbytes=$(sed -n 4p <<<"$out" | cut -d' ' -f2)
search=$(sed -n 5p <<<"$out" | cut -d' ' -f1)
stop_meshmail

# E. A first header sync with an empty index and no time to pre-decrypt, then the search.
rm -rf "$W/alice/imap-index"
start_meshmail "$W/meshmail-noindexer.toml" info
out=$("$LOAD" time "$PORT" alice secret Bench "$HEADERS" "$SEARCH")
hcold=$(sed -n 1p <<<"$out" | cut -d' ' -f1)
scold=$(sed -n 2p <<<"$out" | cut -d' ' -f1)
stop_meshmail

printf '%-52s %8s %12s\n' "" "seconds" "bytes"
printf '%-52s %8s %12s\n' "A. direct from Dovecot (ciphertext)" "$best_direct" "$dbytes"
printf '%-52s %8s %12s  %sx of direct INBOX %s s (goal <= 1.5x); decryptions during it: %s\n' "G. first FETCH of mail that arrived while serving" "$arrival" "$abytes" "$(ratio "$arrival" "$adirect")" "$adirect" "$((after - before))"
printf '%-52s %8s msg/s (goal >= 2000)\n' "H. indexer catch-up, 1 client idle" "$rate"
printf '%-52s %8s %12s  %sx of A (goal <= 4x)\n' "B. through meshmail, cold, indexer off" "$cold" "$mbytes" "$(ratio "$cold" "$best_direct")"
printf '%-52s %8s %12s  %sx of A\n' "B. through meshmail, warm" "$warm" "$wbytes" "$(ratio "$warm" "$best_direct")"
printf '%-52s %8s %12s\n' "C. header sync through meshmail, warm" "$headers" "$hbytes"
printf '%-52s %8s\n' "D. UID SEARCH BODY (one hit) through meshmail" "$search"
printf '%-52s %8s  (repeated, from its cache: %s)\n' "E. first header sync straight from Dovecot" "$hdirect" "$hdirect2"
printf '%-52s %8s  %sx of Dovecot first sync (goal <= 4x), %sx of its repeat\n' "E. header sync, empty index, indexer off" "$hcold" "$(ratio "$hcold" "$hdirect")" "$(ratio "$hcold" "$hdirect2")"
printf '%-52s %8s\n' "E. then UID SEARCH BODY through meshmail" "$scold"
python3 - "$W/meshmail.log" <<'PY'
import re, sys
text = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[1]).read())
t = sorted(int(m.group(1)) for m in re.finditer(r"view built micros=(\d+)", text))
if t:
    p = lambda q: t[min(len(t) - 1, int(q * len(t)))] / 1000
    print(f"decryption per message: {len(t)} views, p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms")
PY
echo "meshmail peak RSS over the runs above: $PEAK MB (goal <= 120 MB)"

# F. mbsync (isync, Debian's) pulling a whole encrypted mailbox of SYNC_COUNT messages into an
#    empty Maildir: straight from Dovecot (ciphertext), then through a freshly started meshmail
#    (default cache, indexer on), with meshmail's peak RSS. Memory must not grow with the
#    number of messages. SYNC_COUNT=0 skips it.
SYNC_COUNT="${SYNC_COUNT:-10000}"
if [ "$SYNC_COUNT" -gt 0 ]; then
"$LOAD" populate "$IMAP" alice secret Sync "$W/alice/openpgp.asc" "$SYNC_COUNT" "$SIZE" >/dev/null
rm -rf "$W/alice/imap-index"
grep -v "^cache_bytes" "$W/meshmail.toml" > "$W/meshmail-sync.toml"; [ -n "${SYNC_CACHE:-}" ] && sed -i "s/^\[imap\]/[imap]\ncache_bytes = $SYNC_CACHE/" "$W/meshmail-sync.toml"
start_meshmail "$W/meshmail-sync.toml" info
mbsync_time() { # port dir
  mkdir -p "$2"
  cat > "$2.rc" <<RC
IMAPAccount a
Host 127.0.0.1
Port $1
User alice
Pass secret
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account a

MaildirStore local
Path $2/
Inbox $2/INBOX

Channel c
Far :remote:Sync
Near :local:Sync
Create Near
Sync Pull
SyncState *
RC
  local t0 t1
  t0=$(date +%s.%N)
  mbsync -q -c "$2.rc" c >/dev/null 2>"$2.err" || { echo "mbsync failed: $(cat "$2.err")"; exit 1; }
  t1=$(date +%s.%N)
  n=$(find "$2/Sync" -type f | wc -l)
  python3 -c "print(f'{$t1 - $t0:.1f} {$n}')"
}
read -r sdirect ndirect < <(mbsync_time "$IMAP" "$W/sync-direct")
read -r smesh nmesh < <(mbsync_time "$PORT" "$W/sync-meshmail")
printf '%-52s %8s s  %s messages\n' "F. mbsync, $SYNC_COUNT messages, straight from Dovecot" "$sdirect" "$ndirect"
printf '%-52s %8s s  %s messages  %sx of that (goal <= 4x)\n' "F. mbsync through meshmail (empty index)" "$smesh" "$nmesh" "$(ratio "$smesh" "$sdirect")"
echo "meshmail peak RSS during the mbsync run: $(hwm_mb "$MM") MB (goal <= 150 MB)"
stop_meshmail
fi

echo "imap arrival_ratio=$(ratio "$arrival" "$adirect") cold_ratio=$(ratio "$cold" "$best_direct") header_sync_empty_ratio=$(ratio "$hcold" "$hdirect") index_msgs_per_s=$rate peak_rss_mb=$PEAK"
