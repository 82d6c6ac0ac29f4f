"""The targets file's parser (pipeline.notify.targetsfile describes the file): YAML nodes to a TargetsSpec,
every problem reported with its line, all of them at once."""

from __future__ import annotations

import hashlib
import re
from email.utils import parseaddr
from pathlib import Path
from string import Template
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from yaml.nodes import MappingNode, Node

from pipeline.notify.targets import (
    CHANNEL_KINDS,
    DEFAULT_RATE,
    FIELDS,
    KIND,
    SECRET_PREFIX,
    Channel,
    QuietHours,
    RateLimit,
    SmtpServer,
    Target,
    TargetsSpec,
)
from rules.nodes import Entry, NodeReader

_TOP_KEYS = ("version", "kind", "timezone", "case_link", "command_notify", "smtp", "defaults", "templates",
             "targets")
_TARGET_KEYS = ("label", "rate", "quiet_hours", "template", "channels")
_CHANNEL_KEYS: dict[str, tuple[str, ...]] = {
    "webhook": ("kind", "name", "url", "token", "template"),
    "wecom": ("kind", "name", "url", "format", "template"),
    "dingtalk": ("kind", "name", "url", "secret", "format", "template"),
    "sms": ("kind", "name", "url", "token", "to", "max_chars", "template"),
    "email": ("kind", "name", "to", "subject", "template"),
}
_SMTP_KEYS = ("host", "port", "security", "username", "password", "from", "timeout", "ca_file")
_NAME = re.compile(r"^[\w.:@-]+$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
               "hour": 3600.0}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_EMAIL = re.compile(r"^[^@\s<>,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_PHONE = re.compile(r"^(\+[1-9]\d{7,14}|1[3-9]\d{9})$")


class TargetsParser:
    """One targets file's nodes to a TargetsSpec; problems go to the reader (`spec` answers None then)."""

    def __init__(self, reader: NodeReader, secrets: dict[str, str]) -> None:
        self.r = reader
        self.secrets = secrets

    def spec(self, root: Node | None, path: str, text: str, required: dict[str, str]) -> TargetsSpec | None:
        if root is None:
            self.r.problem(None, "", "empty file: expected version, kind and targets")
            return None
        top = self.r.mapping(root, "", allowed=_TOP_KEYS, required=("version", "kind", "targets"))
        if top is None:
            return None
        if "version" in top:
            self.r.integer(top["version"].value, "version", 1, 1)
        if "kind" in top:
            kind = self.r.text(top["kind"].value, "kind")
            if kind is not None and kind != KIND:
                self.r.problem(top["kind"].value, "kind", f"expected {KIND!r}, got {kind!r}")
        tz = self._timezone(top.get("timezone"))
        link = self._link(top.get("case_link"))
        command = self._names(top["command_notify"].value, "command_notify") if "command_notify" in top else ()
        smtp = self._smtp(top["smtp"].value) if "smtp" in top else None
        defaults = self.r.mapping(top["defaults"].value, "defaults", allowed=("rate", "quiet_hours")) \
            if "defaults" in top else {}
        rate = self._rate((defaults or {}).get("rate"), "defaults.rate")
        quiet = self._quiet((defaults or {}).get("quiet_hours"), "defaults.quiet_hours")
        templates = self._templates(top.get("templates"))
        targets = self._targets(top.get("targets"), rate, quiet)
        if targets is not None:
            self._check_required(top["targets"], targets, required, command)
            if smtp is None and any(c.kind == "email" for t in targets.values() for c in t.channels):
                self.r.problem(root, "smtp", "an email channel needs the `smtp` server")
        if self.r.problems or None in (tz, link, command, templates, targets, rate):
            return None
        assert tz is not None and link is not None and command is not None and templates is not None
        assert targets is not None
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
        return TargetsSpec(path, digest, tz, link, command, smtp, templates, targets)

    # -- top level ----------------------------------------------------------------------------------------

    def _timezone(self, entry: Entry | None) -> ZoneInfo | None:
        name = "Asia/Shanghai" if entry is None else self.r.text(entry.value, "timezone")
        if name is None:
            return None
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.r.problem(entry.value if entry else None, "timezone", f"unknown time zone {name!r}")
            return None

    def _link(self, entry: Entry | None) -> str | None:
        if entry is None:
            return "http://127.0.0.1:8080/cases/$case_id"
        link = self._url(entry.value, "case_link")
        if link is not None and "$case_id" not in link and "${case_id}" not in link:
            self.r.problem(entry.value, "case_link", "must contain $case_id (where the case id goes)")
            return None
        return link

    def _names(self, node: Node, key: str) -> tuple[str, ...] | None:
        values = self.r.texts(node, key)
        if values is None:
            return None
        bad = [(n, v) for n, v in values if not _NAME.match(v)]
        for n, v in bad:
            self.r.problem(n, key, f"bad name {v!r}: letters, digits and . : @ _ - only")
        return None if bad else tuple(dict.fromkeys(v for _, v in values))

    def _smtp(self, node: Node) -> SmtpServer | None:
        f = self.r.mapping(node, "smtp", allowed=_SMTP_KEYS, required=("host", "port", "from"))
        if f is None or not {"host", "port", "from"} <= f.keys():
            return None
        host = self.r.text(f["host"].value, "smtp.host")
        port = self.r.integer(f["port"].value, "smtp.port", 1, 65535)
        security = self.r.text(f["security"].value, "smtp.security") if "security" in f else "starttls"
        if security not in (None, "starttls", "tls", "none"):
            self.r.problem(f["security"].value, "smtp.security", f"expected starttls, tls or none, got {security!r}")
            security = None
        sender = self.r.text(f["from"].value, "smtp.from")
        if sender is not None and not _EMAIL.match(parseaddr(sender)[1] or "-"):
            self.r.problem(f["from"].value, "smtp.from", f"not an e-mail address: {sender!r}")
            sender = None
        username = self.r.text(f["username"].value, "smtp.username") if "username" in f else ""
        password = self._secret(f["password"].value, "smtp.password") if "password" in f else ""
        timeout = self.r.number(f["timeout"].value, "smtp.timeout") if "timeout" in f else 10.0
        ca_file = self.r.text(f["ca_file"].value, "smtp.ca_file") if "ca_file" in f else None
        if ca_file is not None and not Path(ca_file).is_file():
            self.r.problem(f["ca_file"].value, "smtp.ca_file", f"no such file: {ca_file}")
        if None in (host, port, security, sender, username, password, timeout) or \
                ("ca_file" in f and (ca_file is None or not Path(ca_file).is_file())):
            return None
        assert host and port and security and sender and username is not None and password is not None
        assert timeout is not None
        return SmtpServer(host, port, security, sender, username, password, timeout,  # type: ignore[arg-type]
                          ca_file)

    def _templates(self, entry: Entry | None) -> dict[str, dict[str, str]] | None:
        if entry is None:
            return {}
        f = self.r.mapping(entry.value, "templates", allowed=CHANNEL_KINDS)
        if f is None:
            return None
        out: dict[str, dict[str, str]] = {}
        ok = True
        for kind, e in f.items():
            key = f"templates.{kind}"
            if isinstance(e.value, MappingNode):
                g = self.r.mapping(e.value, key, allowed=("text", "subject"))
                if g is None:
                    ok = False
                    continue
                parts = {k: self._template(v.value, f"{key}.{k}") for k, v in g.items()}
            else:
                parts = {"text": self._template(e.value, key)}
            if None in parts.values():
                ok = False
                continue
            out[kind] = {k: v for k, v in parts.items() if v is not None}
        return out if ok else None

    def _template(self, node: Node, key: str) -> str | None:
        """Template text (`$field` / `${field}` placeholders, `$$` for a dollar) using known fields only."""
        text = self.r.text(node, key)
        if text is None:
            return None
        t = Template(text)
        if not t.is_valid():
            self.r.problem(node, key, "a `$` that starts no field: write $$ for a dollar sign")
            return None
        unknown = sorted(set(t.get_identifiers()) - FIELDS)
        if unknown:
            self.r.problem(node, key, f"unknown field(s) {', '.join('$' + u for u in unknown)}; "
                                      f"fields: {', '.join(sorted(FIELDS))}")
            return None
        return text

    def _secret(self, node: Node, key: str) -> str | None:
        if isinstance(node, MappingNode):
            f = self.r.mapping(node, key, allowed=("env",), required=("env",))
            if f is None or "env" not in f:
                return None
            name = self.r.text(f["env"].value, f"{key}.env")
            if name is None:
                return None
            if not name.startswith(SECRET_PREFIX):
                self.r.problem(f["env"].value, f"{key}.env", f"secret variables are named {SECRET_PREFIX}*")
                return None
            value = self.secrets.get(name)
            if not value:
                self.r.problem(f["env"].value, f"{key}.env", f"{name} is not set in the environment")
                return None
            return value
        return self.r.text(node, key)

    def _rate(self, entry: Entry | None, key: str, default: RateLimit | None = None) -> RateLimit | None:
        if entry is None:
            return default or _parse_rate(DEFAULT_RATE)
        text = self.r.text(entry.value, key)
        if text is None:
            return None
        rate = _parse_rate(text)
        if rate is None:
            self.r.problem(entry.value, key, f"bad rate {text!r}: write a count per s, min or h, e.g. 20/min")
        return rate

    def _quiet(self, entry: Entry | None, key: str, default: QuietHours | None = None) -> QuietHours | None:
        if entry is None:
            return default
        if self.r.is_null(entry.value):
            return None
        text = self.r.text(entry.value, key)
        if text is None:
            return None
        quiet = _parse_quiet(text)
        if quiet is None:
            self.r.problem(entry.value, key, f"bad quiet hours {text!r}: write HH:MM-HH:MM, e.g. 22:00-07:00")
        return quiet

    # -- targets ------------------------------------------------------------------------------------------

    def _targets(self, entry: Entry | None, rate: RateLimit | None,
                 quiet: QuietHours | None) -> dict[str, Target] | None:
        if entry is None:
            return None
        f = self.r.mapping(entry.value, "targets")
        if f is None:
            return None
        out: dict[str, Target] = {}
        ok = True
        for name, e in f.items():
            target = self._target(name, e, rate, quiet)
            if target is None:
                ok = False
            else:
                out[name] = target
        return out if ok else None

    def _target(self, name: str, e: Entry, rate: RateLimit | None, quiet: QuietHours | None) -> Target | None:
        key = f"targets.{name}"
        if not _NAME.match(name):
            self.r.problem(e.key_node, key, "target names are letters, digits and . : @ _ - only")
            return None
        f = self.r.mapping(e.value, key, allowed=_TARGET_KEYS, required=("channels",))
        if f is None or "channels" not in f:
            return None
        label = self.r.text(f["label"].value, f"{key}.label") if "label" in f else name
        own_rate = self._rate(f.get("rate"), f"{key}.rate", rate)
        own_quiet = self._quiet(f.get("quiet_hours"), f"{key}.quiet_hours", quiet)
        template = self._template(f["template"].value, f"{key}.template") if "template" in f else None
        channels = self._channels(f["channels"].value, f"{key}.channels")
        if label is None or own_rate is None or channels is None or ("template" in f and template is None) \
                or ("quiet_hours" in f and own_quiet is None and not self.r.is_null(f["quiet_hours"].value)):
            return None
        return Target(name, label, channels, own_rate, own_quiet, template)

    def _channels(self, node: Node, key: str) -> tuple[Channel, ...] | None:
        items = self.r.items(node, key, allow_scalar=False)
        if items is None:
            return None
        out: list[Channel] = []
        names: set[str] = set()
        ok = True
        for item, item_key in items:
            channel = self._channel(item, item_key)
            if channel is None:
                ok = False
                continue
            if channel.name in names:
                self.r.problem(item, f"{item_key}.name", f"two channels named {channel.name!r}: name one of them")
                ok = False
            names.add(channel.name)
            out.append(channel)
        return tuple(out) if ok else None

    def _channel(self, node: Node, key: str) -> Channel | None:
        f = self.r.mapping(node, key)
        if f is None:
            return None
        if "kind" not in f:
            self.r.problem(node, key, f"missing required key 'kind' (one of {', '.join(CHANNEL_KINDS)})")
            return None
        kind = self.r.text(f["kind"].value, f"{key}.kind")
        if kind not in CHANNEL_KINDS:
            if kind is not None:
                self.r.problem(f["kind"].value, f"{key}.kind", f"unknown channel kind {kind!r}; "
                                                               f"kinds: {', '.join(CHANNEL_KINDS)}")
            return None
        f = self.r.mapping(node, key, allowed=_CHANNEL_KEYS[kind], required=_required(kind))
        if f is None or not set(_required(kind)) <= f.keys():
            return None
        before = len(self.r.problems)
        name = self.r.text(f["name"].value, f"{key}.name") if "name" in f else kind
        url = self._robot_url(kind, f["url"].value, f"{key}.url") if "url" in f else ""
        secret_key = "secret" if "secret" in f else "token" if "token" in f else None
        secret = self._secret(f[secret_key].value, f"{key}.{secret_key}") if secret_key else ""
        to = self._recipients(kind, f["to"].value, f"{key}.to") if "to" in f else ()
        fmt = self.r.text(f["format"].value, f"{key}.format") if "format" in f else "markdown"
        if fmt not in (None, "markdown", "text"):
            self.r.problem(f["format"].value, f"{key}.format", f"expected markdown or text, got {fmt!r}")
        max_chars = self.r.integer(f["max_chars"].value, f"{key}.max_chars", 20, 500) if "max_chars" in f else 70
        template = self._template(f["template"].value, f"{key}.template") if "template" in f else None
        subject = self._template(f["subject"].value, f"{key}.subject") if "subject" in f else None
        if len(self.r.problems) > before or None in (name, url, secret, to, fmt, max_chars):
            return None
        assert name is not None and url is not None and secret is not None and to is not None
        assert fmt is not None and max_chars is not None
        return Channel(name, kind, url, secret, to, fmt, max_chars, template, subject)  # type: ignore[arg-type]

    def _url(self, node: Node, key: str) -> str | None:
        text = self.r.text(node, key)
        if text is None:
            return None
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text):
            self.r.problem(node, key, f"not an http(s) URL: {text!r}")
            return None
        return text

    def _robot_url(self, kind: str, node: Node, key: str) -> str | None:
        url = self._url(node, key)
        if url is None:
            return None
        need = {"wecom": "key", "dingtalk": "access_token"}.get(kind)
        if need is not None and not parse_qs(urlsplit(url).query).get(need):
            self.r.problem(node, key, f"a {kind} robot URL carries its {need}=... (copy the whole webhook URL)")
            return None
        return url

    def _recipients(self, kind: str, node: Node, key: str) -> tuple[str, ...] | None:
        values = self.r.texts(node, key)
        if values is None:
            return None
        out: list[str] = []
        for i, (item, value) in enumerate(values):
            where = f"{key}[{i}]" if len(values) > 1 or item is not node else key
            if kind == "email" and not _EMAIL.match(value):
                self.r.problem(item, where, f"not an e-mail address: {value!r}")
            elif kind == "sms" and not _PHONE.match(re.sub(r"[\s-]", "", value)):
                self.r.problem(item, where, "not a phone number (+<country><number> or an 11-digit mobile)")
            else:
                out.append(re.sub(r"[\s-]", "", value) if kind == "sms" else value)
        return tuple(out) if len(out) == len(values) else None

    def _check_required(self, entry: Entry, targets: dict[str, Target], required: dict[str, str],
                        command: tuple[str, ...] | None) -> None:
        wanted = dict(required)
        for name in command or ():
            wanted.setdefault(name, "command_notify")
        for name, who in sorted(wanted.items()):
            if name not in targets:
                self.r.problem(entry.value, f"targets.{name}", f"missing: {who} names it, so it must be defined")


def _required(kind: str) -> tuple[str, ...]:
    return {"webhook": ("url",), "wecom": ("url",), "dingtalk": ("url",), "sms": ("url", "to"),
            "email": ("to",)}[kind]


def _parse_rate(text: str) -> RateLimit | None:
    m = _RATE.match(text)
    if not m or int(m.group(1)) < 1:
        return None
    n = int(m.group(1))
    return RateLimit(n / _RATE_UNITS[m.group(2)], n, text.strip())


def _parse_quiet(text: str) -> QuietHours | None:
    parts = text.replace(" ", "").split("-")
    if len(parts) != 2:
        return None
    a, b = (_CLOCK.match(p) for p in parts)
    if a is None or b is None:
        return None
    start, end = int(a.group(1)) * 60 + int(a.group(2)), int(b.group(1)) * 60 + int(b.group(2))
    return None if start == end else QuietHours(start, end, text.strip())


