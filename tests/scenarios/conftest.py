"""The analytics fixtures (a migrated database on chdb or on the server) for the scenarios' report figures."""

from tests.analytics.conftest import chdb_db, server_db

__all__ = ["chdb_db", "server_db"]
