"""Test helpers of the notifier: a real receiver (pipeline.notify.inbox) in a thread, targets files, assignments."""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.notify.inbox import Inbox
from pipeline.notify.plan import delivery_id

DINGTALK_TOKEN, DINGTALK_SECRET = "robot-1", "SECtest-signing-secret"
SMS_TOKEN = "sms-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InboxServer:
    """The inbox served from its own thread and event loop, so sync tests and subprocesses can talk to it; `stop`
    and `start` take it down and up on the same port (a receiver outage)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.inbox = Inbox(dingtalk_secrets={DINGTALK_TOKEN: DINGTALK_SECRET}, tokens={SMS_TOKEN})
        self.port = free_port()
        self.delay_s = delay_s
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._runner: Any = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> None:
        async def up() -> Any:
            app = self.inbox.app()
            if self.delay_s:
                @web.middleware
                async def slow(request: web.Request, handler: Any) -> Any:
                    await asyncio.sleep(self.delay_s)
                    return await handler(request)
                app.middlewares.append(slow)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
            return runner
        self._runner = self._call(up())

    def stop(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
            self._runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def targets_yaml(base: str, *, rate: str = "6000/min", extra: str = "", quiet: str | None = None,
                 sms_token: str = SMS_TOKEN, dingtalk_secret: str = DINGTALK_SECRET) -> str:
    """A targets file for the shipped Hongkou rules, every target on the receiver at `base`: gas-company on a
    WeCom robot and SMS, district-command on a signed DingTalk robot, the rest on the generic webhook."""
    quiet_line = f'    quiet_hours: "{quiet}"\n' if quiet else ""
    others = ["iot-operations", "citizen-station", "family-doctor", "fire-liaison", "subdistrict-office",
              "drainage-company", "heritage-office", "hotline-desk", "enforcement-squad", "civil-affairs",
              "waterfront-management", "building-management", "residents-committee"]
    lines = [
        "version: 1", "kind: notify-targets", "case_link: http://ops.example/cases/$case_id",
        f"defaults: {{rate: {rate}}}", "targets:",
        "  gas-company:", "    label: 燃气公司", quiet_line.rstrip("\n") if quiet_line else None, "    channels:",
        f'      - {{kind: wecom, url: "{base}/wecom/send?key=gas", format: markdown}}',
        f'      - {{kind: sms, url: "{base}/sms/gw", token: {sms_token}, to: ["+8613800000001"]}}',
        "  district-command:", "    label: 区指挥中心", "    channels:",
        f'      - {{kind: dingtalk, url: "{base}/dingtalk/send?access_token={DINGTALK_TOKEN}", '
        f"secret: {dingtalk_secret}}}",
    ]
    for name in others:
        lines += [f"  {name}:", "    channels:", f'      - {{kind: webhook, url: "{base}/webhook/{name}"}}']
    return "\n".join(line for line in lines if line is not None) + "\n" + extra


def write_targets(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assignment(n: int, *, kind: str = "dispatch", priority: int = 1, notify: tuple[str, ...] = (
        "gas-company", "district-command"), rule_id: str = "gas-leak", team: str = "handling",
        reason: str = "gas-leak: category E0403", at: datetime | None = None) -> dict[str, Any]:
    """An assignment as the cases stage writes it (pipeline.model.assignments.Assignment.to_json)."""
    at = at or datetime(2026, 11, 5, 6, 0, tzinfo=UTC) + timedelta(seconds=n)
    return {
        "assignment_id": f"A{n:020d}", "case_id": f"C310109018001-{n:012x}", "team": team, "priority": priority,
        "due_at": (at + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"), "category": "E0403",
        "cell": "310109018001003", "subdistrict": "310109018", "lat": 31.2487, "lon": 121.4970,
        "rule_id": rule_id, "reason": reason, "sources": ["iot"], "created_at": at.isoformat().replace("+00:00", "Z"),
        "kind": kind, "escalate_to": "supervision", "notify": list(notify), "tags": ["emergency"],
        "ruleset_version": "test", "grid_version": "test", "round": 1,
    }


def expected_keys(a: dict[str, Any], channels: dict[str, list[str]]) -> set[str]:
    """The delivery ids (idempotency keys) an assignment makes, given each target's channel names."""
    return {delivery_id(a["assignment_id"], t, c) for t in a["notify"] for c in channels.get(t, ["webhook"])}


CHANNELS = {"gas-company": ["wecom", "sms"], "district-command": ["dingtalk"]}
