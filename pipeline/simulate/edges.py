"""How often the edge of a case book splits one problem's reports (issue #16): per management grid (the old book,
the cell's first 12 digits) and per sub-district (the new one, the first 9, docs/cases.md §1.1).

    python -m pipeline.simulate.edges --days 30                  # a month of Hongkou, seed 1
    python -m pipeline.simulate.edges --days 30 --json

It plans the period with the reports of each problem scattered as they fall (`keep_in_subdistrict` off, no
incidents planted on grid edges: the natural share, not the simulator's test cases) and counts the **true
duplicates**: every pair of reports of one incident. A pair is split by a book edge when its two reports are in
two books: the worker could not merge them. Deterministic for a seed. The plan of such a run is not a valid
truth for the worker (some of its incidents straddle a sub-district edge); only its reports are used.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import combinations

import orjson

from pipeline.simulate.config import DISTRICTS, SimConfig, parse_start
from pipeline.simulate.generate import plan
from pipeline.simulate.model import Incident
from pipeline.simulate.spec import book_of, grid_of
from pipeline.simulate.world import World


@dataclass
class EdgeSplits:
    """Pairs of reports of one incident, and how many of them a grid edge and a sub-district edge split."""

    incidents: int = 0                 # incidents with at least two located reports
    pairs: int = 0
    split_by_grid: int = 0
    split_by_subdistrict: int = 0
    incidents_in_two_grids: int = 0    # incidents whose reports a grid edge splits at least once
    incidents_in_two_subdistricts: int = 0
    by_family: dict[str, Counter[str]] = field(default_factory=dict)
    by_plan: dict[str, Counter[str]] = field(default_factory=dict)      # hotline, multi, hotspot, ...

    def share(self, split: int) -> float:
        return split / self.pairs if self.pairs else 0.0

    def add(self, incident: Incident) -> None:
        cells = [r.cell for r in incident.reports if r.cell]
        if len(cells) < 2:
            return
        self.incidents += 1
        self.incidents_in_two_grids += len({grid_of(c) for c in cells}) > 1
        self.incidents_in_two_subdistricts += len({book_of(c) for c in cells}) > 1
        fam = self.by_family.setdefault(incident.category[:3], Counter())
        kind = self.by_plan.setdefault(incident.kind, Counter())
        for a, b in combinations(cells, 2):
            grid, sub = grid_of(a) != grid_of(b), book_of(a) != book_of(b)
            self.pairs += 1
            self.split_by_grid += grid
            self.split_by_subdistrict += sub
            for c in (fam, kind):
                c.update(pairs=1, grid=int(grid), subdistrict=int(sub))

    def to_json(self) -> dict[str, object]:
        return {"incidents": self.incidents, "pairs": self.pairs,
                "incidents_split": {"grid": self.incidents_in_two_grids,
                                    "subdistrict": self.incidents_in_two_subdistricts},
                "grid": {"split": self.split_by_grid, "share": round(self.share(self.split_by_grid), 4)},
                "subdistrict": {"split": self.split_by_subdistrict,
                                "share": round(self.share(self.split_by_subdistrict), 4)},
                "by_family": {k: dict(v) for k, v in sorted(self.by_family.items())},
                "by_plan": {k: dict(v) for k, v in sorted(self.by_plan.items())}}


def measure(config: SimConfig, world: World | None = None) -> EdgeSplits:
    """Plan `config` with reports scattered freely and count the split duplicates."""
    natural = replace(config, keep_in_subdistrict=False, grid_edge_per_day=0)
    planner, *_ = plan(natural, world or World())
    out = EdgeSplits()
    for incident in planner.incidents:
        out.add(incident)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.simulate.edges", description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--district", choices=sorted(DISTRICTS), default="hongkou")
    p.add_argument("--sensors", type=int, default=3000, help="registered sensors (sensor incidents scale with it)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", default="2026-01-05", help="first day (YYYY-MM-DD, Shanghai); fixed for determinism")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    cfg = SimConfig(days=a.days, start=parse_start(a.start), districts=(DISTRICTS[a.district],), sensors=a.sensors,
                    seed=a.seed)
    got = measure(cfg)
    if a.json:
        sys.stdout.write(orjson.dumps(got.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"{a.days:g} days of {a.district} (seed {a.seed}, {a.sensors:,} sensors): {got.incidents:,} incidents "
          f"with two or more reports, {got.pairs:,} pairs of reports of one incident")
    for name, split in (("management grid (cell[:12], the old book)", got.split_by_grid),
                        ("sub-district (cell[:9], the new book)", got.split_by_subdistrict)):
        print(f"  split by a {name}: {split:,} of {got.pairs:,} pairs = {got.share(split):.2%}")
    print(f"  incidents with reports in two books: {got.incidents_in_two_grids:,} by grid, "
          f"{got.incidents_in_two_subdistricts:,} by sub-district, of {got.incidents:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
