"""One Open311 service request answer, from what cityops knows about a ticket.

A ticket is known in one of three stages: `stored` (the worker put it in a case and ClickHouse has it),
`unlocated` (its address could not be placed; it waits in the operators' queue) or `received` (posted to this
server a moment ago; the worker has not stored it yet). Its case's state is the newer of the stored row and the
live state this web process keeps from Kafka (a ticket accepted a second ago shows `accepted by ...`).

Every field the spec lists is present, null (JSON) or empty (XML) when unknown:
- `status`: `closed` when the case is verified and closed, else `open` (pipeline.web.open311_search);
  `status_notes` says where it is, in Chinese and English;
- `agency_responsible`: the team the case is with (`enforcement`, `handling`, `supervision`);
- `service_notice`: the service's notice (pipeline/data/service_attributes.yaml);
- `requested_datetime`: when the citizen called (the ticket's own time; never null);
  `updated_datetime`: the case's last change (its closing for a closed one), else the request time;
  `expected_datetime`: the deadline of what the case waits for (handling; verification when resolved);
- `description`, `address`, `address_id`: masked again on the way out (pipeline.model.privacy); `zipcode`: null
  (no postal-code register); `lat`/`long`: the ticket's point (the gazetteer's for an address-only ticket);
  `media_url`: the link the ticket came with.
With `extensions`: `attributes` (the service attributes' answers), `extended_attributes` (`case_id`,
`case_status`: the cityops status) and `notes`, the update history: when it was received, then each step of
its case (dispatched, accepted, resolved, verified, closed, ...), with the step's reason masked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from pipeline.model.privacy import mask_text
from pipeline.web.live import parse_time
from pipeline.web.open311_search import open311_status
from pipeline.web.open311_services import Catalogue
from pipeline.web.open311_store import CaseFacts, Step, StoredTicket

Json = dict[str, Any]
Stage = Literal["stored", "unlocated", "received"]
STEP_TEXT = {
    "new": "已立案 filed", "dispatched": "已派遣 dispatched to {team}", "accepted": "处置中 accepted by {team}",
    "resolved": "已处置待核查 resolved by {team}, awaiting verification", "verified": "已核查 verified",
    "closed": "已核查结案 verified and closed", "rejected": "退回 rejected by {team}",
    "reopened": "返工 sent back to {team} for rework", "escalated": "已督办 escalated to {team}",
}
TEAM_STEPS = frozenset({"accepted", "resolved", "rejected", "reopened", "verified", "closed"})
STAGE_TEXT = {"received": "已受理 received, being processed",
              "unlocated": "地址待人工定位 the address is being placed on the map by an operator"}


@dataclass(frozen=True)
class Ticket:
    """What is known about one ticket itself (not its case). Times are epoch seconds."""

    ticket_id: str
    requested: float
    service_code: str
    stage: Stage = "stored"
    case_id: str = ""
    description: str = ""
    address: str = ""
    address_id: str = ""
    media_url: str = ""
    attributes: str = ""
    lon: float | None = None
    lat: float | None = None


@dataclass(frozen=True)
class CaseView:
    """The state of a ticket's case that answers show: the newer of the stored and the live one."""

    case_id: str
    status: str
    team: str
    due_at: float | None = None
    verify_due_at: float | None = None
    resolved_at: float | None = None
    closed_at: float | None = None
    created_at: float | None = None


def from_stored(t: StoredTicket) -> Ticket:
    return Ticket(ticket_id=t.ticket_id, requested=t.requested, service_code=t.service_code, stage="stored",
                  case_id=t.case_id, description=t.description, address=t.address, address_id=t.address_id,
                  media_url=t.media_url, attributes=t.attributes, lon=t.lon, lat=t.lat)


def from_unlocated(ticket_id: str, msg: Json) -> Ticket:
    """A ticket of the unlocated queue (a located-message dict: pipeline.stages.ingest.encode_located)."""
    return Ticket(ticket_id=ticket_id, requested=float(msg.get("occurred_at") or 0.0),
                  service_code=str(msg.get("category") or ""), stage="unlocated",
                  description=str(msg.get("description") or ""), address=str(msg.get("address") or ""),
                  address_id=str(msg.get("address_id") or ""), media_url=str(msg.get("media_url") or ""),
                  attributes=str(msg.get("attributes") or ""))


def _epoch(value: Any) -> float | None:
    at = parse_time(value)
    return at.timestamp() if at is not None else None


def case_view(case_id: str, stored: CaseFacts | None, live: Json | None) -> CaseView | None:
    """The case as answers show it: the live state when it is at least as new as the stored row."""
    if live is not None and int(live.get("revision") or 0) >= (stored.revision if stored else 0):
        return CaseView(case_id=case_id, status=str(live.get("status") or ""), team=str(live.get("team") or ""),
                        due_at=_epoch(live.get("due_at")), verify_due_at=_epoch(live.get("verify_due_at")),
                        resolved_at=_epoch(live.get("resolved_at")), closed_at=_epoch(live.get("closed_at")),
                        created_at=_epoch(live.get("created_at")))
    if stored is not None and stored.revision:
        return CaseView(case_id=case_id, status=stored.status, team=stored.team, due_at=stored.due_at,
                        closed_at=stored.closed_at)
    return None


def w3(epoch: float | None) -> str | None:
    """A time as the spec writes it (W3C, UTC `Z`, whole seconds)."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def status_notes(ticket: Ticket, case: CaseView | None) -> str:
    if case is None or not case.status:
        return STAGE_TEXT["unlocated" if ticket.stage == "unlocated" else "received"]
    return STEP_TEXT.get(case.status, case.status).format(team=case.team or "-")


def _expected(case: CaseView | None) -> float | None:
    if case is None or open311_status(case.status) == "closed":
        return None
    if case.status == "resolved":
        return case.verify_due_at or case.due_at
    return case.due_at


def _updated(ticket: Ticket, case: CaseView | None, last_change: float | None) -> float:
    if case is not None and open311_status(case.status) == "closed" and (case.closed_at or last_change):
        return float(case.closed_at or last_change or ticket.requested)
    known = [ticket.requested, last_change]
    if case is not None:
        known += [case.created_at, case.resolved_at]
    return max(t for t in known if t is not None)


def answer(ticket: Ticket, case: CaseView | None, catalogue: Catalogue, *, last_change: float | None = None,
           steps: Sequence[Step] | None = None, extensions: bool = False) -> Json:
    """The service request answer (see the module docstring); `steps` only matter with `extensions`."""
    cat = catalogue.taxonomy.get(ticket.service_code)
    out: Json = {
        "service_request_id": ticket.ticket_id,
        "status": open311_status(case.status if case is not None else None),
        "status_notes": status_notes(ticket, case),
        "service_name": cat.name if cat is not None else None,
        "service_code": ticket.service_code or None,
        "description": mask_text(ticket.description)[:4000] or None,
        "agency_responsible": (case.team or None) if case is not None else None,
        "service_notice": catalogue.notice(ticket.service_code),
        "requested_datetime": w3(ticket.requested),
        "updated_datetime": w3(_updated(ticket, case, last_change)),
        "expected_datetime": w3(_expected(case)),
        "address": mask_text(ticket.address) or None,
        "address_id": mask_text(ticket.address_id) or None,
        "zipcode": None,
        "lat": ticket.lat,
        "long": ticket.lon,
        "media_url": ticket.media_url or None,
    }
    if extensions:
        out["attributes"] = _attribute_answers(ticket, catalogue)
        out["extended_attributes"] = {"case_id": ticket.case_id or None,
                                      "case_status": case.status if case is not None else ticket.stage}
        out["notes"] = notes(ticket, steps or ())
    return out


def _attribute_answers(ticket: Ticket, catalogue: Catalogue) -> list[Json]:
    try:
        given = orjson.loads(ticket.attributes) if ticket.attributes else {}
    except orjson.JSONDecodeError:
        given = {}
    if not isinstance(given, dict):
        return []
    return [{"code": code, "description": catalogue.label(ticket.service_code, code),
             "value": mask_text(",".join(value) if isinstance(value, list) else str(value))}
            for code, value in sorted(given.items())]


def notes(ticket: Ticket, steps: Sequence[Step]) -> list[Json]:
    """The update history: the ticket received, then its case's steps in order."""
    out: list[Json] = [{"datetime": w3(ticket.requested), "description": STAGE_TEXT["received"],
                        "type": "submitted"}]
    for step in steps:
        text = STEP_TEXT.get(step.status, step.status).format(team=step.team or "-")
        # a team's own words (what was done, why it was sent back); the centre's routing reasons are internal
        reason = mask_text(step.reason).strip() if step.status in TEAM_STEPS else ""
        out.append({"datetime": w3(step.at), "description": f"{text}: {reason[:300]}" if reason else text,
                    "type": step.status})
    return out
