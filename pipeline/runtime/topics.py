"""Kafka topic administration: create the cityops topics with the configured partition count; delete the
topics of a run that is over (a bench run, a test, a trial pipeline under its own prefix)."""

from __future__ import annotations

import argparse
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from pipeline.config import Settings

# The stages create their own changelog topics (pipeline.runtime.consumer). The case-state topic keeps the latest
# state per case.
_COMPACTED_SUFFIXES = ("case-state",)


def topic_partitions(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """The partition count of each of `names` that exists. Asks for those topics only: listing every topic of a
    shared cluster (thousands) costs a worker seconds of CPU at each start."""
    if not names:
        return {}
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(names))
            if t.get("error_code", 0) == 0 and t["partitions"]}


def wait_visible(admin: KafkaAdminClient, names: list[str], timeout_s: float = 60.0) -> None:
    """Wait until the broker's metadata shows every one of `names` (just after create_topics it may not)."""
    deadline = time.monotonic() + timeout_s
    while names and not set(names) <= set(topic_partitions(admin, names)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout_s}s: {names}")
        time.sleep(0.2)


def ensure_topics(settings: Settings, timeout_s: float = 60.0) -> list[str]:
    """Create every cityops topic that does not exist yet; return the names created."""
    admin = KafkaAdminClient(client_id="cityops-admin", **settings.kafka_client_options())
    try:
        names = settings.topics.all()
        existing = topic_partitions(admin, names)
        wanted = [t for t in names if t not in existing]
        created: list[str] = []
        for name in wanted:
            topic = NewTopic(name=name, num_partitions=settings.partitions, replication_factor=1,
                             topic_configs={"cleanup.policy": "compact"} if name.endswith(_COMPACTED_SUFFIXES) else {})
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
