"""`cityops report ...`: every report prints as a table, CSV or JSON, draws charts, and rejects bad input."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.reports import Filters, discovery
from pipeline.reports.cli import parse_day, parse_range, today
from pipeline.reports.command import compare_rows, on_database
from pipeline.reports.query import ReportError
from pipeline.sink.transport import QueryError
from tests.analytics.conftest import history
from tests.analytics.engines import ChdbDatabase


@pytest.fixture
def db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    for batch in history().batches:
        chdb_db.store(batch)
    return chdb_db


def run(db: ChdbDatabase, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    args = build_parser().parse_args(["report", *argv])
    args.connect = lambda: db
    assert args.func(args) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["discovery", "--by", "subdistrict"],
        ["discovery", "--compare", "2024-01-01..2024-04-01", "2024-04-01..2024-07-01"],
        ["recurrence", "--period", "week"],
        ["recurrence", "--hot-spots", "--min-cases", "5"],
        ["recurrence", "--compare", "2024-01-01..2024-04-01", "2024-04-01..2024-07-01"],
        ["sla"],
        ["workload", "--since", "2024-04-01"],
        ["health", "--category", "E"],
    ],
)
def test_every_report_renders_in_every_format_and_plots(
    db: ChdbDatabase, argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Table, CSV and JSON carry the same rows; --plot writes a PNG."""
    table = run(db, argv, capsys)
    data = json.loads(run(db, [*argv, "--format", "json"], capsys))
    rows = list(csv.DictReader(io.StringIO(run(db, [*argv, "--format", "csv"], capsys))))
    assert data and len(rows) == len(data)
    assert list(rows[0]) == list(data[0])
    # title, header, rule, one line per row; `sla`: one section (its name, header, rule) per line kind
    sections = len({r["line"] for r in data}) if "line" in data[0] else 0
    assert len(table.strip().splitlines()) == len(data) + 3 + 3 * sections - 2 * bool(sections)
    png = tmp_path / "chart.png"
    run(db, [*argv, "--plot", str(png)], capsys)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_discovery_equals_the_function(db: ChdbDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    """The CSV of `report discovery --by category` holds exactly what discovery() returns."""
    rows = list(
        csv.DictReader(io.StringIO(run(db, ["discovery", "--by", "category", "--format", "csv"], capsys)))
    )
    want = discovery(db, Filters(), "month", "category")
    assert [(r["period"], r["category"], int(r["cases"]), int(r["patrol"])) for r in rows] == [
        (w.period, w.key, w.total, w.patrol) for w in want
    ]


def test_filter_text_is_a_bound_value_not_sql(db: ChdbDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    """A quote-laden filter matches nothing instead of changing the query."""
    out = run(db, ["discovery", "--subdistrict", "x' OR 1=1 --", "--format", "json"], capsys)
    assert json.loads(out) == []


def test_discovery_refuses_a_team_filter(db: ChdbDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    """Discovery is about how cases were found, before dispatch: --team is an error, not silently ignored."""
    args = build_parser().parse_args(["report", "discovery", "--team", "handling"])
    args.connect = lambda: db
    assert args.func(args) == 2
    assert "no --team" in capsys.readouterr().err


def test_dates_and_ranges_parse_or_explain() -> None:
    """Dates are ISO days or spans back from today; ranges are SINCE..UNTIL and not empty."""
    assert parse_day("2024-04-01") == date(2024, 4, 1)
    assert parse_day("30d") == today() - timedelta(days=30)
    assert parse_day("2w") == today() - timedelta(days=14)
    assert parse_range("2024-01-01..2024-02-01") == (date(2024, 1, 1), date(2024, 2, 1))
    for bad in ("yesterday", "30x", ""):
        with pytest.raises(Exception, match="not a date"):
            parse_day(bad)
    with pytest.raises(Exception, match="empty"):
        parse_range("2024-02-01..2024-01-01")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "discovery", "--period", "decade"])


def test_compare_rows_put_each_kind_of_column_in_its_own_rows() -> None:
    """`--compare`: the ranges' rows leave the change's columns empty and the change's row theirs, in one order."""
    rows = compare_rows([{"range": "a", "cases": 4, "rate": 0.5}, {"range": "b", "cases": 6, "rate": 0.25}],
                        {"relative_change": -0.5, "points": -25.0})
    assert rows == [
        {"range": "a", "cases": 4, "rate": 0.5, "relative_change": None, "points": None},
        {"range": "b", "cases": 6, "rate": 0.25, "relative_change": None, "points": None},
        {"range": "change", "cases": None, "rate": None, "relative_change": -0.5, "points": -25.0},
    ]
    assert all(list(r) == list(rows[0]) for r in rows)


class ClosingDatabase:
    closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize(("error", "code"), [(None, 0), (ReportError("no month"), 2), (QueryError("down"), 1)])
def test_a_report_on_the_database_closes_it_and_says_what_failed(
    error: Exception | None, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The connection is closed whatever happens; the report's own error exits 2, the database's 1."""
    database = ClosingDatabase()
    args = build_parser().parse_args(["report", "sla"])
    args.connect = lambda: database

    def run(db: object) -> str:
        assert db is database
        if error is not None:
            raise error
        return "done"

    assert on_database(args, "sla", run) == ((None, code) if error else ("done", 0))
    assert database.closed == 1
    assert capsys.readouterr().err == (f"report sla: {error}\n" if error else "")

