# cityops: the two commands are `make run` and `make test`; every target sets up what it needs.
SHELL := /bin/bash
PYTHON_SYS ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK := bash deploy/local/stack.sh
PYTEST_ARGS ?=

.PHONY: setup up down status cluster-up cluster-down cluster-status cluster-run run test test-unit lint bench bench-cluster bench-grid clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

up: setup
	$(STACK) up

down:
	$(STACK) down

status:
	$(STACK) status

# The local cluster profile (README "Running a city: the cluster"): 3 Kafka brokers, ZooKeeper, ClickHouse 2 shards x
# 2 replicas under var/cluster; `eval "$$(bash deploy/local/cluster.sh env)"` points cityops at it.
cluster-up: setup
	bash deploy/local/cluster.sh up

cluster-down:
	bash deploy/local/cluster.sh down

cluster-status:
	bash deploy/local/cluster.sh status

# `make run` on the cluster profile: the same day, two ingest and two cases worker processes, the web UI and the
# reports on the Distributed tables; starts the profile when it is not running and then stops it.
cluster-run: setup
	bash deploy/local/cluster.sh run-with $(PY) -m pipeline.cli run --workers 2 $(RUN_ARGS)

# Starts what is not running, feeds a simulated day, waits for Ctrl-C, stops what it started.
run: setup
	$(STACK) run-with $(PY) -m pipeline.cli run $(RUN_ARGS)

# The whole suite against the real broker and server; stops what it started even when tests fail.
test: setup
	bash deploy/local/system-deps.sh
	$(STACK) run-with $(PY) -m pytest $(PYTEST_ARGS)

# Unit tests only: no services needed.
test-unit: setup
	$(PY) -m pytest -m "not kafka and not clickhouse and not cluster" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check pipeline rules grid tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: setup
	$(STACK) run-with $(PY) -m pipeline.bench

# The throughput phase on the single-node stack and on the cluster profile (1, 2, 4 workers), in one run; the
# cluster profile is started when it is not running (and left running: `make cluster-down` stops it).
bench-cluster: setup
	bash deploy/local/cluster.sh up
	$(STACK) run-with $(PY) -m pipeline.bench.cluster $(BENCH_ARGS)

bench-grid: setup
	$(PY) -m pipeline.bench.grid

clean: down cluster-down
	rm -rf var $(VENV)
