"""A case's first report (pipeline.model.firstevent): kept compact, written as the dict it always was."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import timedelta

import orjson

from pipeline.model.cases import Case, case_from_json
from pipeline.model.events import Event, Location
from pipeline.model.firstevent import event_of, first_as_dict, first_event, first_from_dict
from pipeline.stages.cases import CaseBook
from pipeline.wire import book_key
from tests.pipeline.factories import T0, FakeRouter

LOC = Location(cell="310109011003005", subdistrict="310109011", grid_kind="residential",
               grid_version="2025-01-15.e297e50cae8c", snapped=False)
OLD_KEYS = ["event_id", "source", "category", "occurred_at", "lon", "lat", "description", "request_type", "channel",
            "sensor_id", "sensor_type", "value", "scope", "fault", "location"]


def reading_alarm() -> Event:
    return Event(event_id="iot:S1:alarm1", source="iot", category="E0499", occurred_at=T0, lon=121.49, lat=31.25,
                 description="elderly_button 1 beyond 1", sensor_id="S1", sensor_type="elderly_button", value=1.0,
                 scope="person", location=LOC)


def test_the_report_comes_back_as_it_was() -> None:
    e = reading_alarm()
    assert event_of(first_event(e)) == e
    no_place = replace(e, location=None, lon=None, lat=None, description="")
    assert event_of(first_event(no_place)) == no_place


def test_written_as_the_dict_with_the_same_keys_in_the_same_order() -> None:
    d = first_as_dict(first_event(reading_alarm()))
    assert list(d) == OLD_KEYS
    text = orjson.loads(orjson.dumps(d))
    assert text["location"] == ["310109011003005", "310109011", "residential", "2025-01-15.e297e50cae8c", False]
    assert text["occurred_at"] == T0.timestamp() and text["request_type"] is None
    assert first_from_dict(text) == first_event(reading_alarm())
    assert first_as_dict(None) == {} and first_from_dict({}) is None


def test_places_and_repeated_strings_are_shared_and_smaller_than_the_dict() -> None:
    a, b = first_event(reading_alarm()), first_from_dict(orjson.loads(orjson.dumps(first_as_dict(
        first_event(replace(reading_alarm(), event_id="iot:S1:alarm2"))))))
    assert b is not None and a.location is b.location and a.sensor_type is b.sensor_type
    assert sys.getsizeof(a) < sys.getsizeof(first_as_dict(a)) / 3


def test_a_case_record_of_an_older_writer_reads_and_writes_alike() -> None:
    """A changelog record written with the dict (extra keys of a newer writer are dropped)."""
    book = CaseBook(book_key(LOC))
    book.add_event(reading_alarm(), FakeRouter())
    book.add_event(replace(reading_alarm(), event_id="iot:S1:alarm2", occurred_at=T0 + timedelta(minutes=5)),
                   FakeRouter())
    (case,) = book.take_dirty()
    raw = orjson.dumps(case.to_dict())
    assert list(orjson.loads(raw)["first_event"]) == OLD_KEYS
    assert case_from_json(raw) == Case.from_dict(orjson.loads(raw)) == case
    newer = orjson.loads(raw)
    newer["first_event"]["from_a_newer_writer"] = 1
    assert case_from_json(orjson.dumps(newer)).first_event == case.first_event
