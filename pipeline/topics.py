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


def ensure_topics(settings: Settings, timeout_s: float = 60.0) -> list[str]:
    """Create every cityops topic that does not exist yet; return the names created."""
    admin = KafkaAdminClient(client_id="cityops-admin", **settings.kafka_client_options())
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in settings.topics.all() if t not in existing]
        created: list[str] = []
        for name in wanted:
            topic = NewTopic(name=name, num_partitions=settings.partitions, replication_factor=1,
                             topic_configs={"cleanup.policy": "compact"} if name.endswith(_COMPACTED_SUFFIXES) else {})
            try:
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + timeout_s
        while created and not set(created) <= set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible after {timeout_s}s: {created}")
            time.sleep(0.2)
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
