"""What travels between the stages on Kafka: the consumed `Message`, the one `DeadLetter` shape, the codec of the
internal located topic, and the keys that partition it (CONTRACTS.md "Internal topics").

The stages build and read these; the runtime only sends and receives the bytes.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson

from pipeline.model.cases import OUTSIDE_KEY
from pipeline.model.events import CaseUpdate, Event, Location, record
from pipeline.model.privacy import mask_text, redact_bytes, redact_raw


@record
class Message:
    """One consumed Kafka message, with where it came from (for dead letters)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


@record
class DeadLetter:
    source_topic: str
    partition: int
    offset: int
    reason: str
    raw: bytes
    at: datetime

    def to_json(self) -> bytes:
        try:
            self.raw.decode("utf-8")
            raw_text, encoding = redact_raw(self.raw), "utf-8"
        except UnicodeDecodeError:
            raw_text, encoding = base64.b64encode(redact_bytes(self.raw)).decode(), "base64"
        return _dead_letter_json(self.source_topic, self.partition, self.offset, mask_text(self.reason), raw_text,
                                 encoding, self.at.isoformat().replace("+00:00", "Z"))


def refusal_json(source_topic: str, reason: str, at: str) -> bytes:
    """The dead letter of a case update the cases stage refused (no Kafka position: it may have come from
    several messages): `reason` is also the raw text."""
    return _dead_letter_json(source_topic, -1, -1, f"refused: {reason}", reason, "utf-8", at)


def _dead_letter_json(source_topic: str, partition: int, offset: int, reason: str, raw: str, encoding: str,
                      at: str) -> bytes:
    return orjson.dumps({
        "source_topic": source_topic, "partition": partition, "offset": offset,
        "reason": reason, "raw": raw, "raw_encoding": encoding, "at": at,
    })


def encode_located(event: Event) -> bytes:
    loc = event.location
    return orjson.dumps({
        "type": "event", "event_id": event.event_id, "source": event.source, "category": event.category,
        "occurred_at": event.occurred_at.timestamp(), "lon": event.lon, "lat": event.lat,
        "address": event.address, "description": event.description, "request_type": event.request_type,
        "channel": event.channel, "team": event.team, "actor": event.actor, "sensor_id": event.sensor_id,
        "sensor_type": event.sensor_type, "value": event.value, "caller_hash": event.caller_hash,
        "location": None if loc is None else [loc.cell, loc.subdistrict, loc.grid_kind, loc.grid_version,
                                              loc.snapped],
        "scope": event.scope, "fault": event.fault,
        "media_url": event.media_url, "address_id": event.address_id, "attributes": event.attributes,
    })


def encode_update(update: CaseUpdate) -> bytes:
    return orjson.dumps({
        "type": "update", "update_id": update.update_id, "case_id": update.case_id, "action": update.action,
        "team": update.team, "actor": update.actor, "at": update.at.timestamp(), "note": update.note,
        "photo_url": update.photo_url,
        **({} if update.until is None else {"until": update.until.timestamp()}),
    })


def decode_located(raw: bytes) -> Event | CaseUpdate:
    d = orjson.loads(raw)
    if d["type"] == "update":
        return CaseUpdate(update_id=d["update_id"], case_id=d["case_id"], action=d["action"], team=d["team"],
                          actor=d["actor"], at=datetime.fromtimestamp(d["at"], UTC), note=d["note"],
                          until=None if d.get("until") is None else datetime.fromtimestamp(d["until"], UTC),
                          photo_url=d.get("photo_url") or "")
    loc = d["location"]
    return Event(
        event_id=d["event_id"], source=d["source"], category=d["category"],
        occurred_at=datetime.fromtimestamp(d["occurred_at"], UTC), lon=d["lon"], lat=d["lat"],
        address=d["address"], description=d["description"], request_type=d["request_type"],
        channel=d["channel"], team=d["team"], actor=d["actor"], sensor_id=d["sensor_id"],
        sensor_type=d["sensor_type"], value=d["value"], caller_hash=d["caller_hash"],
        location=None if loc is None else Location(cell=loc[0], subdistrict=loc[1], grid_kind=loc[2],
                                                   grid_version=loc[3], snapped=bool(loc[4])),
        scope=d.get("scope"), fault=d.get("fault"),
        # absent in messages of a worker before the Open311 fields (a rolling upgrade)
        media_url=d.get("media_url"), address_id=d.get("address_id"), attributes=d.get("attributes"),
    )



# -- partition keys of the located topic ------------------------------------------------------------------

def book_key(location: Location | None) -> str:
    """The case book a located report belongs to: its sub-district, the first 9 digits of the cell code
    (docs/cases.md §1.1); the key of the located topic."""
    if location is None or not location.cell:
        return OUTSIDE_KEY
    return location.cell[:9]


def case_book_key(case_id: str) -> str:
    """The book of a case, from its id (`C<grid>-<hash>`): so a case update finds its case's partition."""
    if not case_id.startswith("C") or "-" not in case_id:
        raise ValueError(f"not a cityops case id: {case_id!r}")
    grid = case_id[1:].split("-", 1)[0]
    return grid[:9] if len(grid) >= 9 and grid.isdigit() else grid


# -- progress marks on the located topic ------------------------------------------------------------------

MARKS_KEY = b"~marks"     # never a book key (sub-district codes, OUTSIDE_KEY): a located message with it is marks


def encode_marks(marks: list[tuple[str, int, float | None]]) -> bytes:
    """An ingest process's progress marks, sent with key `MARKS_KEY` to every partition of the located topic
    after the items of each batch (and whenever they change), by the producer that sent those items, so a mark
    never passes the items it covers (pipeline.stages.order):

        {"type": "marks", "marks": [[<raw topic>, <partition>, <time>], ...]}

    one entry per input partition the process owns: every item of that partition still to come happened at or
    after <time> (POSIX seconds, a float), or <time> is null: the partition is caught up (nothing more at the
    broker when the mark was made), it holds nobody back. The raw topic's name is the one the process reads (with
    a run's prefix)."""
    return orjson.dumps({"type": "marks", "marks": [[t, p, at] for t, p, at in marks]})


def decode_marks(raw: bytes) -> list[tuple[str, int, float | None]]:
    """The marks of `encode_marks`; anything else raises ValueError."""
    try:
        d = orjson.loads(raw)
        if d.get("type") != "marks":
            raise ValueError("not marks")
        return [(str(t), int(p), None if at is None else float(at)) for t, p, at in d["marks"]]
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError) as err:
        raise ValueError(f"bad progress marks on the located topic: {raw[:200]!r}") from err


def located_time(item: Event | CaseUpdate) -> float:
    """The event time a located item is ordered by (POSIX seconds)."""
    return (item.at if isinstance(item, CaseUpdate) else item.occurred_at).timestamp()
