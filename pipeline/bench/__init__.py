"""Benchmarks: the end-to-end bench (`python -m pipeline.bench`), its naive baseline,
the sink, grid and rules benches."""
