"""ClickHouse: transports (native, HTTP), the Native format encoder, table specs, the sink, migrations."""
