"""`cityops notify`: run the notifier; `cityops notify check`: validate a targets file against the rules;
`cityops notify inbox`: the local receiver the local stack's targets point at."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from pipeline.config import Settings


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.loglevel.upper() if args.loglevel != "warn" else "WARNING",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka"):         # their INFO lines (connections, metadata) drown the deliveries
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.action == "check":
        return _check(args)
    if args.action == "inbox":
        return _inbox(args)
    from pipeline.notify.service import run_notifier

    return run_notifier(Settings.from_env())


def _check(args: argparse.Namespace) -> int:
    from pipeline.notify.targets import TargetsError, names_in_rules
    from pipeline.notify.targetsfile import parse_targets
    from rules.engine import load_ruleset
    from rules.errors import RulesError

    settings = Settings.from_env()
    path = Path(args.targets) if args.targets else settings.notify_targets
    try:
        rules = load_ruleset(Path(args.rules) if args.rules else settings.rules_path)
        spec = parse_targets(path, required=names_in_rules(rules.spec), secrets=dict(settings.notify_secrets))
    except (RulesError, TargetsError) as err:
        for line in getattr(err, "problems", [str(err)]):
            print(line, file=sys.stderr)
        return 1
    for t in spec.targets.values():
        quiet = f", quiet {t.quiet.text}" if t.quiet else ""
        print(f"{t.name:<24} {t.label}  ({t.rate.text}{quiet}): {', '.join(c.name for c in t.channels)}")
    print(f"{path}: {len(spec.targets)} targets, version {spec.version}")
    return 0


def _inbox(args: argparse.Namespace) -> int:
    from pipeline.notify.inbox import Inbox, serve

    secrets = dict(kv.split("=", 1) for kv in args.dingtalk)
    inbox = Inbox(dingtalk_secrets=secrets, log_path=Path(args.log) if args.log else None)

    async def main() -> None:
        runner, smtp = await serve(inbox, args.host, args.port, args.smtp_port)
        print(f"notify inbox on http://{args.host}:{args.port}/inbox"
              + (f", SMTP {args.host}:{args.smtp_port}" if smtp else ""), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            if smtp is not None:
                smtp.stop()
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("notify", help="deliver the rules' `notify` lists (README 'Notifications')")
    p.add_argument("action", nargs="?", default="run", choices=["run", "check", "inbox"],
                   help="run the notifier (default); check a targets file; run the local receiver")
    p.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    p.add_argument("--targets", help="check: the targets file (default CITYOPS_NOTIFY_TARGETS)")
    p.add_argument("--rules", help="check: the rules whose notify lists it must cover (default CITYOPS_RULES)")
    p.add_argument("--host", default="127.0.0.1", help="inbox: address to listen on")
    p.add_argument("--port", type=int, default=8025, help="inbox: HTTP port")
    p.add_argument("--smtp-port", type=int, default=2525, help="inbox: SMTP port (0: none)")
    p.add_argument("--dingtalk", action="append", default=[], metavar="TOKEN=SECRET",
                   help="inbox: verify DingTalk signatures of this robot (repeatable)")
    p.add_argument("--log", help="inbox: append every request to this NDJSON file")
    p.set_defaults(func=_run)
