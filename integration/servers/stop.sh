#!/usr/bin/env bash
# Stop the private Postfix + Dovecot instance started by start.sh ROOT BASE.
#
#   stop.sh ROOT
#
# Asks both masters to stop (postfix -c ROOT/postfix stop; SIGTERM to the
# Dovecot master from ROOT/dovecot/run/master.pid, which is what
# "doveadm stop" does), waits up to 15 s until no process of this instance is
# left, then SIGKILLs the rest.  Exit status 0 also when nothing was running.
#
# "Process of this instance" = a Postfix or Dovecot binary (/usr/lib/postfix/,
# /usr/sbin/dovecot, /usr/lib/dovecot/) whose working directory or root
# directory lies under ROOT (Postfix daemons chdir to ROOT/pfqueue, Dovecot to
# ROOT/dovecot/run, its login processes chroot to ROOT/dovecot/run/login, mail
# processes to ROOT/mail/USER), plus every descendant of the two masters.
# This finds orphans even when a pid file is stale, and never touches the
# system-wide daemons or another instance.
set -euo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

[ "$#" -eq 1 ] || { echo "usage: stop.sh ROOT" >&2; exit 2; }
ROOT="$1"
case "$ROOT" in
  /*) ;;
  *) echo "stop.sh: ROOT must be an absolute path (got '$ROOT')" >&2; exit 2 ;;
esac
[ -d "$ROOT" ] || exit 0
ROOT="$(cd "$ROOT" && pwd -P)"

PF_PIDFILE="$ROOT/pfqueue/pid/master.pid"
DV_PIDFILE="$ROOT/dovecot/run/master.pid"

# PID from a pid file if that process is alive and is the expected binary
# (guards against a stale file whose PID was reused).
master_pid() { # FILE EXE-PATTERN
  local pid exe
  [ -r "$1" ] || return 0
  pid="$(tr -dc '0-9' < "$1")"
  [ -n "$pid" ] || return 0
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 0
  # shellcheck disable=SC2254
  case "$exe" in $2) echo "$pid" ;; esac
}

# All live (non-zombie) processes of this instance, one PID per line.
instance_pids() {
  local masters
  masters="$( { master_pid "$PF_PIDFILE" '/usr/lib/postfix/*'
                master_pid "$DV_PIDFILE" '/usr/sbin/dovecot*'; } | tr '\n' ' ')"
  {
    # One find for the whole process table: exe, cwd and root links.
    find /proc -mindepth 2 -maxdepth 2 \( -name exe -o -name cwd -o -name root \) \
      -printf '%h\t%f\t%l\n' 2>/dev/null || true
    echo "--stat"
    # pid, ppid, state of every process (for descendants and zombies).
    ps -eo pid=,ppid=,stat= 2>/dev/null || true
  } | MASTERS="$masters" ROOTDIR="$ROOT" SELF="$$" awk -F'\t' '
    function under(p) { sub(/ \(deleted\)$/, "", p); return p == R || index(p, R "/") == 1 }
    BEGIN { R = ENVIRON["ROOTDIR"]; n = split(ENVIRON["MASTERS"], m, " ")
            for (i = 1; i <= n; i++) keep[m[i]] = 1 }
    $0 == "--stat" { stat = 1; FS = " "; next }
    !stat {
      pid = $1; sub(/^\/proc\//, "", pid)
      if ($2 == "exe") exe[pid] = $3; else if (under($3)) inroot[pid] = 1
      next
    }
    { $0 = $0; ppid[$1] = $2; st[$1] = $3 }
    END {
      for (p in inroot) {
        e = exe[p]
        if (e ~ /^\/usr\/lib\/postfix\// || e ~ /^\/usr\/sbin\/dovecot/ || e ~ /^\/usr\/lib\/dovecot\//)
          keep[p] = 1
      }
      # add descendants (fixpoint)
      do { added = 0
        for (p in ppid) if (!(p in keep) && (ppid[p] in keep)) { keep[p] = 1; added = 1 }
      } while (added)
      for (p in keep) if ((p in st) && st[p] !~ /^Z/ && p != ENVIRON["SELF"]) print p
    }'
}

pids="$(instance_pids)"
if [ -z "$pids" ]; then
  exit 0
fi

pf_master="$(master_pid "$PF_PIDFILE" '/usr/lib/postfix/*')"
dv_master="$(master_pid "$DV_PIDFILE" '/usr/sbin/dovecot*')"

# Both masters are stopped concurrently, by SIGTERM to the PID from their pid
# files.  That is exactly what "postfix -c ROOT/postfix stop" and
# "doveadm -c ... stop" do, but "postfix stop" then polls in whole seconds
# (sleep 1), which adds >= 1 s; polling ourselves every 0.1 s below is faster.
# The Postfix master terminates its children itself; so does Dovecot's.
if [ -n "$pf_master" ]; then
  kill -TERM "$pf_master" 2>/dev/null || true
fi
if [ -n "$dv_master" ]; then
  kill -TERM "$dv_master" 2>/dev/null || true
fi
# Orphans without a live master get SIGTERM directly.
if [ -z "$pf_master" ] && [ -z "$dv_master" ]; then
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
fi

deadline=$((SECONDS + 15))
while :; do
  pids="$(instance_pids)"
  [ -n "$pids" ] || break
  if (( SECONDS >= deadline )); then
    echo "stop.sh: still running after 15 s, sending SIGKILL to:" $pids >&2
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 50); do
      pids="$(instance_pids)"
      [ -n "$pids" ] || break
      sleep 0.1
    done
    break
  fi
  sleep 0.1
done

# Dovecot removes its own pid file; Postfix's stays (harmless, it is locked
# only while the master runs).
if [ -n "$pids" ]; then
  echo "stop.sh: could not stop:" $pids >&2
fi
exit 0
