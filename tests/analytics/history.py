"""A generated case history with known shape, and the reports' answers computed from it in plain Python.

The oracle functions below re-state each report's definition (docs/cases.md §1, §3, §5, §8) directly over the
generated rows, without SQL, so a report that disagrees with them is wrong on that definition.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from pipeline.model.records import CaseRow, EventRow, RoundRow, SinkBatch, TransitionRow

SUBDISTRICTS = ("310109009", "310109010", "310109011")
CATEGORIES = ("E0501", "E0102", "P0101", "P0301")
TEAMS = ("enforcement", "handling", "supervision")
SHANGHAI = timedelta(hours=8)
HOUR = timedelta(hours=1)
OPEN = ("dispatched", "accepted")
NOT_DUE = ("rejected", "superseded")
RESOLVED = ("resolved", "verified", "reworked")


def sh_day(t: datetime) -> date:
    """The Asia/Shanghai calendar day of a naive UTC time (no DST in China since 1991)."""
    return (t + SHANGHAI).date()


def cells() -> list[str]:
    return [f"{sd}{g:03d}{c:03d}" for sd in SUBDISTRICTS for g in (1, 2, 3) for c in (1, 2, 3, 4)]


@dataclass
class History:
    """Latest case and round states, all revisions as stored (in several batches), transitions and events."""

    latest: dict[str, CaseRow] = field(default_factory=dict)
    rounds: dict[tuple[str, int], RoundRow] = field(default_factory=dict)
    batches: list[SinkBatch] = field(default_factory=list)
    transitions: list[TransitionRow] = field(default_factory=list)


class _Life:
    """One case lived through docs/cases.md §3-§4: its revisions (case and rounds) as they happen."""

    def __init__(self, case: CaseRow, rnd: random.Random) -> None:
        self.case = case
        self.rnd = rnd
        self.rounds: list[RoundRow] = []
        self.revisions: list[CaseRow] = []
        self.first_round_rows: list[RoundRow] = []

    def _save(self) -> None:
        self.case = replace(self.case, revision=len(self.revisions) + 1)
        self.revisions.append(self.case)

    def _round(self, **changes: object) -> None:
        self.rounds[-1] = replace(self.rounds[-1], revision=len(self.revisions) + 1, **changes)  # type: ignore[arg-type]

    def dispatch(self, team: str, kind: str, at: datetime, due: datetime, *, urgent: bool = False) -> None:
        """A new round; the case deadline is round 1's, moved only earlier by a more urgent merge (§3.2)."""
        c = self.case
        self.rounds.append(RoundRow(
            c.case_id, len(self.rounds) + 1, team, kind, "r1", c.priority, at, due, at + 2 * HOUR, None, None,
            None, "open", None, None, None, "", None, c.category, c.kind, c.cell, c.subdistrict,
            len(self.revisions) + 1,
        ))
        self.case = replace(c, team=team, status="dispatched", due_at=due,
                            first_dispatched_at=c.first_dispatched_at or at,
                            case_due_at=min(c.case_due_at, due) if urgent and c.case_due_at else c.case_due_at or due)
        self._save()
        if len(self.rounds) == 1:
            self.first_round_rows.append(self.rounds[0])

    def end(self, outcome: str, at: datetime) -> None:
        self._round(outcome=outcome, ended_at=at)
        if outcome == "rejected":
            self.case = replace(self.case, rejected=self.case.rejected + 1)

    def accept(self, at: datetime) -> None:
        self._round(accepted_at=at)
        self.case = replace(self.case, status="accepted")
        self._save()

    def resolve(self, at: datetime) -> None:
        verify_due = at + 24 * HOUR
        self._round(outcome="resolved", resolved_at=at, verify_due_at=verify_due)
        self.case = replace(self.case, status="resolved", resolved_at=at, verify_due_at=verify_due)
        self._save()

    def verify(self, at: datetime) -> None:
        verifier = "patrol" if self.rounds[-1].team == "supervision" else "supervision"
        self._round(outcome="verified", ended_at=at, verified_at=at, verified_by=verifier)
        self.case = replace(self.case, status="closed", closed_at=at)
        self._save()

    def rework(self, at: datetime) -> None:
        reworked = self.rounds[-1]
        self.end("reworked", at)
        self.case = replace(self.case, resolved_at=None, verify_due_at=None, reopened=self.case.reopened + 1)
        self.dispatch(reworked.team, "rework", at, reworked.due_at)   # a failed fix buys no time (§3.2)


def _live(life: _Life, rnd: random.Random, at: datetime) -> datetime:
    """Rejections, re-routes, acceptance, resolution, rework and verification, each with some chance."""
    c = life.case
    t = at + timedelta(seconds=rnd.randrange(60, 3600))             # some dispatches take over 30 min
    life.dispatch(c.team, "dispatch", t, t + 48 * HOUR)
    x = rnd.random()
    if x < 0.1:                                                      # rejected: a fresh due for the next team
        t += timedelta(seconds=rnd.randrange(600, 20 * 3600))
        life.end("rejected", t)
        life.dispatch(rnd.choice([tm for tm in TEAMS if tm != life.rounds[-1].team]), "reroute", t, t + 48 * HOUR)
    elif x < 0.15:                                                   # a more urgent report re-routes it
        t += timedelta(seconds=rnd.randrange(600, 20 * 3600))
        life.end("superseded", t)
        life.dispatch(rnd.choice(TEAMS), "reroute", t, min(life.rounds[-1].due_at, t + 12 * HOUR), urgent=True)
    for _ in range(3):
        if rnd.random() >= 0.85:
            return t
        t += timedelta(seconds=rnd.randrange(60, 4 * 3600))
        life.accept(t)
        if rnd.random() >= 0.9:
            return t
        t += timedelta(seconds=rnd.randrange(600, 60 * 3600))
        life.resolve(t)
        if rnd.random() >= 0.88:
            return t
        t += timedelta(seconds=rnd.randrange(60, 30 * 3600))         # some verifications take over 24 h
        if rnd.random() < 0.12:
            life.rework(t)
            continue
        life.verify(t)
        return t
    return t


def generate(
    seed: int,
    n_cases: int,
    start: datetime,
    days: int,
    proactive: tuple[float, float] = (0.2, 0.1),
    later_proactive: tuple[float, float] = (0.3, 0.15),
    device_faults: float = 0.0,
    refirsts: float = 0.0,
) -> History:
    """Cases created over `days` days from `start` (naive UTC). In the first half patrol/sensor shares are
    `proactive`, in the second `later_proactive`. A few hot cells × categories get many cases so that
    recurrences and hot spots exist. Each case lives through dispatch rounds (rejections, re-routes, rework,
    late acceptances, resolutions and verifications); a share `device_faults` are device-fault cases, a share
    `refirsts` get an earlier first report processed late (a later revision with an earlier created_at,
    another cell of the sub-district and another first source). About 3 % are stored the way they were
    before the lifecycle columns existed (no rounds, no dispatch or deadline facts).

    Storage: the first revision of every case and round in one batch, the latest in a second, an intermediate
    case revision in a third (written after the latest: the highest revision must win), then the first
    batch replayed."""
    rnd = random.Random(seed)
    all_cells = cells()
    hot = [(rnd.choice(all_cells), rnd.choice(CATEGORIES)) for _ in range(4)]
    h = History()
    first, second, third = SinkBatch(), SinkBatch(), SinkBatch()
    for i in range(n_cases):
        created = start + timedelta(seconds=rnd.randrange(days * 86400))
        p, s = proactive if created < start + timedelta(days=days / 2) else later_proactive
        x = rnd.random()
        discovered_by = "patrol" if x < p else "sensor" if x < p + s else "citizen"
        kind = "device_fault" if rnd.random() < device_faults else "problem"
        if kind == "device_fault":
            discovered_by = "sensor"
        if rnd.random() < 0.35:
            cell, category = rnd.choice(hot)
        else:
            cell, category = rnd.choice(all_cells), rnd.choice(CATEGORIES)
        if rnd.random() < 0.04:
            cell = ""  # not located
        sd = cell[:9] if cell else rnd.choice(SUBDISTRICTS)
        team = rnd.choice(TEAMS)
        case_id = f"case-{seed}-{i:05d}"
        base = CaseRow(case_id, category, discovered_by, cell, sd, "street", team, "dispatched", 2, created,
                       None, None, 1, ("hotline",), 0, "r1", "v1", "g1", 1, kind=kind,
                       sensor_id=f"s-{i}" if kind == "device_fault" else "")
        if rnd.random() < 0.03:
            _legacy(h, rnd, base, first, second)
        else:
            life = _Life(base, rnd)
            _live(life, rnd, created)
            if rnd.random() < refirsts:
                _refirst(life, rnd, all_cells)
            revisions = life.revisions
            first.cases.append(revisions[0])
            first.rounds.extend(life.first_round_rows)
            second.cases.append(revisions[-1])
            second.rounds.extend(life.rounds)
            if len(revisions) > 2:
                third.cases.append(revisions[rnd.randrange(1, len(revisions) - 1)])
            h.latest[case_id] = revisions[-1]
            h.rounds.update({(r.case_id, r.round): r for r in life.rounds})
        c = h.latest[case_id]
        steps = _transitions(c, h.rounds)
        h.transitions.extend(steps)
        first.transitions.extend(steps)
        first.events.append(EventRow(
            f"ev-{case_id}", {"citizen": "hotline", "patrol": "patrol", "sensor": "iot"}[c.discovered_by],
            case_id, c.category, c.cell, c.subdistrict, c.created_at, c.created_at, None, None, False, False, "g1",
        ))
    h.batches = [first, second, third, first]  # the last one replays the first
    return h


def _legacy(h: History, rnd: random.Random, base: CaseRow, first: SinkBatch, second: SinkBatch) -> None:
    """A case stored before migration 0004: status and due_at, no rounds, no lifecycle facts."""
    c = replace(base, due_at=base.created_at + 48 * HOUR)
    first.cases.append(c)
    if rnd.random() < 0.6:
        c = replace(c, status="closed", closed_at=c.created_at + timedelta(hours=rnd.randrange(1, 90)), revision=2)
        second.cases.append(c)
    h.latest[c.case_id] = c


def _refirst(life: _Life, rnd: random.Random, all_cells: list[str]) -> None:
    """An earlier report of the case, processed late, becomes its first report (docs/cases.md §1)."""
    c = life.case
    same_sd = [x for x in all_cells if x[:9] == c.subdistrict] or [c.cell]
    life.case = replace(
        c, created_at=c.created_at - timedelta(minutes=rnd.randrange(5, 6 * 60)),
        cell=rnd.choice(same_sd) if c.cell else "",
        discovered_by=rnd.choice([d for d in ("citizen", "patrol", "sensor") if d != c.discovered_by]),
    )
    life._save()


def _transitions(c: CaseRow, rounds: dict[tuple[str, int], RoundRow]) -> list[TransitionRow]:
    """The case's steps, from its rounds (legacy cases: created and, when closed, closed)."""
    steps = [("new", c.team, c.created_at)]
    for r in sorted((r for r in rounds.values() if r.case_id == c.case_id), key=lambda r: r.round):
        steps.append(("dispatched", r.team, r.dispatched_at))
        steps += [(s, r.team, t) for s, t in (("accepted", r.accepted_at), ("resolved", r.resolved_at)) if t]
        if r.outcome in ("rejected", "reworked") and r.ended_at:
            steps.append(("rejected" if r.outcome == "rejected" else "reopened", r.team, r.ended_at))
    if c.closed_at:
        steps.append(("closed", c.team, c.closed_at))
    return [TransitionRow(c.case_id, n, s, team, "actor-1", at) for n, (s, team, at) in enumerate(steps, 1)]


# ---- the oracle -----------------------------------------------------------------------------------------


def period_of(d: date, period: str) -> str:
    if period == "day":
        return d.isoformat()
    if period == "week":
        return (d - timedelta(days=d.weekday())).isoformat()
    if period == "month":
        return d.replace(day=1).isoformat()
    return "all"


def in_range(d: date, since: date | None, until: date | None) -> bool:
    return (since is None or d >= since) and (until is None or d < until)


def grid_of(cell: str) -> str:
    return cell[:12]


def problems(h: History) -> list[CaseRow]:
    """Problem cases (§1: device faults are never counted as discovered or recurring problems)."""
    return [c for c in h.latest.values() if c.kind == "problem"]


def expected_discovery(
    h: History, period: str, key: str, since: date | None = None, until: date | None = None
) -> dict[tuple[str, str], dict[str, int]]:
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"citizen": 0, "patrol": 0, "sensor": 0})
    for c in problems(h):
        d = sh_day(c.created_at)
        if in_range(d, since, until):
            k = {
                "none": "",
                "subdistrict": c.subdistrict,
                "grid": grid_of(c.cell),
                "cell": c.cell,
                "category": c.category,
            }[key]
            out[(period_of(d, period), k)][c.discovered_by] += 1
    return dict(out)


def is_recurrent(h: History, c: CaseRow, within_days: int) -> bool:
    return any(
        p.case_id != c.case_id
        and p.cell == c.cell
        and p.category == c.category
        and p.closed_at is not None
        and p.closed_at < c.created_at <= p.closed_at + timedelta(days=within_days)
        for p in problems(h)
    )


def expected_recurrence(
    h: History,
    within_days: int,
    since: date | None = None,
    until: date | None = None,
) -> dict[str, tuple[int, int]]:
    """case_id -> (1, recurrent flag) for the located problem cases created in the range."""
    return {
        c.case_id: (1, int(is_recurrent(h, c, within_days)))
        for c in problems(h)
        if c.cell and in_range(sh_day(c.created_at), since, until)
    }


def quantile_exact(values: list[int], q: float) -> float:
    """ClickHouse quantileExact: the element at floor(q·n) of the sorted values."""
    s = sorted(values)
    return float(s[min(len(s) - 1, math.floor(q * len(s)))])


def is_open(c: CaseRow) -> bool:
    return c.status in OPEN


def is_overdue(c: CaseRow, as_of: datetime) -> bool:
    return is_open(c) and c.due_at is not None and c.due_at < as_of


def verification_overdue(c: CaseRow, as_of: datetime) -> bool:
    return c.status == "resolved" and c.verify_due_at is not None and c.verify_due_at < as_of


def closed_on_time(c: CaseRow) -> bool:
    """§8: closed, its final resolution <= case_due_at, verified <= verify_due_at."""
    return bool(c.status == "closed" and c.resolved_at and c.case_due_at and c.resolved_at <= c.case_due_at
                and c.closed_at and c.verify_due_at and c.closed_at <= c.verify_due_at)


def expected_team_sla(h: History, case_ids: set[str], as_of: datetime) -> dict[str, dict[str, int]]:
    """§8 per team over the rounds of `case_ids`, each round credited to its own team."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in h.rounds.values():
        if r.case_id not in case_ids:
            continue
        t = out[r.team]
        due = r.outcome not in NOT_DUE and r.due_at < as_of
        resolved = r.outcome in RESOLVED and r.resolved_at is not None
        on_time = resolved and r.resolved_at is not None and r.resolved_at <= r.due_at
        t["rounds"] += 1
        t["rounds_due"] += due
        t["resolved"] += resolved
        t["resolved_on_time"] += on_time
        t["resolved_on_time_of_due"] += due and on_time
        t["accepted"] += r.accepted_at is not None
        t["accepted_on_time"] += r.accepted_at is not None and r.accepted_at <= r.accept_due_at
        t["reworked"] += r.outcome == "reworked"
        t["rejected"] += r.outcome == "rejected"
        t["superseded"] += r.outcome == "superseded"
        t["overdue_open"] += r.outcome == "open" and r.due_at < as_of
    return {team: dict(v) for team, v in out.items()}
