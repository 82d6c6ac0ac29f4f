"""The cases stage's order by the ingest group's progress marks (pipeline.stages.order, pipeline.runtime.cases):
items of two ingest processes, one ahead, reach the books in event-time order; caught-up partitions hold nobody
back; a restart holds again what was held, from the stage's table, and applies nothing twice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition

from pipeline.config import Settings
from pipeline.model.events import CaseUpdate
from pipeline.model.records import SinkBatch
from pipeline.runtime.cases import CasesService
from pipeline.runtime.components import load_components
from pipeline.stages.lifecycle import Outcome
from pipeline.stages.order import Held, Reorder
from pipeline.wire import MARKS_KEY, Message, decode_located, decode_marks, encode_marks, encode_update

T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)
HOT, IOT = "cityops.raw.hotline", "cityops.raw.iot"


def item(n: int, minutes: float) -> bytes:
    return encode_update(CaseUpdate(f"u{n}", "C310109009-abc", "accept", "team-1", "x",
                                    T0 + timedelta(minutes=minutes)))


def held(raw: bytes, offset: int) -> Held:
    it = decode_located(raw)
    assert isinstance(it, CaseUpdate)
    return Held(it.at.timestamp(), raw, "310109009", it, offset)


def at(minutes: float) -> float:
    return (T0 + timedelta(minutes=minutes)).timestamp()


def names(released: list[Held]) -> list[str]:
    return [h.item.update_id for h in released]


def test_two_processes_one_ahead_are_released_in_event_time_order() -> None:
    order = Reorder(frozenset({(HOT, 0), (HOT, 1)}))
    # process A owns hotline 0 and runs an hour ahead; B owns hotline 1
    for i, m in enumerate((60, 61, 62)):
        assert order.add(held(item(i, m), i)) == []
    assert order.mark([(HOT, 0, at(63))]) == [], "B has not said where it stands: everybody waits"
    order.add(held(item(10, 5), 3))
    order.add(held(item(11, 30), 4))
    assert names(order.mark([(HOT, 1, at(31))])) == ["u10", "u11"]
    order.add(held(item(12, 61.5), 5))
    assert names(order.mark([(HOT, 1, at(70))])) == ["u0", "u1", "u12", "u2"]
    assert order.held == []


def test_caught_up_partitions_hold_nobody_back_and_ties_go_by_the_bytes() -> None:
    order = Reorder(frozenset({(HOT, 0), (IOT, 0), (IOT, 1)}))
    order.mark([(IOT, 0, None), (IOT, 1, None)])          # the readings' partitions are caught up
    a, b = item(1, 10), item(2, 10)
    order.add(held(max(a, b), 0))
    order.add(held(min(a, b), 1))
    assert order.mark([(HOT, 0, at(10))]) == [], "an item at the watermark itself waits"
    assert [h.raw for h in order.mark([(HOT, 0, None)])] == [min(a, b), max(a, b)]
    assert names(order.add(held(item(3, 1), 2))) == ["u3"], "late: behind what was released, it goes at once"


def test_marks_survive_their_wire_format_and_bad_ones_are_refused() -> None:
    marks = [(HOT, 0, at(3)), (IOT, 2, None)]
    assert decode_marks(encode_marks(marks)) == marks
    for bad in (b"", b"{}", b'{"type": "update"}', b'{"type": "marks", "marks": [["x"]]}'):
        with pytest.raises(ValueError, match="progress marks"):
            decode_marks(bad)


class Recorder:
    """Stands for the CaseStage: records what reaches the books, in order."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def apply(self, items: list[tuple[str, Any]], books: dict[str, Any]) -> Outcome:
        self.applied += [(decode_located(it) if isinstance(it, bytes) else it).update_id for _, it in items]
        return Outcome()


class NoSink:
    def write(self, batch: SinkBatch) -> None:
        raise AssertionError("nothing stored in this test")


def service(settings: Settings) -> tuple[CasesService, Recorder]:
    svc = CasesService(load_components(settings, sink=NoSink()))
    svc.inputs = frozenset({(HOT, 0), (HOT, 1)})
    rec = Recorder()
    svc.c.cases = rec  # type: ignore[assignment]
    return svc, rec


def test_a_restart_holds_what_was_held_and_applies_nothing_twice() -> None:
    settings = replace(Settings.from_env(), app_id="cityops-order-test")
    located = TopicPartition(settings.topics.located, 0)

    def msg(offset: int, value: bytes, key: bytes = b"310109009") -> Message:
        return Message(located.topic, 0, offset, value, key)

    def marks(offset: int, topic: str, partition: int, minutes: float | None) -> Message:
        return msg(offset, encode_marks([(topic, partition, None if minutes is None else at(minutes))]), MARKS_KEY)

    first = [msg(0, item(0, 60)), msg(1, item(1, 62)), marks(2, HOT, 0, 63),
             msg(3, item(2, 5)), marks(4, HOT, 1, 30)]
    rest = [msg(5, item(3, 61)), marks(6, HOT, 1, None), msg(7, item(4, 64)), marks(8, HOT, 0, None)]

    whole, rec = service(settings)
    asyncio.run(whole.process({located: first}))
    asyncio.run(whole.process({located: rest}))
    assert rec.applied == ["u2", "u0", "u3", "u1", "u4"]

    crashed, rec1 = service(settings)
    asyncio.run(crashed.process({located: first}))
    assert rec1.applied == ["u2"]
    crashed._store_order()       # what its checkpoint writes with the offsets past `first`
    changes = crashed.cases_table.take_changes()
    assert {k for _, k, v in changes if v is not None} == {b"~held/0", b"~held/1", b"~marks"}

    restarted, rec2 = service(settings)
    restarted.cases_table.load(0, [(k, v) for _, k, v in changes])
    restarted.partitions_restored({located})
    assert restarted.books.all_keys() == set(), "held items and marks are no case books"
    asyncio.run(restarted.process({located: rest}))      # it reads on after the committed offset
    assert rec1.applied + rec2.applied == rec.applied
    restarted._store_order()
    gone = {k for _, k, v in restarted.cases_table.take_changes() if v is None}
    assert gone == {b"~held/0", b"~held/1"}, "released items leave the table"


def test_off_the_items_go_as_they_come_and_marks_are_no_items() -> None:
    settings = replace(Settings.from_env(), app_id="cityops-order-test", order_by_marks=False)
    located = TopicPartition(settings.topics.located, 0)
    svc, rec = service(settings)
    batch = [Message(located.topic, 0, 0, item(0, 60), b"310109009"),
             Message(located.topic, 0, 1, encode_marks([(HOT, 0, at(63))]), MARKS_KEY),
             Message(located.topic, 0, 2, item(1, 5), b"310109009")]
    asyncio.run(svc.process({located: batch}))
    assert rec.applied == ["u0", "u1"]
