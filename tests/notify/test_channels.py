"""Each channel kind against a real receiver: an aiohttp server (pipeline.notify.inbox, answering as the real
services do and verifying DingTalk's signature) and a real SMTP server (aiosmtpd) with STARTTLS and login."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline.notify.channels import Outcome, Sender, dingtalk_sign
from pipeline.notify.inbox import Inbox, verify_dingtalk
from pipeline.notify.plan import Delivery
from pipeline.notify.targets import Channel, SmtpServer
from pipeline.notify.templates import Message
from tests.notify.support import DINGTALK_SECRET, DINGTALK_TOKEN, SMS_TOKEN, free_port

MESSAGE = Message("【城运通知·派遣】P1 燃气管道破裂（北外滩街道）", "燃气管道破裂，北外滩街道，14:30 前",
                  {"case_id": "C1"})
DELIVERY = Delivery("N0123456789abcdef0123", "A1", "C1", "gas-company", "x", "webhook", 1)


def with_receiver(test: Callable[[str, Inbox, Sender], Awaitable[None]], app: web.Application | None = None,
                  ) -> None:
    """Run `test(base_url, inbox, sender)` with the inbox (or `app`) served on a free port."""
    async def main() -> None:
        inbox = Inbox(dingtalk_secrets={DINGTALK_TOKEN: DINGTALK_SECRET}, tokens={SMS_TOKEN})
        runner = web.AppRunner(app or inbox.app(), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession() as session:
                await test(f"http://127.0.0.1:{port}", inbox, Sender(session))
        finally:
            await runner.cleanup()
    asyncio.run(main())


def test_webhook_posts_json_with_the_idempotency_key_on_every_attempt() -> None:
    """The generic webhook gets the fields, the text and `Idempotency-Key`; a second attempt has the same key."""
    async def check(base: str, inbox: Inbox, sender: Sender) -> None:
        ch = Channel("webhook", "webhook", f"{base}/webhook/gas")
        assert await sender.send(ch, MESSAGE, DELIVERY, None) == Outcome(True)
        assert await sender.send(ch, MESSAGE, DELIVERY, None) == Outcome(True)
        assert [r.key for r in inbox.received] == [DELIVERY.delivery_id] * 2 and len(inbox.applied) == 1
        body = inbox.received[0].body
        assert body["idempotency_key"] == DELIVERY.delivery_id and body["case_id"] == "C1"
        assert body["text"] == MESSAGE.text and body["priority"] == 1
    with_receiver(check)


def test_wecom_robot_gets_markdown_and_answers_errcode_0() -> None:
    """企业微信: {"msgtype": "markdown", "markdown": {"content": ...}} to the robot URL with its key."""
    async def check(base: str, inbox: Inbox, sender: Sender) -> None:
        ch = Channel("wecom", "wecom", f"{base}/wecom/send?key=abc", format="markdown")
        assert (await sender.send(ch, MESSAGE, DELIVERY, None)).ok
        assert inbox.received[0].body == {"msgtype": "markdown", "markdown": {"content": MESSAGE.text}}
        text = Channel("wecom", "wecom", f"{base}/wecom/send?key=abc", format="text")
        assert (await sender.send(text, MESSAGE, DELIVERY, None)).ok
        assert inbox.received[1].body == {"msgtype": "text", "text": {"content": MESSAGE.text}}
    with_receiver(check)


def test_dingtalk_robot_signature_is_verified_by_the_receiver() -> None:
    """钉钉: timestamp + sign (HMAC-SHA256 of "timestamp\\nsecret", base64, URL-encoded) pass the receiver's
    check; a wrong secret is refused (errcode 310000) and not retried."""
    async def check(base: str, inbox: Inbox, sender: Sender) -> None:
        good = Channel("dingtalk", "dingtalk", f"{base}/dingtalk/send?access_token={DINGTALK_TOKEN}",
                       secret=DINGTALK_SECRET)
        assert await sender.send(good, MESSAGE, DELIVERY, None) == Outcome(True)
        body = inbox.received[0].body
        assert body["msgtype"] == "markdown" and body["markdown"]["title"] == MESSAGE.subject
        bad = Channel("dingtalk", "dingtalk", good.url, secret="SECwrong")
        outcome = await sender.send(bad, MESSAGE, DELIVERY, None)
        assert not outcome.ok and not outcome.retry and "310000" in outcome.error
        assert len(inbox.received) == 1 and "signature does not match" in inbox.refused[0]
    with_receiver(check)


def test_the_dingtalk_signature_matches_the_vendors_recipe() -> None:
    """The URL-encoded sign decodes to what the receiver computes; a stale timestamp is refused."""
    from urllib.parse import unquote_plus

    ts = 1_700_000_000_000
    sign = unquote_plus(dingtalk_sign("SECx", ts))
    assert verify_dingtalk("SECx", str(ts), sign, now_ms=ts + 1000) == ""
    assert "hour" in verify_dingtalk("SECx", str(ts), sign, now_ms=ts + 3_700_000)


def test_sms_gateway_gets_a_short_text_and_the_token() -> None:
    """The gateway's bearer token is sent; a wrong one (401) is given up, not retried."""
    async def check(base: str, inbox: Inbox, sender: Sender) -> None:
        ch = Channel("sms", "sms", f"{base}/sms/gw", secret=SMS_TOKEN, to=("+8613800000001",))
        assert (await sender.send(ch, MESSAGE, DELIVERY, None)).ok
        assert inbox.received[0].body == {"idempotency_key": DELIVERY.delivery_id, "to": ["+8613800000001"],
                                          "text": MESSAGE.text}
        wrong = Channel("sms", "sms", f"{base}/sms/gw", secret="nope", to=("+8613800000001",))
        outcome = await sender.send(wrong, MESSAGE, DELIVERY, None)
        assert not outcome.ok and not outcome.retry and "401" in outcome.error
    with_receiver(check)


def test_a_busy_or_absent_receiver_is_retried_and_a_refusal_is_not() -> None:
    """503 and a refused connection mean "try again"; 400 means "this will never work"."""
    statuses = iter([503, 400])

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=next(statuses), text="busy")
    app = web.Application()
    app.router.add_post("/hook", answer)

    async def check(base: str, inbox: Inbox, sender: Sender) -> None:
        ch = Channel("webhook", "webhook", f"{base}/hook")
        busy = await sender.send(ch, MESSAGE, DELIVERY, None)
        assert not busy.ok and busy.retry and "503" in busy.error
        refused = await sender.send(ch, MESSAGE, DELIVERY, None)
        assert not refused.ok and not refused.retry
        gone = await sender.send(Channel("webhook", "webhook", f"http://127.0.0.1:{free_port()}/x"), MESSAGE,
                                 DELIVERY, None)
        assert not gone.ok and gone.retry
    with_receiver(check, app)


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the SMTP server's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_email_goes_over_starttls_with_login_and_a_stable_message_id(tls_cert: tuple[Path, Path]) -> None:
    """aiosmtpd requiring STARTTLS and AUTH: the message arrives with Message-ID <delivery id@cityops>; a wrong
    password or a client that will not use TLS delivers nothing."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = tls_cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"ops" and data.password == b"pw"
        return AuthResult(success=ok)

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=authenticate, auth_require_tls=True)
    controller.start()
    try:
        from pipeline.notify.channels import send_email_blocking

        smtp = SmtpServer("127.0.0.1", port, "starttls", "城运中心 <ops@cityops.local>", "ops", "pw", 10.0, str(cert))
        ch = Channel("email", "email", to=("duty@gas.example",))
        assert send_email_blocking(smtp, ch, MESSAGE, DELIVERY) == Outcome(True)
        got = inbox.received[0]
        assert got.key == DELIVERY.delivery_id and got.body["to"] == ["duty@gas.example"]
        assert got.body["subject"] == MESSAGE.subject and "燃气管道破裂" in got.body["text"]
        wrong = SmtpServer("127.0.0.1", port, "starttls", "ops@cityops.local", "ops", "nope", 3.0, str(cert))
        assert not send_email_blocking(wrong, ch, MESSAGE, DELIVERY).ok
        plain = SmtpServer("127.0.0.1", port, "none", "ops@cityops.local", "ops", "pw", 3.0)
        assert not send_email_blocking(plain, ch, MESSAGE, DELIVERY).ok      # the server insists on TLS
        assert len(inbox.received) == 1
    finally:
        controller.stop()
