"""A generated case history with known shape, and the reports' answers computed from it in plain Python.

The oracle functions below re-state each report's definition (see pipeline/reports/*) directly over the
generated rows, without SQL, so a report that disagrees with them is wrong on that definition.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from pipeline.records import CaseRow, EventRow, SinkBatch, TransitionRow

SUBDISTRICTS = ("310109009", "310109010", "310109011")
CATEGORIES = ("E0501", "E0102", "P0101", "P0301")
TEAMS = ("enforcement", "handling", "supervision")
SHANGHAI = timedelta(hours=8)


def sh_day(t: datetime) -> date:
    """The Asia/Shanghai calendar day of a naive UTC time (no DST in China since 1991)."""
    return (t + SHANGHAI).date()


def cells() -> list[str]:
    return [f"{sd}{g:03d}{c:03d}" for sd in SUBDISTRICTS for g in (1, 2, 3) for c in (1, 2, 3, 4)]


@dataclass
class History:
    """Latest case states, all revisions as stored (in several batches), transitions and events."""

    latest: dict[str, CaseRow] = field(default_factory=dict)
    batches: list[SinkBatch] = field(default_factory=list)
    transitions: list[TransitionRow] = field(default_factory=list)


def generate(
    seed: int,
    n_cases: int,
    start: datetime,
    days: int,
    proactive: tuple[float, float] = (0.2, 0.1),
    later_proactive: tuple[float, float] = (0.3, 0.15),
) -> History:
    """Cases created over `days` days from `start` (naive UTC). In the first half patrol/sensor shares are
    `proactive`, in the second `later_proactive`. A few hot cells × categories get many cases so that
    recurrences and hot spots exist. Every case is written as revision 1 (dispatched), closed ones again as
    revision 2, some re-opened as revision 3; one batch is replayed whole."""
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
        if rnd.random() < 0.35:
            cell, category = rnd.choice(hot)
        else:
            cell, category = rnd.choice(all_cells), rnd.choice(CATEGORIES)
        if rnd.random() < 0.04:
            cell = ""  # not located
        sd = cell[:9] if cell else rnd.choice(SUBDISTRICTS)
        team = rnd.choice(TEAMS)
        due = created + timedelta(hours=48) if rnd.random() < 0.9 else None
        case_id = f"case-{seed}-{i:05d}"
        base = CaseRow(
            case_id,
            category,
            discovered_by,
            cell,
            sd,
            "street",
            team,
            "dispatched",
            2,
            created,
            due,
            None,
            1,
            ("hotline",),
            0,
            "r1",
            "v1",
            "g1",
            1,
        )
        seq = 0
        steps: list[TransitionRow] = []

        def step(
            status: str,
            at: datetime,
            steps: list[TransitionRow] = steps,
            case_id: str = case_id,
            team: str = team,
        ) -> None:
            nonlocal seq
            seq += 1
            steps.append(TransitionRow(case_id, seq, status, team, "actor-1", at))

        step("new", created)
        t = created + timedelta(seconds=rnd.randrange(60, 3600))
        if rnd.random() < 0.95:
            step("dispatched", t)
        latest = base
        first.cases.append(base)
        if rnd.random() < 0.85:
            t += timedelta(seconds=rnd.randrange(60, 4 * 3600))
            step("accepted", t)
            if rnd.random() < 0.9:
                t += timedelta(seconds=rnd.randrange(600, 60 * 3600))
                step("resolved", t)
                if rnd.random() < 0.9:
                    t += timedelta(seconds=rnd.randrange(60, 6 * 3600))
                    step("closed", t)
                    latest = replace(base, status="closed", closed_at=t, revision=2)
                    second.cases.append(latest)
                    if rnd.random() < 0.05:
                        step("reopened", t + timedelta(hours=1))
                        latest = replace(base, status="accepted", closed_at=None, reopened=1, revision=3)
                        third.cases.append(latest)
        h.latest[case_id] = latest
        h.transitions.extend(steps)
        first.transitions.extend(steps)
        first.events.append(
            EventRow(
                f"ev-{case_id}",
                {"citizen": "hotline", "patrol": "patrol", "sensor": "iot"}[discovered_by],
                case_id,
                category,
                cell,
                sd,
                created,
                created,
                None,
                None,
                False,
                False,
                "g1",
            )
        )
    h.batches = [first, second, third, first]  # the last one replays the first
    return h


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


def expected_discovery(
    h: History, period: str, key: str, since: date | None = None, until: date | None = None
) -> dict[tuple[str, str], dict[str, int]]:
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"citizen": 0, "patrol": 0, "sensor": 0})
    for c in h.latest.values():
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
        for p in h.latest.values()
    )


def expected_recurrence(
    h: History,
    within_days: int,
    since: date | None = None,
    until: date | None = None,
) -> dict[str, tuple[int, int]]:
    """case_id -> recurrent flag as (1, flag) summed later; returns per-case flags for located cases."""
    return {
        c.case_id: (1, int(is_recurrent(h, c, within_days)))
        for c in h.latest.values()
        if c.cell and in_range(sh_day(c.created_at), since, until)
    }


def quantile_exact(values: list[int], q: float) -> float:
    """ClickHouse quantileExact: the element at floor(q·n) of the sorted values."""
    s = sorted(values)
    return float(s[min(len(s) - 1, math.floor(q * len(s)))])


def first_times(h: History) -> dict[str, dict[str, datetime]]:
    out: dict[str, dict[str, datetime]] = defaultdict(dict)
    for t in h.transitions:
        cur = out[t.case_id].get(t.status)
        if cur is None or t.at < cur:
            out[t.case_id][t.status] = t.at
    return out
