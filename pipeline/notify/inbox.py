"""A local receiver for every channel kind (`cityops notify inbox`): what the local stack's targets file points at,
what the tests and the bench deliver to, and a reference for a receiver that de-duplicates.

HTTP (aiohttp), one route per kind, each answering as the real service does:

    POST /webhook/{name}            generic JSON webhook               -> 200 {"ok": true}
    POST /sms/{name}                SMS gateway (bearer token checked)  -> 200 {"ok": true}
    POST /wecom/send?key=K          WeCom group robot                   -> {"errcode": 0, "errmsg": "ok"}
    POST /dingtalk/send?access_token=T&timestamp=..&sign=..   DingTalk robot: the signature is verified with the
                                    robot's secret (HMAC-SHA256 over "timestamp\\nsecret", base64) and a
                                    timestamp more than an hour off is refused, as DingTalk does (errcode 310000)
    GET  /inbox                     what arrived: requests, distinct idempotency keys, per kind

SMTP (aiosmtpd, when installed): every message is kept with its Message-ID.

Every request is kept in `received` (the raw count, duplicates included); `applied` keeps the first of each
idempotency key (`Idempotency-Key` header, or the e-mail's Message-ID): a receiver that de-duplicates
applies each delivery once however often it is sent. `log_path` appends every request as NDJSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Received:
    kind: str
    name: str
    key: str
    at: float
    body: dict[str, Any]


@dataclass
class Inbox:
    """Receivers' state (module docstring). `dingtalk_secrets`: access token -> signing secret; `tokens`:
    bearer tokens the SMS gateway accepts (empty: any)."""

    dingtalk_secrets: dict[str, str] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    log_path: Path | None = None
    received: list[Received] = field(default_factory=list)
    applied: dict[str, Received] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    def keep(self, r: Received) -> None:
        self.received.append(r)
        self.applied.setdefault(r.key, r)
        if self.log_path is not None:
            with self.log_path.open("ab") as fh:
                fh.write(orjson.dumps({"kind": r.kind, "name": r.name, "key": r.key, "at": r.at, "body": r.body})
                         + b"\n")

    def counts(self) -> Counter[str]:
        """Requests per idempotency key (1 everywhere: each delivery arrived once)."""
        return Counter(r.key for r in self.received)

    def summary(self) -> dict[str, Any]:
        return {"requests": len(self.received), "distinct": len(self.applied),
                "by_kind": dict(Counter(r.kind for r in self.received)), "refused": len(self.refused)}

    # -- HTTP --------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.post("/webhook/{name}", self._plain("webhook")),
                        web.post("/sms/{name}", self._plain("sms")), web.post("/wecom/send", self._wecom),
                        web.post("/dingtalk/send", self._dingtalk), web.get("/inbox", self._inbox)])
        return app

    def _plain(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if kind == "sms" and self.tokens and bearer not in self.tokens:
                self.refused.append(f"{kind}: bad token")
                return web.json_response({"ok": False, "error": "bad token"}, status=401)
            body = await _json(request)
            key = request.headers.get("Idempotency-Key") or str(body.get("idempotency_key", ""))
            self.keep(Received(kind, request.match_info["name"], key, time.time(), body))
            return web.json_response({"ok": True})
        return handle

    async def _wecom(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if not request.query.get("key"):
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        if body.get("msgtype") not in ("text", "markdown") or not isinstance(body.get(body.get("msgtype", "")), dict):
            return web.json_response({"errcode": 40008, "errmsg": "invalid message type"})
        self.keep(Received("wecom", request.query["key"], request.headers.get("Idempotency-Key", ""), time.time(),
                           body))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _dingtalk(self, request: web.Request) -> web.Response:
        token = request.query.get("access_token", "")
        secret = self.dingtalk_secrets.get(token)
        if secret is not None:
            problem = verify_dingtalk(secret, request.query.get("timestamp", ""), request.query.get("sign", ""))
            if problem:
                self.refused.append(f"dingtalk: {problem}")
                return web.json_response({"errcode": 310000, "errmsg": f"sign not match: {problem}"})
        body = await _json(request)
        self.keep(Received("dingtalk", token, request.headers.get("Idempotency-Key", ""), time.time(), body))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _inbox(self, request: web.Request) -> web.Response:
        return web.json_response(self.summary())

    # -- SMTP (aiosmtpd's handler interface) -------------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        from email import message_from_bytes, policy
        from email.message import EmailMessage

        msg = message_from_bytes(envelope.content, policy=policy.default)
        key = str(msg.get("Message-ID", "")).strip().strip("<>").split("@")[0]
        body = msg.get_body(("plain",)) if isinstance(msg, EmailMessage) else None
        text = str(body.get_content()) if body is not None else ""
        self.keep(Received("email", ",".join(envelope.rcpt_tos), key, time.time(),
                           {"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                            "subject": str(msg.get("Subject", "")), "text": text}))
        return "250 Message accepted for delivery"


def verify_dingtalk(secret: str, timestamp: str, sign: str, now_ms: int | None = None) -> str:
    """'' when `sign` is DingTalk's signature of `timestamp` (ms) with `secret` and the timestamp is within an
    hour of now; else what is wrong. `sign` as the query string gives it (URL-decoded: base64)."""
    if not timestamp.isdigit() or not sign:
        return "timestamp and sign required"
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now_ms - int(timestamp)) > 3_600_000:
        return "timestamp more than an hour off"
    expected = base64.b64encode(hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(),
                                         hashlib.sha256).digest()).decode()
    return "" if hmac.compare_digest(expected, sign) else "signature does not match"


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


async def serve(inbox: Inbox, host: str, port: int, smtp_port: int | None = None) -> tuple[web.AppRunner, Any]:
    """Start the HTTP receiver (and the SMTP one on `smtp_port`, when aiosmtpd is installed); returns both
    handles (the SMTP controller may be None)."""
    runner = web.AppRunner(inbox.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    controller = None
    if smtp_port:
        try:
            from aiosmtpd.controller import Controller
        except ImportError:        # the dev extras are not installed: e-mail channels will fail and retry
            return runner, None
        controller = Controller(inbox, hostname=host, port=smtp_port)
        controller.start()
    return runner, controller
