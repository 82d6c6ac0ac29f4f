"""Addresses without coordinates, and the `cityops grid` commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from grid.cli import register
from grid.datum import haversine_m
from grid.gazetteer import Gazetteer, GazetteerError, Resolution
from grid.index import GridIndex


def test_every_gazetteer_entry_lies_in_its_district(gazetteer: Gazetteer, index: GridIndex) -> None:
    """Road lines, places and entrances all fall in a cell of the district they claim."""
    for road in gazetteer.roads:
        for lon, lat in road.line:
            assert (index.locate(lon, lat).cell or "").startswith(road.district), road.name
    for place in gazetteer.places:
        for lon, lat in [place.point, *[p for _, p in place.entrances]]:
            assert (index.locate(lon, lat).cell or "").startswith(place.district), place.name


@pytest.mark.parametrize("address", ["虹口区四川北路1500号", "四川北路1500弄3号", "上海市虹口区四川北路１５００号",
                                     " 四川北路 1500 号 "])
def test_house_number_forms_resolve_to_the_same_point(gazetteer: Gazetteer, address: str) -> None:
    """Typical 12345 spellings of one address give one point, interpolated along the road."""
    road = next(r for r in gazetteer.roads if r.name == "四川北路")
    got = gazetteer.resolve(address)
    assert got is not None
    # Independent check: the point is on the road line, at 1500/2300 of its length from the first point.
    lo, hi = road.numbers
    total = sum(haversine_m(*a, *b) for a, b in zip(road.line, road.line[1:], strict=False))
    walked, target = 0.0, (1500 - lo) / (hi - lo) * total
    for a, b in zip(road.line, road.line[1:], strict=False):
        seg = haversine_m(*a, *b)
        if walked + seg >= target:
            t = (target - walked) / seg
            expected = (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
            break
        walked += seg
    assert haversine_m(*got, *expected) < 2.0


def test_places_and_entrances(gazetteer: Gazetteer) -> None:
    """A named place resolves to its point, an entrance to the entrance."""
    park = next(p for p in gazetteer.places if p.name == "鲁迅公园")
    assert gazetteer.resolve("鲁迅公园") == park.point
    assert gazetteer.resolve("虹口公园") == park.point
    assert gazetteer.resolve("鲁迅公园东门") == dict(park.entrances)["东门"]
    assert gazetteer.resolve("多伦路文化名人街附近") == next(
        p.point for p in gazetteer.places if p.name == "多伦路文化名人街")


def test_a_crossing_resolves_near_both_roads(gazetteer: Gazetteer) -> None:
    """"A路B路口" lands where the two road lines meet."""
    found = gazetteer.resolve_detail("四川北路海宁路口")
    assert isinstance(found, Resolution) and found.method == "crossing"


@pytest.mark.parametrize(("address", "reason"), [
    ("四川北路", "too vague"),
    ("四川北路99999号", "outside the known range"),
    ("徐汇区四川北路100号", "not in the district"),
    ("某某小区3栋", "no known road or place"),
    ("", "empty address"),
])
def test_unresolvable_addresses_say_why(gazetteer: Gazetteer, address: str, reason: str) -> None:
    """What cannot be placed returns None, and explain() gives the reason for the unlocated queue."""
    assert gazetteer.resolve(address) is None
    assert reason in gazetteer.explain(address)


def test_a_bad_gazetteer_file_names_line_and_key(tmp_path: Path) -> None:
    """Unknown keys and malformed points are refused with the file and line."""
    bad = tmp_path / "g.yaml"
    bad.write_text("version: 1\ndatum: WGS84\nroads:\n  - {name: A路, district: '310109', numbers: [1, 9],\n"
                   "     line: [[121.48, 31.27], [121.49, 31.27]], colour: red}\nplaces: []\n", encoding="utf-8")
    with pytest.raises(GazetteerError, match=r"g.yaml:4: road: unknown key 'colour'"):
        Gazetteer.load(bad)
    bad.write_text("version: 1\ndatum: WGS84\nroads: []\nplaces:\n  - {name: B, district: '310109', "
                   "point: [121.48]}\n", encoding="utf-8")
    with pytest.raises(GazetteerError, match=r"g.yaml:5: place: key 'point' must be \[lon, lat\]"):
        Gazetteer.load(bad)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cityops")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def test_cli_locate_prints_cell_subdistrict_kind_and_snapped(index: GridIndex,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`cityops grid locate LON LAT --json` gives what the index gives."""
    assert _run(["grid", "locate", "121.4815", "31.279", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = index.locate(121.4815, 31.279)
    assert (out["cell"], out["subdistrict"], out["grid_kind"], out["snapped"]) == (
        r.cell, r.subdistrict, r.grid_kind, r.snapped)
    assert _run(["grid", "locate", "31.279", "121.4815"]) == 2
    assert "lat/lon swapped?" in capsys.readouterr().out


def test_cli_info_and_validate(index: GridIndex, capsys: pytest.CaptureFixture[str]) -> None:
    """`info CODE` names the cell's grid, sub-district and district; `validate` accepts the shipped file."""
    code = index.codes()[100]
    assert _run(["grid", "info", code]) == 0
    out = capsys.readouterr().out
    assert code in out and code[:12] in out and code[:9] in out and "synthetic" in out
    assert _run(["grid", "info", "310109999999999"]) == 1
    from grid import CELLS_FILE

    assert _run(["grid", "validate", str(CELLS_FILE)]) == 0
    assert "OK, 8307 cells" in capsys.readouterr().out
