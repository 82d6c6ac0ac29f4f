"""`cityops rules backtest RULES.yaml --since 30d`: how routing would change under a candidate ruleset.

    cityops rules backtest CANDIDATE.yaml [--since 30d] [--against CURRENT.yaml] [--examples 5]
                           [--format table|json|csv]

The stored first report of every case opened in the window (ClickHouse `events` with `merged = 0`, joined
with the case's latest state in `cases`) is rebuilt as a `pipeline.model.events.Event` and routed twice: by the
current ruleset (the shipped one, or `--against`) and by the candidate. Recurrence conditions count earlier
cases with one `RecurrenceHistory` fed in time order, as the worker does: each case is recorded after it is
routed, and cases opened up to the longest recurrence window before `--since` are replayed first (not
reported) so that counts at the start of the window are right.

The result: team changes (from -> to, count), rule changes (old rule -> new rule), priority and SLA
changes, and examples of moved cases (case id, category, cell, old -> new team, the new rule's reason).
An invalid candidate prints its `file:line:column: key: ...` problems and exits 2; a database that cannot
be read exits 1. What is not stored (caller, channel, patrol team) is not used by any rule condition.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pipeline.model.events import Event, GridKind, Location
from pipeline.model.sources import SOURCES, Source
from rules.combinators import Not
from rules.conditions import Condition, Recurrence
from rules.durations import format_duration
from rules.engine import Dispatch, Ruleset
from rules.recurrence import RecurrenceHistory

FORMATS = ("table", "json", "csv")

# The first report of each case (merged = 0) with the case's latest team and rule. Parameters are bound by
# the driver; times travel as epoch seconds so that the server's time zone never matters.
_FIRST_REPORTS_SQL = """
SELECT e.case_id AS case_id, e.event_id AS event_id, e.source AS source, e.category AS category,
       e.cell AS cell, e.subdistrict AS subdistrict, e.grid_kind AS grid_kind, e.grid_version AS grid_version,
       e.snapped AS snapped, toUInt32(e.received_at) AS at, e.lon AS lon, e.lat AS lat,
       e.request_type AS request_type, e.sensor_type AS sensor_type, e.value AS value,
       e.description AS description, c.team AS stored_team, c.rule_id AS stored_rule
FROM
(
    SELECT case_id, event_id, source, category, cell, subdistrict, grid_kind, grid_version, snapped,
           received_at, lon, lat, request_type, sensor_type, value, description
    FROM events FINAL
    WHERE merged = 0 AND received_at >= toDateTime(%(start)s) AND received_at < toDateTime(%(end)s)
) AS e
ANY LEFT JOIN
(
    SELECT case_id, team, rule_id FROM cases FINAL
) AS c USING case_id
ORDER BY at, event_id
"""


class Database(Protocol):
    """What the backtest needs of `pipeline.sink.transport.ClickHouse`."""

    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class StoredCase:
    """A case as stored: its first report rebuilt as an Event, and the team and rule it has now."""

    case_id: str
    event: Event
    stored_team: str
    stored_rule: str


@dataclass(frozen=True)
class Example:
    """One case that the candidate sends to another team."""

    case_id: str
    category: str
    cell: str
    old_team: str
    new_team: str
    old_rule: str
    new_rule: str
    reason: str                 # the candidate rule's reason for the new team


@dataclass(frozen=True)
class BacktestReport:
    """Counts of (old, new) pairs over every case of the window; `examples` only for cases that move."""

    since: datetime
    until: datetime
    current_version: str
    candidate_version: str
    cases: int
    teams: dict[tuple[str, str], int]
    rules: dict[tuple[str, str], int]
    priorities: dict[tuple[int, int], int]
    slas: dict[tuple[str, str], int]
    examples: list[Example] = field(default_factory=list)
    stored_agrees: int = 0      # cases whose stored team is the one the current ruleset picks again

    @property
    def moved(self) -> int:
        return sum(n for (old, new), n in self.teams.items() if old != new)


def _row_to_case(row: dict[str, Any]) -> StoredCase:
    source: Source = row["source"]
    if source not in SOURCES:
        raise ValueError(f"event {row['event_id']}: unknown source {source!r}")
    grid_kind: GridKind | None = row["grid_kind"] or None
    location = Location(
        cell=row["cell"] or None, subdistrict=row["subdistrict"] or None, grid_kind=grid_kind,
        grid_version=row["grid_version"], snapped=bool(row["snapped"]),
    )
    value = row["value"]
    event = Event(
        event_id=row["event_id"], source=source, category=row["category"],
        occurred_at=datetime.fromtimestamp(int(row["at"]), UTC),
        lon=row["lon"], lat=row["lat"], description=row["description"],
        request_type=row["request_type"] or None, sensor_type=row["sensor_type"] or None,
        value=None if value is None else float(value), location=location,
    )
    return StoredCase(row["case_id"], event, row["stored_team"] or "", row["stored_rule"] or "")


def load_cases(db: Database, start: datetime, end: datetime) -> list[StoredCase]:
    """The first reports of cases opened in [start, end), in time order."""
    params = {"start": int(start.timestamp()), "end": int(end.timestamp())}
    return [_row_to_case(row) for row in db.query_dicts(_FIRST_REPORTS_SQL, params)]


def _conditions(node: Condition) -> Iterator[Condition]:
    yield node
    if isinstance(node, Not):
        yield from _conditions(node.child)
    for child in getattr(node, "children", ()):
        yield from _conditions(child)


def longest_recurrence_window(*rulesets: Ruleset) -> timedelta:
    """The longest `recurrence.within` of any rule: how far back the history must reach."""
    windows = [
        c.window
        for rs in rulesets for rule in rs.spec.rules
        for c in _conditions(rule.when) if isinstance(c, Recurrence)
    ]
    return max(windows, default=timedelta(0))


def backtest(cases: Iterable[StoredCase], current: Ruleset, candidate: Ruleset, since: datetime, until: datetime,
             examples: int = 5) -> BacktestReport:
    """Route every case with both rulesets (cases before `since` only feed the recurrence history)."""
    history = RecurrenceHistory()
    teams: Counter[tuple[str, str]] = Counter()
    rules: Counter[tuple[str, str]] = Counter()
    priorities: Counter[tuple[int, int]] = Counter()
    slas: Counter[tuple[str, str]] = Counter()
    shown: list[Example] = []
    per_move: Counter[tuple[str, str]] = Counter()
    n = agrees = 0
    for case in cases:
        ev = case.event
        if ev.occurred_at >= since:
            old: Dispatch = current.dispatch(ev, history)
            new: Dispatch = candidate.dispatch(ev, history)
            n += 1
            agrees += old.team == case.stored_team
            teams[old.team, new.team] += 1
            rules[old.rule_id, new.rule_id] += 1
            priorities[old.priority, new.priority] += 1
            slas[format_duration(old.sla), format_duration(new.sla)] += 1
            move = (old.team, new.team)
            if old.team != new.team and per_move[move] < examples:
                per_move[move] += 1
                loc = ev.location
                shown.append(Example(case.case_id, ev.category, (loc.cell if loc else None) or "-",
                                     old.team, new.team, old.rule_id, new.rule_id, new.reason))
        # recorded after routing, as the worker does: a case counts only for later ones, and only a problem's
        # (docs/cases.md §5.1: the history counts problem cases)
        if ev.fault is None and ev.location is not None and ev.location.cell is not None:
            history.record(ev.location.cell, ev.category, ev.occurred_at)
    return BacktestReport(since, until, current.version, candidate.version, n, dict(teams), dict(rules),
                          dict(priorities), dict(slas), shown, agrees)


# ---- output --------------------------------------------------------------------------------------------

def _sorted_pairs(counts: dict[Any, int]) -> list[tuple[Any, Any, int]]:
    return [(a, b, c) for (a, b), c in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]


def render_table(r: BacktestReport) -> str:
    out = [
        f"backtest: {r.cases} cases opened {r.since:%Y-%m-%d %H:%M} .. {r.until:%Y-%m-%d %H:%M} UTC; "
        f"current {r.current_version} -> candidate {r.candidate_version}",
        f"  {r.moved} cases change team; the current ruleset gives {r.stored_agrees} of {r.cases} the team "
        "they have now (the rest were re-routed, rejected or dispatched by another version)",
    ]
    sections: list[tuple[str, dict[Any, int]]] = [
        ("teams", r.teams), ("rules", r.rules), ("priority", r.priorities), ("sla", r.slas)]
    for title, counts in sections:
        out += ["", f"{title}: from -> to", f"  {'from':<28} {'to':<28} {'cases':>7}"]
        for old, new, count in _sorted_pairs(counts):
            mark = "" if old != new else "   (unchanged)"
            out.append(f"  {old!s:<28} {new!s:<28} {count:>7}{mark}")
    out += ["", "examples of moved cases:"]
    if not r.examples:
        out.append("  (none: no case changes team)")
    for e in r.examples:
        out.append(f"  {e.case_id}  {e.category}  cell {e.cell}  {e.old_team} -> {e.new_team}  "
                   f"({e.old_rule} -> {e.new_rule}): {e.reason}")
    return "\n".join(out)


def to_json(r: BacktestReport) -> dict[str, Any]:
    def pairs(counts: dict[Any, int]) -> list[dict[str, Any]]:
        return [{"from": a, "to": b, "cases": c} for a, b, c in _sorted_pairs(counts)]

    return {
        "since": r.since.isoformat(), "until": r.until.isoformat(),
        "current_version": r.current_version, "candidate_version": r.candidate_version,
        "cases": r.cases, "moved": r.moved, "stored_agrees": r.stored_agrees,
        "teams": pairs(r.teams), "rules": pairs(r.rules), "priority": pairs(r.priorities), "sla": pairs(r.slas),
        "examples": [vars(e) for e in r.examples],
    }


def render_csv(r: BacktestReport) -> str:
    """One table: `section,from,to,cases` rows, then `example` rows with the case's fields."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "from", "to", "cases", "case_id", "category", "cell", "from_rule", "to_rule", "reason"])
    sections: list[tuple[str, dict[Any, int]]] = [
        ("teams", r.teams), ("rules", r.rules), ("priority", r.priorities), ("sla", r.slas)]
    for title, counts in sections:
        for old, new, count in _sorted_pairs(counts):
            w.writerow([title, old, new, count, "", "", "", "", "", ""])
    for e in r.examples:
        w.writerow(["example", e.old_team, e.new_team, 1, e.case_id, e.category, e.cell, e.old_rule, e.new_rule,
                    e.reason])
    return buf.getvalue()


# ---- command ---------------------------------------------------------------------------------------------


