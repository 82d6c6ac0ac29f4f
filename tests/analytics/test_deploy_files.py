"""deploy/: the Grafana dashboard reads what the migrations create; the cluster, macros and Kubernetes files
agree with each other."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Settings
from tests.analytics.engines import ChdbDatabase
from tests.analytics.history import generate

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def panel_queries() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana/cityops.json").read_text(encoding="utf-8"))
    return [(p["title"], t["rawSql"]) for p in dash["panels"] for t in p["targets"]]


def expand_macros(sql: str, database: str) -> str:
    """What the Grafana ClickHouse plugin substitutes, for a fixed 10-year window."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= now() - toIntervalYear(10)", sql)
    sql = sql.replace("$__fromTime", "(now() - toIntervalYear(10))").replace("$__toTime", "now()")
    return sql.replace("cityops.", f"{database}.")


def test_dashboard_queries_run_on_current_clickhouse(chdb_db: ChdbDatabase) -> None:
    """Every panel's SQL runs on a migrated database holding some cases, and returns rows. Panels read only
    the views the reports read (docs/cases.md §8: one definition of each figure)."""
    for batch in generate(seed=5, n_cases=40, start=datetime(2024, 5, 1), days=5).batches:
        chdb_db.store(batch)
    for title, sql in panel_queries():
        assert "$" not in expand_macros(sql, chdb_db.database), title
        tables = set(re.findall(r"\bcityops\.(\w+)", sql))
        assert tables and all(t.startswith("v_") for t in tables), (title, tables)
        assert chdb_db.query_dicts(expand_macros(sql, chdb_db.database)), title


@pytest.mark.clickhouse
def test_dashboard_queries_run_on_the_server(isolated_settings: Settings) -> None:
    """The same queries on the real server (18.16 here), with the same rows."""
    from pipeline.sink.migrate import migrate
    from pipeline.sink.sink import ClickHouseSink
    from pipeline.sink.transport import ClickHouse

    migrate(isolated_settings)
    sink = ClickHouseSink(isolated_settings)
    for batch in generate(seed=5, n_cases=40, start=datetime(2024, 5, 1), days=5).batches:
        sink.write(batch)
    sink.close()
    db = ClickHouse(isolated_settings)
    try:
        for title, sql in panel_queries():
            assert db.query_dicts(expand_macros(sql, isolated_settings.clickhouse_database)), title
    finally:
        db.close()


def test_cluster_hosts_macros_and_pods_agree() -> None:
    """Each replica host of the cluster config has a macros file naming it and is a pod of a StatefulSet."""
    root = ET.parse(DEPLOY / "clickhouse/config.d/cityops-cluster.xml").getroot()
    shards = root.findall("./remote_servers/cityops/shard")
    hosts = [[r.findtext("host") for r in s.findall("replica")] for s in shards]
    macros = {}
    for f in (DEPLOY / "clickhouse/macros").glob("*.xml"):
        m = ET.parse(f).getroot().find("macros")
        assert m is not None
        macros[(m.findtext("shard"), m.findtext("replica"))] = f.name
    docs: list[dict[str, Any]] = [
        d for d in yaml.safe_load_all((DEPLOY / "k8s/clickhouse.yaml").read_text()) if d
    ]
    sets = {d["metadata"]["name"]: d["spec"]["replicas"] for d in docs if d["kind"] == "StatefulSet"}
    for n, shard_hosts in enumerate(hosts, 1):
        for r, host in enumerate(shard_hosts):
            pod, _, service = str(host).partition(".")
            assert (str(n), pod) in macros, host
            assert macros[(str(n), pod)] == f"macros-s{n}-r{r + 1}.xml"
            assert service in sets and pod == f"{service}-{r}" and r < sets[service]
    assert len(macros) == sum(len(h) for h in hosts)


def test_kubernetes_files_parse_and_are_all_listed() -> None:
    """Every manifest parses, and kustomization lists every manifest file."""
    files = sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == files
    for name in files:
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], name
