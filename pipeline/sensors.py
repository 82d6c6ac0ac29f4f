"""IoT sensors: the registry (where a sensor is, what its thresholds are) and the alarm state of each sensor.

A reading is not a problem; crossing a threshold is. `SensorState.observe` applies one reading with hysteresis
(separate alarm and clear levels) and debounce (N consecutive readings beyond the alarm level), so a flapping
sensor opens one problem, not ten. Readings older than the sensor's latest are late (or replayed): they are
counted, never re-applied, which makes a replay of the topic change nothing.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.decode import Reading
from pipeline.model import Event
from pipeline.taxonomy import Taxonomy, default_taxonomy

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_TYPES = DATA / "sensor_types.yaml"
log = logging.getLogger("cityops.sensors")
Direction = Literal["above", "below"]


class RegistryError(ValueError):
    """A sensor registry or type file that cannot be used; `problems` are `file:line:column: key: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class Threshold:
    direction: Direction
    alarm: float
    clear: float
    debounce: int

    def beyond_alarm(self, v: float) -> bool:
        return v >= self.alarm if self.direction == "above" else v <= self.alarm

    def back_to_normal(self, v: float) -> bool:
        return v <= self.clear if self.direction == "above" else v >= self.clear


@dataclass(frozen=True, slots=True)
class SensorType:
    name: str
    unit: str
    category: str
    threshold: Threshold


@dataclass(frozen=True, slots=True)
class Sensor:
    sensor_id: str
    sensor_type: str
    category: str
    lon: float
    lat: float
    threshold: Threshold


@dataclass(frozen=True)
class SensorRegistry:
    types: dict[str, SensorType]
    sensors: dict[str, Sensor]
    source: str = ""

    def __len__(self) -> int:
        return len(self.sensors)

    def get(self, sensor_id: str) -> Sensor | None:
        return self.sensors.get(sensor_id)


_TYPE_KEYS = {"unit", "direction", "alarm", "clear", "debounce", "category"}


def load_types(path: Path = DEFAULT_TYPES, taxonomy: Taxonomy | None = None) -> dict[str, SensorType]:
    tax = taxonomy or default_taxonomy()
    problems: list[str] = []
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        raise RegistryError([f"{path}:1:1: (top): not valid YAML: {err}"]) from None
    if not isinstance(root, yaml.MappingNode):
        raise RegistryError([f"{path}:1:1: (top): must be a mapping with version, kind, name, types"])
    top = {k.value: v for k, v in root.value}
    if "types" not in top or not isinstance(top["types"], yaml.MappingNode):
        raise RegistryError([f"{path}:1:1: types: required mapping of sensor type -> thresholds"])
    out: dict[str, SensorType] = {}
    for key_node, node in top["types"].value:
        name = key_node.value
        where = f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: types.{name}"
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"{where}: must be a mapping")
            continue
        fields = {k.value: v.value for k, v in node.value}
        unknown = set(fields) - _TYPE_KEYS
        if unknown:
            problems.append(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        try:
            cat = str(fields["category"])
            if cat not in tax:
                raise ValueError(f"category: unknown code {cat!r}")
            out[name] = SensorType(name=name, unit=str(fields.get("unit", "")), category=cat,
                                   threshold=_threshold(fields))
        except (KeyError, ValueError) as err:
            problems.append(f"{where}: {_why(err)}")
    if problems:
        raise RegistryError(problems)
    return out


def load_registry(path: Path, types: dict[str, SensorType] | None = None,
                  taxonomy: Taxonomy | None = None) -> SensorRegistry:
    """Read a registry CSV: sensor_id,sensor_type,lon,lat[,category,direction,alarm,clear,debounce].

    Empty override columns take the type's defaults. Every bad row is reported (`file:line:column: key: ...`);
    one bad row rejects the file, so a running worker keeps its previous registry.
    """
    tax = taxonomy or default_taxonomy()
    types = types if types is not None else load_types(taxonomy=tax)
    problems: list[str] = []
    sensors: dict[str, Sensor] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        required = ["sensor_id", "sensor_type", "lon", "lat"]
        if header is None or any(h not in header for h in required):
            raise RegistryError([f"{path}:1:1: (header): must name at least {', '.join(required)}"])
        col = {h: i for i, h in enumerate(header)}
        for n, row in enumerate(reader, start=2):
            def at(key: str, n: int = n) -> str:
                return f"{path}:{n}:{col.get(key, 0) + 1}: {key}"
            if len(row) != len(header):
                problems.append(f"{path}:{n}:1: (row): {len(row)} columns, header has {len(header)}")
                continue
            rec = dict(zip(header, row, strict=True))
            sid, stype = rec["sensor_id"].strip(), rec["sensor_type"].strip()
            if not sid:
                problems.append(f"{at('sensor_id')}: empty")
                continue
            if sid in sensors:
                problems.append(f"{at('sensor_id')}: duplicate sensor id {sid!r}")
                continue
            if stype not in types:
                problems.append(f"{at('sensor_type')}: unknown sensor type {stype!r}")
                continue
            base = types[stype]
            try:
                lon, lat = float(rec["lon"]), float(rec["lat"])
            except ValueError:
                problems.append(f"{at('lon')}: lon/lat must be numbers")
                continue
            if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
                problems.append(f"{at('lat')}: position out of range ({lon}, {lat})")
                continue
            category = (rec.get("category") or "").strip() or base.category
            if category not in tax:
                problems.append(f"{at('category')}: unknown category code {category!r}")
                continue
            overrides = {k: rec[k] for k in ("direction", "alarm", "clear", "debounce") if (rec.get(k) or "").strip()}
            try:
                th = _threshold({**_threshold_fields(base.threshold), **overrides}) if overrides else base.threshold
            except (KeyError, ValueError) as err:
                problems.append(f"{at(next(iter(overrides)))}: {_why(err)}")
                continue
            sensors[sid] = Sensor(sid, stype, category, lon, lat, th)
    if problems:
        raise RegistryError(problems)
    return SensorRegistry(types=types, sensors=sensors, source=str(path))


def _threshold_fields(t: Threshold) -> dict[str, Any]:
    return {"direction": t.direction, "alarm": t.alarm, "clear": t.clear, "debounce": t.debounce}


def _threshold(f: dict[str, Any]) -> Threshold:
    direction = str(f["direction"])
    if direction not in ("above", "below"):
        raise ValueError(f"direction: must be above or below, not {direction!r}")
    alarm, clear, debounce = float(f["alarm"]), float(f["clear"]), int(f["debounce"])
    if debounce < 1:
        raise ValueError("debounce: must be at least 1")
    if (direction == "above" and clear >= alarm) or (direction == "below" and clear <= alarm):
        raise ValueError(f"clear: {clear} must be on the normal side of alarm {alarm} (hysteresis)")
    return Threshold(direction=direction, alarm=alarm, clear=clear, debounce=debounce)  # type: ignore[arg-type]


def _why(err: Exception) -> str:
    return f"missing key {err.args[0]}" if isinstance(err, KeyError) else str(err)


@dataclass(slots=True)
class SensorState:
    """One sensor's alarm state and the current minute's reading aggregate (the ingest stage's state)."""

    alarm: bool = False
    streak: int = 0
    last_at: float = 0.0
    last_value: float = 0.0
    alarms: int = 0
    minute: float = 0.0
    minute_readings: int = 0
    minute_max: float = -math.inf
    late: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in _STATE_FIELDS}
        d["minute_max"] = None if math.isinf(self.minute_max) else self.minute_max
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensorState:
        d = dict(d)
        d["minute_max"] = -math.inf if d.get("minute_max") is None else d["minute_max"]
        return cls(**d)


_STATE_FIELDS = tuple(f.name for f in fields(SensorState))


@dataclass(frozen=True, slots=True)
class Observation:
    """What one reading did: `problem` is the event to open/merge a case with, when the alarm went off."""

    applied: bool             # False when late or replayed (older than the sensor's latest reading)
    problem: Event | None = None
    cleared: bool = False


# What `apply_reading` did with a reading.
LATE, APPLIED, ALARM, CLEARED = 0, 1, 2, 3
_LATE, _APPLIED, _CLEARED = Observation(applied=False), Observation(applied=True), Observation(True, cleared=True)


def apply_reading(state: SensorState, ts: float, value: float, sensor: Sensor | None) -> int:
    """Apply one reading (its time as a POSIX timestamp) to its sensor's state: LATE, APPLIED, ALARM (the alarm
    went off: see `alarm_event`) or CLEARED. Unknown sensors (`sensor` None) are aggregated, never alarm."""
    if ts <= state.last_at:
        state.late += 1
        return LATE
    minute = math.floor(ts / 60) * 60
    if minute != state.minute:
        state.minute, state.minute_readings, state.minute_max = minute, 0, -math.inf
    state.minute_readings += 1
    if value > state.minute_max:
        state.minute_max = value
    state.last_at, state.last_value = ts, value
    if sensor is None:
        return APPLIED
    th = sensor.threshold
    if not state.alarm:
        if value >= th.alarm if th.direction == "above" else value <= th.alarm:
            state.streak += 1
            if state.streak >= th.debounce:
                state.alarm, state.streak = True, 0
                state.alarms += 1
                return ALARM
        else:
            state.streak = 0
        return APPLIED
    if value <= th.clear if th.direction == "above" else value >= th.clear:
        state.alarm, state.streak = False, 0
        return CLEARED
    return APPLIED


def alarm_event(reading: Reading, sensor: Sensor, state: SensorState) -> Event:
    """The problem a reading that set off its sensor's alarm raises (after `apply_reading` returned ALARM)."""
    th = sensor.threshold
    return replace(reading.event(sensor.category, f"iot:{sensor.sensor_id}:alarm{state.alarms}"),
                   lon=sensor.lon, lat=sensor.lat,
                   description=f"{sensor.sensor_type} {reading.value:g} beyond {th.alarm:g} "
                               f"for {th.debounce} reading(s)")


def observe(state: SensorState, reading: Reading | Event, sensor: Sensor | None) -> Observation:
    """Apply one reading to its sensor's state. Unknown sensors are aggregated but never raise problems."""
    if isinstance(reading, Event):
        reading = Reading(reading.sensor_id or "", reading.sensor_type or "", reading.value or 0.0,
                          reading.occurred_at, reading.lon, reading.lat)
    done = apply_reading(state, reading.at.timestamp(), reading.value, sensor)
    if done == ALARM:
        assert sensor is not None
        return Observation(applied=True, problem=alarm_event(reading, sensor, state))
    return _APPLIED if done == APPLIED else _LATE if done == LATE else _CLEARED


def minute_start(state: SensorState) -> datetime:
    return datetime.fromtimestamp(state.minute, UTC)


class RegistryHolder:
    """The sensor registry a running worker uses, swapped atomically when its file changes.

    A changed file is loaded and validated in full first; when it is invalid the old registry stays, the refusal
    is logged and counted, and `last_error` says why. Without a path the registry is empty (every sensor is
    unknown: readings are aggregated and reported, never raise problems).
    """

    def __init__(self, path: Path | None, types: dict[str, SensorType] | None = None) -> None:
        self.path = path
        self.types = types if types is not None else load_types()
        self.current = (load_registry(path, self.types) if path is not None
                        else SensorRegistry(types=self.types, sensors={}))
        self.last_error: str | None = None
        self.refusals = 0
        self.reloads = 0
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def maybe_reload(self) -> bool:
        """Reload when the file's modification time or size changed; True when a new registry was taken."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        return self.reload()

    def reload(self) -> bool:
        if self.path is None:
            return False
        try:
            fresh = load_registry(self.path, self.types)
        except (RegistryError, OSError, UnicodeDecodeError) as err:
            self.refusals += 1
            self.last_error = str(err)
            log.warning("sensor registry %s refused, keeping the running one (%d sensors): %s",
                        self.path, len(self.current), err)
            return False
        self.current = fresh
        self.reloads += 1
        self.last_error = None
        log.info("sensor registry %s reloaded: %d sensors", self.path, len(fresh))
        return True
