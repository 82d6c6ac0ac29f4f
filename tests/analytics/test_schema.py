"""The schema: every migration runs on current ClickHouse (chdb) and on the server (18.16), idempotently,
with the CONTRACTS.md columns; the cluster rendering makes Replicated and Distributed tables."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.migrate import (
    MigrationError,
    Target,
    load_migrations,
    render,
    rendered_statements,
    split_statements,
)
from tests.analytics.engines import ChdbDatabase

CONTRACT = {
    "cases": {
        "case_id",
        "category",
        "discovered_by",
        "cell",
        "subdistrict",
        "team",
        "status",
        "created_at",
        "closed_at",
        "reports",
    },
    "events": {"event_id", "source", "case_id", "category", "cell", "subdistrict", "received_at"},
    "case_transitions": {"case_id", "status", "team", "actor", "at"},
    "sensor_readings": {"sensor_id", "minute"},
    "schema_migrations": {"version", "checksum", "applied_at"},
}
VIEWS = {"v_cases", "v_discovery_daily", "v_team_open", "v_events"}


def columns_of(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(str(r["table"]), set()).add(str(r["name"]))
    return out


def test_every_migration_runs_on_current_clickhouse_twice(chdb_db: ChdbDatabase) -> None:
    """All statements run in chdb; running them again changes nothing; contract columns exist; views read."""
    chdb_db.migrate()
    cols = columns_of(
        chdb_db.query_dicts(
            "SELECT table, name FROM system.columns WHERE database = %(d)s", {"d": chdb_db.database}
        )
    )
    for table, wanted in CONTRACT.items():
        assert wanted <= cols[table], table
    for view in VIEWS:
        chdb_db.query_dicts(f"SELECT * FROM {chdb_db.database}.{view} LIMIT 1")


@pytest.mark.clickhouse
def test_migrate_on_the_server_is_idempotent_and_recorded(isolated_settings: Settings) -> None:
    """`migrate` creates the database, applies every version once, records it, and then has nothing to do."""
    from pipeline.migrate import migrate, status
    from pipeline.sink import ClickHouse

    versions = [m.version for m in load_migrations()]
    assert migrate(isolated_settings) == versions
    assert migrate(isolated_settings) == []
    assert [(s.version, s.state) for s in status(isolated_settings)] == [(v, "applied") for v in versions]
    db = ClickHouse(isolated_settings)
    try:
        cols = columns_of(
            db.query_dicts(
                "SELECT table, name FROM system.columns WHERE database = %(d)s",
                {"d": isolated_settings.clickhouse_database},
            )
        )
        for table, wanted in CONTRACT.items():
            assert wanted <= cols[table], table
        for view in VIEWS:
            db.query_dicts(f"SELECT * FROM {view} LIMIT 1")
        recorded = db.execute("SELECT version FROM schema_migrations FINAL ORDER BY version")
        assert [r[0] for r in recorded] == versions
    finally:
        db.close()


def test_cluster_rendering_uses_replicated_engines_and_distributed_tables() -> None:
    """With a cluster every statement runs ON CLUSTER, rows live in Replicated *_local tables and readers
    get a Distributed table of the contract's name, sharded as declared."""
    target = Target("cityops", "city")
    sql = "\n;\n".join(s for m in load_migrations() for s in rendered_statements(m, target))
    for table in ("cases", "events", "case_transitions", "sensor_readings", "cases_daily", "events_daily"):
        assert f"CREATE TABLE IF NOT EXISTS cityops.{table}_local ON CLUSTER city" in sql
        assert f"ENGINE = Distributed(city, cityops, {table}_local," in sql
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/cityops/cases_local', "
        "'{replica}', revision)" in sql
    )
    assert "Distributed(city, cityops, cases_local, sipHash64(subdistrict))" in sql
    assert "TO cityops.cases_daily_local" in sql and "FROM cityops.cases_local" in sql
    single = "\n".join(s for m in load_migrations() for s in rendered_statements(m, Target("cityops")))
    assert "ON CLUSTER" not in single and "Distributed" not in single and "_local" not in single
    assert "${" not in sql and "${" not in single


def test_bad_names_and_placeholders_are_errors() -> None:
    """Only plain identifiers become SQL text; malformed placeholders name the statement."""
    with pytest.raises(MigrationError, match="plain identifier"):
        Target("cityops; DROP TABLE x")
    with pytest.raises(MigrationError, match="f.sql statement 1"):
        render("SELECT ${nope:x}", Target("db"), "f.sql statement 1")
    with pytest.raises(MigrationError, match="exactly one"):
        render("CREATE TABLE a ENGINE = ${engine:MergeTree()}", Target("db"))
    assert split_statements("-- c ${table:x};\nSELECT 1;\n\n-- only a comment\n") == ["SELECT 1"]


@pytest.mark.clickhouse
def test_a_missing_schema_is_explained(isolated_settings: Settings) -> None:
    """Querying a database that was never migrated says which server and database, and what to run."""
    from pipeline.sink import ClickHouse, QueryError

    db = ClickHouse(isolated_settings)
    try:
        with pytest.raises(QueryError, match=r"127\.0\.0\.1:\d+/cityops_t.*cityops db migrate"):
            db.query_dicts("SELECT count() FROM cases")
    finally:
        db.close()
