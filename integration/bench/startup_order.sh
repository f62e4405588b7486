#!/usr/bin/env bash
# Writes src/startup.order: the functions of meshmail's own binary that `meshmail serve` runs
# while it starts and answers a first connection on each listener (SMTP in front of a live
# smtp-sink, and IMAP, as the idle figure of smtp_bench.sh measures), in the order callgrind
# first saw them. src/build.rs has the linker place them first, so an idle
# `serve` maps a few windows of code instead of most of it (see src/build.rs for the figures).
#
# Run it again after a toolchain or dependency update, or when the benchmark's line
# "startup order: found N of M" shows that many names are gone. Needs valgrind (a developer
# tool; the build and the tests do not).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "startup_order.sh needs valgrind (apt-get install valgrind)"; exit 1; }
cargo build --release --bin meshmail
BIN="$PWD/target/release/meshmail"
ORDER="$PWD/src/startup.order"
W="$(mktemp -d /tmp/meshmail-order-XXXXXX)"
SINK_PID=
trap 'pkill -f "$W/idle.toml" 2>/dev/null || true; [ -n "$SINK_PID" ] && kill "$SINK_PID"; rm -rf "$W"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Listening, found without connecting (the connections below are the only ones).
listening() { ss -ltnH "sport = :$1" | grep -q LISTEN; }

"$BIN" --home "$W/alice" init --address alice@example.test >/dev/null
SMTP=$(free_port); IMAP=$(free_port); SINK=$(free_port)
/usr/sbin/smtp-sink -u nobody "127.0.0.1:$SINK" 100 >/dev/null 2>&1 & SINK_PID=$!
cat > "$W/idle.toml" <<CONF
home = "$W/alice"
upstream_user = "alice"
[smtp]
listen = "127.0.0.1:$SMTP"
upstream = "127.0.0.1:$SINK"
upstream_tls = "none"
[policy]
dns = "127.0.0.1:1"
[encrypt]
default = "never"
[imap]
listen = "127.0.0.1:$IMAP"
upstream = "127.0.0.1:1"
upstream_tls = "none"
CONF
valgrind --tool=callgrind --callgrind-out-file="$W/callgrind.out" --compress-strings=no \
  --compress-pos=no --demangle=no "$BIN" serve --config "$W/idle.toml" >/dev/null 2>"$W/valgrind.log" &
VG=$!
for _ in $(seq 300); do listening "$SMTP" && listening "$IMAP" && break; sleep 0.2; done
listening "$SMTP" && listening "$IMAP" || { echo "serve never listened under valgrind"; cat "$W/valgrind.log"; exit 1; }
# A first client on each listener that connects and leaves, as a monitor's check would.
(echo > "/dev/tcp/127.0.0.1/$SMTP") 2>/dev/null; (echo > "/dev/tcp/127.0.0.1/$IMAP") 2>/dev/null
sleep 3
kill -TERM "$VG"; wait "$VG" || true

# Function names in order of first appearance, kept when the binary defines them as code.
nm "$BIN" | awk '$2 == "t" || $2 == "T" { print $3 }' | sort -u > "$W/text"
{
  echo "# Functions meshmail serve runs while starting, placed first by the linker (src/build.rs)."
  echo "# Made by integration/bench/startup_order.sh; names the binary no longer has are skipped."
  grep -E '^c?fn=' "$W/callgrind.out" | sed -E 's/^c?fn=//' | awk '!seen[$0]++' | grep -Fxf "$W/text"
} > "$ORDER"
echo "wrote $(grep -vc '^#' "$ORDER") names to $ORDER"
