"""Prometheus metrics of the pipeline, as seen by the web server (text exposition format 0.0.4).

Every metric name is declared once in `METRICS` with its type and help; `render` refuses undeclared names so a
typo cannot silently create a new series. Values come from the live board, the lag probe and the web's own
counters (`WebCounters`); `collect` gathers them in one place.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pipeline.web.feed import LagReport
from pipeline.web.live import LiveBoard

Kind = Literal["counter", "gauge", "summary"]

METRICS: dict[str, tuple[Kind, str]] = {
    "cityops_events_in_total": ("counter", "Messages written to each input topic (sum of end offsets)."),
    "cityops_events_processed_total": ("counter", "Messages of each input topic the worker group committed."),
    "cityops_consumer_lag": ("gauge", "Messages of each input topic not yet processed by the worker group."),
    "cityops_deadletters_total": ("counter", "Messages ever written to the dead-letter topic."),
    "cityops_deadletters_recent": ("gauge", "Dead letters seen by the web in the last 5 minutes, by source topic."),
    "cityops_cases": ("gauge", "Cases known to the live view, by team and status."),
    "cityops_cases_open": ("gauge", "Open (dispatched or accepted) cases by team."),
    "cityops_cases_overdue": ("gauge", "Open cases past their due time, by team."),
    "cityops_unlocated_tickets": ("gauge", "Hotline tickets waiting to be placed on the map by hand."),
    "cityops_dispatch_latency_seconds": ("summary",
                                         "Report time to dispatch (assignment on Kafka), recent dispatches."),
    "cityops_notifications_total": ("counter", "Notification deliveries (assignment x target x channel) by target, "
                                               "channel and latest status (ClickHouse `notifications`)."),
    "cityops_notification_attempts_total": ("counter", "Notification attempts by status (delivered, retry, failed, "
                                                       "interrupted, missing)."),
    "cityops_notifications_p1_failed": ("gauge", "Priority-1 cases on the board whose notification was given up."),
    "cityops_web_requests_total": ("counter", "Web requests by route group and HTTP status."),
    "cityops_web_messages_sent_total": ("counter", "Messages the web sent to Kafka, by topic kind."),
    "cityops_web_sse_clients": ("gauge", "Browsers connected to the live stream."),
    "cityops_web_feed_records_total": ("counter", "Records the live view consumed from Kafka."),
}

Sample = tuple[str, dict[str, str], float]


@dataclass
class WebCounters:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    sse_clients: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def render(samples: Iterable[Sample]) -> str:
    """The exposition text: one HELP/TYPE block per declared metric that has samples, in `METRICS` order."""
    by_name: dict[str, list[Sample]] = {}
    for s in samples:
        base = s[0].removesuffix("_count").removesuffix("_sum") if s[0] not in METRICS else s[0]
        if base not in METRICS:
            raise KeyError(f"metric {s[0]!r} is not declared in pipeline.web.metrics.METRICS")
        by_name.setdefault(base, []).append(s)
    lines: list[str] = []
    for name, (kind, help_text) in METRICS.items():
        if name not in by_name:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for sample_name, labels, value in by_name[name]:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{sample_name}{{{label_text}}} {_number(value)}" if label_text
                         else f"{sample_name} {_number(value)}")
    return "\n".join(lines) + "\n"


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between closest ranks (NaN for no values)."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def collect(board: LiveBoard, lag: LagReport | None, web: WebCounters, feed_records: int,
            notifications: dict[str, list[tuple[dict[str, str], float]]] | None = None) -> list[Sample]:
    """Every sample; `notifications` are the counts the web reads from ClickHouse (CaseArchive)."""
    out: list[Sample] = []
    for name, samples in (notifications or {}).items():
        out += [(name, labels, n) for labels, n in samples]
    out.append(("cityops_notifications_p1_failed", {}, len(board.notify_failures)))
    if lag is not None and lag.error is None:
        for source, p in lag.sources.items():
            out += [("cityops_events_in_total", {"source": source}, p.produced),
                    ("cityops_events_processed_total", {"source": source}, p.processed),
                    ("cityops_consumer_lag", {"source": source}, p.lag)]
        out.append(("cityops_deadletters_total", {}, lag.deadletters))
    recent = Counter(topic for ts, topic, _ in board.recent_deadletters
                     if ts >= (board.clock().timestamp() - 300))
    out += [("cityops_deadletters_recent", {"source_topic": t}, n) for t, n in sorted(recent.items())]
    out += [("cityops_cases", {"team": team, "status": status}, n)
            for (team, status), n in sorted(board.case_counts().items())]
    queues = board.queues()["teams"]
    out += [("cityops_cases_open", {"team": t}, q["open"]) for t, q in queues.items()]
    out += [("cityops_cases_overdue", {"team": t}, q["overdue"]) for t, q in queues.items()]
    out.append(("cityops_unlocated_tickets", {}, len(board.unlocated)))
    lat = list(board.dispatch_latencies)
    for q in (0.5, 0.9, 0.99):
        out.append(("cityops_dispatch_latency_seconds", {"quantile": str(q)}, quantile(lat, q)))
    out += [("cityops_dispatch_latency_seconds_count", {}, len(lat)),
            ("cityops_dispatch_latency_seconds_sum", {}, sum(lat))]
    out += [("cityops_web_requests_total", {"route": r, "status": str(s)}, n)
            for (r, s), n in sorted(web.requests.items())]
    out += [("cityops_web_messages_sent_total", {"kind": k}, n) for k, n in sorted(web.sent.items())]
    out += [("cityops_web_sse_clients", {}, web.sse_clients), ("cityops_web_feed_records_total", {}, feed_records)]
    return out
