"""The notification targets as frozen, typed objects: who may be told (a Target), how (its Channels), how often
(RateLimit, QuietHours), and the SMTP server; a TargetsSpec is one valid targets file. The file's shape and
its hot-reloading holder are pipeline.notify.targetsfile, its parser pipeline.notify.targetparser."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from rules.errors import RulesError

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


def targets_named(names: Iterable[str], spec: TargetsSpec) -> tuple[list[Target], list[str]]:
    """(the targets of `names` that the file defines, the names it does not)."""
    found = [spec.targets[n] for n in names if n in spec.targets]
    return found, [n for n in names if n not in spec.targets]
