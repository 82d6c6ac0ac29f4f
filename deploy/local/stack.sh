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

run_with() {
  local started_kafka=0 started_ch=0 rc=0
  bash "$D/clickhouse.sh" status >/dev/null 2>&1 || started_ch=1
  bash "$D/kafka.sh" status >/dev/null 2>&1 || started_kafka=1
  cleanup() {
    [ "$started_kafka" = 1 ] && bash "$D/kafka.sh" stop || true
    [ "$started_ch" = 1 ] && bash "$D/clickhouse.sh" stop || true
  }
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
