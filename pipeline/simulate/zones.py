"""Where a simulated incident may start (docs/cases.md §2): the zones of the cases already placed.

An open case absorbs every report of its category within reach of it from its first report less the window
until it is closed; the planner (`pipeline.simulate.plan`) keeps new incidents out of those zones, so each
incident is exactly one case by the specification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pipeline.simulate.config import SHANGHAI
from pipeline.simulate.spec import family
from pipeline.simulate.world import metres

FAR_FUTURE = datetime(9999, 1, 1, tzinfo=SHANGHAI)


@dataclass(slots=True)
class Zone:
    """Where and while a case absorbs reports of `category` (§2): from `start` (its first report less the
    window and a margin) to `end` (its closing plus a margin; for ever while it is not known)."""

    book: str
    category: str
    lon: float
    lat: float
    first: datetime
    start: datetime
    end: datetime
    owner: str


class Zones:
    """The placed cases' zones, to keep new incidents out of them.

    A new incident first reported at `t` may not start inside a zone (`start <= t <= end`): its reports would
    join that case. Nor may it start before a placed incident nearby (`first > t`): that one's reports would join
    it while it is open (planning is in time order, but a sensor's alarm comes a few readings after its seed).
    Reach: both incidents' reports scatter up to a third of the radius around their case points.
    """

    def __init__(self) -> None:
        self.zones: dict[tuple[str, str], list[Zone]] = {}

    @staticmethod
    def reach(category: str) -> float:
        return family(category).radius_m * 5 / 3 + 20.0

    def free(self, book: str, category: str, lon: float, lat: float, at: datetime, owner: str = "") -> bool:
        reach = self.reach(category)
        # a latitude difference alone is a lower bound of the distance: most zones are ruled out without metres()
        dlat = reach / 111_190.0
        for z in self.zones.get((book, category), ()):
            if owner and z.owner == owner:
                continue
            if (z.start <= at <= z.end or z.first > at) and abs(lat - z.lat) < dlat \
                    and metres(lon, lat, z.lon, z.lat) < reach:
                return False
        return True

    def add(self, zone: Zone) -> None:
        self.zones.setdefault((zone.book, zone.category), []).append(zone)

    def retire(self, before: datetime) -> None:
        """Forget the zones that ended before `before`: no incident still to come starts earlier."""
        for zones in self.zones.values():
            if any(z.end < before for z in zones):
                zones[:] = [z for z in zones if z.end >= before]
