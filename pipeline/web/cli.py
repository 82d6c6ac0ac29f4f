"""`cityops web`: run the web server; `cityops web adduser`: add or replace an entry of the users file.

Configuration (environment):
- CITYOPS_ENV=production: refuse to start without CITYOPS_SECRET (or with the development one) and without
  CITYOPS_USERS; cookies are marked Secure (serve behind TLS).
- CITYOPS_SECRET: signs sessions. CITYOPS_USERS: the users file (pipeline.web.users).
- In development, without CITYOPS_USERS, a demo users file is made under var/web/ on first start with random
  passwords; the sign-in details are printed and kept in var/web/demo-credentials.txt (mode 0600).
- CITYOPS_WEB_LOOKBACK_H (72): how far back the live view reads assignments, unlocated tickets, dead letters.
- CITYOPS_WEB_DUE_SOON_MIN (120): "due soon" horizon. CITYOPS_WEB_RATE (5/s) and CITYOPS_WEB_BURST (20):
  the Open311 rate limit per client.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

import orjson

from pipeline.config import Settings
from pipeline.web.users import ROLES, User, Users, UsersError, api_key_digest, hash_password, load_users, write_users

log = logging.getLogger("cityops.web")

DEMO_USERS: tuple[tuple[str, str, str | None, str | None, str], ...] = (
    # name, role, team, patrol team, display
    ("ops", "operator", None, None, "值班长 duty officer"),
    ("analyst", "analyst", None, None, "分析员 analyst"),
    ("enforcement1", "member", "enforcement", None, "执法队员 enforcement"),
    ("handling1", "member", "handling", "patrol-ouyang", "处置队员 handling"),
    ("supervision1", "member", "supervision", None, "监督员 supervision"),
    ("patrol1", "patrol", None, "patrol-ouyang", "巡查员 patrol"),
)


def demo_users(directory: Path) -> tuple[Path, list[str]]:
    """Create (once) a development users file with random passwords; return its path and the sign-in lines."""
    path = directory / "users.yaml"
    creds = directory / "demo-credentials.txt"
    if path.exists() and creds.exists():
        return path, creds.read_text(encoding="utf-8").splitlines()
    users: dict[str, User] = {}
    lines = []
    for name, role, team, patrol_team, display in DEMO_USERS:
        password = secrets.token_urlsafe(9)
        users[name] = User(name=name, role=role, team=team, patrol_team=patrol_team,  # type: ignore[arg-type]
                           password_hash=hash_password(password), display=display)
        lines.append(f"{name:<14} {password:<14} {role}{' / ' + team if team else ''}")
    api_key = secrets.token_urlsafe(24)
    users["hotline"] = User(name="hotline", role="ingest", api_key_sha256=api_key_digest(api_key),
                            display="12345 hotline gateway")
    lines.append(f"{'hotline':<14} api_key={api_key}  (Open311 ingest client)")
    write_users(path, Users(users, str(path)))
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path, lines


def build_centre(settings: Settings) -> object:
    """The real centre: Kafka outbox and feed, ClickHouse archive, the worker's rules and grid watched."""
    from pipeline.model.privacy import pii_key

    # a missing or weak key in production stops the server before it connects to anything
    key = pii_key(settings.pii_key, settings.production)
    from grid import AREAS_FILE, CELLS_FILE
    from pipeline.model.taxonomy import default_taxonomy
    from pipeline.stages.decode import default_decoder
    from pipeline.web import auth
    from pipeline.web.alerts import ConfigWatch
    from pipeline.web.archive import open_archive
    from pipeline.web.centre import Centre
    from pipeline.web.feed import BoardFeed, LagProbe
    from pipeline.web.live import LiveBoard
    from pipeline.web.mapdata import build_map, subdistrict_names
    from pipeline.web.outbox import KafkaOutbox
    from pipeline.web.ratelimit import RateLimiter
    from pipeline.web.users import UsersHolder

    production = settings.production
    secret = auth.secret_of(settings.web_secret, production)
    if settings.web_users is not None:
        users_path = settings.web_users
    elif production:
        raise auth.SecretError("CITYOPS_USERS must name the users file in production mode")
    else:
        users_path, lines = demo_users(settings.var_dir / "web")
        print(f"cityops web (development): demo users in {users_path}; sign in with:", flush=True)
        for line in lines:
            print("   ", line, flush=True)
    map_json = build_map(settings.grid_path or CELLS_FILE, AREAS_FILE)
    board = LiveBoard(subdistrict_names(map_json),
                      due_soon=timedelta(minutes=settings.web_due_soon_min))
    centre = Centre(
        settings=settings, users=UsersHolder(users_path), signer=auth.Signer(secret), board=board,
        outbox=KafkaOutbox(settings), decoder=default_decoder(pii_key=key), taxonomy=default_taxonomy(),
        map_json=orjson.dumps(map_json), archive=open_archive(settings),
        config=ConfigWatch(settings.rules_path, settings.grid_path),
        feed=BoardFeed(settings, lambda items: None, lookback_s=settings.web_lookback_h * 3600),
        lag_probe=LagProbe(settings), production=production,
        limiter=RateLimiter(rate=settings.web_rate, burst=settings.web_burst),
    )
    return centre


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from pipeline.web import auth
    from pipeline.web.app import build_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)     # kafka-python logs every metadata refresh at INFO
    try:
        centre = build_centre(Settings.from_env())
    except (auth.SecretError, UsersError, RuntimeError) as err:   # RuntimeError: pii_key() in production
        print(f"cityops web: refusing to start: {err}", file=sys.stderr)
        return 2
    from pipeline.web.open311_services import ServiceAttributesError

    try:
        app = build_app(centre)  # type: ignore[arg-type]
    except ServiceAttributesError as err:     # pipeline/data/service_attributes.yaml: every problem, one a line
        print(f"cityops web: refusing to start: the Open311 service attributes file is wrong:\n{err}",
              file=sys.stderr)
        return 2
    print(f"cityops web: http://{args.host}:{args.port}/  (ops centre /ops, team feed /feed, "
          f"Open311 /open311/v2/services.json, /healthz, /metrics)", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


def _adduser(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    path = Path(args.users) if args.users else settings.web_users or settings.var_dir / "web" / "users.yaml"
    try:
        users = load_users(path) if path.exists() else Users({}, str(path))
    except UsersError as err:
        print(f"cityops web adduser: {err}", file=sys.stderr)
        return 2
    api_key = None
    password_hash = None
    if args.role == "ingest":
        api_key = secrets.token_urlsafe(24)
    else:
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
        if len(password) < 8:
            print("cityops web adduser: password must have at least 8 characters", file=sys.stderr)
            return 2
        password_hash = hash_password(password)
    user = User(name=args.name, role=args.role, team=args.team, patrol_team=args.patrol_team,
                password_hash=password_hash, api_key_sha256=api_key_digest(api_key) if api_key else None,
                display=args.display or "")
    updated = Users({**users.users, user.name: user}, str(path))
    # round-trip through the parser so a bad combination (member without team, ...) is refused before writing
    from pipeline.web.users import dump_users, parse_users

    try:
        parse_users(dump_users(updated), str(path))
    except UsersError as err:
        print(f"cityops web adduser: {err.args[0].split(': ', 1)[-1]}", file=sys.stderr)
        return 2
    write_users(path, updated)
    print(f"{'replaced' if args.name in users.users else 'added'} {args.name} ({args.role}) in {path}")
    if api_key:
        print(f"api_key (shown once, only its hash is stored): {api_key}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("web", help="run the web server (ops centre, team feeds, Open311 API)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_serve)
    wsub = p.add_subparsers(dest="web_command")
    a = wsub.add_parser("adduser", help="add or replace a user (or an ingest client) in the users file")
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--team", choices=["enforcement", "handling", "supervision"])
    a.add_argument("--patrol-team")
    a.add_argument("--display")
    a.add_argument("--users", help="users file (default: CITYOPS_USERS, else var/web/users.yaml)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    a.set_defaults(func=_adduser)
