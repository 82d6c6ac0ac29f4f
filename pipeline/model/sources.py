"""The sources: every input topic of the pipeline, defined once (CONTRACTS.md "Input topics").

Each row says where a source's messages arrive, which path of the ingest stage takes them, which decoder reads
them (a method of `pipeline.stages.decode.Decoder`), what producers key them by, which field carries the time
they happened (read while a backlog is aligned, pipeline.runtime.align), who discovered what they report, and how
people see them. The runtime subscribes to, aligns and routes the topics of this table; a new source is a row
here and its decoder.

It is vocabulary: rules/ and grid/ may import it, and it imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

Source = Literal["hotline", "patrol", "iot"]          # what an event says it came from (`Event.source`)
DiscoveredBy = Literal["citizen", "patrol", "sensor"]
# how the ingest stage takes a source's messages: reports to locate, sensor readings (alarm state, minute
# aggregates), or teams' updates on cases (passed on to the cases stage)
Path = Literal["reports", "readings", "updates"]


@dataclass(frozen=True)
class SourceSpec:
    name: str                         # `Event.source` of what it reports ("case-updates" reports no event)
    topic: str                        # the topic's name without a run's prefix
    path: Path
    decoder: str                      # the Decoder method that reads one message
    key: str                          # the field producers key the messages by
    time_field: str                   # the field with the time it happened (CONTRACTS.md)
    discovered_by: DiscoveredBy | None
    label: str                        # as the operations centre shows it


TABLE: tuple[SourceSpec, ...] = (
    SourceSpec("hotline", "cityops.raw.hotline", "reports", "hotline", "service_request_id", "requested_datetime",
               "citizen", "12345热线 hotline"),
    SourceSpec("patrol", "cityops.raw.patrol", "reports", "patrol", "report_id", "observed_at",
               "patrol", "巡查 patrol"),
    SourceSpec("iot", "cityops.raw.iot", "readings", "iot", "sensor_id", "measured_at",
               "sensor", "传感 sensor"),
    SourceSpec("case-updates", "cityops.case-updates", "updates", "case_update", "case_id", "at",
               None, "处置反馈 case update"),
)
BY_NAME: dict[str, SourceSpec] = {s.name: s for s in TABLE}

# the sources that report problems, and who each one means found them (docs/cases.md §8: the discovery rate)
SOURCES: tuple[Source, ...] = tuple(cast(Source, s.name) for s in TABLE if s.discovered_by is not None)
DISCOVERED_BY: dict[Source, DiscoveredBy] = {
    cast(Source, s.name): s.discovered_by for s in TABLE if s.discovered_by is not None}


def prefixed(topic: str, prefix: str) -> str:
    """A topic's name in a run under `prefix` (`<prefix>.cityops.raw.hotline`; the name itself without one)."""
    return f"{prefix}.{topic}" if prefix else topic
