"""The analysts' reports over the ClickHouse tables: plain functions returning dataclasses.

Each takes a `Queryable` (pipeline.sink.transport.ClickHouse, or any object with `query_dicts`) and `Filters`; the
command line is pipeline.reports.cli (`cityops report ...`). All read the views of migration 0004 (`v_cases`,
`v_rounds`, `v_discovery_daily`: the latest state, FINAL), the views the dashboards read, so a figure has one
definition (docs/cases.md §8).
"""

from pipeline.reports.discovery import DiscoveryChange, DiscoveryRow, discovery, discovery_change
from pipeline.reports.health import GridHealth, WorkloadRow, health, workload
from pipeline.reports.query import Filters, Queryable, ReportError
from pipeline.reports.recurrence import (
    HotSpot,
    RecurrenceChange,
    RecurrenceRow,
    hot_spots,
    recurrence,
    recurrence_change,
)
from pipeline.reports.sla import (
    ClosingSla,
    DispatchSla,
    Durations,
    SlaReport,
    TeamSla,
    VerificationSla,
    sla,
)

__all__ = [
    "ClosingSla",
    "DispatchSla",
    "DiscoveryChange",
    "DiscoveryRow",
    "Durations",
    "Filters",
    "GridHealth",
    "HotSpot",
    "Queryable",
    "RecurrenceChange",
    "RecurrenceRow",
    "ReportError",
    "SlaReport",
    "TeamSla",
    "VerificationSla",
    "WorkloadRow",
    "discovery",
    "discovery_change",
    "health",
    "hot_spots",
    "recurrence",
    "recurrence_change",
    "sla",
    "workload",
]
