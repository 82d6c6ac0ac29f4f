"""Reading a grid file (cells.geojson, format `cityops-grid/1`) into typed records.

The format is a GeoJSON FeatureCollection with a foreign member `grid` (format, edition, datum, lattice,
metric) and one Feature per unit cell whose properties are `code` (15 digits), `col`, `row` (absolute lattice
square), `district`, `subdistrict`, `grid`, `kind`, `area_m2`. Structural problems raise `GridFileError` naming
the file, the feature (line, since the writer puts one feature per line) and the key; geometric problems are
the validator's business (`grid.validate`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from grid.lattice import Lattice

GRID_FORMAT = "cityops-grid/1"
GRID_KINDS = ("street", "residential", "village", "building")


class GridFileError(ValueError):
    """A grid file that cannot be read as `cityops-grid/1`; the message names where and what."""


@dataclass(frozen=True, slots=True)
class CellRecord:
    """One unit cell as stored: code hierarchy, lattice square and geometry (WGS84 lon/lat)."""

    code: str
    col: int
    row: int
    district: str
    subdistrict: str
    grid: str
    kind: str
    area_m2: float
    geometry: BaseGeometry
    line: int


@dataclass(frozen=True, slots=True)
class GridFile:
    """A parsed grid file. `version` is `<edition>.<first 12 hex of the file's SHA-256>`."""

    source: str
    version: str
    edition: str
    lattice: Lattice
    metric_ref: tuple[float, float]
    cells: tuple[CellRecord, ...]


def _feature_lines(text: str) -> dict[int, int]:
    """Feature number → line number, for error messages (the writer puts one feature per line)."""
    lines: dict[int, int] = {}
    n = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith('{"geometry"') or line.startswith('{"type":"Feature"'):
            lines[n] = lineno
            n += 1
    return lines


def _require(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise GridFileError(f"{where}: missing key {key!r}")
    v = obj[key]
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        raise GridFileError(f"{where}: key {key!r} has a wrong type ({type(v).__name__}): {v!r}")
    return v


def parse_grid_bytes(data: bytes, source: str) -> GridFile:
    """Parse a grid file's bytes; raises GridFileError on the first structural problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GridFileError(f"{source}: not UTF-8 ({err})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise GridFileError(f"{source}:{err.lineno}: not JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise GridFileError(f"{source}: not a GeoJSON FeatureCollection")
    head = _require(doc, "grid", dict, f"{source}: top level")
    fmt = head.get("format")
    if fmt != GRID_FORMAT:
        raise GridFileError(f"{source}: grid.format is {fmt!r}, expected {GRID_FORMAT!r}")
    if head.get("datum") != "WGS84":
        raise GridFileError(f"{source}: grid.datum is {head.get('datum')!r}; cells must be WGS84")
    edition = _require(head, "edition", str, f"{source}: grid")
    try:
        lattice = Lattice.from_json(_require(head, "lattice", dict, f"{source}: grid"))
    except ValueError as err:
        raise GridFileError(f"{source}: grid.{err}") from None
    metric = head.get("metric") or {}
    ref = (float(metric.get("ref_lon", 0.0)), float(metric.get("ref_lat", 0.0)))
    feats = _require(doc, "features", list, f"{source}: top level")
    lines = _feature_lines(text)
    cells: list[CellRecord] = []
    for i, feat in enumerate(feats):
        line = lines.get(i, 0)
        where = f"{source}:{line}: feature {i}" if line else f"{source}: feature {i}"
        if not isinstance(feat, dict):
            raise GridFileError(f"{where}: not an object")
        props = _require(feat, "properties", dict, where)
        code = _require(props, "code", str, where)
        where = f"{where} ({code})"
        geom_obj = _require(feat, "geometry", dict, where)
        if geom_obj.get("type") not in ("Polygon", "MultiPolygon"):
            raise GridFileError(f"{where}: geometry type {geom_obj.get('type')!r}, expected (Multi)Polygon")
        try:
            geom = shapely.geometry.shape(geom_obj)
        except Exception as err:  # shapely raises several types for malformed coordinates
            raise GridFileError(f"{where}: unreadable geometry: {err}") from None
        cells.append(CellRecord(
            code=code, col=_require(props, "col", int, where), row=_require(props, "row", int, where),
            district=_require(props, "district", str, where), subdistrict=_require(props, "subdistrict", str, where),
            grid=_require(props, "grid", str, where), kind=_require(props, "kind", str, where),
            area_m2=float(_require(props, "area_m2", (int, float), where)), geometry=geom, line=line))
    digest = hashlib.sha256(data).hexdigest()[:12]
    return GridFile(source, f"{edition}.{digest}", edition, lattice, ref, tuple(cells))


def read_grid_file(path: Path) -> GridFile:
    """Read and parse a grid file; a missing file is a GridFileError too."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise GridFileError(f"{path}: cannot read: {err.strerror}") from None
    return parse_grid_bytes(data, str(path))
