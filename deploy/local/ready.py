"""Exit 0 when the named local service answers for real, 1 otherwise (used by the start scripts).

kafka HOST:PORT [N]             -- the broker returns cluster metadata (listing at least N brokers)
clickhouse HOST:PORT [zookeeper] -- `SELECT 1` answers over the native protocol (and the server reaches ZooKeeper)
"""

from __future__ import annotations

import sys


def kafka_ready(bootstrap: str, brokers: int = 1) -> bool:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, client_id="cityops-ready")
    try:
        admin.list_topics()
        return brokers <= 1 or len(admin.describe_cluster()["brokers"]) >= brokers
    finally:
        admin.close()


def clickhouse_ready(address: str, zookeeper: bool = False) -> bool:
    from clickhouse_driver import Client

    host, port = address.rsplit(":", 1)
    client = Client(host=host, port=int(port), connect_timeout=2, send_receive_timeout=5)
    try:
        ok = bool(client.execute("SELECT 1") == [(1,)])
        return ok and (not zookeeper or bool(client.execute("SELECT count() FROM system.zookeeper WHERE path = '/'")))
    finally:
        client.disconnect()


def main() -> int:
    service, address = sys.argv[1], sys.argv[2]
    try:
        extra = sys.argv[3] if len(sys.argv) > 3 else ""
        ok = kafka_ready(address, int(extra or 1)) if service == "kafka" else clickhouse_ready(address, bool(extra))
    except Exception as err:  # any failure means "not ready yet"; the caller retries
        print(f"{service} not ready: {err}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
