"""The Kafka runtime: batch consumers with checkpoints and changelogs, the ingest and cases services, the worker."""
