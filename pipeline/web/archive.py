"""A case's history from ClickHouse: its reports (the `events` merged into it) and its timeline
(`case_transitions`), plus the look-ups the Open311 status and the unlocated queue need.

Queries go through `pipeline.sink.transport.ClickHouse.query_dicts` with bound parameters only. Tables are
ReplacingMergeTree, so a replayed row may still appear twice before a merge: rows are de-duplicated here by
their key (event_id; (case_id, seq)) instead of `FINAL`, which is slow and behaves differently across the
ClickHouse versions we support. Times are selected as epoch seconds (`toUnixTimestamp`) so the server's time zone
never matters. Descriptions are masked again before they leave (they were masked by the worker).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from pipeline.model.privacy import mask_text
from pipeline.web.open311_services import default_catalogue

Json = dict[str, Any]


class Query(Protocol):
    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


def _iso(epoch: Any) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).isoformat().replace("+00:00", "Z")


def _answers(category: str, text: str) -> list[Json]:
    """A ticket's attribute answers (JSON object text): code, the service's question, the answer (a list joined
    with commas), masked."""
    try:
        given = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return []
    if not isinstance(given, dict):
        return []
    labels = default_catalogue()
    return [{"code": str(k), "label": labels.label(category, str(k)),
             "value": mask_text(",".join(map(str, v)) if isinstance(v, list) else str(v))}
            for k, v in sorted(given.items())]


# an event id in a system-written reason ("opened from patrol:WEB-20261203-..."): stored in clear in `events`,
# and a date or a ticket number in it must not be masked as a phone number (the id would point nowhere)
_EVENT_ID = re.compile(r"\b(?:hotline|patrol|iot):[A-Za-z0-9_.:@-]+")


def mask_reason(text: str) -> str:
    """A transition's reason masked like free text (a handler's note may hold a number), its event ids kept."""
    out: list[str] = []
    at = 0
    for m in _EVENT_ID.finditer(text):
        out += [mask_text(text[at:m.start()]), m.group()]
        at = m.end()
    out.append(mask_text(text[at:]))
    return "".join(out)


class CaseArchive:
    """Read-only history queries (blocking: call them from a thread)."""

    def __init__(self, db: Query) -> None:
        self.db = db

    def reports(self, case_id: str, limit: int = 500) -> list[Json]:
        """The reports of a case, oldest first: source, category, where, whether merged as a duplicate."""
        rows = self.db.query_dicts(
            "SELECT event_id, source, category, cell, subdistrict, toUnixTimestamp(received_at) AS received, "
            "merged, snapped, request_type, sensor_type, value, description, address, media_url, attributes "
            "FROM events WHERE case_id = %(case_id)s ORDER BY received_at, event_id LIMIT %(limit)s",
            {"case_id": case_id, "limit": limit * 2})
        seen: set[str] = set()
        out: list[Json] = []
        for r in rows:
            if r["event_id"] in seen:
                continue
            seen.add(r["event_id"])
            out.append({"event_id": r["event_id"], "source": r["source"], "category": r["category"],
                        "cell": r["cell"], "subdistrict": r["subdistrict"], "received_at": _iso(r["received"]),
                        "merged": bool(r["merged"]), "snapped": bool(r["snapped"]),
                        "request_type": r["request_type"], "sensor_type": r["sensor_type"], "value": r["value"],
                        "description": mask_text(str(r["description"] or ""))[:1000],
                        # a hotline ticket's Open311 extras (migration 0007): where, its photo, its answers
                        "address": mask_text(str(r["address"] or "")), "media_url": r["media_url"] or None,
                        "attributes": _answers(str(r["category"]), str(r["attributes"] or ""))})
        return out[:limit]

    def timeline(self, case_id: str) -> list[Json]:
        """Every transition of a case in order (new, dispatched with its rule and reason, accepted, ...)."""
        rows = self.db.query_dicts(
            "SELECT seq, status, team, actor, toUnixTimestamp(at) AS at_epoch, reason, photo_url "
            "FROM case_transitions WHERE case_id = %(case_id)s ORDER BY seq", {"case_id": case_id})
        steps: dict[int, Json] = {}
        for r in rows:
            steps[int(r["seq"])] = {"seq": int(r["seq"]), "status": r["status"], "team": r["team"],
                                    "actor": r["actor"], "at": _iso(r["at_epoch"]),
                                    "reason": mask_reason(str(r["reason"] or "")),
                                    "photo_url": r.get("photo_url") or None}    # a resolve's after photo (0009)
        return [steps[k] for k in sorted(steps)]

    def notifications(self, case_id: str) -> list[Json]:
        """Each delivery of the case's notifications (pipeline/notify) in its latest state: target, channel,
        status of the last attempt, when it ended and how long the delivery took from the assignment."""
        rows = self.db.query_dicts(
            "SELECT delivery_id, target, channel, kind, attempt, status, error, toUnixTimestamp(sent_at) AS sent, "
            "latency_ms, since_assignment_ms FROM notifications WHERE case_id = %(case_id)s "
            "ORDER BY delivery_id, attempt", {"case_id": case_id})
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:              # ordered by attempt: the last row of a delivery is its latest attempt
            latest[str(r["delivery_id"])] = r
        out = [{"delivery_id": k, "target": r["target"], "channel": r["channel"], "kind": r["kind"],
                "status": r["status"], "attempts": int(r["attempt"]),
                "at": datetime.fromtimestamp(int(r["sent"]) + int(r["latency_ms"]) / 1000, UTC).isoformat()
                .replace("+00:00", "Z"),
                "latency_s": round(int(r["since_assignment_ms"]) / 1000, 2),
                "error": mask_text(str(r["error"] or ""))[:300]} for k, r in latest.items()]
        return sorted(out, key=lambda n: (n["at"], n["target"], n["channel"]))

    def notification_counts(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """For /metrics: deliveries by target, channel and latest status; attempts by status."""
        deliveries = self.db.query_dicts(
            "SELECT target, channel, status, count() AS n FROM (SELECT delivery_id, any(target) AS target, "
            "any(channel) AS channel, argMax(status, attempt) AS status FROM notifications GROUP BY delivery_id) "
            "GROUP BY target, channel, status")
        attempts = self.db.query_dicts(
            "SELECT status, uniqExact(delivery_id, attempt) AS n FROM notifications GROUP BY status")
        return {
            "cityops_notifications_total": [({"target": str(r["target"]), "channel": str(r["channel"]),
                                              "status": str(r["status"])}, float(r["n"])) for r in deliveries],
            "cityops_notification_attempts_total": [({"status": str(r["status"])}, float(r["n"]))
                                                    for r in attempts],
        }

    def case_of_event(self, event_id: str) -> str | None:
        """The case an event ended up in (None while the worker has not stored it)."""
        rows = self.db.query_dicts("SELECT case_id FROM events WHERE event_id = %(event_id)s LIMIT 1",
                                   {"event_id": event_id})
        return str(rows[0]["case_id"]) if rows else None

    def known_events(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids are stored (an unlocated ticket placed since is one of them)."""
        found: set[str] = set()
        ids = list(event_ids)
        for i in range(0, len(ids), 1000):
            rows = self.db.query_dicts("SELECT DISTINCT event_id FROM events WHERE event_id IN %(ids)s",
                                       {"ids": tuple(ids[i:i + 1000])})
            found |= {str(r["event_id"]) for r in rows}
        return found


def open_archive(settings: Any) -> CaseArchive:
    """The archive on the configured ClickHouse database (connects lazily, on the first query)."""
    from pipeline.sink.transport import ClickHouse

    return CaseArchive(ClickHouse(settings, connect_timeout=3.0, send_receive_timeout=10.0, any_node=True))
