"""What became of each patrol report, per inspector (migration 0010 `patrol_reports`; the evaluation's 有效上报率).

The ingest stage records the patrol reports it refuses (`refused`: dead letters: malformed, a category not in
the taxonomy, a position that is no WGS84 point), when their inspector can still be read; the cases stage
records the ones that opened or joined a case, and report ids that came again after they were applied
(`applied`). Inspectors are staff: their ids are stored; a patrol report carries no caller's personal data, and
a refusal's reason is masked.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from pipeline.model.events import Event
from pipeline.model.privacy import mask_text
from pipeline.model.records import EventRow, PatrolReportRow
from pipeline.wire import DeadLetter

MAX_FIELD = 200          # longer ids or team names in a refused report are not worth keeping


def _field(obj: dict[str, object], key: str) -> str:
    v = obj.get(key)
    return v.strip()[:MAX_FIELD] if isinstance(v, str) else ""


_EARLIEST, _LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def _time(text: str, fallback: datetime) -> datetime:
    """The refused report's own time when it is a readable time with an offset that a DateTime column holds;
    else `fallback` (the refusal's): a hostile time must never make the row unstorable."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if t.tzinfo is None:
            return fallback
        t = t.astimezone(UTC)
    except (ValueError, OverflowError):
        return fallback
    return t if _EARLIEST <= t < _LATEST else fallback


def refused(deadletters: Iterable[DeadLetter]) -> list[PatrolReportRow]:
    """A row per refused patrol report whose inspector is readable (a JSON object with a non-empty string
    `inspector`); the others cannot be credited to anyone and are only dead letters."""
    rows = []
    for d in deadletters:
        try:
            obj = orjson.loads(d.raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        inspector = _field(obj, "inspector")
        if not inspector:
            continue
        report = _field(obj, "report_id")
        rows.append(PatrolReportRow(
            report_id=f"patrol:{report}" if report else f"dead:{d.source_topic}:{d.partition}:{d.offset}",
            inspector=mask_text(inspector), team=mask_text(_field(obj, "team")),
            observed_at=_time(_field(obj, "observed_at"), d.at), outcome="dead_letter",
            reason=mask_text(d.reason)[:MAX_FIELD]))
    return rows


def applied(event: Event, row: EventRow | None) -> PatrolReportRow | None:
    """The row of a located patrol report the cases stage took: `row` is the event row it stored (None: the
    report id had been applied before, a duplicate). Not a patrol report, or no inspector: None."""
    if event.source != "patrol" or not event.actor:
        return None
    if row is None:
        return PatrolReportRow(report_id=event.event_id, inspector=event.actor, team=event.team or "",
                               observed_at=event.occurred_at, outcome="duplicate")
    return PatrolReportRow(report_id=event.event_id, inspector=event.actor, team=event.team or "",
                           observed_at=event.occurred_at, outcome="joined" if row.merged else "filed",
                           case_id=row.case_id, subdistrict=row.subdistrict)
