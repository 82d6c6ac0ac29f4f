#!/usr/bin/env bash
# The local cluster profile: 3 Kafka brokers (KRaft, 3 controller voters), one ZooKeeper 3.9 and ClickHouse
# 2 shards x 2 replicas (four clickhouse-server processes), all under var/cluster/, configs rendered from
# deploy/cluster/cityops.yaml (python -m pipeline.deploy render local). Ports: CITYOPS_CLUSTER_BASE_PORT
# (default 21000) + the offsets in pipeline/deploy.py.
#   cluster.sh up       start what is not running, wait until every node answers, create the topics, migrate
#   cluster.sh down     stop what this profile started (pid files under var/cluster), nothing else
#   cluster.sh status   each process, its pid and resident memory; exit 3 when any is not running
#   cluster.sh env      the CITYOPS_* settings that point cityops at the cluster (eval "$(cluster.sh env)")
#   cluster.sh run-with CMD...   up, CMD with those settings, then down when this call started the profile
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="$ROOT/deploy/local"
CL="$VAR/cluster"
BASE="${CITYOPS_CLUSTER_BASE_PORT:-21000}"
ZK_LIBS="$CL/zookeeper-libs"
KAFKA_LIBS="$VAR/kafka/libs"
NODES="$CL/nodes.txt"
CLUSTER_HEAP_KAFKA="${CITYOPS_CLUSTER_KAFKA_HEAP:-384m}"
CLUSTER_HEAP_ZK="${CITYOPS_CLUSTER_ZOOKEEPER_HEAP:-128m}"

marker_of() {  # KIND DIR: the config file on the process's command line (how we know the pid is ours)
  case "$1" in zookeeper) echo "$2/zoo.cfg" ;; kafka) echo "$2/server.properties" ;; clickhouse) echo "$2/config.xml" ;; esac
}

bootstrap() { awk '$1 == "kafka" {printf "%s127.0.0.1:%s", (n++ ? "," : ""), $3}' "$NODES"; }

env_lines() {
  echo "export CITYOPS_KAFKA_BOOTSTRAP=$(bootstrap)"
  echo "export CITYOPS_CLICKHOUSE_PORT=$(awk '$1 == "clickhouse" {print $3; exit}' "$NODES")"
  echo "export CITYOPS_CLICKHOUSE_HTTP_PORT=$(awk '$1 == "clickhouse" {print $4; exit}' "$NODES")"
  # the sink's nodes, s1r1 first: it moves to the next when the one it writes through is unreachable
  echo "export CITYOPS_CLICKHOUSE_NODES=$(awk '$1 == "clickhouse" {printf "%s127.0.0.1:%s:%s", (n++ ? "," : ""), $3, $4}' "$NODES")"
  echo "export CITYOPS_CLUSTER=cityops"
}

fetch_zookeeper() {
  [ -f "$ZK_LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch the ZooKeeper jars: apt-get install maven"; exit 1; }
  log "fetching ZooKeeper jars from Maven Central into $ZK_LIBS"
  rm -rf "$ZK_LIBS"; mkdir -p "$ZK_LIBS"
  mvn -q -B -f "$D/zookeeper-pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$ZK_LIBS" -DincludeScope=runtime -Dmaven.repo.local="$VAR/m2" >&2
  touch "$ZK_LIBS/.complete"
}

start_zookeeper() {  # PORT DIR
  local port="$1" dir="$2" pidfile="$2/pid"
  if pid_alive "$pidfile" "$dir/zoo.cfg"; then return 0; fi
  if port_open "$port"; then log "zookeeper: port $port is taken by a process we did not start"; exit 1; fi
  mkdir -p "$dir/data" "$dir/logs"
  log "zookeeper: starting on 127.0.0.1:$port"
  nohup java -Xms64m "-Xmx$CLUSTER_HEAP_ZK" -Djava.awt.headless=true "-Dlogback.configurationFile=$dir/logback.xml" \
        -Dzookeeper.admin.enableServer=false -cp "$ZK_LIBS/*" org.apache.zookeeper.server.quorum.QuorumPeerMain \
        "$dir/zoo.cfg" >> "$dir/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  await_exec "$pidfile" "$dir/zoo.cfg" || true
}

kafka_java_opts() {  # DIR
  echo "-Xms128m -Xmx$CLUSTER_HEAP_KAFKA -XX:+UseG1GC -Djava.awt.headless=true -Dlog4j.configuration=file:$1/log4j.properties -Dkafka.logs.dir=$1/logs"
}

start_kafka() {  # ID PORT DIR
  local port="$2" dir="$3" pidfile="$3/pid"
  if pid_alive "$pidfile" "$dir/server.properties"; then return 0; fi
  if port_open "$port"; then log "kafka-$1: port $port is taken by a process we did not start"; exit 1; fi
  mkdir -p "$dir/data" "$dir/logs"
  # shellcheck disable=SC2046  # the options are words on purpose
  if [ ! -f "$dir/data/meta.properties" ]; then
    java $(kafka_java_opts "$dir") -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$(cat "$CL/kafka-cluster-id")" \
         -c "$dir/server.properties" >> "$dir/logs/format.log" 2>&1
  fi
  log "kafka-$1: starting on 127.0.0.1:$port"
  # shellcheck disable=SC2046
  nohup java $(kafka_java_opts "$dir") -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
        >> "$dir/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  await_exec "$pidfile" "$dir/server.properties" || true
}

start_clickhouse() {  # NAME PORT DIR SERVER
  local port="$2" dir="$3" server="$4" pidfile="$3/pid"
  if pid_alive "$pidfile" "$dir/config.xml"; then return 0; fi
  if port_open "$port"; then log "clickhouse-$1: port $port is taken by a process we did not start"; exit 1; fi
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/logs"
  log "clickhouse-$1: starting on 127.0.0.1:$port"
  # shellcheck disable=SC2086  # "$server" may be "clickhouse server": two words on purpose
  nohup $server --config-file="$dir/config.xml" >> "$dir/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  await_exec "$pidfile" "$dir/config.xml" || true
}

wait_for() {  # NAME PIDFILE MARKER SECONDS CMD...: until CMD succeeds; fail when the process exits or time runs out
  local name="$1" pidfile="$2" marker="$3" seconds="$4" i; shift 4
  for i in $(seq 1 "$((seconds * 2))"); do
    if ! pid_alive "$pidfile" "$marker"; then
      log "$name: exited during start; see $(dirname "$pidfile")/logs"
      tail -n 5 "$(dirname "$pidfile")"/logs/*.log >&2 || true; exit 1
    fi
    if "$@" 2>/dev/null; then log "$name: ready"; return 0; fi
    sleep 0.5
  done
  log "$name: did not answer within $seconds s; see $(dirname "$pidfile")/logs"; exit 1
}

# `srvr` answers with the server's mode only once it serves (`ruok` says imok before that).
zk_ok() { (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && grep -q '^Mode: ' <&3); }

up() {
  local t0=$SECONDS kind a b c dir server starting=()
  mkdir -p "$CL"
  "$PYTHON" -m pipeline.deploy render local "$CL" --base-port "$BASE" \
            --password "${CITYOPS_CLICKHOUSE_PASSWORD:-}" > "$NODES"
  fetch_zookeeper
  bash "$D/kafka.sh" fetch
  server="$(bash "$D/clickhouse.sh" binary)" || { log "no clickhouse-server: apt-get install clickhouse-server"; exit 1; }
  [ -f "$CL/kafka-cluster-id" ] || java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1 > "$CL/kafka-cluster-id"
  while read -r kind a b c dir <&9; do
    case "$kind" in
      zookeeper) dir="$b"; start_zookeeper "$a" "$dir"
                 wait_for zookeeper "$dir/pid" "$dir/zoo.cfg" 60 zk_ok "$a" ;;
      kafka) start_kafka "$a" "$b" "$dir" & starting+=($!) ;;   # formatting takes seconds: in parallel
      clickhouse) start_clickhouse "$a" "$b" "$dir" "$server" ;;
    esac
  done 9< "$NODES"
  wait "${starting[@]}"
  while read -r kind a b c dir <&9; do
    case "$kind" in
      kafka) wait_for "kafka-$a" "$dir/pid" "$dir/server.properties" 120 \
                      "$PYTHON" "$D/ready.py" kafka "127.0.0.1:$b" "$(grep -c '^kafka ' "$NODES")" ;;
      clickhouse) wait_for "clickhouse-$a" "$dir/pid" "$dir/config.xml" 60 \
                           "$PYTHON" "$D/ready.py" clickhouse "127.0.0.1:$b" zookeeper ;;
    esac
  done 9< "$NODES"
  log "cluster: every node answers ($((SECONDS - t0)) s)"
  (eval "$(env_lines)"; "$PYTHON" -m pipeline.cli topics create >&2
   "$PYTHON" -m pipeline.cli db migrate --cluster cityops >&2)
  log "cluster: up in $((SECONDS - t0)) s"
}

down() {
  [ -f "$NODES" ] || { log "cluster: never started here"; return 0; }
  local kind a b c dir name wanted
  # ClickHouse first (it writes to ZooKeeper), then the brokers, ZooKeeper last.
  for wanted in clickhouse kafka zookeeper; do
    while read -r kind a b c dir <&9; do
      [ "$kind" = "$wanted" ] || continue
      if [ "$kind" = zookeeper ]; then dir="$b"; name=zookeeper; else name="$kind-$a"; fi
      stop_pid "$dir/pid" "$(marker_of "$kind" "$dir")" "$name" &
    done 9< "$NODES"
    wait
  done
}

status() {
  [ -f "$NODES" ] || { echo "cluster: never started here"; return 3; }
  local kind a b c dir rc=0 pid rss total=0
  while read -r kind a b c dir <&9; do
    [ "$kind" = zookeeper ] && { dir="$b"; b="$a"; a=""; }
    if pid_alive "$dir/pid" "$(marker_of "$kind" "$dir")"; then
      pid="$(cat "$dir/pid")"; rss="$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status")"
      total=$((total + rss))
      echo "$kind${a:+ $a}: running (pid $pid, ${rss} MB resident) on 127.0.0.1:$b"
    else
      echo "$kind${a:+ $a}: stopped"; rc=3
    fi
  done 9< "$NODES"
  echo "cluster: ${total} MB resident in all"
  return $rc
}

# A global, not a local: the EXIT trap runs after run_with has returned.
STARTED_CLUSTER=0
cleanup() { if [ "$STARTED_CLUSTER" = 1 ]; then down || true; fi; }

run_with() {  # as stack.sh run-with, on the cluster (what `make cluster-run` does)
  local rc=0
  status >/dev/null 2>&1 || STARTED_CLUSTER=1
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  up
  (eval "$(env_lines)"; "$@") || rc=$?
  return $rc
}

case "${1:-}" in
  up) up ;;
  run-with) shift; run_with "$@" ;;
  down) down ;;
  status) status ;;
  env) [ -f "$NODES" ] || "$PYTHON" -m pipeline.deploy render local "$CL" --base-port "$BASE" > "$NODES"; env_lines ;;
  *) echo "usage: $0 up|down|status|env|run-with CMD..." >&2; exit 2 ;;
esac
