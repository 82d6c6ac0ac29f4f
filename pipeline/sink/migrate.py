"""Versioned ClickHouse migrations: `cityops db migrate` and `cityops db status`.

Migrations are the SQL files in pipeline/sink/migrations/, named `NNNN_what.sql` and applied in version order.
Each file holds statements separated by a `;` at the end of a line. Applied versions are recorded in
`<db>.schema_migrations` (version, name, checksum, applied_at); running `migrate` again applies only what is
missing, so it is idempotent. Every statement is itself idempotent (`IF NOT EXISTS`), so a migration that
failed half-way is simply run again.

The same files serve one server (the default) and a cluster. Placeholders in the SQL:

- `${db}`: the database; `${on_cluster}`: `ON CLUSTER <name>` in cluster mode, else nothing;
- `${table:NAME}`: where rows are stored (`db.NAME`, or `db.NAME_local` on every node of a cluster);
- `${ref:NAME}`: what readers query (`db.NAME`: the table itself, or the Distributed table over the shards);
- `${local:NAME}`: the storing table on this node (what a materialized view reads from and writes to);
- `${view:NAME}`: a view or materialized view, always `db.NAME`;
- `${engine:ENGINE(args)}`: a *MergeTree engine, made `Replicated*MergeTree('/clickhouse/tables/{shard}/db/T',
  '{replica}', args)` in cluster mode (T is the statement's `${table:...}`);
- `${distributed:NAME:KEY}` as a whole statement: in cluster mode a Distributed table `db.NAME` over
  `db.NAME_local` sharded by KEY; nothing on a single server.

`ALTER TABLE T [ON CLUSTER C] ADD COLUMN IF NOT EXISTS name ...` (one column per statement) is idempotent on
every server: ClickHouse 18.16 has no `IF NOT EXISTS` there, so `migrate` looks the column up in
`system.columns` and sends the statement without those words only when the column is missing (on a cluster:
as this node sees the table).

On a cluster, an `ALTER TABLE ... ON CLUSTER` is sent without `ON CLUSTER`, node by node: for a Distributed table
(a `${ref:NAME}`) to every node, for a Replicated table to the first replica of each shard (the replicas take the
ALTER from each other). With `internal_replication` ClickHouse 18.16 refuses `ON CLUSTER` ALTERs of tables that are
not replicated ("Table isn't replicated, but shard is replicated according to its cluster definition"), and its
DDL queue, executing a Replicated table's ALTER once per shard, sometimes fails with "Node exists: .../executed" and
leaves the statement waiting out its 180 s. Each node's own columns decide whether it needs the statement.

Only the database name from Settings is put into SQL text, and only after checking it is a plain identifier.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pipeline.config import Settings
from pipeline.sink.transport import ClickHouse, QueryError, quiet_driver_logs

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)(?::([^}]*))?\}")
_ENGINE = re.compile(r"^\s*(\w*MergeTree)\s*(?:\((.*)\))?\s*$", re.S)
_ADD_COLUMN = re.compile(r"^\s*ALTER\s+TABLE\s+(?P<table>\w+\.\w+)(?:\s+ON\s+CLUSTER\s+\w+)?\s+ADD\s+COLUMN\s+"
                         r"(?P<ine>IF\s+NOT\s+EXISTS\s+)(?P<column>\w+)\s", re.I)


class MigrationError(Exception):
    """A migration file is malformed, or a statement failed (the message names the file and statement)."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version ("0001"), name, text and a checksum that detects later edits."""

    version: str
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Target:
    """Where migrations go: a database on one server, or on every node of a named cluster."""

    database: str
    cluster: str | None = None

    def __post_init__(self) -> None:
        for what, name in (("database", self.database), ("cluster", self.cluster)):
            if name is not None and not _IDENT.match(name):
                raise MigrationError(f"{what} name {name!r} is not a plain identifier "
                                     "([A-Za-z_][A-Za-z0-9_]*)")

    @property
    def on_cluster(self) -> str:
        return f"ON CLUSTER {self.cluster}" if self.cluster else ""

    def stored(self, table: str) -> str:
        return f"{self.database}.{table}_local" if self.cluster else f"{self.database}.{table}"


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files in version order; a misnamed file or a repeated version is an error."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise MigrationError(f"{path}: migration files are named NNNN_lowercase_words.sql")
        version, name = m.group(1), m.group(2)
        if version in found:
            raise MigrationError(f"{path}: version {version} is also {found[version].path.name}")
        found[version] = Migration(version, name, path, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def split_statements(sql: str) -> list[str]:
    """Statements of a file: split at a `;` ending a line. Whole-line `--` comments are dropped (they may
    mention placeholders); comments after code stay with their statement."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.rstrip()
        if stripped.lstrip().startswith("--"):
            continue
        if stripped.endswith(";"):
            current.append(stripped[:-1])
            statements.append("\n".join(current))
            current = []
        else:
            current.append(line)
    statements.append("\n".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


def render(statement: str, target: Target, where: str = "<sql>") -> str:
    """One statement with its placeholders filled for `target` ("" when it does not apply there)."""
    stripped = statement.strip()
    whole = _PLACEHOLDER.fullmatch(stripped)
    if whole and whole.group(1) == "distributed":
        return _distributed(whole.group(2) or "", target, where)
    tables = [m.group(2) for m in _PLACEHOLDER.finditer(statement) if m.group(1) == "table"]

    def fill(m: re.Match[str]) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "db":
            return target.database
        if kind == "on_cluster":
            return target.on_cluster
        if arg is None or (kind != "engine" and not _IDENT.match(arg)):
            raise MigrationError(f"{where}: placeholder ${{{kind}}} needs a table name: {m.group(0)}")
        if kind in ("table", "local"):
            return target.stored(arg)
        if kind in ("ref", "view"):
            return f"{target.database}.{arg}"
        if kind == "engine":
            if len(tables) != 1:
                raise MigrationError(f"{where}: ${{engine:...}} needs exactly one ${{table:...}} "
                                     "in its statement")
            return _engine(arg, tables[0], target, where)
        raise MigrationError(f"{where}: unknown placeholder {m.group(0)}")

    return _PLACEHOLDER.sub(fill, statement)


def _engine(spec: str, table: str, target: Target, where: str) -> str:
    m = _ENGINE.match(spec)
    if not m:
        raise MigrationError(f"{where}: ${{engine:{spec}}} is not a *MergeTree engine")
    name, args = m.group(1), (m.group(2) or "").strip()
    if not target.cluster:
        return f"{name}({args})"
    if table == "schema_migrations":
        # One replicated log for the whole cluster: no {shard} in the path, so every node sees every record.
        path, replica = f"/clickhouse/tables/cityops/{target.database}/{table}", "{shard}-{replica}"
    else:
        path, replica = f"/clickhouse/tables/{{shard}}/{target.database}/{table}_local", "{replica}"
    rest = f", {args}" if args else ""
    return f"Replicated{name}('{path}', '{replica}'{rest})"


def _distributed(arg: str, target: Target, where: str) -> str:
    table, _, key = arg.partition(":")
    if not _IDENT.match(table) or not key.strip():
        raise MigrationError(f"{where}: write ${{distributed:TABLE:SHARDING_KEY}}, "
                             f"got ${{distributed:{arg}}}")
    if not target.cluster:
        return ""
    db = target.database
    return (f"CREATE TABLE IF NOT EXISTS {db}.{table} {target.on_cluster} AS {db}.{table}_local\n"
            f"ENGINE = Distributed({target.cluster}, {db}, {table}_local, {key.strip()})")


def rendered_statements(migration: Migration, target: Target) -> list[str]:
    """The statements of one migration as they are sent to the server for `target`."""
    out = []
    for i, statement in enumerate(split_statements(migration.sql), 1):
        sql = render(statement, target, f"{migration.path.name} statement {i}")
        if sql.strip():
            out.append(sql)
    return out


_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS ${table:schema_migrations} ${on_cluster}
(
    version     String,
    name        String,
    checksum    String,
    applied_at  DateTime
)
ENGINE = ${engine:ReplacingMergeTree(applied_at)}
ORDER BY version
"""


def _bootstrap(db: ClickHouse, target: Target) -> None:
    db.execute(f"CREATE DATABASE IF NOT EXISTS {target.database} {target.on_cluster}")
    db.execute(render(_BOOTSTRAP, target, "schema_migrations"))


_ALTER_ON_CLUSTER = re.compile(r"^\s*ALTER\s+TABLE\s+(?P<table>\w+\.\w+)\s+(?P<on>ON\s+CLUSTER\s+(?P<cluster>\w+))\s",
                               re.I)


def _execute_everywhere(db: ClickHouse, settings: Settings, sql: str, where: str) -> None:
    """Run one statement; an ALTER ... ON CLUSTER node by node (see module doc)."""
    m = _ALTER_ON_CLUSTER.match(sql)
    if m is None:
        _execute(db, sql, where)
        return
    database, table = m.group("table").split(".")
    engine = db.execute("SELECT engine FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                        {"d": database, "t": table})
    if not engine:
        _execute(db, sql, where)
        return
    local = sql[:m.start("on")] + sql[m.end("on"):]
    first_replicas = " AND replica_num = 1" if str(engine[0][0]).startswith("Replicated") else ""
    nodes = db.execute("SELECT DISTINCT host_address, port FROM system.clusters WHERE cluster = %(c)s"
                       + first_replicas, {"c": m.group("cluster")})
    for host, port in nodes:
        node = ClickHouse(replace(settings, clickhouse_host=str(host), clickhouse_port=int(port)), database="default",
                          send_receive_timeout=240.0)
        try:
            _execute(node, local, f"{where} on {host}:{port}")
        finally:
            node.close()


def _execute(db: ClickHouse, sql: str, where: str) -> None:
    """Run one statement; an `ADD COLUMN IF NOT EXISTS` only when the column is missing (see module doc)."""
    m = _ADD_COLUMN.match(sql)
    if m is None:
        db.execute(sql)
        return
    if len(re.findall(r"\bADD\s+COLUMN\b", sql, re.I)) > 1:
        raise MigrationError(f"{where}: one column per ALTER TABLE ... ADD COLUMN IF NOT EXISTS statement")
    database, table = m.group("table").split(".")
    found = db.execute("SELECT count() FROM system.columns WHERE database = %(d)s AND table = %(t)s "
                       "AND name = %(c)s", {"d": database, "t": table, "c": m.group("column")})
    if not found[0][0]:
        db.execute(sql[:m.start("ine")] + sql[m.end("ine"):])


def applied_versions(db: ClickHouse, target: Target) -> dict[str, tuple[str, str, datetime]]:
    """version -> (name, checksum, applied_at) of what the target's log records."""
    rows = db.execute("SELECT version, argMax(name, applied_at), argMax(checksum, applied_at), "
                      "max(applied_at) "
                      f"FROM {target.stored('schema_migrations')} GROUP BY version")
    return {str(r[0]): (str(r[1]), str(r[2]), r[3]) for r in rows}


def migrate(settings: Settings, cluster: str | None = None,
            migrations: list[Migration] | None = None) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied now (empty when up to date).

    Creates the database `settings.clickhouse_database` if needed. With `cluster`, every statement runs
    `ON CLUSTER cluster` with Replicated engines and Distributed tables (see module docstring).
    """
    target = Target(settings.clickhouse_database, cluster)
    todo = load_migrations() if migrations is None else migrations
    # ON CLUSTER DDL answers once every node has run it (ClickHouse waits up to distributed_ddl_task_timeout,
    # 180 s): on a busy machine that is more than the usual minute
    db = ClickHouse(settings, database="default", send_receive_timeout=240.0 if cluster else 60.0)
    try:
        _bootstrap(db, target)
        done = applied_versions(db, target)
        applied: list[str] = []
        for migration in todo:
            if migration.version in done:
                continue
            for i, sql in enumerate(rendered_statements(migration, target), 1):
                try:
                    _execute_everywhere(db, settings, sql, f"{migration.path.name} statement {i}")
                except MigrationError:
                    raise
                except Exception as err:
                    raise MigrationError(f"{migration.path.name} statement {i} failed: {err}\n{sql}") from err
            db.execute(f"INSERT INTO {target.stored('schema_migrations')} "
                       "(version, name, checksum, applied_at) VALUES",
                       [(migration.version, migration.name, migration.checksum,
                         datetime.now(UTC).replace(microsecond=0, tzinfo=None))])
            applied.append(migration.version)
        return applied
    finally:
        db.close()


@dataclass(frozen=True)
class MigrationStatus:
    """One migration as `cityops db status` shows it."""

    version: str
    name: str
    state: str            # applied | pending | changed (applied, but the file was edited since)
    applied_at: datetime | None


def status(settings: Settings, cluster: str | None = None) -> list[MigrationStatus]:
    """Each known migration with its state on the target; unknown recorded versions are listed as well."""
    target = Target(settings.clickhouse_database, cluster)
    db = ClickHouse(settings, database="default")
    try:
        exists = db.execute("SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
                            {"db": target.database, "t": target.stored("schema_migrations").split(".")[1]})
        done = applied_versions(db, target) if exists[0][0] else {}
    finally:
        db.close()
    out = []
    files = load_migrations()
    for m in files:
        rec = done.get(m.version)
        state = "pending" if rec is None else ("applied" if rec[1] == m.checksum else "changed")
        out.append(MigrationStatus(m.version, m.name, state, rec[2] if rec else None))
    known = {m.version for m in files}
    out += [MigrationStatus(v, rec[0], "unknown", rec[2])
            for v, rec in sorted(done.items()) if v not in known]
    return out


def _migrate_cmd(args: argparse.Namespace) -> int:
    quiet_driver_logs()
    settings = Settings.from_env()
    cluster = args.cluster or settings.clickhouse_cluster
    try:
        applied = migrate(settings, cluster=cluster)
    except (MigrationError, QueryError) as err:
        print(f"db migrate: {err}", file=sys.stderr)
        return 1
    where = settings.clickhouse_database + (f" on cluster {cluster}" if cluster else "")
    print(f"db migrate: {where}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    return 0


def _status_cmd(args: argparse.Namespace) -> int:
    quiet_driver_logs()
    try:
        settings = Settings.from_env()
        rows = status(settings, cluster=args.cluster or settings.clickhouse_cluster)
    except QueryError as err:
        print(f"db status: {err}", file=sys.stderr)
        return 1
    for r in rows:
        when = r.applied_at.isoformat(sep=" ") + " UTC" if r.applied_at else ""
        print(f"{r.version}  {r.name:<32} {r.state:<8} {when}".rstrip())
    return 0 if all(r.state == "applied" for r in rows) else 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `cityops db migrate|status`."""
    db = sub.add_parser("db", help="ClickHouse schema: migrate, status")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for name, func, text in (("migrate", _migrate_cmd, "apply pending migrations (idempotent)"),
                             ("status", _status_cmd, "list migrations: applied, pending or changed "
                                                     "(exit 3 unless all applied)")):
        p = dbsub.add_parser(name, help=text)
        p.add_argument("--cluster", default=None,
                       help="run ON CLUSTER this name with Replicated and Distributed tables "
                            "(see deploy/clickhouse/README.md); default: CITYOPS_CLUSTER, else one server")
        p.set_defaults(func=func)
