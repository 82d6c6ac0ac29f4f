#!/usr/bin/env bash
# A real single-node Apache Kafka broker in KRaft mode, from Maven Central's jars, data under var/kafka.
#   kafka.sh start | stop | status | fetch   (fetch: only the jars, which the cluster profile shares)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
K="$VAR/kafka"
LIBS="$K/libs"
PIDFILE="$K/kafka.pid"
MARKER="$K/server.properties"

fetch_jars() {
  [ -f "$LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven"; exit 1; }
  command -v java >/dev/null || { log "Java 17 is needed to run Kafka: apt-get install openjdk-17-jre-headless"; exit 1; }
  log "fetching Kafka jars from Maven Central into $LIBS"
  rm -rf "$LIBS"; mkdir -p "$LIBS"
  mvn -q -B -f "$ROOT/deploy/local/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$LIBS" -DincludeScope=runtime -Dmaven.repo.local="$VAR/m2" >&2
  touch "$LIBS/.complete"
}

write_config() {
  mkdir -p "$K/data" "$K/logs"
  cat > "$K/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$K/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
message.max.bytes=4194304
CONF
  cat > "$K/log4j.properties" <<CONF
log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$K/logs/server.log
log4j.appender.file.MaxFileSize=50MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
CONF
}

start() {
  if pid_alive "$PIDFILE" "$MARKER"; then log "kafka: already running (pid $(cat "$PIDFILE"))"; return 0; fi
  if port_open "$KAFKA_PORT"; then log "kafka: port $KAFKA_PORT is taken by a process we did not start"; exit 1; fi
  fetch_jars
  write_config
  local java_opts=(-Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true
                   "-Dlog4j.configuration=file:$K/log4j.properties" "-Dkafka.logs.dir=$K/logs")
  if [ ! -f "$K/data/meta.properties" ]; then
    log "kafka: formatting storage in $K/data"
    local cluster_id
    cluster_id="$(java "${java_opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    java "${java_opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format -t "$cluster_id" \
         -c "$K/server.properties" >> "$K/logs/format.log" 2>&1
  fi
  log "kafka: starting on 127.0.0.1:$KAFKA_PORT"
  nohup java "${java_opts[@]}" -cp "$LIBS/*" kafka.Kafka "$K/server.properties" \
        >> "$K/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  await_exec "$PIDFILE" "$MARKER" || true
  local i
  for i in $(seq 1 120); do
    if ! pid_alive "$PIDFILE" "$MARKER"; then log "kafka: exited during start; see $K/logs"; tail -20 "$K/logs/stdout.log" >&2 || true; exit 1; fi
    if "$PYTHON" "$ROOT/deploy/local/ready.py" kafka "127.0.0.1:$KAFKA_PORT" 2>/dev/null; then
      log "kafka: ready"; return 0
    fi
    sleep 1
  done
  log "kafka: did not answer within 120 s; see $K/logs"; exit 1
}

case "${1:-}" in
  start) start ;;
  fetch) fetch_jars ;;
  stop) stop_pid "$PIDFILE" "$MARKER" kafka ;;
  status) if pid_alive "$PIDFILE" "$MARKER"; then echo "kafka: running (pid $(cat "$PIDFILE")) on 127.0.0.1:$KAFKA_PORT"; else echo "kafka: stopped"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
