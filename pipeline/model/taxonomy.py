"""The one category vocabulary of all three sources (CONTRACTS.md "Categories").

Codes are `P` (part, 部件) or `E` (event, 事件) + 2-digit major class + 2-digit minor class, e.g. `P0101`
water-supply manhole cover, `E0501` unlicensed street vendor. Loaded from pipeline/data/taxonomy.csv, a copy of
shared/data/urban_parts_events_taxonomy.csv, so the project carries its own vocabulary.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TAXONOMY_CSV = Path(__file__).resolve().parents[1] / "data" / "taxonomy.csv"
_KIND_PREFIX = {"部件": "P", "事件": "E"}


@dataclass(frozen=True, slots=True)
class Category:
    code: str          # e.g. "P0101"
    kind: str          # "part" or "event"
    major_code: str    # e.g. "P01"
    major_name: str    # e.g. "公用设施"
    name: str          # e.g. "上水井盖"


@dataclass(frozen=True)
class Taxonomy:
    categories: dict[str, Category]

    def __contains__(self, code: object) -> bool:
        return code in self.categories

    def get(self, code: str) -> Category | None:
        return self.categories.get(code)

    def majors(self) -> dict[str, str]:
        """Major class code (`P01`, `E05`, ...) -> its name."""
        return {c.major_code: c.major_name for c in self.categories.values()}

    def codes(self) -> list[str]:
        return sorted(self.categories)


def load_taxonomy(path: Path = TAXONOMY_CSV) -> Taxonomy:
    cats: dict[str, Category] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            prefix = _KIND_PREFIX[row["kind"]]
            code = f"{prefix}{row['major_code']}{row['minor_code'][-2:]}"
            cats[code] = Category(
                code=code,
                kind="part" if prefix == "P" else "event",
                major_code=f"{prefix}{row['major_code']}",
                major_name=row["major_name"],
                name=row["minor_name"],
            )
    return Taxonomy(cats)


@lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    return load_taxonomy()
