"""docs/cases.md, restated for the simulator: the numbers and rules its plan and its truth follow.

The simulator's truth is an independent check of the worker, so nothing here is imported from the worker's case
books (`pipeline/stages/cases.py`) or its sensor state (`pipeline/stages/sensors.py`): the radii, windows, scopes,
deadlines and device-fault numbers are written down again from the specification (the section is named at each).
Only the data files and the dispatch rules (through the rules engine) are shared, as the worker loads them.

Where the numbers will live once the work of issue #16 is merged (read them from there then, and keep this
module as the cross-check): the sensor types' `scope`, `valid`, `stuck`, `silent`, `realarm` and `error_after`
in `pipeline/data/sensor_types.yaml`; the deadlines in the ruleset's `time_limits`; the device-fault route in
the ruleset's `device-fault` rule.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

Scope = Literal["person", "device", "area"]
FaultKind = Literal["stuck", "silent", "error"]


# -- §1.1 books, and the ids of cases -----------------------------------------------------------------------

def book_of(cell: str) -> str:
    """The case book a report is merged in: its sub-district, the first 9 digits of the cell code (§1.1)."""
    return cell[:9]


def grid_of(cell: str) -> str:
    """The management grid of a cell (the old book key, the first 12 digits)."""
    return cell[:12]


def case_id(cell: str, first_event_id: str) -> str:
    """`C<grid of the first report>-<sha1(first event id)[:12]>`: the id the worker gives a case (§1.1)."""
    return f"C{grid_of(cell)}-{hashlib.sha1(first_event_id.encode()).hexdigest()[:12]}"


def alarm_event_id(sensor_id: str, n: int) -> str:
    """The event id of a sensor's n-th alarm (README "Contracts")."""
    return f"iot:{sensor_id}:alarm{n}"


def fault_event_id(sensor_id: str, n: int) -> str:
    """The event id of a sensor's n-th device-fault report (§6.3). An assumption of the simulator: the
    specification does not name it; tests match device faults by (sensor, kind), not by this id."""
    return f"iot:{sensor_id}:fault{n}"


# -- §2 what merges -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Family:
    """How near (metres) a report must be to a case's place, and how long *before* its first report it may
    have been made, to join it (§2 rule 4 and 5)."""

    radius_m: float
    window: timedelta


FAMILIES: dict[str, Family] = {
    "E04": Family(300.0, timedelta(hours=6)),     # emergencies
    "P01": Family(50.0, timedelta(hours=72)),     # utility parts (manhole covers, ...)
    "E05": Family(150.0, timedelta(hours=4)),     # street order (vendors, ...)
}
OTHER_FAMILY = Family(100.0, timedelta(hours=24))


def family(category: str) -> Family:
    return FAMILIES.get(category[:3], OTHER_FAMILY)


# §2 rule 3: who or what a sensor's alarm is about (sensor_types.yaml `scope` once merged)
SCOPES: dict[str, Scope] = {
    "elderly_button": "person", "bed_mat_inactive": "person",
    "manhole_tilt": "device", "manhole_open": "device", "bin_fill": "device", "smoke": "device",
    "gas_concentration": "device", "heritage_crack": "device",
    "water_level": "area", "pipe_pressure": "area", "noise": "area", "dust_pm10": "area",
}


# -- §3.2 deadlines and §4 who verifies --------------------------------------------------------------------

DISPATCH_LIMIT = timedelta(minutes=30)
ACCEPT_LIMIT = {1: timedelta(minutes=15), 2: timedelta(hours=1), 3: timedelta(hours=2), 4: timedelta(hours=4)}
VERIFY_LIMIT = {1: timedelta(hours=2), 2: timedelta(hours=8), 3: timedelta(hours=24), 4: timedelta(hours=48)}


def verifier(resolving_team: str) -> str:
    """Who checks a resolution (§4): supervision, or a patrol when supervision itself resolved the case."""
    return "patrol" if resolving_team == "supervision" else "supervision"


def after_reject(route_team: str, rejecting_team: str) -> str:
    """The team a rejected case goes to (§4.3): the rules' pick, unless it is the rejecting team again; then
    supervision decides (and when supervision rejected, handling)."""
    if route_team != rejecting_team:
        return route_team
    return "supervision" if rejecting_team != "supervision" else "handling"


# -- §5 recurrence ----------------------------------------------------------------------------------------

RECURRENCE_DAYS = 30


# -- §6 sensors -------------------------------------------------------------------------------------------

REALARM = timedelta(hours=6)            # §6.1: a sensor still beyond its alarm level alarms again after this
ERROR_AFTER = 3                         # §6.3: consecutive error readings make an error fault
STUCK_AFTER = timedelta(hours=6)        # §6.3: the same value this long ...
STUCK_READINGS = 4                      # ... and at least this many readings
NEVER_STUCK = frozenset({"manhole_open", "elderly_button", "gas_concentration", "smoke"})
SILENT_AFTER = timedelta(hours=1)       # §6.3, the shipped default of every type

# §6.2: the physical range of each type; a reading outside it is an error reading
VALID: dict[str, tuple[float, float]] = {
    "manhole_tilt": (0, 90), "manhole_open": (0, 1), "water_level": (0, 300), "pipe_pressure": (0, 2.5),
    "gas_concentration": (0, 100), "smoke": (0, 100), "bin_fill": (0, 100), "noise": (20, 140),
    "elderly_button": (0, 1), "bed_mat_inactive": (0, 10080), "heritage_crack": (0, 50), "dust_pm10": (0, 2000),
}


def valid(sensor_type: str, value: float) -> bool:
    lo, hi = VALID[sensor_type]
    return lo <= value <= hi


def silent_after(interval: timedelta) -> timedelta:
    """How long a sensor reporting every `interval` may send nothing before it is silent (§6.3: 4 × the
    reporting interval, at least 1 h). Longer than the type's default only for sparse readings (the bench's
    month: one a day), where the registry must say so per sensor."""
    return max(SILENT_AFTER, 4 * interval)


@dataclass(frozen=True, slots=True)
class Route:
    """A dispatch decision as the truth records it."""

    team: str
    priority: int
    sla: timedelta
    rule_id: str


# §6.3: fault reports are routed only by the rules that name `fault` (the shipped `device-fault` rule)
FAULT_ROUTE = Route("handling", 3, timedelta(hours=24), "device-fault")
