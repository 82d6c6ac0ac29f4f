"""`cityops`: the one command-line entry point. Each package adds its own sub-commands.

A module in COMMAND_MODULES exposes `register(subparsers)`, which adds parsers whose `func(args) -> int`
runs the command. The order here is the order of `cityops --help`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "pipeline.runtime.topics",     # cityops topics create|list
    "pipeline.sink.migrate",       # cityops db migrate|status
    "pipeline.reports.cli",        # cityops report discovery|recurrence|sla|workload|health
    "pipeline.runtime.worker",     # cityops worker
    "grid.cli",                    # cityops grid build|validate|locate|info|geocode
    "rules.cli",                   # cityops rules check|explain|test
    "pipeline.simulate.cli",       # cityops simulate|replay
    "pipeline.web.cli",            # cityops web [adduser]
    "pipeline.notify.cli",         # cityops notify [check|inbox]
    "pipeline.run",                # cityops run (what `make run` does)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cityops", description="cityops: city operations event processing")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
