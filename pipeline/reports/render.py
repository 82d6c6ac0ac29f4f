"""Report output: an aligned text table, CSV or JSON, and charts (PNG) for `--plot`.

Rows are plain dicts of str / int / float / None, in column order. Rates are fractions in data (CSV, JSON)
and percentages in the table, the way an analyst reads them. Rows with a `line` column (`report sla`: team,
dispatch, verification and closing lines, each with its own figures) are printed as one table per line, with
the columns that line has; CSV and JSON keep every column on every row (None where it does not apply).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

Table = list[dict[str, Any]]


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if column.endswith(("rate", "share", "change")):
            return f"{value * 100:+.1f}%" if column.endswith("change") else f"{value * 100:.1f}%"
        return f"{value:.2f}"
    return str(value)


def as_text(rows: Table, title: str = "") -> str:
    """An aligned table; numbers right-aligned. An empty report says so instead of printing nothing."""
    if not rows:
        return (title + "\n" if title else "") + "(no cases match)\n"
    columns = list(rows[0])
    cells = [[_cell(r.get(c), c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [title] if title else []
    out += [line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join(out) + "\n"


def as_sections(rows: Table, title: str = "", key: str = "line") -> str:
    """One table per value of `key` (in order of appearance), each with the columns its rows fill."""
    groups: dict[Any, Table] = {}
    for r in rows:
        groups.setdefault(r.get(key), []).append(r)
    out = [title] if title else []
    for value, group in groups.items():
        columns = [c for c in group[0] if c != key and any(r.get(c) is not None for r in group)]
        out.append(as_text([{c: r.get(c) for c in columns} for r in group], f"[{value}]").rstrip("\n"))
    return "\n".join(out) + "\n"


def as_csv(rows: Table) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def as_json(rows: Table) -> str:
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"


def render(rows: Table, fmt: str, title: str = "") -> str:
    """`fmt` is table | csv | json."""
    if fmt == "csv":
        return as_csv(rows)
    if fmt == "json":
        return as_json(rows)
    if rows and "line" in rows[0]:
        return as_sections(rows, title)
    return as_text(rows, title)


# fonts with Chinese glyphs, best first (Debian: fonts-noto-cjk, fonts-wqy-zenhei, fonts-arphic-uming)
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK JP", "Noto Serif CJK SC", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "AR PL UMing CN", "Droid Sans Fallback")


def cjk_font() -> str | None:
    """The first font of CJK_FONTS matplotlib knows, or None (then Chinese labels would be boxes)."""
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in known), None)


def _pyplot() -> Any:
    """pyplot on the Agg backend (files only; no display on servers), with a CJK font first when there is one."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = cjk_font()
    if font is None:
        logging.getLogger("cityops.reports").warning(
            "no CJK font for the charts: Chinese labels will not render (Debian: apt-get install fonts-noto-cjk)")
    else:
        matplotlib.rcParams["font.family"] = "sans-serif"
        matplotlib.rcParams["font.sans-serif"] = [font, "DejaVu Sans"]
        matplotlib.rcParams["axes.unicode_minus"] = False
    return plt


def place_label(code: str) -> str:
    """A sub-district, grid or cell code as people say it: "提篮桥街道 310109003001" (the code stays, for analysts)."""
    from pipeline.notify.place import subdistrict_names

    names = _names(subdistrict_names)
    text = str(code)
    name = names.get(text[:9]) if len(text) >= 9 and text[:9].isdigit() else None
    return f"{name} {text}" if name and text != text[:9] else (name or text)


def category_label(code: str) -> str:
    """A category code with its name: "P0101 上水井盖"."""
    from pipeline.model.taxonomy import default_taxonomy

    cat = default_taxonomy().categories.get(code)
    return f"{code} {cat.name}" if cat is not None else code


_NAMES: dict[str, str] = {}


def _names(load: Any) -> dict[str, str]:
    if not _NAMES:
        _NAMES.update(load())
    return _NAMES


def plot_trend(path: Path, rows: Table, x: str, y: str, series: str | None, title: str, ylabel: str) -> None:
    """Line chart of `y` over `x`, one line per value of `series` (at most the 8 largest, for legibility); places
    (sub-districts, grids, cells) are labelled by name."""
    plt = _pyplot()
    label = place_label if series in ("subdistrict", "grid", "cell") else str

    groups: dict[str, list[tuple[str, float]]] = {}
    for r in rows:
        if r.get(y) is not None:
            groups.setdefault(str(r.get(series, "")) if series else "", []).append((str(r[x]), float(r[y])))
    top = sorted(groups, key=lambda k: -len(groups[k]))[:8]
    fig, ax = plt.subplots(figsize=(10, 5))
    for key in sorted(top):
        pts = sorted(groups[key])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label(key) if key else y)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=45)
    if len(top) > 1 or (top and top[0]):
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bars(path: Path, labels: list[str], values: list[float], title: str, xlabel: str) -> None:
    """Ranked horizontal bars, largest on top."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.35 * len(labels) + 1)))
    # bars at numeric positions, labels as tick text: matplotlib's own string axis tries to read each label
    # as a number or a date, and a hot spot's "310109011001002 P0101" overflows its date parser
    positions = list(range(len(labels)))
    ax.barh(positions, list(reversed(values)))
    ax.set_yticks(positions, list(reversed(labels)))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
