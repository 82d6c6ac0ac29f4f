"""Kafka topic administration: create the cityops topics with the configured partition count."""

from __future__ import annotations

import argparse
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from pipeline.config import Settings

# The stages create their own changelog topics (pipeline.batch_service). The case-state topic keeps the latest
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("topics", help="create or list the Kafka topics")
    tsub = p.add_subparsers(dest="topics_command", required=True)
    tsub.add_parser("create", help="create missing cityops topics").set_defaults(func=_create)
    tsub.add_parser("list", help="list topics on the broker").set_defaults(func=_list)
