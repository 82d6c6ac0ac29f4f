"""The two ClickHouse engines the analytics tests run on, behind the reports' `Queryable` interface.

- `ChdbDatabase`: current ClickHouse in-process (chdb), one database per test, for unit tests;
- the real server (18.16 here) through `pipeline.sink.transport.ClickHouse`, for `clickhouse`-marked tests.

Rows are loaded with the sink's own row→column conversion, so both engines hold the same values.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.model.records import SinkBatch
from pipeline.sink.migrate import _BOOTSTRAP, Target, load_migrations, render, rendered_statements
from pipeline.sink.tables import batch_columns
from pipeline.sink.transport import render_query


class ChdbDatabase:
    """A database inside one chdb session; `query_dicts` renders parameters with the driver's escaping."""

    def __init__(self, session: Any, database: str) -> None:
        self.session = session
        self.database = database

    def execute(self, sql: str) -> None:
        self.session.query(sql)

    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        text = render_query(sql, params)
        res = self.session.query(
            f"USE {self.database}; {text} SETTINGS output_format_json_quote_64bit_integers=0", "JSONEachRow"
        )
        return [json.loads(line) for line in res.bytes().decode().splitlines() if line.strip()]

    def migrate(self) -> None:
        target = Target(self.database)
        self.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self.execute(render(_BOOTSTRAP, target))
        for m in load_migrations():
            for sql in rendered_statements(m, target):
                self.execute(sql)

    def store(self, batch: SinkBatch) -> None:
        """Insert a batch as the sink would (same conversion and de-duplication within the batch)."""
        for spec, columns in batch_columns(batch):
            if not columns or not columns[0]:
                continue
            values = ", ".join(render_query("%(r)s", {"r": tuple(r)}) for r in zip(*columns, strict=True))
            self.execute(
                f"INSERT INTO {self.database}.{spec.table} ({', '.join(spec.columns)}) VALUES {values}"
            )
