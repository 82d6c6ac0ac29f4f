"""What a case is made of (docs/cases.md): the case, its dispatch rounds, the assignments it sends, the keys
that place it, the merging policy, and how all of it is written to the changelog and read back.

Plain data; `pipeline.stages.cases.CaseBook` holds the behaviour.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson

from pipeline.model.events import Location
from pipeline.model.firstevent import FirstEvent, first_as_dict, first_from_dict, shared
from pipeline.model.records import CaseRow, RoundRow

OUTSIDE_KEY = "outside"
OPEN_STATES = frozenset({"dispatched", "accepted", "checking"})   # the team (checking: the patrol) has to act (§3)
HANDLED_STATES = frozenset({"resolved", "closed"})
VERIFIERS = ("supervision", "patrol")


# -- keys -------------------------------------------------------------------------------------------------

def partition_key(location: Location | None) -> str:
    """The management grid of a location (the cell code without its 3-digit sequence): the prefix of the ids of
    the cases it opens."""
    if location is None or not location.cell:
        return OUTSIDE_KEY
    return location.cell[:12]


def case_id_for(grid: str, first_event_id: str) -> str:
    """The id of the case opened by `first_event_id` in management grid `grid` (stable across replays)."""
    return f"C{grid}-{hashlib.sha1(first_event_id.encode()).hexdigest()[:12]}"


# -- policy -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CorrelationPolicy:
    """How near (metres) and how soon (hours) a report must be to join a case, per category family
    (docs/cases.md §2: a major class such as `E04`), and how long cases are remembered.

    `recurrence_days`: a case opened within this many days after a closed case of its kind in its cell is a
    return of it (§5). Closed cases are kept `keep_days` after closing (recurrence links, replays); updates for a
    case not seen yet wait `park_hours` of stream time.
    """

    default_radius_m: float = 100.0
    default_window_h: float = 24.0
    families: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "E04": (300.0, 6.0),     # emergencies: a burst pipe is reported from the whole block, within hours
        "P01": (50.0, 72.0),     # utility parts (manhole covers...): one object, reports over days
        "E05": (150.0, 4.0),     # street order (vendors) moves, and comes back the same evening
    })
    recurrence_days: float = 30.0
    keep_days: float = 90.0
    park_hours: float = 24.0

    def for_category(self, category: str) -> tuple[float, timedelta]:
        radius, hours = self.families.get(category[:3], (self.default_radius_m, self.default_window_h))
        return radius, timedelta(hours=hours)


# -- the case -----------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Round:
    """One dispatch of the case to a team (docs/cases.md §3.1)."""

    number: int
    team: str
    kind: str                      # dispatch | reroute | rework
    rule_id: str
    priority: int
    dispatched_at: datetime
    due_at: datetime
    accept_due_at: datetime
    accepted_at: datetime | None = None
    resolved_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str = "open"          # open | resolved | verified | reworked | rejected | superseded
    escalated_at: datetime | None = None
    verify_due_at: datetime | None = None
    verified_at: datetime | None = None
    verified_by: str = ""
    verify_escalated_at: datetime | None = None
    extensions: int = 0            # deadline extensions granted (延期, §4.6)


@dataclass(slots=True)      # a worker holds a month of cases (issue #23): no __dict__ of 49 fields each
class Case:
    case_id: str
    category: str
    cell: str
    subdistrict: str
    grid_kind: str
    lon: float | None
    lat: float | None
    discovered_by: str
    created_at: datetime
    kind: str = "problem"                  # problem | device_fault
    scope: str | None = None               # person | device | area, for a sensor's case
    sensor_id: str | None = None           # the sensor a person's or device's case belongs to
    team: str = ""
    status: str = "new"
    priority: int = 3
    due_at: datetime | None = None         # the current round's handling deadline
    case_due_at: datetime | None = None    # the case's (round 1's; only a more urgent merge moves it)
    first_dispatched_at: datetime | None = None
    closed_at: datetime | None = None
    resolved_at: datetime | None = None
    verify_due_at: datetime | None = None
    last_report_at: datetime | None = None
    last_update_at: datetime | None = None  # time of the last team update applied (later ones may not precede it)
    reports: int = 0
    sources: list[str] = field(default_factory=list)
    reopened: int = 0                      # rework (返工) count
    rejected: int = 0
    escalations: int = 0
    recurrence_of: str | None = None
    previous_closed_at: datetime | None = None
    rule_id: str = ""
    reason: str = ""
    escalate_to: str | None = None
    ruleset_version: str = ""
    grid_version: str = ""
    revision: int = 0
    transitions: int = 0
    rounds: list[Round] = field(default_factory=list)
    first_event: FirstEvent | None = None    # the first report (pipeline.model.firstevent)
    # where and from which sources the current round was dispatched: an escalation repeats it, so that its
    # content does not depend on when the overdue check ran (a replay after a crash re-sends the same content)
    dispatched_at_place: list[Any] = field(default_factory=list)      # [lat, lon, cell, subdistrict, sources]
    event_ids: list[str] = field(default_factory=list)      # reports absorbed (to recognise replays)
    update_ids: list[str] = field(default_factory=list)     # team updates applied
    after_photo_url: str = ""          # the photo of the last resolve (README "Photos"); kept through a rework

    @property
    def round(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    @property
    def escalated(self) -> bool:
        current = self.round
        return current is not None and current.escalated_at is not None

    def to_dict(self) -> dict[str, Any]:
        return _case_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        return _case_from_dict(d)

    def state(self) -> dict[str, Any]:
        """The public state of the case (the `cityops.case-state` topic; README "Output topics")."""
        return {
            "case_id": self.case_id, "kind": self.kind, "category": self.category,
            "discovered_by": self.discovered_by, "cell": self.cell, "subdistrict": self.subdistrict,
            "grid_kind": self.grid_kind, "lon": self.lon, "lat": self.lat, "team": self.team,
            "status": self.status, "priority": self.priority, "created_at": iso(self.created_at),
            "due_at": _opt_iso(self.due_at), "case_due_at": _opt_iso(self.case_due_at),
            "resolved_at": _opt_iso(self.resolved_at), "verify_due_at": _opt_iso(self.verify_due_at),
            "closed_at": _opt_iso(self.closed_at), "reports": self.reports, "sources": list(self.sources),
            "reopened": self.reopened, "rejected": self.rejected, "escalated": self.escalated,
            "escalations": self.escalations, "round": len(self.rounds), "sensor_id": self.sensor_id,
            "recurrence_of": self.recurrence_of, "rule_id": self.rule_id, "reason": self.reason,
            "ruleset_version": self.ruleset_version, "grid_version": self.grid_version, "revision": self.revision,
            "after_photo_url": self.after_photo_url or None,
        }

    def row(self) -> CaseRow:
        return CaseRow(
            case_id=self.case_id, category=self.category, discovered_by=self.discovered_by, cell=self.cell,
            subdistrict=self.subdistrict, grid_kind=self.grid_kind, team=self.team, status=self.status,
            priority=self.priority, created_at=self.created_at, due_at=self.due_at, closed_at=self.closed_at,
            reports=self.reports, sources=tuple(self.sources), reopened=self.reopened, rule_id=self.rule_id,
            ruleset_version=self.ruleset_version, grid_version=self.grid_version, revision=self.revision,
            kind=self.kind, sensor_id=self.sensor_id or "", recurrence_of=self.recurrence_of or "",
            previous_closed_at=self.previous_closed_at, first_dispatched_at=self.first_dispatched_at,
            case_due_at=self.case_due_at, resolved_at=self.resolved_at, verify_due_at=self.verify_due_at,
            rejected=self.rejected, escalations=self.escalations,
        )

    def round_row(self, r: Round) -> RoundRow:
        return RoundRow(
            case_id=self.case_id, round=r.number, team=r.team, kind=r.kind, rule_id=r.rule_id,
            priority=r.priority, dispatched_at=r.dispatched_at, due_at=r.due_at, accept_due_at=r.accept_due_at,
            accepted_at=r.accepted_at, resolved_at=r.resolved_at, ended_at=r.ended_at, outcome=r.outcome,
            escalated_at=r.escalated_at, verify_due_at=r.verify_due_at, verified_at=r.verified_at,
            verified_by=r.verified_by, verify_escalated_at=r.verify_escalated_at, category=self.category,
            case_kind=self.kind, cell=self.cell, subdistrict=self.subdistrict, revision=self.revision,
            extensions=r.extensions,
        )


# -- distances ----------------------------------------------------------------------------------------------

M_PER_DEG_LAT = 111_194.93   # metres per degree on the 6,371,008.8 m mean sphere


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Distance in metres by the equirectangular approximation: within 0.1% of the great-circle distance at
    the few-hundred-metre scale correlation works at, and several times cheaper than haversine."""
    dy = (lat2 - lat1) * M_PER_DEG_LAT
    dx = (lon2 - lon1) * M_PER_DEG_LAT * math.cos(math.radians((lat1 + lat2) * 0.5))
    return math.sqrt(dx * dx + dy * dy)


# -- times and the changelog format -----------------------------------------------------------------------

_ISO_TEXT: dict[datetime, str] = {}     # a case's times are formatted again at each change: remember them


def iso(at: datetime) -> str:
    text = _ISO_TEXT.get(at)
    if text is None:
        if len(_ISO_TEXT) >= 100_000:
            _ISO_TEXT.clear()
        text = _ISO_TEXT[at] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text


def _opt_iso(at: datetime | None) -> str | None:
    return None if at is None else iso(at)


def _ts(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


_CASE_TIMES = ("created_at", "due_at", "case_due_at", "first_dispatched_at", "closed_at", "resolved_at",
               "verify_due_at", "last_report_at", "last_update_at", "previous_closed_at")
_ROUND_TIMES = ("dispatched_at", "due_at", "accept_due_at", "accepted_at", "resolved_at", "ended_at",
                "escalated_at", "verify_due_at", "verified_at", "verify_escalated_at")
# numbers as times: the records hold POSIX seconds (`_case_to_dict`); msgspec gives the same aware UTC datetime
_CASE_JSON = msgspec.json.Decoder(Case, strict=False)
_CASE_NAMES = tuple(f.name for f in fields(Case))
_ROUND_NAMES = tuple(f.name for f in fields(Round))
_CASE_FIELDS = frozenset(_CASE_NAMES)
_ROUND_FIELDS = frozenset(_ROUND_NAMES)


def _case_to_dict(case: Case) -> dict[str, Any]:
    d = {name: getattr(case, name) for name in _CASE_NAMES}
    for k in _CASE_TIMES:
        d[k] = _ts(d[k])
    d["rounds"] = [_round_to_dict(r) for r in case.rounds]
    d["first_event"] = first_as_dict(case.first_event)
    return d


def _round_to_dict(r: Round) -> dict[str, Any]:
    d = {name: getattr(r, name) for name in _ROUND_NAMES}
    for k in _ROUND_TIMES:
        d[k] = _ts(d[k])
    return d


# Decoded cases share what a month of cases repeats (issue #23: a worker keeps every open and recently closed case
# of its books in memory, and each decoded string or time was an object of its own): the strings of these fields
# are interned, and a case's equal times are one datetime.
_SHARED_CASE = ("category", "cell", "subdistrict", "grid_kind", "discovered_by", "kind", "scope", "team", "status",
                "rule_id", "reason", "escalate_to", "ruleset_version", "grid_version")
_SHARED_ROUND = ("team", "kind", "rule_id", "outcome", "verified_by")


def _shared(value: Any) -> Any:
    if type(value) is str:
        return sys.intern(value)
    if type(value) is list:
        return [_shared(v) for v in value]
    return value


def _case_from_dict(d: dict[str, Any]) -> Case:
    # unknown keys (a newer writer) are dropped and missing ones take their defaults (an older writer)
    d = {k: v for k, v in d.items() if k in _CASE_FIELDS}
    times: dict[float, datetime] = {}
    for k in _CASE_TIMES:
        if k in d:
            d[k] = _dt_shared(d[k], times)
    for k in _SHARED_CASE:
        if k in d:
            d[k] = _shared(d[k])
    for k in ("sources", "dispatched_at_place"):
        if k in d:
            d[k] = _shared(d[k])
    if "first_event" in d:
        d["first_event"] = first_from_dict(d["first_event"])
    rounds = [_round_from_dict(r, times) for r in d.pop("rounds", ())]
    return Case(**d, rounds=rounds)


def case_from_json(raw: bytes) -> Case:
    """A case from its JSON (`to_dict`), as `Case.from_dict(orjson.loads(raw))` makes it, decoded typed: a restarted
    worker decodes a month of cases before its first batch (65,592 in the bench's month; 0.24 against 1.14 CPU-s
    for 10,807). Lax, as the records hold times as numbers: a number written as text is taken as the number. A
    record the types refuse (an older writer's, say) takes `from_dict`'s way."""
    try:
        case = _CASE_JSON.decode(raw)
    except msgspec.ValidationError:
        return _case_from_dict(orjson.loads(raw))
    times: dict[datetime, datetime] = {}
    _share_case(case, times)
    case.sources = _shared(case.sources)
    case.dispatched_at_place = _shared(case.dispatched_at_place)
    if case.first_event is not None:
        shared(case.first_event)
    for r in case.rounds:
        _share_round(r, times)
    return case


def _sharer(name: str, time_fields: Iterable[str], shared_fields: Iterable[str]) -> Any:
    """`share(obj, times)`: equal times of `obj` become one object (through `times`), and its strings are interned.
    Written out field by field (as dataclasses writes `__init__`): with getattr and setattr in a loop this was
    four fifths of decoding a case (issue #23: 10.7 of 13.5 profiled CPU-s for a month's 65,499 cases)."""
    body = [f"def {name}(o, times, intern=sys.intern):"]
    for k in time_fields:
        body += [f"    v = o.{k}", "    if v is not None:", f"        o.{k} = times.setdefault(v, v)"]
    for k in shared_fields:      # str fields, or str | None
        body += [f"    v = o.{k}", "    if v:", f"        o.{k} = intern(v)"]
    scope: dict[str, Any] = {"sys": sys}
    exec("\n".join(body), scope)     # noqa: S102 (fixed text built from the field names above)
    return scope[name]


_share_case = _sharer("_share_case", _CASE_TIMES, _SHARED_CASE)
_share_round = _sharer("_share_round", _ROUND_TIMES, _SHARED_ROUND)


def _dt_shared(ts: float | None, times: dict[float, datetime]) -> datetime | None:
    if ts is None:
        return None
    at = times.get(ts)
    if at is None:
        at = times[ts] = datetime.fromtimestamp(ts, UTC)
    return at


def _round_from_dict(d: dict[str, Any], times: dict[float, datetime] | None = None) -> Round:
    times = {} if times is None else times
    values: dict[str, Any] = {k: (_dt_shared(v, times) if k in _ROUND_TIMES else v) for k, v in d.items()
                              if k in _ROUND_FIELDS}
    for k in _SHARED_ROUND:
        if k in values:
            values[k] = _shared(values[k])
    return Round(**values)
