"""What a notification says: the fields of an assignment in words (Chinese), and the text of each channel kind.

Fields (targets.FIELDS) a template can use, as `$name`:

| field | example |
| --- | --- |
| `case_id`, `cell`, `rule_id`, `round` | as in the assignment |
| `kind`, `kind_name` | `dispatch` / 派遣, `reroute` / 改派, `rework` / 返工, `escalation` / 升级督办 |
| `category`, `category_name` | `E0403`, 燃气管道破损 (the taxonomy's name) |
| `priority` | `1` (1 is the most urgent) |
| `team`, `team_name` | `handling`, 综合处置 (`command`: 区城运指挥中心) |
| `subdistrict`, `subdistrict_name` | `310109018`, 北外滩街道 |
| `place` | 北外滩街道 · 东大名路1000号附近 (pipeline.notify.place) |
| `lat`, `lon` | 5 decimals |
| `due_at`, `created_at` | `11-05 14:30`, Asia/Shanghai (the file's time zone) |
| `link` | the case page (`case_link` of the targets file) |
| `reason` | why the team got it, phone and ID numbers masked (pipeline.model.privacy), at most 200 characters |
| `target`, `target_label` | `gas-company`, 燃气公司抢修调度 |

Personal data: an assignment carries none by contract; its one free text, `reason` (which quotes a team's
rejection note), is masked as everywhere else before it is put in any message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from string import Template
from typing import Any
from urllib.parse import quote

from pipeline.model.privacy import mask_text
from pipeline.model.taxonomy import Taxonomy
from pipeline.notify.place import Places
from pipeline.notify.targets import Channel, Target, TargetsSpec

KIND_NAMES = {"dispatch": "派遣", "reroute": "改派", "rework": "返工", "escalation": "升级督办"}
TEAM_NAMES = {"enforcement": "综合执法", "handling": "综合处置", "supervision": "综合监督", "command": "区城运指挥中心"}
REASON_CHARS = 200

TEXT = """【城运通知·$kind_name】$category_name（$category）
优先级：$priority 级　处置：$team_name
地点：$place
时限：$due_at 前
案件：$case_id
说明：$reason
详情：$link"""

MARKDOWN = """### 【城运通知·$kind_name】$category_name
> 优先级：**$priority 级**　处置：$team_name
> 地点：$place
> 时限：$due_at 前
> 案件：$case_id

说明：$reason

[查看案件]($link)"""

SMS = "【城运】P$priority $category_name $kind_name：$place，$due_at前处置"
SUBJECT = "【城运通知·$kind_name】P$priority $category_name（$subdistrict_name）"


@dataclass(frozen=True)
class Message:
    """A rendered notification: `text` in the channel's format, `subject` for e-mail and robot titles,
    `fields` for the generic webhook's JSON."""

    subject: str
    text: str
    fields: dict[str, str]


class Renderer:
    """Fills templates from assignments (a taxonomy and the place names, loaded once)."""

    def __init__(self, taxonomy: Taxonomy, places: Places) -> None:
        self.taxonomy = taxonomy
        self.places = places

    def fields(self, a: dict[str, Any], target: Target, spec: TargetsSpec) -> dict[str, str]:
        """The template fields of one assignment for one target (module docstring)."""
        category = str(a.get("category") or "")
        found = self.taxonomy.get(category)
        sub = str(a.get("subdistrict") or "")
        lat, lon = _number(a.get("lat")), _number(a.get("lon"))
        kind, team = str(a.get("kind") or "dispatch"), str(a.get("team") or "")
        case_id = str(a.get("case_id") or "")
        return {
            "case_id": case_id, "kind": kind, "kind_name": KIND_NAMES.get(kind, kind), "category": category,
            "category_name": found.name if found else category, "priority": str(a.get("priority") or ""),
            "team": team, "team_name": TEAM_NAMES.get(team, team), "subdistrict": sub,
            "subdistrict_name": self.places.subdistrict(sub) if sub else "区外",
            "place": self.places.describe(sub, lon, lat) or "位置待定", "cell": str(a.get("cell") or ""),
            "lat": "" if lat is None else f"{lat:.5f}", "lon": "" if lon is None else f"{lon:.5f}",
            "due_at": _local(a.get("due_at"), spec), "created_at": _local(a.get("created_at"), spec),
            "link": Template(spec.case_link).safe_substitute(case_id=quote(case_id, safe="")),
            "reason": mask_text(str(a.get("reason") or ""))[:REASON_CHARS], "rule_id": str(a.get("rule_id") or ""),
            "target": target.name, "target_label": target.label, "round": str(a.get("round") or 1),
        }

    def render(self, a: dict[str, Any], target: Target, channel: Channel, spec: TargetsSpec) -> Message:
        """The message of `a` for `channel` of `target`: the channel's template, else the target's, else the
        file's for the channel kind, else the built-in one for the kind and format."""
        values = self.fields(a, target, spec)
        own = spec.templates.get(channel.kind, {})
        text = channel.template or target.template or own.get("text") or _default(channel)
        subject = channel.subject or own.get("subject") or SUBJECT
        body = Template(text).safe_substitute(values)
        if channel.kind == "sms":
            body = shorten(body, channel.max_chars)
        return Message(Template(subject).safe_substitute(values), body, values)


def _default(channel: Channel) -> str:
    if channel.kind == "sms":
        return SMS
    if channel.kind in ("wecom", "dingtalk") and channel.format == "markdown":
        return MARKDOWN
    return TEXT


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters (an SMS segment is 70 Chinese characters): cut with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _local(value: Any, spec: TargetsSpec) -> str:
    """An ISO time of the wire as `MM-DD HH:MM` in the file's time zone ("" when absent or malformed)."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return at.astimezone(spec.tz).strftime("%m-%d %H:%M")
