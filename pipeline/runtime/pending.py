"""What a stage produced and computed since its last checkpoint (pipeline.runtime.consumer)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from pipeline.model.records import SinkBatch


@dataclass
class Pending:
    """What was produced and computed since the last checkpoint."""

    sends: list[asyncio.Future[Any]] = field(default_factory=list)    # one per record batch produced
    sent: int = 0                                                       # messages produced
    rows: SinkBatch = field(default_factory=SinkBatch)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit
    since: float | None = None
    messages: int = 0
