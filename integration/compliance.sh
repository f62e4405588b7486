#!/usr/bin/env bash
# Dovecot's imaptest compliance suite, run three ways against one private Dovecot:
#   1. straight to Dovecot (the baseline),
#   2. through meshmail, logged in as a user meshmail does not map ("other login"),
#   3. through meshmail, logged in as the mapped account (alice, with her key store).
# and the three summaries printed side by side.
#
# imaptest is not packaged in Debian; build it from its source (branch release-2.3) against
# Debian's dovecot-dev, outside this repository, then:
#   make compliance IMAPTEST=/path/to/imaptest [IMAPTEST_TESTS=/path/to/imaptest/tests]
# The README says how it was built here and what the differences mean.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAPTEST="${IMAPTEST:?set IMAPTEST=/path/to/imaptest}"
TESTS="${IMAPTEST_TESTS:-$(dirname "$IMAPTEST")/tests}"
[ -x "$IMAPTEST" ] || { echo "imaptest not found at $IMAPTEST"; exit 1; }
[ -d "$TESTS" ] || { echo "imaptest's tests not found at $TESTS (set IMAPTEST_TESTS)"; exit 1; }
BIN="${MESHMAIL:-$PWD/target/debug/meshmail}"
W="$(mktemp -d /tmp/mm-compliance-XXXXXX)"
chmod 755 "$W"  # the mail servers run as other users
OUT="${COMPLIANCE_OUT:-$W/out}"
mkdir -p "$OUT"
MM=""
cleanup() {
  [ -n "$MM" ] && kill "$MM" 2>/dev/null || true
  bash integration/servers/stop.sh "$W/srv" >/dev/null 2>&1 || true
  [ -z "${COMPLIANCE_OUT:-}" ] && rm -rf "$W"
}
trap cleanup EXIT
USERS="alice bob carol dave erin" source integration/servers/alice_imap.sh
RUST_LOG=meshmail=info "$BIN" serve --config "$W/meshmail.toml" >/dev/null 2>"$OUT/meshmail.log" & MM=$!
wait_port "$PORT"

# One run of the whole suite; its output is kept, its three summary lines returned.
suite() { # name port user user2
  (cd "$W" && timeout 600 "$IMAPTEST" host=127.0.0.1 port="$2" user="$3" pass=secret \
    user2="$4" test="$TESTS") >"$OUT/$1.log" 2>&1 || true
  grep -E "^(\d+ test groups|[0-9]+ test groups|base protocol|extensions):" "$OUT/$1.log" \
    || echo "no summary (see $OUT/$1.log)"
}
declare -A RESULT
RESULT[direct]=$(suite direct "$IMAP" dave erin)
RESULT[other]=$(suite other "$PORT" bob carol)
RESULT[mapped]=$(suite mapped "$PORT" alice carol)

printf '%-28s %-22s %-22s %-22s\n' "imaptest" \
  "Dovecot directly" "meshmail, other login" "meshmail, mapped"
for i in 1 2 3; do
  row() { sed -n "${i}p" <<<"${RESULT[$1]}" | sed -E 's/^([^:]*): //; s/ individual commands failed/ failed/; s/ skipped due to missing capabilities/ skipped/'; }
  label=$(sed -n "${i}p" <<<"${RESULT[direct]}" | cut -d: -f1 | sed -E 's/^[0-9]+ //')
  printf '%-28s %-22s %-22s %-22s\n' "$label" "$(row direct)" "$(row other)" "$(row mapped)"
done
# Which tests failed, per run (imaptest names the test file and the command).
for run in direct other mapped; do
  failed=$(grep -E "^\*\*\* Test |^Error: |failed:" "$OUT/$run.log" | head -40 || true)
  if [ -n "$failed" ]; then
    echo "--- $run: failures"
    echo "$failed"
  fi
done
if [ -n "${COMPLIANCE_OUT:-}" ]; then echo "logs: $OUT"; fi
