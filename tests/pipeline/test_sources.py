"""A fourth source is one row of the sources table (pipeline.model.sources) and its decoder: nothing else in the
pipeline names the sources. The row is added here for the test alone, with a decoder of its own; the real wiring
(`load_components`, the ingest service the worker runs) then subscribes to its topic, aligns it by its time field,
routes it down the reports path, locates its reports on the shipped grid and dead-letters what it cannot read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, get_args

import orjson
import pytest
from aiokafka import TopicPartition

from pipeline.config import Settings
from pipeline.model import sources
from pipeline.model.events import Event
from pipeline.model.records import SinkBatch
from pipeline.runtime.components import load_components
from pipeline.runtime.ingest import IngestService
from pipeline.stages.decode import Decoder
from pipeline.stages.fields import InvalidEvent
from pipeline.wire import Message, decode_located

APP = sources.SourceSpec(name="app", topic="cityops.raw.app", path="reports", decoder="app_report", key="report",
                         time_field="taken_at", discovered_by="citizen", label="随手拍 app")


@dataclass(frozen=True)
class AppDecoder(Decoder):
    """The new source's decoder: a citizen app's photo report {report, taken_at, category, lon, lat}."""

    def app_report(self, raw: bytes) -> Event:
        try:
            obj = orjson.loads(raw)
            return Event(event_id=f"app:{obj['report']}", source="app",  # type: ignore[arg-type]
                         category=self._category(obj, "category"), occurred_at=self._time(obj, "taken_at"),
                         lon=float(obj["lon"]), lat=float(obj["lat"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise InvalidEvent(f"app report: {err}") from err


class NoSink:
    def write(self, batch: SinkBatch) -> None:
        raise AssertionError("the ingest service stores nothing until a checkpoint")


def test_the_table_defines_the_three_sources_and_the_case_updates() -> None:
    assert [s.name for s in sources.TABLE] == ["hotline", "patrol", "iot", "case-updates"]
    assert get_args(sources.Source) == sources.SOURCES
    assert sources.DISCOVERED_BY == {"hotline": "citizen", "patrol": "patrol", "iot": "sensor"}
    topics = Settings().topics
    assert list(topics.sources()) == [topics.raw_hotline, topics.raw_patrol, topics.raw_iot, topics.case_updates]


def test_a_fourth_source_runs_through_the_ingest_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "TABLE", (*sources.TABLE, APP))
    settings = replace(Settings.from_env(), app_id="cityops-fourth")
    topic = sources.prefixed(APP.topic, settings.topics.prefix)
    assert topic in settings.consumer_groups()["cityops-fourth-ingest"]

    components = load_components(settings, sink=NoSink())
    shipped = components.ingest.decoder
    components.ingest.decoder = AppDecoder(taxonomy=shipped.taxonomy, window=shipped.window)
    service = IngestService(components)
    assert topic in service.topics
    assert service.aligner is not None and service.aligner.time_of[topic](
        b'{"taken_at": "2026-11-02T08:00:00Z"}') == datetime(2026, 11, 2, 8, tzinfo=UTC).timestamp()

    sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(t: str, value: bytes, key: bytes | None = None) -> None:
        sent.append((t, value, key))

    service.send = send  # type: ignore[method-assign]
    good = orjson.dumps({"report": "A-1", "taken_at": "2026-11-02T08:00:00+08:00", "category": "E0501",
                         "lon": 121.4905, "lat": 31.2650})
    records: dict[TopicPartition, list[Any]] = {TopicPartition(topic, 0): [
        Message(topic, 0, 0, good, b"A-1"), Message(topic, 0, 1, b'{"report": "A-2"}', b"A-2")]}
    asyncio.run(service.process(records))

    located = [decode_located(v) for t, v, _ in sent if t == settings.topics.located]
    assert len(located) == 1
    event = located[0]
    assert isinstance(event, Event) and event.event_id == "app:A-1" and event.source == "app"
    assert event.location is not None and event.location.cell is not None
    assert event.location.cell.startswith(event.location.subdistrict or "-")
    dead = [orjson.loads(v) for t, v, _ in sent if t == settings.topics.deadletter]
    assert [(d["source_topic"], d["offset"]) for d in dead] == [(topic, 1)]
    assert components.counters.deadletters == 1
