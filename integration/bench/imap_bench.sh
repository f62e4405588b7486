#!/usr/bin/env bash
# IMAP benchmark (`make bench`): figures are printed, not asserted.
#
# 1,000 PGP/MIME messages of about 20 KB (encrypted to Alice's X25519 key) in a real Dovecot.
#   A. `UID FETCH 1:* (BODY.PEEK[])` straight from Dovecot: the baseline (ciphertext);
#   B. the same through meshmail, cold (nothing decrypted yet), then warm (views cached);
#   C. a Thunderbird-style header sync through meshmail, warm;
#   D. a BODY search for a word that only one message's (encrypted) body holds;
#   E. a first header sync with an empty index (meshmail restarted), then the search.
# Then meshmail's peak RSS and the p50/p99 time to decrypt one message (from its debug log).
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
hwm() { awk '/VmHWM/{print $2/1024 " MB"}' "/proc/$1/status"; }
IMAP_EXTRA="cache_bytes = 268435456" source integration/servers/alice_imap.sh
RUST_LOG=meshmail=debug "$BIN" serve --config "$W/meshmail.toml" >/dev/null 2>"$W/meshmail.log" & MM=$!
PIDS+=($MM)
wait_port "$PORT"

echo "IMAP benchmark: $COUNT PGP/MIME messages of about $((SIZE / 1024)) KB"
"$LOAD" populate "$IMAP" alice secret Bench "$W/alice/openpgp.asc" "$COUNT" "$SIZE"

FETCH='UID FETCH 1:* (BODY.PEEK[])'
HEADERS='UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID Content-Type)])'
SEARCH='UID SEARCH BODY xylophone'
read -r direct dbytes < <("$LOAD" time "$IMAP" alice secret Bench "$FETCH")
read -r direct2 _ < <("$LOAD" time "$IMAP" alice secret Bench "$FETCH")
out=$("$LOAD" time "$PORT" alice secret Bench "$FETCH" "$FETCH" "$FETCH" "$HEADERS" "$SEARCH")
cold=$(sed -n 1p <<<"$out" | cut -d' ' -f1); mbytes=$(sed -n 1p <<<"$out" | cut -d' ' -f2)
warm=$(sed -n 3p <<<"$out" | cut -d' ' -f1); wbytes=$(sed -n 3p <<<"$out" | cut -d' ' -f2)
hbytes=$(sed -n 4p <<<"$out" | cut -d' ' -f2)
headers=$(sed -n 4p <<<"$out" | cut -d' ' -f1)
search=$(sed -n 5p <<<"$out" | cut -d' ' -f1)
best_direct=$(python3 -c "print(min($direct, $direct2))")
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
printf '%-44s %8s %12s\n' "" "seconds" "bytes"
printf '%-44s %8s %12s\n' "A. direct from Dovecot (ciphertext)" "$best_direct" "$dbytes"
printf '%-44s %8s %12s  %s of A (target <= 2x)\n' "B. through meshmail, cold" "$cold" "$mbytes" "$(ratio "$cold" "$best_direct")"
printf '%-44s %8s %12s  %s of A (target <= 1.2x)\n' "B. through meshmail, warm" "$warm" "$wbytes" "$(ratio "$warm" "$best_direct")"
printf '%-44s %8s %12s\n' "C. header sync through meshmail, warm" "$headers" "$hbytes"
printf '%-44s %8s\n' "D. UID SEARCH BODY (one hit) through meshmail" "$search"
python3 - "$W/meshmail.log" <<'PY'
import re, sys
text = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[1]).read())
t = sorted(int(m.group(1)) for m in re.finditer(r"view built micros=(\d+)", text))
if t:
    p = lambda q: t[min(len(t) - 1, int(q * len(t)))] / 1000
    print(f"decryption per message: {len(t)} views, p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms")
PY
echo "meshmail peak RSS: $(hwm "$MM") (target < 150 MB)"

# E. What Thunderbird's first sync of the mailbox costs: meshmail restarted with an empty index,
#    then the header sync (every message decrypted once), against the same sync straight from
#    Dovecot; then the body SEARCH, answered from what that sync indexed.
kill "$MM"; wait "$MM" 2>/dev/null || true
rm -rf "$W/alice/imap-index"
RUST_LOG=meshmail=info "$BIN" serve --config "$W/meshmail.toml" >/dev/null 2>>"$W/meshmail.log" & MM=$!
PIDS+=($MM)
wait_port "$PORT"
read -r hdirect _ < <("$LOAD" time "$IMAP" alice secret Bench "$HEADERS")
out=$("$LOAD" time "$PORT" alice secret Bench "$HEADERS" "$SEARCH")
hcold=$(sed -n 1p <<<"$out" | cut -d' ' -f1)
scold=$(sed -n 2p <<<"$out" | cut -d' ' -f1)
printf '%-44s %8s\n' "E. header sync straight from Dovecot" "$hdirect"
printf '%-44s %8s  %s of that\n' "E. header sync through meshmail, empty index" "$hcold" "$(ratio "$hcold" "$hdirect")"
printf '%-44s %8s\n' "E. then UID SEARCH BODY through meshmail" "$scold"
echo "meshmail peak RSS after a first sync: $(hwm "$MM")"

# F. mbsync (isync, Debian's) pulling a whole encrypted mailbox of SYNC_COUNT messages into an
#    empty Maildir: straight from Dovecot (ciphertext), then through a freshly started meshmail
#    (every message decrypted once), with meshmail's peak RSS. Memory must not grow with the
#    number of messages.
SYNC_COUNT="${SYNC_COUNT:-10000}"
"$LOAD" populate "$IMAP" alice secret Sync "$W/alice/openpgp.asc" "$SYNC_COUNT" "$SIZE" >/dev/null
kill "$MM"; wait "$MM" 2>/dev/null || true
rm -rf "$W/alice/imap-index"
# The default cache (64 MiB), not the benchmark's larger one above.
grep -v "^cache_bytes" "$W/meshmail.toml" > "$W/meshmail-sync.toml"; [ -n "${SYNC_CACHE:-}" ] && sed -i "s/^\[imap\]/[imap]\ncache_bytes = $SYNC_CACHE/" "$W/meshmail-sync.toml"
RUST_LOG=meshmail=info "$BIN" serve --config "$W/meshmail-sync.toml" >/dev/null 2>>"$W/meshmail.log" & MM=$!
PIDS+=($MM)
wait_port "$PORT"
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
printf '%-44s %8s s  %s messages\n' "F. mbsync, $SYNC_COUNT messages, straight from Dovecot" "$sdirect" "$ndirect"
printf '%-44s %8s s  %s messages  %s of that (target <= 4x)\n' "F. mbsync through meshmail (no index, default cache)" "$smesh" "$nmesh" "$(ratio "$smesh" "$sdirect")"
echo "meshmail peak RSS during the mbsync run: $(hwm "$MM") (target <= 150 MB)"
