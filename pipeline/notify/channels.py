"""Sending one rendered message over one channel, and what the answer means: delivered, retry, or give up.

- `webhook`: POST JSON (`idempotency_key`, the assignment's ids, `subject`, `text`, every template field) with
  the bearer `token`; delivered on HTTP 2xx.
- `wecom` (企业微信群机器人): POST `{"msgtype": "markdown", "markdown": {"content"}}` (or `text`) to the robot URL,
  whose `key` is the credential; delivered on HTTP 200 with `errcode` 0; retried also on `errcode` -1 (busy) and
  45009 (over the robot's 20 messages a minute).
- `dingtalk` (钉钉群机器人): POST `{"msgtype": "markdown", "markdown": {"title", "text"}}` (or `text`); with a
  `secret` the URL gets `timestamp` (ms) and `sign`, the URL-encoded base64 of HMAC-SHA256(secret,
  "timestamp\nsecret"), made anew for every attempt (DingTalk refuses a timestamp an hour old); delivered on
  `errcode` 0; retried also on -1 and 130101 (sent too fast).
- `sms`: POST JSON `{"idempotency_key", "to": [...], "text"}` to the gateway with the bearer `token`; the text is
  cut to `max_chars`; delivered on HTTP 2xx.
- `email`: SMTP (smtplib, in a thread) with STARTTLS or TLS and login as the `smtp` block says, `Message-ID:
  <delivery id@cityops>`; delivered when the server accepts it for every recipient; retried on a 4xx reply.

HTTP channels are retried when there is no answer, on a timeout and on HTTP 408, 425, 429 and 5xx; SMTP when
there is no connection or a timeout.

Every HTTP request carries the header `Idempotency-Key: <delivery id>`, the same on every attempt. Anything
else (HTTP 4xx, a robot's other error codes such as DingTalk's 310000 for a bad signature, SMTP 5xx) will not
get better by retrying: the delivery is given up and dead-lettered at once with that reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import orjson

from pipeline.model.privacy import mask_text
from pipeline.notify.plan import Delivery
from pipeline.notify.targets import Channel, SmtpServer
from pipeline.notify.templates import Message

RETRY_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRY_ROBOT_CODES = {"wecom": frozenset({-1, 45009}), "dingtalk": frozenset({-1, 130101})}
ROBOT_LIMIT_BYTES = {"wecom": 4000, "dingtalk": 18000}      # the vendors' content limits, with a margin
HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: `ok`, else `retry` (worth trying again) and `error` (why, masked)."""

    ok: bool
    retry: bool = False
    error: str = ""

    @classmethod
    def failed(cls, error: str, retry: bool) -> Outcome:
        return cls(False, retry, mask_text(" ".join(error.split()))[:300])


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's robot signature: base64 of HMAC-SHA256 keyed by the secret over "timestamp\\nsecret",
    URL-encoded (as it goes into the query string)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def robot_body(channel: Channel, message: Message) -> dict[str, Any]:
    """The JSON a WeCom or DingTalk group robot takes, in the channel's format."""
    text = _cut_bytes(message.text, ROBOT_LIMIT_BYTES[channel.kind])
    if channel.kind == "wecom":
        if channel.format == "markdown":
            return {"msgtype": "markdown", "markdown": {"content": text}}
        return {"msgtype": "text", "text": {"content": text}}
    if channel.format == "markdown":
        return {"msgtype": "markdown", "markdown": {"title": message.subject, "text": text}}
    return {"msgtype": "text", "text": {"content": text}}


def request_for(channel: Channel, message: Message, d: Delivery, now_ms: int | None = None,
                ) -> tuple[str, dict[str, str], bytes]:
    """(URL, headers, body) of one attempt over an HTTP channel."""
    headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": d.delivery_id}
    url = channel.url
    if channel.kind in ("wecom", "dingtalk"):
        body: dict[str, Any] = robot_body(channel, message)
        if channel.kind == "dingtalk" and channel.secret:
            ts = int(time.time() * 1000) if now_ms is None else now_ms
            url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={dingtalk_sign(channel.secret, ts)}"
    elif channel.kind == "sms":
        body = {"idempotency_key": d.delivery_id, "to": list(channel.to), "text": message.text}
    else:
        body = {**message.fields, "idempotency_key": d.delivery_id, "assignment_id": d.assignment_id,
                "case_id": d.case_id, "target": d.target, "channel": d.channel, "priority": d.priority,
                "subject": message.subject, "text": message.text}
    if channel.secret and channel.kind in ("webhook", "sms"):
        headers["Authorization"] = f"Bearer {channel.secret}"
    return url, headers, orjson.dumps(body)


async def send_http(session: aiohttp.ClientSession, channel: Channel, message: Message, d: Delivery) -> Outcome:
    """One attempt over a webhook, robot or SMS gateway channel."""
    url, headers, body = request_for(channel, message, d)
    try:
        async with session.post(url, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as resp:
            text = await resp.text(errors="replace")
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        return Outcome.failed(f"{type(err).__name__}: {err}", retry=True)
    if not 200 <= status < 300:
        return Outcome.failed(f"HTTP {status}: {text[:200]}", retry=status in RETRY_HTTP)
    if channel.kind in ("wecom", "dingtalk"):
        return _robot_answer(channel.kind, text)
    return Outcome(True)


def _robot_answer(kind: str, text: str) -> Outcome:
    try:
        answer = orjson.loads(text)
        code = int(answer.get("errcode", -1))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return Outcome.failed(f"{kind} robot: not a robot answer: {text[:200]}", retry=True)
    if code == 0:
        return Outcome(True)
    return Outcome.failed(f"{kind} robot errcode {code}: {answer.get('errmsg', '')}",
                          retry=code in RETRY_ROBOT_CODES[kind])


def email_message(smtp: SmtpServer, channel: Channel, message: Message, d: Delivery) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(channel.to)
    msg["Subject"] = message.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{d.delivery_id}@cityops>"      # the same on every attempt: mail systems de-duplicate
    msg["Idempotency-Key"] = d.delivery_id
    msg.set_content(message.text)
    return msg


def send_email_blocking(smtp: SmtpServer, channel: Channel, message: Message, d: Delivery) -> Outcome:
    """One attempt over SMTP (blocking: run in a thread)."""
    msg = email_message(smtp, channel, message, d)
    context = ssl.create_default_context(cafile=smtp.ca_file)
    try:
        client: smtplib.SMTP
        if smtp.security == "tls":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.username:
                client.login(smtp.username, smtp.password)
            refused = client.send_message(msg)
    except smtplib.SMTPRecipientsRefused as err:
        codes = [code for code, _ in err.recipients.values()]
        return Outcome.failed(f"SMTP refused every recipient: {codes}", retry=all(400 <= c < 500 for c in codes))
    except smtplib.SMTPResponseException as err:
        return Outcome.failed(f"SMTP {err.smtp_code}: {err.smtp_error!r}", retry=400 <= err.smtp_code < 500)
    except (smtplib.SMTPException, OSError, ssl.SSLError) as err:
        retry = not isinstance(err, ssl.SSLCertVerificationError)      # a wrong certificate stays wrong
        return Outcome.failed(f"SMTP {type(err).__name__}: {err}", retry=retry)
    if refused:
        return Outcome.failed(f"SMTP refused {len(refused)} of {len(channel.to)} recipients",
                              retry=all(400 <= code < 500 for code, _ in refused.values()))
    return Outcome(True)


class Sender:
    """Sends one delivery's message over its channel (the HTTP session and the SMTP server shared)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(self, channel: Channel, message: Message, d: Delivery, smtp: SmtpServer | None) -> Outcome:
        if channel.kind == "email":
            if smtp is None:
                return Outcome.failed("no smtp server configured", retry=False)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, send_email_blocking, smtp, channel, message, d)
        return await send_http(self.session, channel, message, d)


def _cut_bytes(text: str, limit: int) -> str:
    raw = text.encode()
    return text if len(raw) <= limit else raw[: limit - 3].decode(errors="ignore") + "…"
