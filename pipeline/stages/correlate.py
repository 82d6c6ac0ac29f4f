"""Correlation (docs/cases.md §2, §5): which case a located report is about, and the indexes that answer it fast.

`CaseIndex` is the first layer of a case book (`pipeline.stages.cases.CaseBook`): the cases of one book key, the
ids they absorbed, their buckets by category and place, by sensor and by cell, the recurrence history they imply
and the book's stream clock. Matching reads these and never changes a case's course; what happens to a case once
found or opened is `pipeline.stages.lifecycle`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pipeline.model.cases import M_PER_DEG_LAT, OPEN_STATES, Case, CorrelationPolicy, distance_m
from pipeline.model.events import Event
from pipeline.model.firstevent import first_event
from pipeline.model.sources import DISCOVERED_BY
from rules.recurrence import RecurrenceHistory

_BUCKET_DEG = 0.002            # correlation buckets: about 220 m north-south, 190 m east-west at 31 N
_NO_POS = -(10**9)


def _bucket(category: str, lon: float | None, lat: float | None) -> tuple[str, int, int]:
    if lon is None or lat is None:
        return (category, _NO_POS, _NO_POS)
    return (category, int(math.floor(lat / _BUCKET_DEG)), int(math.floor(lon / _BUCKET_DEG)))


class CaseIndex:
    """The cases of one book key and the indexes that find the case a report is about (§2)."""

    def __init__(self, key: str, policy: CorrelationPolicy | None = None) -> None:
        self.key = key
        self.policy = policy or CorrelationPolicy()
        self.cases: dict[str, Case] = {}
        self.seen: set[str] = set()                       # event and update ids already applied
        # (category, lat bucket, lon bucket) -> problem case ids: merging looks only at nearby buckets
        self.buckets: dict[tuple[str, int, int], list[str]] = {}
        self.by_sensor: dict[str, list[str]] = {}        # sensor id -> its cases, oldest first
        self.by_cell: dict[tuple[str, str], list[str]] = {}   # (cell, category) -> problem case ids
        self.clock: datetime = datetime(1970, 1, 1, tzinfo=UTC)
        self._recurrence: RecurrenceHistory | None = None

    def _index(self, case: Case) -> None:
        self.cases[case.case_id] = case
        if case.kind == "problem":
            self.buckets.setdefault(_bucket(case.category, case.lon, case.lat), []).append(case.case_id)
            self.by_cell.setdefault((case.cell, case.category), []).append(case.case_id)
        if case.sensor_id is not None:
            self.by_sensor.setdefault(case.sensor_id, []).append(case.case_id)
        self.seen.update(case.event_ids)
        self.seen.update(case.update_ids)

    def _unplace(self, case: Case) -> None:
        if case.kind == "problem":
            self.buckets[_bucket(case.category, case.lon, case.lat)].remove(case.case_id)
            self.by_cell[(case.cell, case.category)].remove(case.case_id)

    def _place(self, case: Case) -> None:
        if case.kind == "problem":
            self.buckets.setdefault(_bucket(case.category, case.lon, case.lat), []).append(case.case_id)
            self.by_cell.setdefault((case.cell, case.category), []).append(case.case_id)

    def _join(self, case: Case, event: Event) -> None:
        case.event_ids.append(event.event_id)
        case.reports += 1
        if event.occurred_at < case.created_at:
            # an earlier report processed later (topics are consumed independently): the case was found
            # when, where and by whom that report says
            self._refirst(case, event)
        if event.source not in case.sources:
            case.sources.append(event.source)
        case.last_report_at = max(case.last_report_at or event.occurred_at, event.occurred_at)
        if event.scope == "device" and case.sensor_id is None and event.sensor_id is not None:
            # a citizen's or patrol's case of this object: it is this sensor's from now on (§2 rule 3)
            case.sensor_id, case.scope = event.sensor_id, "device"
            self.by_sensor.setdefault(event.sensor_id, []).append(case.case_id)

    def _refirst(self, case: Case, event: Event) -> None:
        """Make `event` the case's first report: its time, source and place become the case's."""
        self._unplace(case)
        loc = event.location
        case.created_at = event.occurred_at
        case.discovered_by = DISCOVERED_BY[event.source]
        case.lon, case.lat = event.lon, event.lat
        if loc is not None and loc.cell:
            case.cell, case.subdistrict, case.grid_kind = loc.cell, loc.subdistrict or "", loc.grid_kind or ""
        case.first_event = first_event(event)
        self._place(case)
        self._recurrence = None

    def _match(self, event: Event) -> tuple[Case, bool] | None:
        """The case this report is about (§2) and whether it sends that case back for rework; None: a new case."""
        radius, window = self.policy.for_category(event.category)
        best: tuple[float, datetime, str] | None = None
        found: tuple[Case, bool] | None = None
        person = event.scope == "person"
        for case, d in self._candidates(event, radius):
            verdict = self._admits(case, event, window, person)
            if verdict is None:
                continue
            rank = (d, case.created_at, case.case_id)
            if best is None or rank < best:
                best, found = rank, (case, verdict)
        return found

    def _candidates(self, event: Event, radius: float) -> Iterable[tuple[Case, float]]:
        """Cases the report may be about, with its distance to each (0 for its own sensor's cases)."""
        cases, sensor = self.cases, event.sensor_id
        if event.fault is not None:
            # a fault joins only its own device's fault case (§6.3)
            return [(cases[c], 0.0) for c in self.by_sensor.get(sensor or "", ()) if cases[c].kind == "device_fault"]
        own = [(cases[c], 0.0) for c in self.by_sensor.get(sensor or "", ())
               if cases[c].kind == "problem" and cases[c].category == event.category] if sensor else []
        if event.scope == "person":
            return own
        out = list(own)
        for cid in self._nearby(event.category, event.lon, event.lat, radius):
            case = cases[cid]
            if case.scope == "person" or case.sensor_id == sensor and sensor is not None:
                continue
            if event.scope == "device" and case.sensor_id is not None:
                continue        # another device's case: two bins are two cases
            d = self._distance(case, event, radius)
            if d is not None:
                out.append((case, d))
        return out

    @staticmethod
    def _distance(case: Case, event: Event, radius: float) -> float | None:
        if event.lon is not None and event.lat is not None and case.lon is not None and case.lat is not None:
            if abs(event.lat - case.lat) * M_PER_DEG_LAT > radius:
                return None             # cheap reject before the distance
            d = distance_m(event.lon, event.lat, case.lon, case.lat)
            return d if d <= radius else None
        cell = event.location.cell if event.location else None
        return radius if cell and cell == case.cell else None    # no coordinates: the same cell is "near"

    @staticmethod
    def _admits(case: Case, event: Event, window: timedelta, person: bool) -> bool | None:
        """§2 rule 5: None when the case's state and times exclude the report, else whether it means rework."""
        t = event.occurred_at
        if t < case.created_at - window:
            return None
        status = case.status
        if status in OPEN_STATES:
            return False
        if person:
            return None                 # a person's new alarm after the resolution is a new emergency
        if status == "resolved":
            return case.resolved_at is not None and t >= case.resolved_at
        if status == "closed" and case.closed_at is not None and t < case.closed_at:
            return False
        return None

    def _nearby(self, category: str, lon: float | None, lat: float | None, radius_m: float) -> list[str]:
        """Ids of problem cases of `category` in the buckets within `radius_m` of the point (all cases without a
        position are included; an event without a position is compared with every case of its category)."""
        found = list(self.buckets.get((category, _NO_POS, _NO_POS), ()))
        if lon is None or lat is None:
            for (cat, _, _), ids in self.buckets.items():
                if cat == category:
                    found += ids
            return list(dict.fromkeys(found))
        reach = int(radius_m // (_BUCKET_DEG * M_PER_DEG_LAT * 0.85)) + 1
        iy, ix = int(math.floor(lat / _BUCKET_DEG)), int(math.floor(lon / _BUCKET_DEG))
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                found += self.buckets.get((category, iy + dy, ix + dx), ())
        return found

    def _link_recurrence(self, case: Case) -> None:
        """§5: the most recently closed problem case of the kind in the cell (a sensor's: the same sensor's)
        closed at most `recurrence_days` before this one was found."""
        if case.sensor_id is not None and case.scope in ("person", "device"):
            ids = self.by_sensor.get(case.sensor_id, ())
        else:
            ids = self.by_cell.get((case.cell, case.category), ())
        oldest = case.created_at - timedelta(days=self.policy.recurrence_days)
        best: Case | None = None
        for cid in ids:
            prev = self.cases[cid]
            closed = prev.closed_at
            if (prev.kind == "problem" and prev.category == case.category and prev.status == "closed"
                    and closed is not None and oldest <= closed <= case.created_at
                    and (best is None or closed > (best.closed_at or closed))):
                best = prev
        if best is not None:
            case.recurrence_of, case.previous_closed_at = best.case_id, best.closed_at

    def recurrence(self) -> RecurrenceHistory:
        """Problem cases opened, per cell and category (what the rules' `recurrence` condition counts, §5.1)."""
        if self._recurrence is None:
            self._recurrence = RecurrenceHistory()
            for case in self.cases.values():
                if case.kind == "problem" and case.status != "void":    # a voided report was no problem
                    self._recurrence.record(case.cell, case.category, case.created_at)
        return self._recurrence

    def tick(self, at: datetime) -> None:
        """Move the stream clock to `at` when it is later."""
        if at > self.clock:
            self.clock = at

