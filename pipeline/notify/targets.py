"""The notification targets file parsed into frozen, typed objects, and its hot-reloading holder.

File shape (deploy/notify/targets.yaml is the local stack's, with every option):

    version: 1                              # required, exactly 1
    kind: notify-targets                    # required, exactly this
    timezone: Asia/Shanghai                 # optional; quiet hours and the times in messages
    case_link: http://127.0.0.1:8080/cases/$case_id    # optional; the case page, `$case_id` is filled in
    command_notify: [district-command]      # optional; told when a case escalates to the command centre
    smtp: {host: 127.0.0.1, port: 2525, security: starttls, username: ..., password: {env: ...},
           from: "城运中心 <ops@cityops.local>", ca_file: ..., timeout: 10}   # needed by `email` channels
    defaults: {rate: 20/min, quiet_hours: "22:00-07:00"}  # optional, for every target that does not say
    templates: {sms: "...", email: {subject: "...", text: "..."}}    # optional, per channel kind
    targets:
      gas-company:                          # a name the rules' `notify` lists use
        label: 燃气公司抢修调度
        rate: 20/min                        # messages per minute (or /s, /h); bursts up to that many
        quiet_hours: "22:00-07:00"          # or null; priority 1 is never held
        template: "..."                     # optional text for every channel of this target
        channels:                           # one or more; every channel is sent
          - {kind: wecom, url: "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...", format: markdown}
          - {kind: dingtalk, url: "https://oapi.dingtalk.com/robot/send?access_token=...", secret: SEC...}
          - {kind: webhook, url: https://..., token: {env: CITYOPS_NOTIFY_SECRET_GAS}}
          - {kind: sms, url: https://..., token: ..., to: ["+8613800000000"], max_chars: 70}
          - {kind: email, to: [duty@gas.example]}

A secret (`secret`, `token`, `password`) is text or `{env: NAME}`, NAME starting `CITYOPS_NOTIFY_SECRET_`,
taken from the environment that pipeline.config read (`Settings.notify_secrets`), so no secret needs to live in
the file. Every mistake is reported as `file:line:column: key: what` (rules/errors.py), all of them at once: an
unknown key, a malformed address (URL, robot URL without its key or access token, e-mail, phone), an unknown
template field, a target the rules name but the file lacks. A holder refuses such a file and keeps the version
it runs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from string import Template
from typing import Literal
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from yaml.nodes import MappingNode, Node

from pipeline.model.watched import WatchedFile
from rules.errors import RulesError
from rules.nodes import Entry, NodeReader, compose_file

log = logging.getLogger("cityops.notify")

KIND = "notify-targets"
ChannelKind = Literal["webhook", "wecom", "dingtalk", "sms", "email"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = ("webhook", "wecom", "dingtalk", "sms", "email")
SECRET_PREFIX = "CITYOPS_NOTIFY_SECRET_"
# what a template may use (pipeline.notify.templates fills them)
FIELDS = frozenset({
    "case_id", "kind", "kind_name", "category", "category_name", "priority", "team", "team_name", "subdistrict",
    "subdistrict_name", "place", "cell", "lat", "lon", "due_at", "created_at", "link", "reason", "rule_id",
    "target", "target_label", "round",
})
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
DEFAULT_RATE = "20/min"        # what the WeCom and DingTalk group robots accept per robot


class TargetsError(RulesError):
    """A targets file that cannot be used; `problems` holds one `file:line:column: key: what` line each."""


@dataclass(frozen=True)
class RateLimit:
    """At most `burst` messages at once, refilled at `per_second` (a token bucket)."""

    per_second: float
    burst: int
    text: str


@dataclass(frozen=True)
class QuietHours:
    """A daily span (local time, may cross midnight) in which only priority 1 is sent; the rest waits."""

    start_min: int
    end_min: int
    text: str

    def release_at(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """The end of the quiet span `at` falls in, or None when `at` is outside it."""
        local = at.astimezone(tz)
        minute = local.hour * 60 + local.minute
        if self.start_min < self.end_min:
            inside = self.start_min <= minute < self.end_min
        else:
            inside = minute >= self.start_min or minute < self.end_min
        if not inside:
            return None
        end = local.replace(hour=self.end_min // 60, minute=self.end_min % 60, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end


@dataclass(frozen=True)
class Channel:
    """One way of reaching a target. `secret` is the DingTalk signing secret or the bearer token of a
    webhook or SMS gateway ("" when none)."""

    name: str
    kind: ChannelKind
    url: str = ""
    secret: str = field(default="", repr=False)
    to: tuple[str, ...] = ()
    format: str = "markdown"
    max_chars: int = 70
    template: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    channels: tuple[Channel, ...]
    rate: RateLimit
    quiet: QuietHours | None
    template: str | None = None


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    security: Literal["starttls", "tls", "none"]
    sender: str
    username: str = ""
    password: str = field(default="", repr=False)
    timeout_s: float = 10.0
    ca_file: str | None = None          # verify the server against this CA (a site's own), else the system's


@dataclass(frozen=True)
class TargetsSpec:
    """A parsed, valid targets file."""

    path: str
    digest: str
    tz: ZoneInfo
    case_link: str
    command_notify: tuple[str, ...]
    smtp: SmtpServer | None
    templates: dict[str, dict[str, str]]          # channel kind -> {"text": ..., "subject": ...}
    targets: dict[str, Target]

    @property
    def version(self) -> str:
        return self.digest


def parse_targets(path: Path, *, required: Mapping[str, str] | None = None,
                  secrets: Mapping[str, str] | None = None, text: str | None = None) -> TargetsSpec:
    """Read and validate a targets file; raise TargetsError listing every problem.

    `required`: target names something else depends on (the rules' notify lists) -> who names it, for the
    message; each must be defined. `secrets`: the `CITYOPS_NOTIFY_SECRET_*` values (Settings.notify_secrets)."""
    try:
        if text is None:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise TargetsError([f"{path}:1:1: (file): cannot read: {err}"]) from err
        root = compose_file(path, text)
    except TargetsError:
        raise
    except RulesError as err:
        raise TargetsError(err.problems) from err
    reader = NodeReader(str(path))
    spec = _Parser(reader, dict(secrets or {})).spec(root, str(path), text, dict(required or {}))
    if reader.problems:
        raise TargetsError(reader.problems)
    assert spec is not None
    return spec


class _Parser:
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


def names_in_rules(spec: object) -> dict[str, str]:
    """Every notify target a ruleset names (teams, rules enabled or not, the default) -> who names it first."""
    out: dict[str, str] = {}
    path = getattr(spec, "path", "rules")
    for team in getattr(spec, "teams", {}).values():
        for name in team.notify:
            out.setdefault(name, f"{path} (teams.{team.team})")
    for rule in (*getattr(spec, "rules", ()), *getattr(spec, "disabled", ())):
        for name in rule.route.notify:
            out.setdefault(name, f"{path} (rule {rule.id})")
    default = getattr(spec, "default", None)
    for name in getattr(default, "notify", ()):
        out.setdefault(name, f"{path} (default)")
    return out


class TargetsHolder(WatchedFile[TargetsSpec]):
    """The targets a running notifier uses, swapped atomically when the file changes (pipeline.model.watched).

    Construction loads the file and raises TargetsError when it is invalid (the notifier must not start on a
    bad file). `maybe_reload()` (one stat) reloads a changed file; a new version that fails validation is
    refused: the current one keeps running, `last_error` holds the problems and a WARNING names file, line
    and key. `required` is asked again at each load (the rules may have changed meanwhile)."""

    label = "notify targets"
    refused = (TargetsError,)

    def __init__(self, path: Path, required: Callable[[], Mapping[str, str]] = dict,
                 secrets: Mapping[str, str] | None = None) -> None:
        self._required = required
        self._secrets = dict(secrets or {})
        super().__init__(Path(path))

    def load(self) -> TargetsSpec:
        return parse_targets(self.file(), required=self._required(), secrets=self._secrets)

    def same(self, old: TargetsSpec, new: TargetsSpec) -> bool:
        return old.version == new.version

    def problem(self, err: Exception) -> str:
        return "; ".join(err.problems) if isinstance(err, TargetsError) else str(err)

    def on_refused(self, err: Exception) -> None:
        log.warning("notify targets reload refused, keeping version %s: %s", self.current.version, self.last_error)

    def on_installed(self, previous: TargetsSpec) -> None:
        log.warning("notify targets reloaded: %s -> %s", previous.version, self.current.version)


def targets_named(names: Iterable[str], spec: TargetsSpec) -> tuple[list[Target], list[str]]:
    """(the targets of `names` that the file defines, the names it does not)."""
    found = [spec.targets[n] for n in names if n in spec.targets]
    return found, [n for n in names if n not in spec.targets]
