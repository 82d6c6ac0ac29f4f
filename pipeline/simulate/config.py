"""What to simulate: the frozen, validated configuration of one simulation run.

Defaults give a demo day of one district that generates in seconds and produces in a minute or two at max
speed; every volume scales by flag. `SimConfig.checked()` rejects impossible values with a sentence naming the
option, so the CLI can print it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
DISTRICTS: dict[str, str] = {"hongkou": "310109", "xuhui": "310104"}
MAX_SENSORS = 61_000            # Hongkou's installed base in 2019 (DOMAIN.md)

# 12345 tickets about urban management per day; Xuhui has about 1.4 times Hongkou's residents.
DEFAULT_HOTLINE_PER_DAY = {"310109": 1800, "310104": 2500}


class ConfigError(ValueError):
    """A simulation option that cannot be used; the message names the option."""


@dataclass(frozen=True)
class SimConfig:
    """One simulation run. Times are UTC; `start` None means: the last `days` whole days before today
    (Asia/Shanghai), so every generated time lies in the past and passes the worker's time check."""

    days: float = 1.0
    start: datetime | None = None
    districts: tuple[str, ...] = ("310109",)
    sensors: int = 3000                      # per district
    reading_interval_min: float = 15.0
    seed: int = 1
    malformed_share: float = 0.01
    hotline_per_day: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_HOTLINE_PER_DAY))
    address_only_share: float = 0.33        # tickets with an address and no coordinates
    unresolvable_share: float = 0.03        # of the address-only tickets: addresses the gazetteer cannot place
    patrol_teams_per_subdistrict: int = 1
    patrol_reports_per_shift: int = 14
    sensor_incidents_per_1000: float = 6.0   # real threshold crossings per 1,000 sensors per day
    multi_source_per_day: int = 12           # incidents seen by a sensor, callers and a patrol
    hotspots: int = 4                        # per district: chronic spots where the problem returns 4 times a day
    flapping_sensors: int = 4                # per district
    broken_sensors: int = 6                  # per district: stuck, silent, error (device-fault cases)
    unregistered_sensors: int = 3            # per district: sensors sending readings but not in the registry
    positioned_unregistered: int = 2         # of those: with their position in their messages (they may alarm)
    unregistered_alarms: int = 1             # per district: incidents raised by a positioned unregistered sensor
    grid_edge_per_day: int = 4               # per district: incidents reported on both sides of a grid edge
    person_pairs_per_day: int = 2            # per district: a resident's alarm next to an open E0499 case
    # reports of one problem stay in its sub-district (its case book, docs/cases.md §1.1); False only to measure
    # how often they would not (pipeline.simulate.edges): the truth of such a run is not the worker's
    keep_in_subdistrict: bool = True

    def checked(self) -> SimConfig:
        """This config with `start` resolved, or ConfigError naming the bad option."""
        if not 0 < self.days <= 60:
            raise ConfigError(f"--days: must be in (0, 60], got {self.days}")
        if not 0 <= self.sensors <= MAX_SENSORS:
            raise ConfigError(f"--sensors: must be 0..{MAX_SENSORS} per district, got {self.sensors}")
        if not 1 <= self.reading_interval_min <= 1440:
            raise ConfigError(f"--reading-interval: minutes in 1..1440, got {self.reading_interval_min}")
        if not 0 <= self.malformed_share < 0.5:
            raise ConfigError(f"--malformed-share: must be in [0, 0.5), got {self.malformed_share}")
        if not 0 <= self.address_only_share <= 1 or not 0 <= self.unresolvable_share <= 1:
            raise ConfigError("address shares must be in [0, 1]")
        if not 0 <= self.positioned_unregistered <= self.unregistered_sensors:
            raise ConfigError("positioned_unregistered: must be in [0, unregistered_sensors]")
        if not self.districts or any(d not in DISTRICTS.values() for d in self.districts):
            raise ConfigError(f"--district: unknown district code in {self.districts}")
        start = self.start
        if start is None:
            start = default_start(self.days)
        elif start.tzinfo is None:
            raise ConfigError("--start: needs a time zone (or give a date, read as Asia/Shanghai midnight)")
        if start < datetime(2015, 1, 1, tzinfo=UTC):
            raise ConfigError(f"--start: {start.isoformat()} is before 2015 (the worker refuses such times)")
        return replace(self, start=start.astimezone(UTC))

    @property
    def begin(self) -> datetime:
        assert self.start is not None, "call checked() first"
        return self.start

    @property
    def end(self) -> datetime:
        return self.begin + timedelta(days=self.days)


def default_start(days: float, now: datetime | None = None) -> datetime:
    """Local midnight `ceil(days)` days before today in Shanghai (UTC): the whole period is in the past."""
    now = now or datetime.now(UTC)
    local_today = now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    whole = int(-(-days // 1))
    return (local_today - timedelta(days=whole)).astimezone(UTC)


def parse_start(text: str) -> datetime:
    """`YYYY-MM-DD` (Shanghai midnight) or an ISO time with offset; ConfigError otherwise."""
    try:
        if len(text) == 10:
            d = datetime.strptime(text, "%Y-%m-%d")
            return d.replace(tzinfo=SHANGHAI).astimezone(UTC)
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--start: not a date (YYYY-MM-DD) or ISO time: {text!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=SHANGHAI)
    return at.astimezone(UTC)
