"""Who hears about an assignment, and the deliveries that makes: one per (assignment, target, channel).

Which kinds notify which targets, and why:

- `dispatch`: the assignment's `notify` (the rule's list plus its team's defaults, rules/spec.py): the rules say
  who must hear about a new case besides the team.
- `reroute`: the assignment's `notify` (the new decision's list): a more urgent report re-routed the case (a smoke
  alarm joining a case makes it the fire liaison's business), or a team rejected it; whoever the rules name must
  know who holds it now.
- `rework`: the rule's list (from the running ruleset, by `rule_id`), **priority 1 only**: rework is the centre's
  own quality loop, but an emergency "resolved" that failed its check (a gas leak still leaking) is news to the
  gas company.
- `escalation`: the rule's list and the escalation team's `notify` (the ruleset's `teams.<team>.notify`; for the
  district command centre, `command_notify` of the targets file): an overdue emergency is everyone's business,
  and the escalation team's outside contacts hear it as well.

A target the assignment names but the targets file lacks (the rules changed before the targets file did) yields
no delivery but a `Missing` entry, which the notifier dead-letters at once with the reason.

Ids: a delivery is `N` + the first 20 hex digits of sha1("assignment_id#target#channel"); it is the idempotency
key of every attempt (`Idempotency-Key` header, the webhook's `idempotency_key`, the e-mail's Message-ID), so a
replayed assignment makes the same deliveries and a receiver can tell a repeat.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pipeline.notify.targets import TargetsSpec

COMMAND = "command"         # pipeline.stages.lifecycle.COMMAND: where what nobody else may take escalates


@dataclass(frozen=True)
class Delivery:
    """One message to one channel of one target, for one assignment."""

    delivery_id: str
    assignment_id: str
    case_id: str
    target: str
    channel: str
    channel_kind: str
    priority: int


@dataclass(frozen=True)
class Missing:
    """A target an assignment names that the targets file does not define."""

    assignment_id: str
    case_id: str
    target: str


def delivery_id(assignment_id: str, target: str, channel: str) -> str:
    return "N" + hashlib.sha1(f"{assignment_id}#{target}#{channel}".encode()).hexdigest()[:20]


def recipients(a: dict[str, Any], rules: Any, targets: TargetsSpec) -> list[str]:
    """The target names `a` notifies (table in the module docstring), each once, in order. `rules` is the
    running ruleset's spec (rules.spec.RulesetSpec), or None when none is loaded (then only `notify` counts)."""
    kind = str(a.get("kind") or "dispatch")
    own = [str(n) for n in a.get("notify") or () if isinstance(n, str)]
    priority = a.get("priority")
    rule = _rule_notify(rules, str(a.get("rule_id") or ""))
    if kind in ("dispatch", "reroute"):
        names = own
    elif kind == "rework":
        names = own + (rule if priority == 1 else [])
    elif kind == "escalation":
        team = str(a.get("team") or "")
        names = own + rule + (list(targets.command_notify) if team == COMMAND else _team_notify(rules, team))
    else:
        names = own
    return list(dict.fromkeys(names))


def plan(a: dict[str, Any], rules: Any, targets: TargetsSpec) -> tuple[list[Delivery], list[Missing]]:
    """The deliveries of one assignment (every channel of every target it notifies), and its unknown targets."""
    aid, case_id = str(a["assignment_id"]), str(a.get("case_id") or "")
    priority = int(a.get("priority") or 9)
    out: list[Delivery] = []
    missing: list[Missing] = []
    for name in recipients(a, rules, targets):
        target = targets.targets.get(name)
        if target is None:
            missing.append(Missing(aid, case_id, name))
            continue
        out += [Delivery(delivery_id(aid, name, c.name), aid, case_id, name, c.name, c.kind, priority)
                for c in target.channels]
    return out, missing


def _rule_notify(rules: Any, rule_id: str) -> list[str]:
    if rules is None or not rule_id:
        return []
    for rule in (*rules.rules, *rules.disabled):
        if rule.id == rule_id:
            return list(rule.route.notify)
    return list(rules.default.notify) if rule_id == "default" else []


def _team_notify(rules: Any, team: str) -> list[str]:
    found = getattr(rules, "teams", {}).get(team) if rules is not None else None
    return list(found.notify) if found is not None else []
