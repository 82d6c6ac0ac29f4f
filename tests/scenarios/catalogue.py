"""The scenario catalogue: hand-written inputs with hand-computed outcomes (docs/cases.md), one YAML file each.

`load_all()` parses every `cases/*.yaml` into frozen, typed objects; `load(path)` one file. Nothing here knows
how the case books compute anything: the expectations were worked out by hand from docs/cases.md, and the
executor (written separately) feeds `Scenario.steps` through the real ingest stage, case books and report SQL
and compares what it finds with `Scenario.expect`.

File format (every key not listed here is an error naming the file and the key):

    title: one line
    spec: "docs/cases.md §2 rule 3"            # the sections checked
    defect: "..."                              # a quoted defect (or a list of them), or: normal
    clock: stream                              # stream (default) | wall
    day: 2026-03-02                            # the Asia/Shanghai date of "HH:MM"; "D2 HH:MM" is the next day
    sensors: {ID: {type: TYPE, place: PLACE, silent: 3d}}  # the registry (the type's defaults; `silent` optional)
    places:  {NAME: {lon: .., lat: .., note: ..} | {from: NAME, east: M, north: M, note: ..}}
    steps:   [{at: T, reading|ticket|patrol|update: {...}} | {wall: T}]
    expect:  {cases, assignments, rounds, refused, dead_letters, reports}

Conventions the executor relies on (written down here because the files depend on them):
- a `{from: P, east: E, north: N}` place is P moved E metres east and N metres north on the equirectangular
  approximation at P's latitude (earth radius 6,371,008.8 m, the one grid.datum uses), rounded to 1e-7 degree;
- in a `wall` scenario the wall clock reads the time of the last `{wall: T}` step (the first step is always
  one); every report and update is applied at that wall time, and a `wall` step is also an escalation check;
  stream scenarios have no `wall` steps;
- `expect.cases.X.step` is the 1-based index of a step whose report ended in case X (for a sensor: the reading
  that raised the alarm or the fault); `recurrence_of` names another case label (or null);
- the report figures are computed over [`reports.since`, `reports.as_of`); `since` defaults to "00:00" of
  `day` (the first day). `reports.discovery_by_day` ({D1: {total, citizen, patrol, sensor}, ...}) is the
  daily discovery view (`v_discovery_daily`, what Grafana plots), by the Asia/Shanghai day of `created_at`;
- `refused` and `dead_letters` are substrings of the reasons, in order; a refused update is a dead letter
  `refused: ...` too, but is listed only under `refused` (`dead_letters` lists decoding dead letters);
- the scenarios assume every reading of a scenario goes through one ingest partition (silence, §6.3, is judged
  by that partition's clock), and that each scenario starts with empty case books.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, cast
from zoneinfo import ZoneInfo

import yaml

CASES_DIR = Path(__file__).resolve().parent / "cases"
LOCAL = ZoneInfo("Asia/Shanghai")
EARTH_RADIUS_M = 6371008.8          # grid.datum.EARTH_RADIUS_M

Clock = Literal["stream", "wall"]
Action = Literal["accept", "resolve", "verify", "reject", "reopen"]
ACTIONS = ("accept", "resolve", "verify", "reject", "reopen")
CASE_KINDS = ("problem", "device_fault")
STATUSES = ("dispatched", "accepted", "resolved", "closed")
DISCOVERED_BY = ("citizen", "patrol", "sensor")
TEAMS = ("enforcement", "handling", "supervision", "command", "patrol")
ASSIGNMENT_KINDS = ("dispatch", "reroute", "rework", "escalation")
ROUND_KINDS = ("dispatch", "reroute", "rework")
ROUND_OUTCOMES = ("open", "resolved", "verified", "reworked", "rejected", "superseded")
REQUEST_TYPES = ("consult", "help", "complaint", "report", "suggestion")
CHANNELS = ("phone", "app", "web", "wechat")


class CatalogueError(ValueError):
    """A scenario file that does not follow the format; the message names the file and the key."""


def _frozen(value: Any) -> Any:
    """Read-only views of nested mappings and tuples of nested lists (the loaded objects never change)."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


# ---- places, sensors, steps -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    name: str
    lon: float
    lat: float
    note: str = ""
    offset_from: str | None = None      # the place this one was measured from, if any
    east_m: float = 0.0
    north_m: float = 0.0


@dataclass(frozen=True, slots=True)
class Sensor:
    sensor_id: str
    sensor_type: str
    place: Place
    silent: str | None = None           # the registry's `silent` override (a duration such as "3d"), if any


@dataclass(frozen=True, slots=True)
class Caller:
    name: str | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class Reading:
    sensor_id: str
    value: float
    sensor_type: str                    # the registry's type, or the message's for an unregistered sensor
    registered: bool
    place: Place | None                 # the registry's place, or the message's position (None: none sent)
    position_in_message: bool           # True when the message itself carries lat/lon (unregistered sensors)


@dataclass(frozen=True, slots=True)
class Ticket:
    ticket_id: str
    category: str
    place: Place | None
    address: str | None
    request_type: str | None
    description: str
    channel: str | None
    caller: Caller | None


@dataclass(frozen=True, slots=True)
class Patrol:
    report_id: str
    category: str
    place: Place
    team: str | None
    inspector: str | None
    note: str | None
    photo: str | None = None            # the report's photo_url


@dataclass(frozen=True, slots=True)
class Update:
    case: str                           # a label of expect.cases
    action: Action
    team: str
    actor: str | None
    note: str | None
    photo: str | None = None            # a resolve's after photo (photo_url)


@dataclass(frozen=True, slots=True)
class WallTick:
    """The wall clock now reads `Step.at` (wall scenarios only): an escalation check."""


Payload: TypeAlias = Reading | Ticket | Patrol | Update | WallTick


@dataclass(frozen=True, slots=True)
class Step:
    index: int                          # 1-based, as in the file
    at: datetime                        # UTC
    payload: Payload

    @property
    def kind(self) -> str:
        return {Reading: "reading", Ticket: "ticket", Patrol: "patrol", Update: "update",
                WallTick: "wall"}[type(self.payload)]

    @property
    def is_report_input(self) -> bool:
        """A step that can end in a case (a ticket, a patrol report or a sensor reading)."""
        return isinstance(self.payload, (Reading, Ticket, Patrol))


# ---- expectations -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    """Expected fields; only those named in `checked` were written in the file (the others are not checked)."""

    checked: frozenset[str]

    def expected(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in sorted(self.checked)}


@dataclass(frozen=True, slots=True)
class ExpectedCase(Checked):
    label: str = ""
    step: int = 0
    kind: str | None = None
    category: str | None = None
    team: str | None = None
    status: str | None = None
    priority: int | None = None
    discovered_by: str | None = None
    reports: int | None = None
    cell: str | None = None
    subdistrict: str | None = None
    sensor: str | None = None                     # the sensor the case belongs to (§2 rule 3), or null
    created_at: datetime | None = None
    due_at: datetime | None = None                # the current round's due time
    case_due_at: datetime | None = None
    resolved_at: datetime | None = None
    verify_due_at: datetime | None = None
    closed_at: datetime | None = None
    reopened: int | None = None
    rejected: int | None = None
    recurrence_of: str | None = None              # a case label
    previous_closed_at: datetime | None = None
    before_photos: tuple[str, ...] | None = None  # the photo links of its reports, in report order
    after_photo: str | None = None                # the photo of its last resolve, or null


@dataclass(frozen=True, slots=True)
class ExpectedAssignment(Checked):
    case: str = ""
    kind: str = ""
    team: str = ""
    priority: int | None = None
    created_at: datetime | None = None
    due_at: datetime | None = None
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectedRound(Checked):
    team: str = ""
    kind: str | None = None
    dispatched_at: datetime | None = None
    due_at: datetime | None = None
    accept_due_at: datetime | None = None
    accepted_at: datetime | None = None
    resolved_at: datetime | None = None
    verified_at: datetime | None = None
    verified_by: str | None = None
    priority: int | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectedReports:
    as_of: datetime
    since: datetime
    figures: Mapping[str, Any]          # section -> figures, as written (hot_spots: a list of mappings)

    def section(self, name: str) -> Any:
        return self.figures.get(name)


@dataclass(frozen=True, slots=True)
class Expect:
    cases: Mapping[str, ExpectedCase]
    assignments: tuple[ExpectedAssignment, ...]
    rounds: Mapping[str, tuple[ExpectedRound, ...]]
    refused: tuple[str, ...] | None              # None: not checked; () = no update was refused
    dead_letters: tuple[str, ...] | None
    reports: ExpectedReports | None


@dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    name: str                           # the file name without .yaml
    title: str
    spec: str
    defects: tuple[str, ...]            # () for a normal case
    clock: Clock
    day: date
    sensors: Mapping[str, Sensor]
    places: Mapping[str, Place]
    steps: tuple[Step, ...]
    expect: Expect
    notes: tuple[str, ...] = field(default=())

    @property
    def normal(self) -> bool:
        return not self.defects

    def step(self, index: int) -> Step:
        return self.steps[index - 1]


# ---- parsing ----------------------------------------------------------------------------------------------

_TIME = re.compile(r"^(?:D(?P<day>[1-9][0-9]*) )?(?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2}))?$")


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.day: date = date(2000, 1, 1)

    def fail(self, where: str, what: str) -> CatalogueError:
        return CatalogueError(f"{self.path.name}: {where}: {what}")

    def mapping(self, value: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in required and key not in optional:
                raise self.fail(where, f"unknown key {key!r}")
        for key in required:
            if key not in value:
                raise self.fail(where, f"missing key {key!r}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "expected a non-empty string")
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, "expected a number")
        return float(value)

    def integer(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, "expected an integer")
        return int(value)

    def choice(self, value: Any, where: str, allowed: Sequence[str]) -> str:
        if value not in allowed:
            raise self.fail(where, f"{value!r} is not one of {', '.join(allowed)}")
        return str(value)

    def when(self, value: Any, where: str) -> datetime:
        """'HH:MM[:SS]' on the first day, or 'DN HH:MM[:SS]' on day N (D1 = `day`); local time -> UTC."""
        if not isinstance(value, str) or (m := _TIME.match(value)) is None:
            raise self.fail(where, f"expected a time 'HH:MM', 'HH:MM:SS' or 'DN HH:MM', got {value!r}")
        h, mi, s = int(m["h"]), int(m["m"]), int(m["s"] or 0)
        if h > 23 or mi > 59 or s > 59:
            raise self.fail(where, f"no such time {value!r}")
        on = self.day + timedelta(days=int(m["day"] or 1) - 1)
        return datetime.combine(on, time(h, mi, s), tzinfo=LOCAL).astimezone(UTC)

    def when_or_null(self, value: Any, where: str) -> datetime | None:
        return None if value is None else self.when(value, where)


def local_time(at: datetime, day: date) -> str:
    """The catalogue's own notation for a UTC time ('HH:MM[:SS]' or 'DN HH:MM[:SS]'), for messages."""
    t = at.astimezone(LOCAL)
    n = (t.date() - day).days + 1
    hm = t.strftime("%H:%M") + (t.strftime(":%S") if t.second else "")
    return hm if n == 1 else f"D{n} {hm}"


def _places(p: _Parser, raw: Any) -> dict[str, Place]:
    if not isinstance(raw, dict):
        raise p.fail("places", "expected a mapping of place names")
    done: dict[str, Place] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Place:
        if name in done:
            return done[name]
        if name not in raw:
            raise p.fail(f"places.{chain[-1]}.from" if chain else "places", f"unknown place {name!r}")
        if name in chain:
            raise p.fail(f"places.{name}", "'from' makes a cycle: " + " -> ".join((*chain, name)))
        where = f"places.{name}"
        entry = raw[name]
        if isinstance(entry, dict) and "from" in entry:
            e = p.mapping(entry, where, ["from"], ["east", "north", "note"])
            base = resolve(p.text(e["from"], f"{where}.from"), (*chain, name))
            east = p.number(e.get("east", 0), f"{where}.east")
            north = p.number(e.get("north", 0), f"{where}.north")
            lat = base.lat + math.degrees(north / EARTH_RADIUS_M)
            lon = base.lon + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(base.lat))))
            place = Place(name, round(lon, 7), round(lat, 7), str(e.get("note", "")), base.name, east, north)
        else:
            e = p.mapping(entry, where, ["lon", "lat"], ["note"])
            place = Place(name, p.number(e["lon"], f"{where}.lon"), p.number(e["lat"], f"{where}.lat"),
                          str(e.get("note", "")))
        done[name] = place
        return place

    for name in raw:
        resolve(str(name), ())
    return done


def _sensors(p: _Parser, raw: Any, places: Mapping[str, Place]) -> dict[str, Sensor]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise p.fail("sensors", "expected a mapping of sensor ids")
    out: dict[str, Sensor] = {}
    for sid, entry in raw.items():
        where = f"sensors.{sid}"
        e = p.mapping(entry, where, ["type", "place"], ["silent"])
        place = places.get(e["place"])
        if place is None:
            raise p.fail(f"{where}.place", f"unknown place {e['place']!r}")
        silent = p.text(e["silent"], f"{where}.silent") if "silent" in e else None
        out[str(sid)] = Sensor(str(sid), p.text(e["type"], f"{where}.type"), place, silent)
    return out


def _place_ref(p: _Parser, value: Any, where: str, places: Mapping[str, Place]) -> Place:
    place = places.get(value) if isinstance(value, str) else None
    if place is None:
        raise p.fail(where, f"unknown place {value!r}")
    return place


def _step(p: _Parser, raw: Any, index: int, clock: Clock, sensors: Mapping[str, Sensor],
          places: Mapping[str, Place]) -> Step:
    where = f"steps[{index}]"
    if isinstance(raw, dict) and "wall" in raw:
        e = p.mapping(raw, where, ["wall"])
        if clock != "wall":
            raise p.fail(f"{where}.wall", "a wall step in a stream scenario")
        return Step(index, p.when(e["wall"], f"{where}.wall"), WallTick())
    kinds = ("reading", "ticket", "patrol", "update")
    e = p.mapping(raw, where, ["at"], kinds)
    given = [k for k in kinds if k in e]
    if len(given) != 1:
        raise p.fail(where, "expected exactly one of " + ", ".join(kinds))
    kind = given[0]
    at = p.when(e["at"], f"{where}.at")
    body, bw = e[kind], f"{where}.{kind}"
    payload: Payload
    if kind == "reading":
        b = p.mapping(body, bw, ["sensor", "value"], ["type", "place"])
        sid = p.text(b["sensor"], f"{bw}.sensor")
        value = p.number(b["value"], f"{bw}.value")
        registered = sensors.get(sid)
        if registered is not None:
            if "type" in b or "place" in b:
                raise p.fail(bw, f"{sid} is registered: its type and place come from the registry")
            payload = Reading(sid, value, registered.sensor_type, True, registered.place, False)
        else:
            if "type" not in b:
                raise p.fail(bw, f"unregistered sensor {sid!r} needs a 'type' in the message")
            place = _place_ref(p, b["place"], f"{bw}.place", places) if "place" in b else None
            payload = Reading(sid, value, p.text(b["type"], f"{bw}.type"), False, place, place is not None)
    elif kind == "ticket":
        b = p.mapping(body, bw, ["id", "category"],
                      ["place", "address", "request_type", "description", "caller", "channel"])
        if ("place" in b) == ("address" in b):
            raise p.fail(bw, "a ticket has either a 'place' or an 'address'")
        caller = None
        if "caller" in b:
            c = p.mapping(b["caller"], f"{bw}.caller", [], ["name", "phone"])
            caller = Caller(c.get("name"), None if c.get("phone") is None else str(c["phone"]))
        payload = Ticket(
            p.text(b["id"], f"{bw}.id"), p.text(b["category"], f"{bw}.category"),
            _place_ref(p, b["place"], f"{bw}.place", places) if "place" in b else None,
            p.text(b["address"], f"{bw}.address") if "address" in b else None,
            p.choice(b["request_type"], f"{bw}.request_type", REQUEST_TYPES) if "request_type" in b else None,
            str(b.get("description", "")),
            p.choice(b["channel"], f"{bw}.channel", CHANNELS) if "channel" in b else None,
            caller)
    elif kind == "patrol":
        b = p.mapping(body, bw, ["id", "category", "place"], ["team", "inspector", "note", "photo"])
        payload = Patrol(p.text(b["id"], f"{bw}.id"), p.text(b["category"], f"{bw}.category"),
                         _place_ref(p, b["place"], f"{bw}.place", places), b.get("team"), b.get("inspector"),
                         b.get("note"), p.text(b["photo"], f"{bw}.photo") if "photo" in b else None)
    else:
        b = p.mapping(body, bw, ["case", "action", "team"], ["actor", "note", "photo"])
        action = cast(Action, p.choice(b["action"], f"{bw}.action", ACTIONS))
        payload = Update(p.text(b["case"], f"{bw}.case"), action, p.choice(b["team"], f"{bw}.team", TEAMS),
                         b.get("actor"), b.get("note"), p.text(b["photo"], f"{bw}.photo") if "photo" in b else None)
    return Step(index, at, payload)


_CASE_TIMES = ("created_at", "due_at", "case_due_at", "resolved_at", "verify_due_at", "closed_at",
               "previous_closed_at")


def _case(p: _Parser, label: str, raw: Any) -> ExpectedCase:
    where = f"expect.cases.{label}"
    keys = [f for f in ExpectedCase.__dataclass_fields__ if f not in ("checked", "label", "step")]
    e = p.mapping(raw, where, ["step"], keys)
    v: dict[str, Any] = {"label": label, "step": p.integer(e["step"], f"{where}.step")}
    for k, x in e.items():
        w = f"{where}.{k}"
        if k == "step":
            continue
        if k in _CASE_TIMES:
            v[k] = p.when_or_null(x, w)
        elif k in ("priority", "reports", "reopened", "rejected"):
            v[k] = p.integer(x, w)
        elif k == "kind":
            v[k] = p.choice(x, w, CASE_KINDS)
        elif k == "status":
            v[k] = p.choice(x, w, STATUSES)
        elif k == "discovered_by":
            v[k] = p.choice(x, w, DISCOVERED_BY)
        elif k == "team":
            v[k] = p.choice(x, w, TEAMS)
        elif k in ("recurrence_of", "sensor", "after_photo"):
            v[k] = None if x is None else p.text(x, w)
        elif k == "before_photos":
            v[k] = tuple(p.text(item, f"{w}[{i}]") for i, item in enumerate(x if isinstance(x, list) else [x]))
        else:
            v[k] = p.text(str(x), w)
    return ExpectedCase(checked=frozenset(e) - {"step"}, **v)


def _assignment(p: _Parser, i: int, raw: Any) -> ExpectedAssignment:
    where = f"expect.assignments[{i}]"
    e = p.mapping(raw, where, ["case", "kind", "team"], ["priority", "created_at", "due_at", "rule"])
    v: dict[str, Any] = {"case": p.text(e["case"], f"{where}.case"),
                         "kind": p.choice(e["kind"], f"{where}.kind", ASSIGNMENT_KINDS),
                         "team": p.choice(e["team"], f"{where}.team", TEAMS)}
    if "priority" in e:
        v["priority"] = p.integer(e["priority"], f"{where}.priority")
    for k in ("created_at", "due_at"):
        if k in e:
            v[k] = p.when(e[k], f"{where}.{k}")
    if "rule" in e:
        v["rule"] = p.text(e["rule"], f"{where}.rule")
    return ExpectedAssignment(checked=frozenset(e) - {"case", "kind", "team"}, **v)


def _round(p: _Parser, where: str, raw: Any) -> ExpectedRound:
    times = ("dispatched_at", "due_at", "accept_due_at", "accepted_at", "resolved_at", "verified_at")
    e = p.mapping(raw, where, ["team"], [*times, "kind", "verified_by", "priority", "outcome"])
    v: dict[str, Any] = {"team": p.choice(e["team"], f"{where}.team", TEAMS)}
    for k, x in e.items():
        w = f"{where}.{k}"
        if k in times:
            v[k] = p.when_or_null(x, w)
        elif k == "kind":
            v[k] = p.choice(x, w, ROUND_KINDS)
        elif k == "outcome":
            v[k] = p.choice(x, w, ROUND_OUTCOMES)
        elif k == "verified_by":
            v[k] = None if x is None else p.choice(x, w, TEAMS)
        elif k == "priority":
            v[k] = p.integer(x, w)
    return ExpectedRound(checked=frozenset(e) - {"team"}, **v)


_SLA_KEYS = ("rounds", "rounds_due", "resolved", "resolved_on_time", "accepted", "accepted_on_time", "reworked",
             "rejected", "superseded", "overdue_open")
_REPORT_SECTIONS: dict[str, tuple[str, ...]] = {
    "discovery": ("total", "citizen", "patrol", "sensor"),
    "recurrence": ("cases", "recurrent", "within_days"),
    "dispatch": ("dispatched", "dispatched_on_time"),
    "verification": ("verified", "verified_on_time", "verification_overdue"),
    "closing": ("closed", "closed_on_time", "due", "closed_on_time_of_due"),
}
_PER_TEAM: dict[str, tuple[str, ...]] = {
    "sla": _SLA_KEYS,
    "workload": ("open", "overdue", "awaiting_verification", "verification_overdue"),
}
_HOT_SPOT_KEYS = ("category", "cases", "recurrent", "cell", "place")


def _reports(p: _Parser, raw: Any) -> ExpectedReports:
    where = "expect.reports"
    e = p.mapping(raw, where, ["as_of"],
                  ["since", *_REPORT_SECTIONS, *_PER_TEAM, "hot_spots", "discovery_by_day"])
    figures: dict[str, Any] = {}
    for name, keys in _REPORT_SECTIONS.items():
        if name in e:
            sec = p.mapping(e[name], f"{where}.{name}", [], keys)
            figures[name] = {k: p.integer(x, f"{where}.{name}.{k}") for k, x in sec.items()}
    for name, keys in _PER_TEAM.items():
        if name in e:
            teams = p.mapping(e[name], f"{where}.{name}", [], TEAMS)
            figures[name] = {
                t: {k: p.integer(x, f"{where}.{name}.{t}.{k}")
                    for k, x in p.mapping(sec, f"{where}.{name}.{t}", [], keys).items()}
                for t, sec in teams.items()}
    if "discovery_by_day" in e:
        days = e["discovery_by_day"]
        if not isinstance(days, dict):
            raise p.fail(f"{where}.discovery_by_day", "expected a mapping of days (D1, D2, ...)")
        by_day: dict[date, dict[str, int]] = {}
        for label, sec in days.items():
            w = f"{where}.discovery_by_day.{label}"
            if not isinstance(label, str) or re.fullmatch(r"D[1-9][0-9]*", label) is None:
                raise p.fail(w, "expected a day label D1, D2, ...")
            figs = p.mapping(sec, w, [], _REPORT_SECTIONS["discovery"])
            by_day[p.day + timedelta(days=int(label[1:]) - 1)] = {k: p.integer(x, f"{w}.{k}") for k, x in figs.items()}
        figures["discovery_by_day"] = by_day
    if "hot_spots" in e:
        if not isinstance(e["hot_spots"], list):
            raise p.fail(f"{where}.hot_spots", "expected a list")
        spots = []
        for i, s in enumerate(e["hot_spots"]):
            w = f"{where}.hot_spots[{i}]"
            m = p.mapping(s, w, ["category", "cases"], _HOT_SPOT_KEYS)
            spots.append({k: (p.integer(x, f"{w}.{k}") if k in ("cases", "recurrent") else p.text(x, f"{w}.{k}"))
                          for k, x in m.items()})
        figures["hot_spots"] = tuple(spots)
    since = p.when(e.get("since", "00:00"), f"{where}.since")
    as_of = p.when(e["as_of"], f"{where}.as_of")
    if as_of <= since:
        raise p.fail(f"{where}.as_of", "as_of is not after since")
    return ExpectedReports(as_of, since, _frozen(figures))


def _strings(p: _Parser, raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise p.fail(where, "expected a list of strings")
    return tuple(p.text(x, f"{where}[{i}]") for i, x in enumerate(raw))


def _expect(p: _Parser, raw: Any, steps: Sequence[Step]) -> Expect:
    e = p.mapping(raw, "expect", ["cases", "assignments"], ["rounds", "refused", "dead_letters", "reports"])
    if not isinstance(e["cases"], dict) or not e["cases"]:
        raise p.fail("expect.cases", "expected a mapping of case labels (every case the scenario makes)")
    cases = {str(label): _case(p, str(label), c) for label, c in e["cases"].items()}
    if not isinstance(e["assignments"], list):
        raise p.fail("expect.assignments", "expected a list (every assignment made, in order)")
    assignments = tuple(_assignment(p, i, a) for i, a in enumerate(e["assignments"]))
    rounds: dict[str, tuple[ExpectedRound, ...]] = {}
    for label, rs in (e.get("rounds") or {}).items():
        if not isinstance(rs, list):
            raise p.fail(f"expect.rounds.{label}", "expected a list of rounds")
        rounds[str(label)] = tuple(_round(p, f"expect.rounds.{label}[{i}]", r) for i, r in enumerate(rs))
    refused = _strings(p, e["refused"], "expect.refused") if "refused" in e else None
    dead = _strings(p, e["dead_letters"], "expect.dead_letters") if "dead_letters" in e else None
    reports = _reports(p, e["reports"]) if "reports" in e else None

    # labels and step indexes
    for label, c in cases.items():
        w = f"expect.cases.{label}.step"
        if not 1 <= c.step <= len(steps):
            raise p.fail(w, f"no step {c.step} (the scenario has {len(steps)})")
        if not steps[c.step - 1].is_report_input:
            raise p.fail(w, f"step {c.step} is not a report (a {steps[c.step - 1].kind} step)")
        if c.recurrence_of is not None and c.recurrence_of not in cases:
            raise p.fail(f"expect.cases.{label}.recurrence_of", f"unknown case label {c.recurrence_of!r}")
    for i, a in enumerate(assignments):
        if a.case not in cases:
            raise p.fail(f"expect.assignments[{i}].case", f"unknown case label {a.case!r}")
    for label in rounds:
        if label not in cases:
            raise p.fail(f"expect.rounds.{label}", f"unknown case label {label!r}")
    for s in steps:
        if isinstance(s.payload, Update) and s.payload.case not in cases:
            raise p.fail(f"steps[{s.index}].update.case", f"unknown case label {s.payload.case!r}")
    return Expect(MappingProxyType(cases), assignments, MappingProxyType(rounds), refused, dead, reports)


def load(path: Path) -> Scenario:
    """Parse one scenario file; CatalogueError names the file and the key of anything wrong."""
    p = _Parser(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path.name}: not YAML: {exc}") from exc
    top = p.mapping(raw, "(top)", ["title", "spec", "defect", "day", "places", "steps", "expect"],
                    ["clock", "sensors", "notes"])
    clock: Clock = "wall" if p.choice(top.get("clock", "stream"), "clock", ("stream", "wall")) == "wall" else "stream"
    day = top["day"]
    if not isinstance(day, date) or isinstance(day, datetime):
        raise p.fail("day", "expected a date YYYY-MM-DD")
    p.day = day
    defect = top["defect"]
    if defect == "normal":
        defects: tuple[str, ...] = ()
    elif isinstance(defect, str):
        defects = (p.text(defect, "defect"),)
    else:
        defects = _strings(p, defect, "defect")
    places = _places(p, top["places"])
    sensors = _sensors(p, top.get("sensors"), places)
    if not isinstance(top["steps"], list) or not top["steps"]:
        raise p.fail("steps", "expected a non-empty list")
    steps = tuple(_step(p, s, i, clock, sensors, places) for i, s in enumerate(top["steps"], start=1))
    if clock == "wall" and steps[0].kind != "wall":
        raise p.fail("steps[1]", "a wall scenario starts with a {wall: T} step")
    notes = _strings(p, top["notes"], "notes") if "notes" in top else ()
    return Scenario(path=path, name=path.stem, title=p.text(top["title"], "title"), spec=p.text(top["spec"], "spec"),
                    defects=defects, clock=clock, day=day, sensors=MappingProxyType(sensors),
                    places=MappingProxyType(places), steps=steps, expect=_expect(p, top["expect"], steps), notes=notes)


def load_all(directory: Path = CASES_DIR) -> list[Scenario]:
    """Every scenario of the catalogue, in file-name order."""
    return [load(f) for f in sorted(directory.glob("*.yaml"))]
