"""The processing chain as pure code: decode, sensor alarms, locate, correlate, dispatch, lifecycle.

No Kafka or ClickHouse import: the runtime feeds batches in and takes results out."""
