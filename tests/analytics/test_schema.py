"""The schema: every migration runs on current ClickHouse (chdb) and on the server (18.16), idempotently,
with the CONTRACTS.md columns; the cluster rendering makes Replicated and Distributed tables."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config import Settings
from pipeline.sink.migrate import (
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
    # docs/cases.md §3, §8: the lifecycle facts and the dispatch rounds the service levels are computed from
    "case_rounds": {"case_id", "round", "team", "dispatched_at", "due_at", "accept_due_at", "accepted_at",
                    "resolved_at", "outcome", "verify_due_at", "verified_at", "verified_by", "revision"},
}
LIFECYCLE = {"kind", "sensor_id", "recurrence_of", "previous_closed_at", "first_dispatched_at", "case_due_at",
             "resolved_at", "verify_due_at", "rejected", "escalations"}
VIEWS = {"v_cases", "v_rounds", "v_discovery_daily", "v_team_open", "v_events"}
GONE = {"cases_daily", "cases_daily_mv"}     # 0004: the aggregate that fixed a case's first attributes


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
    assert cols["cases"] >= LIFECYCLE and not GONE & set(cols)
    for view in VIEWS:
        chdb_db.query_dicts(f"SELECT * FROM {chdb_db.database}.{view} LIMIT 1")


@pytest.mark.clickhouse
def test_migrate_on_the_server_is_idempotent_and_recorded(isolated_settings: Settings) -> None:
    """`migrate` creates the database, applies every version once, records it, and then has nothing to do."""
    from pipeline.sink.migrate import migrate, status
    from pipeline.sink.transport import ClickHouse

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
        assert cols["cases"] >= LIFECYCLE and not GONE & set(cols)
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
    for table in ("cases", "events", "case_transitions", "sensor_readings", "case_rounds", "cases_daily",
                  "events_daily"):
        assert f"CREATE TABLE IF NOT EXISTS cityops.{table}_local ON CLUSTER city" in sql
        assert f"ENGINE = Distributed(city, cityops, {table}_local," in sql
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/cityops/cases_local', "
        "'{replica}', revision)" in sql
    )
    assert "Distributed(city, cityops, cases_local, sipHash64(subdistrict))" in sql
    assert "TO cityops.cases_daily_local" in sql and "FROM cityops.cases_local" in sql
    # 0004: new columns on the stored tables and on the Distributed ones; the daily aggregate dropped on both
    for table in ("cases_local", "cases"):
        assert f"ALTER TABLE cityops.{table} ON CLUSTER city ADD COLUMN IF NOT EXISTS case_due_at" in sql
    for table in ("cases_daily_local", "cases_daily", "cases_daily_mv"):
        assert f"DROP TABLE IF EXISTS cityops.{table} ON CLUSTER city" in sql
    assert "Distributed(city, cityops, case_rounds_local, sipHash64(subdistrict))" in sql
    assert "FROM cityops.case_rounds FINAL" in sql and "FROM cityops.cases FINAL" in sql
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
def test_the_lifecycle_migration_runs_again_after_a_failure_half_way(isolated_settings: Settings) -> None:
    """18.16 has no ADD COLUMN IF NOT EXISTS: `migrate` adds a column only when it is missing, so every
    statement of 0004 runs again on a migrated database (as after a failure half-way) and changes nothing."""
    from pipeline.sink.migrate import _execute, migrate
    from pipeline.sink.transport import ClickHouse

    migrate(isolated_settings)
    db = ClickHouse(isolated_settings)
    target = Target(isolated_settings.clickhouse_database)
    describe = "SELECT table, name, type FROM system.columns WHERE database = %(d)s ORDER BY table, name"
    try:
        before = db.execute(describe, {"d": target.database})
        (lifecycle,) = [m for m in load_migrations() if m.version == "0004"]
        for i, sql in enumerate(rendered_statements(lifecycle, target), 1):
            _execute(db, sql, f"statement {i}")
        assert db.execute(describe, {"d": target.database}) == before
        with pytest.raises(MigrationError, match="one column per"):
            _execute(db, f"ALTER TABLE {target.database}.cases ADD COLUMN IF NOT EXISTS a String, "
                         "ADD COLUMN b String", "two at once")
    finally:
        db.close()


@pytest.mark.clickhouse
def test_a_missing_schema_is_explained(isolated_settings: Settings) -> None:
    """Querying a database that was never migrated says which server and database, and what to run."""
    from pipeline.sink.transport import ClickHouse, QueryError

    db = ClickHouse(isolated_settings)
    try:
        with pytest.raises(QueryError, match=r"127\.0\.0\.1:\d+/cityops_t.*cityops db migrate"):
            db.query_dicts("SELECT count() FROM cases")
    finally:
        db.close()
