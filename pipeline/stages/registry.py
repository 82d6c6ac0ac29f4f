"""The sensor types and the registry of a district's sensors (where each is, what its thresholds are), loaded from
YAML with file, line and key in every refusal, and the holder that swaps a changed registry file in between
batches (docs/cases.md §6).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from yaml.constructor import SafeConstructor

from pipeline.model.events import SENSOR_SCOPES, SensorScope
from pipeline.model.taxonomy import Taxonomy, default_taxonomy
from pipeline.model.watched import WatchedFile
from rules.durations import parse_duration

log = logging.getLogger("cityops.sensors")

Direction = Literal["above", "below"]
DATA = Path(__file__).resolve().parents[1] / "data"


DEFAULT_TYPES = DATA / "sensor_types.yaml"


DEFAULT_SILENT_S = 3600.0          # a type's `silent` when its entry leaves it out (4 x a 15-minute interval)


DEFAULT_REALARM_S = 6 * 3600.0     # a type's `realarm` when its entry leaves it out


DEFAULT_ERROR_AFTER = 3            # the file's `error_after` when it leaves it out


class RegistryError(ValueError):
    """A sensor registry or type file that cannot be used; `problems` are `file:line:column: key: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Bad(ValueError):
    """One bad field: `key` names it (so the file's error can point at it)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


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
    """A type's defaults (pipeline/data/sensor_types.yaml). Durations are seconds; `stuck_s` None: never stuck."""

    name: str
    unit: str
    category: str
    threshold: Threshold
    scope: SensorScope = "area"
    valid: tuple[float, float] = (-math.inf, math.inf)
    stuck_s: float | None = None
    silent_s: float = DEFAULT_SILENT_S
    realarm_s: float = DEFAULT_REALARM_S
    error_after: int = DEFAULT_ERROR_AFTER


@dataclass(frozen=True, slots=True)
class Sensor:
    """One sensor as the alarm and fault rules need it, flat for the readings hot path: its type's settings
    with the registry's overrides. `stuck_s` is infinite for a type never judged stuck. `registered` is False
    for an unregistered device placed by its own message (it alarms with its type's defaults)."""

    sensor_id: str
    sensor_type: str
    category: str
    lon: float
    lat: float
    threshold: Threshold
    scope: SensorScope = "area"
    valid_min: float = -math.inf
    valid_max: float = math.inf
    stuck_s: float = math.inf
    silent_s: float = DEFAULT_SILENT_S
    realarm_s: float = DEFAULT_REALARM_S
    error_after: int = DEFAULT_ERROR_AFTER
    registered: bool = True

    @classmethod
    def of_type(cls, sensor_id: str, t: SensorType, lon: float, lat: float, *, category: str | None = None,
                threshold: Threshold | None = None, silent_s: float | None = None,
                registered: bool = True) -> Sensor:
        """A sensor of type `t` at (lon, lat), with any of its category, threshold and silent period overridden."""
        return cls(sensor_id, t.name, category or t.category, lon, lat, threshold or t.threshold, t.scope,
                   t.valid[0], t.valid[1], math.inf if t.stuck_s is None else t.stuck_s,
                   t.silent_s if silent_s is None else silent_s, t.realarm_s, t.error_after, registered)


@dataclass(frozen=True)
class SensorRegistry:
    types: dict[str, SensorType]
    sensors: dict[str, Sensor]
    source: str = ""

    def __len__(self) -> int:
        return len(self.sensors)

    def get(self, sensor_id: str) -> Sensor | None:
        return self.sensors.get(sensor_id)


_TOP_KEYS = {"version", "kind", "name", "error_after", "types"}


_TYPE_KEYS = {"unit", "direction", "alarm", "clear", "debounce", "category", "scope", "valid", "stuck", "silent",
              "realarm"}


_REQUIRED = ("direction", "alarm", "clear", "debounce", "category", "scope", "valid", "stuck")


def load_types(path: Path = DEFAULT_TYPES, taxonomy: Taxonomy | None = None) -> dict[str, SensorType]:
    """Read and validate a sensor-type file; every problem is reported as `file:line:column: key: message`
    (unknown keys, missing keys, bad values and ranges), and any problem rejects the whole file."""
    tax = taxonomy or default_taxonomy()
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise RegistryError([f"{path}:1:1: (top): not valid YAML: {err}"]) from None
    if not isinstance(root, yaml.MappingNode):
        raise RegistryError([f"{path}:1:1: (top): must be a mapping with version, kind, name, types"])
    top = {k.value: (k, v) for k, v in root.value}
    problems = [f"{_where(path, k)}: {k.value}: unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})"
                for k, _ in top.values() if k.value not in _TOP_KEYS]
    error_after = DEFAULT_ERROR_AFTER
    if "error_after" in top:
        node = top["error_after"][1]
        value = _value(node)
        if type(value) is not int or value < 1:
            problems.append(f"{_where(path, node)}: error_after: must be a whole number of at least 1")
        else:
            error_after = value
    if "types" not in top or not isinstance(top["types"][1], yaml.MappingNode):
        raise RegistryError(problems + [f"{path}:1:1: types: required mapping of sensor type -> thresholds"])
    out: dict[str, SensorType] = {}
    for key_node, node in top["types"][1].value:
        name = key_node.value
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"{_where(path, node)}: types.{name}: must be a mapping")
            continue
        nodes = {k.value: v for k, v in node.value}
        bad = [f"{_where(path, nodes[k])}: types.{name}.{k}: unknown key" for k in nodes if k not in _TYPE_KEYS]
        bad += [f"{_where(path, node)}: types.{name}: missing key {k}" for k in _REQUIRED if k not in nodes]
        if bad:
            problems += bad
            continue
        try:
            out[name] = _sensor_type(name, {k: _value(v) for k, v in nodes.items()}, error_after, tax)
        except _Bad as err:
            problems.append(f"{_where(path, nodes.get(err.key, node))}: types.{name}.{err}")
    if problems:
        raise RegistryError(problems)
    return out


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _value(node: yaml.Node) -> Any:
    return SafeConstructor().construct_object(node, deep=True)


def _sensor_type(name: str, f: dict[str, Any], error_after: int, tax: Taxonomy) -> SensorType:
    category = f["category"]
    if not isinstance(category, str) or category not in tax:
        raise _Bad("category", f"unknown category code {category!r}")
    scope = f["scope"]
    if scope not in SENSOR_SCOPES:
        raise _Bad("scope", f"must be one of {', '.join(SENSOR_SCOPES)}, not {scope!r}")
    valid = f["valid"]
    if (not isinstance(valid, list) or len(valid) != 2 or not all(_is_number(v) for v in valid)
            or not valid[0] < valid[1]):
        raise _Bad("valid", f"must be [min, max], two numbers with min below max, not {valid!r}")
    lo, hi = float(valid[0]), float(valid[1])
    threshold = _threshold(f)
    _check_in_range(threshold, lo, hi)
    stuck = f["stuck"]
    return SensorType(name=name, unit=str(f.get("unit") or ""), category=category, threshold=threshold,
                      scope=cast(SensorScope, scope), valid=(lo, hi),
                      stuck_s=None if stuck is None else _seconds("stuck", stuck),
                      silent_s=_seconds("silent", f.get("silent", "1h")),
                      realarm_s=_seconds("realarm", f.get("realarm", "6h")), error_after=error_after)


def _is_number(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _seconds(key: str, text: Any) -> float:
    if not isinstance(text, str):
        raise _Bad(key, f"write a duration with its unit (30m, 6h, 2d), not {text!r}")
    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise _Bad(key, str(err)) from None


def _check_in_range(t: Threshold, lo: float, hi: float) -> None:
    """An alarm or clear level outside the valid range could never be reached by a valid reading."""
    for key, level in (("alarm", t.alarm), ("clear", t.clear)):
        if not lo <= level <= hi:
            raise _Bad(key, f"{level:g} is outside the valid range [{lo:g}, {hi:g}]")


def _threshold_fields(t: Threshold) -> dict[str, Any]:
    return {"direction": t.direction, "alarm": t.alarm, "clear": t.clear, "debounce": t.debounce}


def _threshold(f: dict[str, Any]) -> Threshold:
    direction = str(f["direction"])
    if direction not in ("above", "below"):
        raise _Bad("direction", f"must be above or below, not {direction!r}")
    levels: dict[str, float] = {}
    for key in ("alarm", "clear"):
        try:
            levels[key] = float(f[key])
        except (TypeError, ValueError):
            raise _Bad(key, f"must be a number, not {f[key]!r}") from None
        if not math.isfinite(levels[key]) or isinstance(f[key], bool):
            raise _Bad(key, f"must be a number, not {f[key]!r}")
    try:
        debounce = int(f["debounce"])
    except (TypeError, ValueError):
        raise _Bad("debounce", f"must be a whole number, not {f['debounce']!r}") from None
    if debounce < 1:
        raise _Bad("debounce", "must be at least 1")
    alarm, clear = levels["alarm"], levels["clear"]
    if (direction == "above" and clear >= alarm) or (direction == "below" and clear <= alarm):
        raise _Bad("clear", f"{clear} must be on the normal side of alarm {alarm} (hysteresis)")
    return Threshold(direction=direction, alarm=alarm, clear=clear, debounce=debounce)  # type: ignore[arg-type]


def load_registry(path: Path, types: dict[str, SensorType] | None = None,
                  taxonomy: Taxonomy | None = None) -> SensorRegistry:
    """Read a registry CSV: sensor_id,sensor_type,lon,lat[,category,direction,alarm,clear,debounce,silent].

    Empty override columns take the type's defaults (`silent` is a duration: `26h` for a sensor that reports
    once a day). Every bad row is reported (`file:line:column: key: ...`); one bad row rejects the file, so a
    running worker keeps its previous registry.
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
        # a registry repeats a few override combinations and silent periods over tens of thousands of rows: each
        # distinct one is checked once (a worker read the bench month's 61,000 sensors in 0.9 CPU-s, a share of
        # its restart: issue #23)
        thresholds: dict[tuple[str, tuple[tuple[str, str], ...]], Threshold] = {}
        silents: dict[str, float] = {}
        override_cols = [k for k in ("direction", "alarm", "clear", "debounce") if k in col]
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
            overrides = tuple((k, rec[k]) for k in override_cols if rec[k].strip()) if override_cols else ()
            silent = (rec.get("silent") or "").strip()
            try:
                th = thresholds.get((stype, overrides)) if overrides else base.threshold
                if th is None:
                    th = _threshold({**_threshold_fields(base.threshold), **dict(overrides)})
                    _check_in_range(th, *base.valid)
                    thresholds[(stype, overrides)] = th
                silent_s = silents.get(silent) if silent else None
                if silent and silent_s is None:
                    silent_s = silents[silent] = _seconds("silent", silent)
            except _Bad as err:
                problems.append(f"{path}:{n}:{col.get(err.key, 0) + 1}: {err}")
                continue
            sensors[sid] = Sensor.of_type(sid, base, lon, lat, category=category, threshold=th, silent_s=silent_s)
    if problems:
        raise RegistryError(problems)
    return SensorRegistry(types=types, sensors=sensors, source=str(path))


class RegistryHolder(WatchedFile[SensorRegistry]):
    """The sensor registry a running worker uses, swapped atomically when its file changes
    (pipeline.model.watched).

    A changed file is loaded and validated in full first; when it is invalid the old registry stays, the refusal
    is logged and counted, and `last_error` says why. Without a path the registry is empty (every sensor is
    unknown: readings are aggregated and reported, never raise problems).
    """

    label = "sensor registry"
    refused = (RegistryError, OSError, UnicodeDecodeError)

    def __init__(self, path: Path | None, types: dict[str, SensorType] | None = None) -> None:
        self.types = types if types is not None else load_types()
        super().__init__(path)

    def first(self) -> SensorRegistry:
        if self.path is None:
            return SensorRegistry(types=self.types, sensors={})
        return self.load()

    def load(self) -> SensorRegistry:
        return load_registry(self.file(), self.types)

    def on_refused(self, err: Exception) -> None:
        log.warning("sensor registry %s refused, keeping the running one (%d sensors): %s",
                    self.path, len(self.current), err)

    def on_installed(self, previous: SensorRegistry) -> None:
        log.info("sensor registry %s reloaded: %d sensors", self.path, len(self.current))
