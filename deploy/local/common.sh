# Shared settings and helpers for the local stack scripts (sourced, not run).
# Every path is under $CITYOPS_VAR (default: <repo>/var); every port can be overridden.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VAR="${CITYOPS_VAR:-$ROOT/var}"
KAFKA_PORT="${CITYOPS_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${CITYOPS_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP="${CITYOPS_KAFKA_HEAP:-768m}"
CH_PORT="${CITYOPS_CLICKHOUSE_PORT:-19000}"
CH_HTTP_PORT="${CITYOPS_CLICKHOUSE_HTTP_PORT:-18123}"
PYTHON="${CITYOPS_PYTHON:-$ROOT/.venv/bin/python}"

log() { printf '[cityops-local] %s\n' "$*" >&2; }

# pid_alive PIDFILE MARKER: true when the pid in PIDFILE runs and its command line contains MARKER
# (so a pid reused by an unrelated process is never mistaken for ours).
pid_alive() {
  local pidfile="$1" marker="$2" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# await_exec PIDFILE MARKER: a server just started with `&` is, for a moment, still the forked shell, whose
# command line is this script's, not the server's (seen on one start in six on a busy machine). Wait up to
# 10 s for the exec; false when the process is gone or still not the server by then.
await_exec() {
  local pidfile="$1" marker="$2" pid i
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -n "$pid" ] || return 1
  for i in $(seq 1 100); do
    pid_alive "$pidfile" "$marker" && return 0
    [ -r "/proc/$pid/cmdline" ] || return 1
    sleep 0.1
  done
  return 1
}

# stop_pid PIDFILE MARKER NAME: TERM the process we started, KILL it after 30 s, remove the pid file.
stop_pid() {
  local pidfile="$1" marker="$2" name="$3" pid i
  if ! pid_alive "$pidfile" "$marker"; then
    rm -f "$pidfile"; log "$name: not running"; return 0
  fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 60); do
    pid_alive "$pidfile" "$marker" || break
    sleep 0.5
  done
  if pid_alive "$pidfile" "$marker"; then
    log "$name: still running after 30 s, killing $pid"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5
  fi
  rm -f "$pidfile"; log "$name: stopped"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
