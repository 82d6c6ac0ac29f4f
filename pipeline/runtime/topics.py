"""Kafka topic administration: create the cityops topics with the configured partition count and replication;
find topics replicated less than configured; delete the topics of a run that is over (a bench run, a test, a trial
pipeline under its own prefix)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from pipeline.config import Settings

# The stages create their own changelog topics (pipeline.runtime.consumer). The case-state topic keeps the latest
# state per case.
_COMPACTED_SUFFIXES = ("case-state",)
log = logging.getLogger("cityops.topics")


@dataclass(frozen=True)
class Replication:
    """How every topic cityops creates is replicated: copies per partition, and how many of them must have a
    write before the broker acknowledges it (`min.insync.replicas`, with the producers' acks=all)."""

    factor: int
    min_insync: int


def replication(settings: Settings, admin: KafkaAdminClient) -> Replication:
    """The configured replication (CITYOPS_REPLICATION_FACTOR, CITYOPS_MIN_INSYNC_REPLICAS), the unset parts from
    the cluster's size: 3 copies with 2 in sync when there are 3 brokers or more, else one copy per broker."""
    brokers = len(admin.describe_cluster()["brokers"])
    factor = settings.replication_factor or max(1, min(3, brokers))
    min_insync = settings.min_insync_replicas or (factor - 1 if factor >= 3 else 1)
    if factor > brokers:
        raise ValueError(f"CITYOPS_REPLICATION_FACTOR={factor}, but the Kafka cluster has {brokers} broker(s)")
    if not 1 <= min_insync <= factor:
        raise ValueError(f"CITYOPS_MIN_INSYNC_REPLICAS={min_insync} must lie between 1 and the replication "
                         f"factor {factor}")
    return Replication(factor, min_insync)


# A compacted topic is cleaned only in its closed segments, and Kafka closes a segment at 1 GiB or after 7 days:
# a stage's changelog (a month of a district's sensor states is 30 versions of each) was never compacted, and a
# restarted worker read every version before it could process anything (issue #23). Segments of 8 MiB or an
# hour leave at most that much uncompacted behind the log cleaner.
COMPACTED_SEGMENT_BYTES = 8 * 1024 * 1024
COMPACTED_SEGMENT_MS = 3_600_000


def new_topic(name: str, partitions: int, rep: Replication, compact: bool = False) -> NewTopic:
    configs = {"min.insync.replicas": str(rep.min_insync)}
    if compact:
        configs["cleanup.policy"] = "compact"
        configs["segment.bytes"] = str(COMPACTED_SEGMENT_BYTES)
        configs["segment.ms"] = str(COMPACTED_SEGMENT_MS)
    return NewTopic(name=name, num_partitions=partitions, replication_factor=rep.factor, topic_configs=configs)


def under_replicated(admin: KafkaAdminClient, names: list[str], rep: Replication) -> list[str]:
    """One line for each of `names` (that exists) replicated less than `rep`: a partition with fewer replicas, or
    a lower effective min.insync.replicas (the topic's own, else the broker's: config_filter="all" reports it)."""
    topics = [t for t in admin.describe_topics(list(names)) if t.get("error_code", 0) == 0 and t["partitions"]]
    if not topics:
        return []
    described = _topic_configs(admin, [str(t["name"]) for t in topics])
    problems = []
    for t in sorted(topics, key=lambda t: str(t["name"])):
        copies = min(len(p["replica_nodes"]) for p in t["partitions"])
        isr = int(((described.get(t["name"]) or {}).get("min.insync.replicas") or {}).get("value") or 1)
        if copies < rep.factor or isr < rep.min_insync:
            problems.append(f"{t['name']}: {copies} replica(s), min.insync.replicas={isr}; "
                            f"configured {rep.factor} and {rep.min_insync}")
    return problems


def _topic_configs(admin: KafkaAdminClient, names: list[str], timeout_s: float = 10.0) -> dict[str, Any]:
    """Each topic's configs (with the broker's defaults: config_filter="all"). A topic created a moment ago may
    not be known yet to the broker that answers (on a cluster its configs reach every broker a little later): its
    configs are asked again until they come, for up to `timeout_s`, rather than taken as the lowest setting."""
    deadline = time.monotonic() + timeout_s
    got: dict[str, Any] = {}
    while True:
        missing = [n for n in names if not got.get(n)]
        if missing:
            answer = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in missing],
                                            config_filter="all").get("topic") or {}
            got.update({n: c for n, c in answer.items() if c})
        if all(got.get(n) for n in names) or time.monotonic() >= deadline:
            return got
        time.sleep(0.2)


def warn_under_replicated(admin: KafkaAdminClient, names: list[str], rep: Replication, who: str) -> list[str]:
    """Say loudly (ERROR, one line per topic) which of `names` are replicated less than configured; return them.
    The worker goes on (the topics hold data: re-creating them is an operator's decision, with
    kafka-reassign-partitions and kafka-configs), but losing one broker may now lose what they hold."""
    problems = under_replicated(admin, names, rep)
    for line in problems:
        log.error("%s: TOPIC REPLICATED LESS THAN CONFIGURED: %s. Losing a broker may lose its data; raise it with "
                  "kafka-reassign-partitions / kafka-configs (README \"Running a city: the cluster\")", who, line)
    return problems


def topic_partitions(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """The partition count of each of `names` that exists. Asks for those topics only: listing every topic of a
    shared cluster (thousands) costs a worker seconds of CPU at each start."""
    if not names:
        return {}
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(names))
            if t.get("error_code", 0) == 0 and t["partitions"]}


def ensure_derived(settings: Settings, derived: dict[str, str], who: str) -> tuple[dict[str, int], list[str]]:
    """The cityops topics (`ensure_topics`), and each compacted topic a stage derives from another: `derived` maps
    it to the topic whose partitioning it follows (a changelog to its input topic, the notifier's ledger to the
    assignments). Creates what is missing, replicated as configured, then says loudly which of all these topics
    are replicated less than configured. Returns (partitions of each followed topic, those warnings)."""
    from kafka.errors import TopicAlreadyExistsError

    ensure_topics(settings)
    admin = KafkaAdminClient(client_id=f"{who}-admin", **settings.kafka_client_options())
    try:
        rep = replication(settings, admin)
        followed = sorted(set(derived.values()))
        known = topic_partitions(admin, followed + list(derived))
        counts = {name: known.get(name, settings.partitions) for name in followed}
        for name, source in derived.items():
            if name not in known:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([new_topic(name, counts[source], rep, compact=True)])
                wait_visible(admin, [name])
        names = list(dict.fromkeys(settings.topics.all() + followed + list(derived)))
        return counts, warn_under_replicated(admin, names, rep, who)
    finally:
        admin.close()


def wait_visible(admin: KafkaAdminClient, names: list[str], timeout_s: float = 60.0) -> None:
    """Wait until the broker's metadata shows every one of `names` (just after create_topics it may not)."""
    deadline = time.monotonic() + timeout_s
    while names and not set(names) <= set(topic_partitions(admin, names)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout_s}s: {names}")
        time.sleep(0.2)


def ensure_topics(settings: Settings, timeout_s: float = 60.0) -> list[str]:
    """Create every cityops topic that does not exist yet, replicated as configured; return the names created."""
    admin = KafkaAdminClient(client_id="cityops-admin", **settings.kafka_client_options())
    try:
        names = settings.topics.all()
        existing = topic_partitions(admin, names)
        wanted = [t for t in names if t not in existing]
        created: list[str] = []
        rep = replication(settings, admin) if wanted else None
        for name in wanted:
            assert rep is not None
            topic = new_topic(name, settings.partitions, rep, compact=name.endswith(_COMPACTED_SUFFIXES))
            try:
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        wait_visible(admin, created, timeout_s)
        return created
    finally:
        admin.close()


def owned_by(name: str, prefix: str) -> bool:
    """Whether topic `name` belongs to a pipeline run whose topic prefix starts with `prefix`: its topics
    (`<tag>.cityops.…`) and its stages' changelogs (`cityops-<tag>-ingest-…`, `cityops-<tag>-cases-…`, after the
    app id `cityops-<tag>`). So a bench run's stamp covers all its phases (`<stamp>w1`, `<stamp>nv`, …). The
    unprefixed production topics and changelogs (`cityops.raw.hotline`, `cityops-ingest-sensor-state`) belong
    to no prefix."""
    if not prefix:
        return False
    tag, sep, _ = name.partition(".cityops.")
    if sep:
        return bool(tag) and tag.startswith(prefix)
    if name.startswith("cityops-"):
        body = name.removeprefix("cityops-")
        for stage in ("-ingest-", "-cases-"):
            at = body.find(stage)
            if at > 0:
                return body[:at].startswith(prefix)
    return False


def delete_topics(settings: Settings, prefix: str, timeout_s: float = 60.0) -> list[str]:
    """Delete every topic owned by the run under `prefix` (see `owned_by`); return the names deleted. Only
    for prefixes that name one run: the production topics have no prefix, and an empty one is refused."""
    if not prefix.strip():
        raise ValueError("refusing to delete topics without a prefix: that would be every cityops topic")
    admin = KafkaAdminClient(client_id="cityops-admin", **settings.kafka_client_options())
    try:
        names = sorted(n for n in admin.list_topics() if owned_by(n, prefix))
        deleted: list[str] = []
        for i in range(0, len(names), 100):
            chunk = names[i:i + 100]
            try:
                admin.delete_topics(chunk, timeout_ms=int(timeout_s * 1000))
                deleted += chunk
            except UnknownTopicOrPartitionError:    # deleted meanwhile (another cleanup): one by one
                for name in chunk:
                    try:
                        admin.delete_topics([name], timeout_ms=int(timeout_s * 1000))
                        deleted.append(name)
                    except UnknownTopicOrPartitionError:
                        pass
        return deleted
    finally:
        admin.close()


def _create(args: argparse.Namespace) -> int:
    created = ensure_topics(Settings.from_env())
    print(f"topics: created {len(created)}" + (f" ({', '.join(created)})" if created else " (all existed)"))
    return 0


def _list(args: argparse.Namespace) -> int:
    admin = KafkaAdminClient(client_id="cityops-admin", **Settings.from_env().kafka_client_options())
    try:
        for name in sorted(admin.list_topics()):
            print(name)
    finally:
        admin.close()
    return 0


def _delete(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not args.yes:
        admin = KafkaAdminClient(client_id="cityops-admin", **settings.kafka_client_options())
        try:
            names = sorted(n for n in admin.list_topics() if owned_by(n, args.prefix))
        finally:
            admin.close()
        print("\n".join(names))
        print(f"topics: {len(names)} would be deleted; run again with --yes to delete them")
        return 0
    deleted = delete_topics(settings, args.prefix)
    print(f"topics: deleted {len(deleted)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("topics", help="create, list or delete Kafka topics")
    tsub = p.add_subparsers(dest="topics_command", required=True)
    tsub.add_parser("create", help="create missing cityops topics").set_defaults(func=_create)
    tsub.add_parser("list", help="list topics on the broker").set_defaults(func=_list)
    d = tsub.add_parser("delete", help="delete the topics of a finished run under a prefix (bench or test runs)")
    d.add_argument("--prefix", required=True,
                   help="the run's topic prefix, e.g. bench2611 for every bench run of November 2026")
    d.add_argument("--yes", action="store_true", help="delete; without it, only list what would be deleted")
    d.set_defaults(func=_delete)
