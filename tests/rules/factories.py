"""Builders for rule tests: events and small rules files written to a temporary directory."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.model.events import Event, Location

AT = datetime(2024, 5, 6, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai

HEADER = """\
version: "t1"
kind: dispatch-rules
name: test
teams:
  enforcement: {sla: 24h, escalate_to: supervision}
  handling: {sla: 48h, priority: 3, escalate_to: supervision}
  supervision: {sla: 72h}
"""


def event(source: str = "patrol", category: str = "E0501", at: datetime = AT, cell: str | None = "310109009001001",
          subdistrict: str | None = "310109009", grid_kind: str | None = "street", located: bool = True,
          **fields: Any) -> Event:
    location = Location(cell, subdistrict, grid_kind, "g1") if located else None  # type: ignore[arg-type]
    return Event(f"{source}:t", source, category, at, location=location, **fields)  # type: ignore[arg-type]


def rules_file(tmp: Path, rules: str, default: str = "default: {team: handling}\n", header: str = HEADER,
               name: str = "r.yaml") -> Path:
    path = tmp / name
    path.write_text(header + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ") + default,
                    encoding="utf-8")
    return path
