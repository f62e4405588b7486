#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the other.
#
#   integration/fuzz/run.sh [SECONDS] [TARGET...]      (SECONDS defaults to 60)
#
# Seeds come from corpus/<target>/ (committed, kept small); what the fuzzer finds goes to a
# scratch corpus, $SCRATCH/<target>/ (default target/fuzz-corpus/, not committed), which later
# runs start from. Crashes land in $ARTIFACTS/<target>/ (default artifacts/).
#
# Environment: SANITIZER (address|none, default address), NO_BUILD=1 (use the binaries as
# built), SCRATCH, ARTIFACTS, LOGS (default target/fuzz-logs/), NICE (default 19).
# Builds with -O so that Cargo.toml's [profile.release] decides debug assertions (on, except
# for mail-parser). Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -u

FUZZ_DIR=$(cd "$(dirname "$0")" && pwd)
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(imap_client imap_server view_mime decrypt submission filter_lmtp store_item enrolment pop3_session)
fi
SANITIZER=${SANITIZER:-address}
SCRATCH=${SCRATCH:-$FUZZ_DIR/target/fuzz-corpus}
ARTIFACTS=${ARTIFACTS:-$FUZZ_DIR/artifacts}
LOGS=${LOGS:-$FUZZ_DIR/target/fuzz-logs}
NICE=${NICE:-19}
TRIPLE=$(rustc +nightly -vV | sed -n 's/^host: //p')
BIN_DIR=$FUZZ_DIR/target/$TRIPLE/release

if [ "${NO_BUILD:-0}" != 1 ]; then
    (cd "$FUZZ_DIR/../.." &&
        nice -n "$NICE" cargo +nightly fuzz build -O --fuzz-dir "$FUZZ_DIR" -s "$SANITIZER") || exit 1
fi

status=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$SCRATCH/$t" "$ARTIFACTS/$t" "$LOGS"
    log=$LOGS/$t-$(date +%Y%m%d-%H%M%S).log
    before=$(ls "$ARTIFACTS/$t" | grep -cE '^(crash|oom|timeout|leak)-')
    # The scratch corpus comes first: libFuzzer writes new inputs to the first directory.
    TIMEFORMAT='%R %U %S'
    { time nice -n "$NICE" "$BIN_DIR/$t" "$SCRATCH/$t" "$FUZZ_DIR/corpus/$t" \
        -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 -timeout=60 \
        -artifact_prefix="$ARTIFACTS/$t/" -print_final_stats=1 >"$log" 2>&1; } 2>"$log.time"
    rc=$?
    read -r wall user sys <"$log.time"
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", u + s }')
    after=$(ls "$ARTIFACTS/$t" | grep -cE '^(crash|oom|timeout|leak)-')
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
    if [ -z "$runs" ]; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    fi
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
        crashed="yes: $(sed -n 's/.*Test unit written to //p' "$log" | tail -1) (exit $rc)"
        status=1
    else
        crashed=no
    fi
    echo "$t: runs=${runs:-?} seconds=${secs:-$wall} cpu=${cpu}s ${cov:+($cov) }crash=$crashed log=$log"
done
exit $status
