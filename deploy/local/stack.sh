#!/usr/bin/env bash
# The local stack: Kafka (KRaft) + ClickHouse, and the cityops topics and schema.
#   stack.sh up | down | status
#   stack.sh run-with CMD...   start what is not running, run CMD, stop only what this call started
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="$ROOT/deploy/local"

up() {
  bash "$D/clickhouse.sh" start
  bash "$D/kafka.sh" start
  "$PYTHON" -m pipeline.cli topics create >&2
  "$PYTHON" -m pipeline.cli db migrate >&2
}

down() {
  bash "$D/kafka.sh" stop
  bash "$D/clickhouse.sh" stop
}

# Globals, not locals: the EXIT trap runs after run_with has returned.
STARTED_KAFKA=0
STARTED_CH=0
cleanup() {
  if [ "$STARTED_KAFKA" = 1 ]; then bash "$D/kafka.sh" stop || true; fi
  if [ "$STARTED_CH" = 1 ]; then bash "$D/clickhouse.sh" stop || true; fi
}

run_with() {
  local rc=0
  bash "$D/clickhouse.sh" status >/dev/null 2>&1 || STARTED_CH=1
  bash "$D/kafka.sh" status >/dev/null 2>&1 || STARTED_KAFKA=1
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  up
  "$@" || rc=$?
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) bash "$D/kafka.sh" status || true; bash "$D/clickhouse.sh" status || true ;;
  run-with) shift; run_with "$@" ;;
  *) echo "usage: $0 up|down|status|run-with CMD..." >&2; exit 2 ;;
esac
