"""Settings, read once from the environment into a frozen object.

Every variable is documented in the README ("Configuration"). Defaults fit the local stack started by
deploy/local (Kafka on 127.0.0.1:19092, ClickHouse on 127.0.0.1:19000).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.model import sources
from pipeline.model.sources import BY_NAME, SourceSpec, prefixed

ROOT = Path(__file__).resolve().parent.parent


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default) or default
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(allowed)}")
    return value


def _optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


Node = tuple[str, int, int | None]     # a ClickHouse node: host, native port, HTTP port (None: the usual guess)


def _nodes(text: str) -> tuple[Node, ...]:
    """CITYOPS_CLICKHOUSE_NODES: `host:port[:http_port],...` (empty: none)."""
    out = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not all(p.isdigit() for p in parts[1:]):
            raise ValueError(f"CITYOPS_CLICKHOUSE_NODES: {item!r} is not host:port or host:port:http_port")
        out.append((parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None))
    return tuple(out)


def _skew(text: str) -> float | None:
    return None if text in ("", "0", "off") else float(text)


def one_thread_math() -> None:
    """Numerical libraries use one thread unless told otherwise (benches: the figure is one core's); call it
    before numpy is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def lazy_driver_dates() -> None:
    """clickhouse-driver fills two tables of every date from 1900 to 2299 when it is imported, unless this names a
    range to fill ahead (not a range here: none): 0.15 CPU-s and 22 MiB of every worker process, a share of a
    restarted worker's start-up (issue #23). The lazy tables give the same dates, each computed on first use.
    Call it before clickhouse_driver is imported."""
    os.environ.setdefault("CLICKHOUSE_DRIVER_LASY_DATE_LUT", "lazy")   # (sic: the driver's spelling)


def environ() -> dict[str, str]:
    """A copy of this process's environment: what a child process (a worker, a bench's server) starts from."""
    return dict(os.environ)


@dataclass(frozen=True)
class Topics:
    """Kafka topic names (CONTRACTS.md); internal topics are ours to name."""

    raw_hotline: str = BY_NAME["hotline"].topic     # the input topics are pipeline.model.sources's
    raw_patrol: str = BY_NAME["patrol"].topic
    raw_iot: str = BY_NAME["iot"].topic
    case_updates: str = BY_NAME["case-updates"].topic
    assignments: str = "cityops.assignments"
    deadletter: str = "cityops.deadletter"
    unlocated: str = "cityops.unlocated"
    located: str = "cityops.located"      # internal: located reports and case updates, keyed by grid
    case_state: str = "cityops.case-state"  # the latest state of each case, keyed by case id (compacted)
    prefix: str = ""                        # the run's prefix of every name above (`with_prefix`)

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        """Every topic name prefixed (`<prefix>.cityops.raw.hotline`, ...): separate pipelines on one broker."""
        base = cls()
        if not prefix:
            return base
        return cls(prefix=prefix, **{f: f"{prefix}.{getattr(base, f)}" for f in cls.__dataclass_fields__
                                     if f != "prefix"})

    def sources(self) -> dict[str, SourceSpec]:
        """The input topics (with this run's prefix), each with its source: the rows of pipeline.model.sources."""
        return {prefixed(s.topic, self.prefix): s for s in sources.TABLE}

    def all(self) -> list[str]:
        return [self.raw_hotline, self.raw_patrol, self.raw_iot, self.case_updates,
                self.assignments, self.deadletter, self.unlocated, self.located, self.case_state]


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_username: str | None = None
    kafka_password: str | None = None
    kafka_ssl_cafile: str | None = None
    partitions: int = 4
    # copies of every topic cityops creates, changelogs included, and the min.insync.replicas it sets on them;
    # None: from the broker count (3 and 2 on 3+ brokers, else one per broker and 1). README "Running a city"
    replication_factor: int | None = None     # CITYOPS_REPLICATION_FACTOR
    min_insync_replicas: int | None = None    # CITYOPS_MIN_INSYNC_REPLICAS
    clickhouse_cluster: str | None = None     # CITYOPS_CLUSTER: `db migrate` / `db status` default --cluster
    # the sink's inserts through Distributed tables: synchronous (on their shards when the insert returns), and
    # with a quorum > 1 on that many replicas of the shard (README "Running a city: the cluster")
    insert_sync: bool = True                  # CITYOPS_INSERT_SYNC (0: ClickHouse's asynchronous default)
    insert_quorum: int = 0                    # CITYOPS_INSERT_QUORUM (0 or 1: off)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000
    # further nodes the sink may write through (after the host and port above, which it writes through first);
    # it moves to the next when the one it writes through is unreachable (clickhouse_node_settings)
    clickhouse_nodes: tuple[Node, ...] = ()   # CITYOPS_CLICKHOUSE_NODES
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    clickhouse_database: str = "cityops"
    clickhouse_secure: bool = False
    clickhouse_ca_certs: str | None = None
    var_dir: Path = ROOT / "var"
    app_id: str = "cityops"
    topic_prefix: str = ""
    topics: Topics = field(default_factory=Topics)
    production: bool = False              # CITYOPS_ENV=production
    # docs/cases.md §7.2: `wall` escalates by the wall clock (production and live operation), `stream` by each
    # case book's own input (replays, simulations at full speed, the bench, the tests), `live` the stream clock
    # through a backlog and the wall clock once caught up (`make run`: yesterday's history, then today live)
    sla_clock: str = "stream"
    sla_check_interval: float = 10.0      # seconds between wall-clock escalation checks of quiet books
    max_ahead_s: float = 300.0            # report times further ahead of the wall clock are dead letters
    # the notifier (pipeline/notify, README "Notifications")
    rules_path: Path = ROOT / "rules" / "hongkou.yaml"
    notify_targets: Path = ROOT / "deploy" / "notify" / "targets.yaml"
    notify_attempts: int = 10             # attempts per delivery before it is dead-lettered
    notify_backoff_s: float = 0.5         # the first retry's wait; doubled each time ...
    notify_backoff_cap_s: float = 30.0    # ... up to this
    notify_keep_days: float = 7.0         # finished deliveries are remembered (against replays) this long
    notify_secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)   # CITYOPS_NOTIFY_SECRET_*
    # Open311 `jurisdiction_id` this server answers for (its main website's host, as the spec suggests)
    open311_jurisdiction: str = "hongkou.sh.cn"
    # the worker (README "Configuration"); the grid and sensor registry files default to the shipped ones
    clickhouse_http_port: int | None = None   # CITYOPS_CLICKHOUSE_HTTP_PORT: 0 = native only; None = guess
    batch: int = 5000                     # CITYOPS_BATCH: records per fetch
    commit_interval_s: float = 0.5        # CITYOPS_COMMIT_INTERVAL
    max_pending: int = 100_000            # CITYOPS_MAX_PENDING: rows held before a checkpoint is forced
    fetch_partition_bytes: int = 8 * 1024 * 1024   # CITYOPS_FETCH_PARTITION_BYTES
    align_skew_s: float | None = 60.0     # CITYOPS_ALIGN_SKEW (`off`, `0` or empty: None, no alignment)
    align_idle_s: float = 2.0             # CITYOPS_ALIGN_IDLE
    align_stall_s: float = 30.0           # CITYOPS_ALIGN_STALL
    dlq_max_ratio: float = 0.5            # CITYOPS_DLQ_MAX_RATIO
    grid_path: Path | None = None         # CITYOPS_GRID
    sensors_path: Path | None = None      # CITYOPS_SENSORS
    pii_key: str = field(default="", repr=False)   # CITYOPS_PII_KEY (pipeline.model.privacy)
    # the web server (README "The web UI")
    web_port: int = 8080                  # CITYOPS_WEB_PORT (`cityops run`)
    web_users: Path | None = None         # CITYOPS_USERS
    web_secret: str = field(default="", repr=False)   # CITYOPS_SECRET
    web_due_soon_min: float = 120.0       # CITYOPS_WEB_DUE_SOON_MIN
    web_lookback_h: float = 72.0          # CITYOPS_WEB_LOOKBACK_H
    web_rate: float = 5.0                 # CITYOPS_WEB_RATE
    web_burst: float = 20.0               # CITYOPS_WEB_BURST

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        production = e.get("CITYOPS_ENV", "development") == "production"
        kafka_port = e.get("CITYOPS_KAFKA_PORT", "19092")
        return cls(
            kafka_bootstrap=e.get("CITYOPS_KAFKA_BOOTSTRAP", f"127.0.0.1:{kafka_port}"),
            kafka_security_protocol=e.get("CITYOPS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            kafka_sasl_mechanism=e.get("CITYOPS_KAFKA_SASL_MECHANISM") or None,
            kafka_username=e.get("CITYOPS_KAFKA_USERNAME") or None,
            kafka_password=e.get("CITYOPS_KAFKA_PASSWORD") or None,
            kafka_ssl_cafile=e.get("CITYOPS_KAFKA_SSL_CAFILE") or None,
            partitions=int(e.get("CITYOPS_PARTITIONS", "4")),
            replication_factor=_optional_int(e.get("CITYOPS_REPLICATION_FACTOR", "")),
            min_insync_replicas=_optional_int(e.get("CITYOPS_MIN_INSYNC_REPLICAS", "")),
            clickhouse_cluster=e.get("CITYOPS_CLUSTER") or None,
            insert_sync=e.get("CITYOPS_INSERT_SYNC", "1") not in ("0", "false", "no", "off"),
            insert_quorum=int(e.get("CITYOPS_INSERT_QUORUM") or 0),
            clickhouse_host=e.get("CITYOPS_CLICKHOUSE_HOST", "127.0.0.1"),
            clickhouse_port=int(e.get("CITYOPS_CLICKHOUSE_PORT", "19000")),
            clickhouse_nodes=_nodes(e.get("CITYOPS_CLICKHOUSE_NODES", "")),
            clickhouse_user=e.get("CITYOPS_CLICKHOUSE_USER", "default"),
            clickhouse_password=e.get("CITYOPS_CLICKHOUSE_PASSWORD", ""),
            clickhouse_database=e.get("CITYOPS_CLICKHOUSE_DATABASE", "cityops"),
            clickhouse_secure=e.get("CITYOPS_CLICKHOUSE_SECURE", "0") in ("1", "true", "yes"),
            clickhouse_ca_certs=e.get("CITYOPS_CLICKHOUSE_CA_CERTS") or None,
            var_dir=Path(e.get("CITYOPS_VAR", str(ROOT / "var"))),
            app_id=e.get("CITYOPS_APP_ID", "cityops"),
            topic_prefix=e.get("CITYOPS_TOPIC_PREFIX", ""),
            topics=Topics.with_prefix(e.get("CITYOPS_TOPIC_PREFIX", "")),
            production=production,
            sla_clock=_choice(e, "CITYOPS_SLA_CLOCK", "wall" if production else "stream",
                              ("stream", "wall", "live")),
            sla_check_interval=float(e.get("CITYOPS_SLA_CHECK_INTERVAL", "10")),
            max_ahead_s=float(e.get("CITYOPS_MAX_AHEAD", "300")),
            rules_path=Path(e.get("CITYOPS_RULES") or str(ROOT / "rules" / "hongkou.yaml")),
            notify_targets=Path(e.get("CITYOPS_NOTIFY_TARGETS") or str(ROOT / "deploy" / "notify" / "targets.yaml")),
            notify_attempts=int(e.get("CITYOPS_NOTIFY_ATTEMPTS", "10")),
            notify_backoff_s=float(e.get("CITYOPS_NOTIFY_BACKOFF", "0.5")),
            notify_backoff_cap_s=float(e.get("CITYOPS_NOTIFY_BACKOFF_CAP", "30")),
            notify_keep_days=float(e.get("CITYOPS_NOTIFY_KEEP_DAYS", "7")),
            notify_secrets=tuple(sorted((k, v) for k, v in e.items() if k.startswith("CITYOPS_NOTIFY_SECRET_"))),
            open311_jurisdiction=e.get("CITYOPS_OPEN311_JURISDICTION", "").strip() or "hongkou.sh.cn",
            clickhouse_http_port=_optional_int(e.get("CITYOPS_CLICKHOUSE_HTTP_PORT", "")),
            batch=int(e.get("CITYOPS_BATCH") or 5000),
            commit_interval_s=float(e.get("CITYOPS_COMMIT_INTERVAL", "0.5")),
            max_pending=int(e.get("CITYOPS_MAX_PENDING") or 100_000),
            fetch_partition_bytes=int(e.get("CITYOPS_FETCH_PARTITION_BYTES", str(8 * 1024 * 1024))),
            align_skew_s=_skew(e.get("CITYOPS_ALIGN_SKEW", "60")),
            align_idle_s=float(e.get("CITYOPS_ALIGN_IDLE", "2")),
            align_stall_s=float(e.get("CITYOPS_ALIGN_STALL", "30")),
            dlq_max_ratio=float(e.get("CITYOPS_DLQ_MAX_RATIO", "0.5")),
            grid_path=Path(e["CITYOPS_GRID"]) if e.get("CITYOPS_GRID") else None,
            sensors_path=Path(e["CITYOPS_SENSORS"]) if e.get("CITYOPS_SENSORS") else None,
            pii_key=e.get("CITYOPS_PII_KEY", ""),
            web_port=int(e.get("CITYOPS_WEB_PORT", "8080")),
            web_users=Path(e["CITYOPS_USERS"]) if e.get("CITYOPS_USERS") else None,
            web_secret=e.get("CITYOPS_SECRET", ""),
            web_due_soon_min=float(e.get("CITYOPS_WEB_DUE_SOON_MIN", "120")),
            web_lookback_h=float(e.get("CITYOPS_WEB_LOOKBACK_H", "72")),
            web_rate=float(e.get("CITYOPS_WEB_RATE", "5")),
            web_burst=float(e.get("CITYOPS_WEB_BURST", "20")),
        )

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for a worker or server started as a subprocess."""
        env = {
            "CITYOPS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "CITYOPS_KAFKA_SECURITY_PROTOCOL": self.kafka_security_protocol,
            "CITYOPS_PARTITIONS": str(self.partitions),
            "CITYOPS_CLICKHOUSE_HOST": self.clickhouse_host,
            "CITYOPS_CLICKHOUSE_PORT": str(self.clickhouse_port),
            "CITYOPS_CLICKHOUSE_USER": self.clickhouse_user,
            "CITYOPS_CLICKHOUSE_PASSWORD": self.clickhouse_password,
            "CITYOPS_CLICKHOUSE_DATABASE": self.clickhouse_database,
            "CITYOPS_CLICKHOUSE_SECURE": "1" if self.clickhouse_secure else "0",
            "CITYOPS_VAR": str(self.var_dir),
            "CITYOPS_APP_ID": self.app_id,
            "CITYOPS_TOPIC_PREFIX": self.topic_prefix,
            "CITYOPS_SLA_CLOCK": self.sla_clock,
            "CITYOPS_SLA_CHECK_INTERVAL": f"{self.sla_check_interval:g}",
            "CITYOPS_MAX_AHEAD": f"{self.max_ahead_s:g}",
            "CITYOPS_RULES": str(self.rules_path),
            "CITYOPS_NOTIFY_TARGETS": str(self.notify_targets),
            "CITYOPS_NOTIFY_ATTEMPTS": str(self.notify_attempts),
            "CITYOPS_NOTIFY_BACKOFF": f"{self.notify_backoff_s:g}",
            "CITYOPS_NOTIFY_BACKOFF_CAP": f"{self.notify_backoff_cap_s:g}",
            "CITYOPS_NOTIFY_KEEP_DAYS": f"{self.notify_keep_days:g}",
            **dict(self.notify_secrets),
            "CITYOPS_OPEN311_JURISDICTION": self.open311_jurisdiction,
            "CITYOPS_INSERT_SYNC": "1" if self.insert_sync else "0",
            "CITYOPS_INSERT_QUORUM": str(self.insert_quorum),
            # always set, empty too: a child must not take a node list of the parent's environment (another server)
            "CITYOPS_CLICKHOUSE_NODES": ",".join(":".join(str(p) for p in n if p is not None)
                                                 for n in self.clickhouse_nodes),
        }
        optional = {
            "CITYOPS_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "CITYOPS_KAFKA_USERNAME": self.kafka_username,
            "CITYOPS_KAFKA_PASSWORD": self.kafka_password,
            "CITYOPS_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "CITYOPS_CLICKHOUSE_CA_CERTS": self.clickhouse_ca_certs,
            "CITYOPS_REPLICATION_FACTOR": str(self.replication_factor or ""),
            "CITYOPS_MIN_INSYNC_REPLICAS": str(self.min_insync_replicas or ""),
            "CITYOPS_CLUSTER": self.clickhouse_cluster,
            # a child process must not take the parent environment's HTTP port to another server's native one
            "CITYOPS_CLICKHOUSE_HTTP_PORT": None if self.clickhouse_http_port is None
            else str(self.clickhouse_http_port),
        }
        env.update({k: v for k, v in optional.items() if v})
        return env

    def clickhouse_node_settings(self) -> list[Settings]:
        """The ClickHouse nodes the sink writes through, in order of preference, each as these settings pointed at
        it: the CITYOPS_CLICKHOUSE_HOST/PORT node first (so settings pointed at another server write there), then
        the other nodes of CITYOPS_CLICKHOUSE_NODES in their order. The first node's HTTP port is
        CITYOPS_CLICKHOUSE_HTTP_PORT, else the one the list gives it; another node's is the one the list gives,
        else none when CITYOPS_CLICKHOUSE_HTTP_PORT is 0, else the port that pairs with its native one
        (transport.http_port)."""
        first = (self.clickhouse_host, self.clickhouse_port)
        listed = {(host, port): http for host, port, http in self.clickhouse_nodes}
        own_http = self.clickhouse_http_port if self.clickhouse_http_port is not None else listed.get(first)
        out = [replace(self, clickhouse_http_port=own_http, clickhouse_nodes=())]
        for host, port, http in self.clickhouse_nodes:
            if (host, port) != first:
                out.append(replace(self, clickhouse_host=host, clickhouse_port=port, clickhouse_nodes=(),
                                   clickhouse_http_port=0 if http is None and self.clickhouse_http_port == 0
                                   else http))
        return out

    def consumer_groups(self) -> dict[str, list[str]]:
        """The worker's consumer groups and the topics each consumes, whatever the process layout:
        `<app id>-ingest` reads the raw topics, `<app id>-cases` the internal located topic."""
        t = self.topics
        return {f"{self.app_id}-ingest": list(t.sources()), f"{self.app_id}-cases": [t.located]}

    def aiokafka_options(self) -> dict[str, object]:
        """Connection options for aiokafka clients: kafka-python's, with the CA file as an SSL context."""
        opts = self.kafka_client_options()
        cafile = opts.pop("ssl_cafile", None)
        if self.kafka_security_protocol.upper() in ("SSL", "SASL_SSL"):
            import ssl

            opts["ssl_context"] = ssl.create_default_context(cafile=cafile)  # type: ignore[arg-type]
        return opts

    def kafka_client_options(self) -> dict[str, object]:
        """Connection options for kafka-python clients (security settings only when configured)."""
        opts: dict[str, object] = {"bootstrap_servers": self.kafka_bootstrap.split(",")}
        if self.kafka_security_protocol != "PLAINTEXT":
            opts["security_protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
            opts["sasl_plain_username"] = self.kafka_username
            opts["sasl_plain_password"] = self.kafka_password
        if self.kafka_ssl_cafile:
            opts["ssl_cafile"] = self.kafka_ssl_cafile
        return opts
