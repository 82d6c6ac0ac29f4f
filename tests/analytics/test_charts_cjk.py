"""The report charts render Chinese: a CJK font is found (else this fails: install fonts-noto-cjk), no glyph is
missing from a chart with Chinese labels, and places are labelled by name (no services needed)."""

from __future__ import annotations

import warnings
from pathlib import Path

import orjson

from grid import AREAS_FILE
from pipeline.reports.render import category_label, cjk_font, place_label, plot_bars, plot_trend


def test_a_cjk_font_is_available_to_the_chart_renderer() -> None:
    assert cjk_font() is not None, "no CJK font for matplotlib: apt-get install fonts-noto-cjk (deploy/local)"


def test_a_chart_with_chinese_labels_misses_no_glyph(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # matplotlib warns "Glyph ... missing from font(s)"
        plot_bars(tmp_path / "bars.png", ["提篮桥街道 310109009001", "北外滩街道"], [3.0, 1.0], "网格健康", "分数")
        plot_trend(tmp_path / "trend.png", [{"period": "2026-03-01", "subdistrict": "310109009", "rate": 0.2},
                                            {"period": "2026-03-02", "subdistrict": "310109009", "rate": 0.3}],
                   "period", "rate", "subdistrict", "主动发现率", "比例")
    assert (tmp_path / "bars.png").stat().st_size > 1000 and (tmp_path / "trend.png").stat().st_size > 1000


def test_places_and_categories_are_labelled_by_name() -> None:
    areas = orjson.loads(Path(AREAS_FILE).read_bytes())["features"]
    name = next(f["properties"]["name"] for f in areas if f["properties"]["code"] == "310109009")
    assert place_label("310109009") == name
    assert place_label("310109009001") == f"{name} 310109009001"
    assert place_label("310109009001002") == f"{name} 310109009001002"
    assert place_label("unknown") == "unknown"
    assert category_label("P0101") == "P0101 上水井盖"
