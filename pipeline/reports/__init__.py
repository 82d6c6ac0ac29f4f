"""The analysts' reports over the ClickHouse tables: plain functions returning dataclasses.

Each takes a `Queryable` (pipeline.sink.ClickHouse, or any object with `query_dicts`) and `Filters`; the
command line is pipeline.reports.cli (`cityops report ...`). All read the de-duplicated view of the data:
the latest state of each case (FINAL) or distinct-id aggregates, never raw row counts.
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
from pipeline.reports.sla import Durations, SlaRow, sla

__all__ = [
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
    "SlaRow",
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
