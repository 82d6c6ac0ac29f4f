"""The city grid: district → sub-district → management grid → unit cell, and the lookup that places events.

Modules, in flow order:
- `grid.datum`     GCJ-02 ↔ WGS84 conversion and the local metric used for distances;
- `grid.build`     `cityops grid build`: the shipped GeoJSON under grid/data from ../shared/data;
- `grid.validate`  `cityops grid validate`: what makes a grid file acceptable to a running worker;
- `grid.index`     `GridIndex` (batch lookup) and `GridHolder` (hot swap of a validated grid file);
- `grid.gazetteer` addresses without coordinates → points;
- `grid.lattice`, `grid.gridfile` (file format), `grid.cli`, `pipeline.bench.grid`.
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
CELLS_FILE = DATA_DIR / "cells.geojson"
AREAS_FILE = DATA_DIR / "areas.geojson"
GAZETTEER_FILE = DATA_DIR / "gazetteer.yaml"
