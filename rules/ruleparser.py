"""Reading and validating a dispatch rules file (its shape: rules.spec) into a RulesetSpec, every problem named
with its line and key, all of them at once."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from yaml.nodes import Node, SequenceNode

from pipeline.model.events import TEAMS
from pipeline.model.taxonomy import Taxonomy, default_taxonomy
from rules.checkfirst import parse_check_first
from rules.combinators import All
from rules.conditions import Condition
from rules.leaves import WhenContext
from rules.limits import parse_time_limits
from rules.nodes import Entry, NodeReader, compose_file
from rules.photos import parse_after_photo
from rules.spec import DEFAULT_TZ, KIND, PRIORITY_RANGE, Route, Rule, RulesetSpec, TeamDefaults
from rules.when import parse_when

_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_NAME = re.compile(r"^[\w.:@-]+$")
_TOP_KEYS = ("version", "kind", "name", "description", "timezone", "teams", "rules", "default", "time_limits",
             "after_photo", "check_first")
_TEAM_KEYS = ("label", "sla", "priority", "escalate_to", "notify")
_RULE_KEYS = ("id", "order", "description", "enabled", "when", "then")
_THEN_KEYS = ("team", "priority", "sla", "escalate_to", "notify", "tags")


def parse_ruleset(path: Path, taxonomy: Taxonomy | None = None, text: str | None = None) -> RulesetSpec:
    """Read and validate a rules file; raise RulesError listing every problem found."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            from rules.errors import RulesError

            raise RulesError([f"{path}:1:1: (file): cannot read: {err.strerror or err}"]) from err
    root = compose_file(path, text)
    reader = NodeReader(str(path))
    spec = RulesetParser(reader, taxonomy or default_taxonomy()).ruleset(root, str(path), text)
    reader.raise_if_any()
    assert spec is not None  # no problems means every part parsed
    return spec


class RulesetParser:
    """One rules file's nodes to a RulesetSpec; problems go to the reader (`ruleset` answers None then)."""

    def __init__(self, reader: NodeReader, taxonomy: Taxonomy) -> None:
        self.r = reader
        self.taxonomy = taxonomy

    def ruleset(self, root: Node | None, path: str, text: str) -> RulesetSpec | None:
        if root is None:
            self.r.problem(None, "", "empty file: expected version, kind, name, teams, rules and default")
            return None
        top = self.r.mapping(root, "", allowed=_TOP_KEYS, required=("version", "kind", "name", "teams"))
        if top is None:
            return None
        if "default" not in top:
            self.r.problem(
                root,
                "default",
                "missing: every ruleset needs a default route for events that no rule matches",
            )
        version = self._text(top.get("version"), "version")
        name = self._text(top.get("name"), "name")
        kind = self._text(top.get("kind"), "kind")
        if kind is not None and kind != KIND:
            self.r.problem(top["kind"].value, "kind", f"expected {KIND!r}, got {kind!r}")
        description = self._text(top.get("description"), "description") or ""
        tz = self._timezone(top.get("timezone"))
        teams = self._teams(top.get("teams"))
        ctx = WhenContext(self.taxonomy, tz) if tz is not None else None
        rules = self._rules(top.get("rules"), teams, ctx)
        default = self._then(top["default"].value, "default", teams) if "default" in top else None
        used = None if rules is None or default is None else _priorities(rules, default)
        limits = parse_time_limits(self.r, top.get("time_limits"), PRIORITY_RANGE, used)
        after_photo = parse_after_photo(self.r, top.get("after_photo"), ctx)
        check_first = parse_check_first(self.r, top.get("check_first"), ctx)
        if self.r.problems or None in (version, name, teams, rules, default, tz, limits, after_photo, check_first):
            return None
        assert version and name and teams is not None and rules is not None and default and tz and limits
        assert after_photo is not None and check_first is not None
        enabled = tuple(sorted((r for r in rules if r.enabled), key=lambda r: r.order))
        disabled = tuple(r for r in rules if not r.enabled)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
        return RulesetSpec(path, name, version, digest, description, tz, teams, enabled, disabled, default, limits,
                           after_photo, check_first)

    def _text(self, entry: Entry | None, key: str) -> str | None:
        return None if entry is None else self.r.text(entry.value, key)

    def _timezone(self, entry: Entry | None) -> ZoneInfo | None:
        name = DEFAULT_TZ if entry is None else self.r.text(entry.value, "timezone")
        if name is None:
            return None
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.r.problem(entry.value if entry else None, "timezone", f"unknown time zone {name!r}")
            return None

    def _duration(self, node: Node, key: str) -> timedelta | None:
        return self.r.duration(node, key)

    def _team_name(self, node: Node, key: str, declared: dict[str, TeamDefaults] | None) -> str | None:
        name = self.r.text(node, key)
        if name is None:
            return None
        if name not in TEAMS:
            import difflib

            hint = difflib.get_close_matches(name, TEAMS, n=1)
            self.r.problem(
                node,
                key,
                f"unknown team {name!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" (teams: {', '.join(TEAMS)})",
            )
            return None
        if declared is not None and name not in declared:
            self.r.problem(node, key, f"team {name!r} has no defaults under `teams`; declare it there")
            return None
        return name

    def _names(self, node: Node, key: str) -> tuple[str, ...] | None:
        values = self.r.texts(node, key)
        if values is None:
            return None
        bad = [(n, v) for n, v in values if not _NAME.match(v)]
        for n, v in bad:
            self.r.problem(n, key, f"bad name {v!r}: letters, digits and . : @ _ - only")
        return None if bad else tuple(dict.fromkeys(v for _, v in values))

    def _teams(self, entry: Entry | None) -> dict[str, TeamDefaults] | None:
        if entry is None:
            return None
        entries = self.r.mapping(entry.value, "teams")
        if entries is None:
            return None
        if not entries:
            self.r.problem(entry.value, "teams", "declare at least one team")
            return None
        teams: dict[str, TeamDefaults] = {}
        escalations: list[tuple[Node, str, str]] = []
        for name, team_entry in entries.items():
            key = f"teams.{name}"
            if self._team_name(team_entry.key_node, key, None) is None:
                continue
            fields = self.r.mapping(team_entry.value, key, allowed=_TEAM_KEYS, required=("sla",))
            if fields is None or "sla" not in fields:
                continue
            sla = self._duration(fields["sla"].value, f"{key}.sla")
            priority = (
                self.r.integer(fields["priority"].value, f"{key}.priority", *PRIORITY_RANGE)
                if "priority" in fields
                else 3
            )
            label = self._text(fields.get("label"), f"{key}.label") if "label" in fields else name
            notify = self._names(fields["notify"].value, f"{key}.notify") if "notify" in fields else ()
            escalate: str | None = None
            if "escalate_to" in fields and not self.r.is_null(fields["escalate_to"].value):
                escalate = self.r.text(fields["escalate_to"].value, f"{key}.escalate_to")
                if escalate is not None:
                    escalations.append((fields["escalate_to"].value, f"{key}.escalate_to", escalate))
            if sla is None or priority is None or label is None or notify is None:
                continue
            teams[name] = TeamDefaults(name, label, sla, priority, escalate, notify)
        for node, key, target in escalations:
            self._check_escalation(node, key, target, key.split(".")[1], teams)
        return teams

    def _check_escalation(
        self, node: Node, key: str, target: str, team: str, teams: dict[str, TeamDefaults]
    ) -> bool:
        if self._team_name(node, key, teams) is None:
            return False
        if target == team:
            self.r.problem(node, key, f"a case cannot escalate to its own team {team!r}")
            return False
        return True

    def _then(self, node: Node, key: str, teams: dict[str, TeamDefaults] | None) -> Route | None:
        fields = self.r.mapping(node, key, allowed=_THEN_KEYS, required=("team",))
        if fields is None or "team" not in fields or teams is None:
            return None
        team = self._team_name(fields["team"].value, f"{key}.team", teams)
        if team is None:
            return None
        base = teams[team]
        priority = (
            self.r.integer(fields["priority"].value, f"{key}.priority", *PRIORITY_RANGE)
            if "priority" in fields
            else base.priority
        )
        sla = self._duration(fields["sla"].value, f"{key}.sla") if "sla" in fields else base.sla
        escalate = base.escalate_to
        if "escalate_to" in fields:
            value = fields["escalate_to"].value
            if self.r.is_null(value):
                escalate = None
            else:
                escalate = self.r.text(value, f"{key}.escalate_to")
                if escalate is not None and not self._check_escalation(
                    value, f"{key}.escalate_to", escalate, team, teams
                ):
                    return None
        elif escalate == team:
            escalate = None
        notify = self._names(fields["notify"].value, f"{key}.notify") if "notify" in fields else ()
        tags = self._names(fields["tags"].value, f"{key}.tags") if "tags" in fields else ()
        if priority is None or sla is None or notify is None or tags is None:
            return None
        return Route(team, priority, sla, escalate, tuple(dict.fromkeys(base.notify + notify)), tags)

    def _rules(
        self, entry: Entry | None, teams: dict[str, TeamDefaults] | None, ctx: WhenContext | None
    ) -> list[Rule] | None:
        if entry is None:
            return []
        if self.r.is_null(entry.value) or (isinstance(entry.value, SequenceNode) and not entry.value.value):
            return []  # a ruleset may route everything by its default
        items = self.r.items(entry.value, "rules", allow_scalar=False)
        if items is None:
            return None
        rules: list[Rule] = []
        ids: dict[str, int] = {}
        orders: dict[int, str] = {}
        ok = True
        for index, (node, _) in enumerate(items):
            rule = self._rule(node, index, teams, ctx, ids, orders)
            if rule is None:
                ok = False
            else:
                rules.append(rule)
        return rules if ok else None

    def _rule(
        self,
        node: Node,
        index: int,
        teams: dict[str, TeamDefaults] | None,
        ctx: WhenContext | None,
        ids: dict[str, int],
        orders: dict[int, str],
    ) -> Rule | None:
        fields = self.r.mapping(node, f"rules[{index}]", allowed=_RULE_KEYS, required=("id", "order", "then"))
        if fields is None or "id" not in fields:
            return None
        rule_id = self.r.text(fields["id"].value, f"rules[{index}].id")
        if rule_id is None:
            return None
        key = f"rules[{rule_id}]"
        ok = True
        if not _RULE_ID.match(rule_id):
            self.r.problem(
                fields["id"].value, f"{key}.id", "rule ids are lower-case letters, digits, - and _"
            )
            ok = False
        if rule_id in ids:
            self.r.problem(
                fields["id"].value, f"{key}.id", f"duplicate rule id (first at line {ids[rule_id]})"
            )
            ok = False
        ids.setdefault(rule_id, fields["id"].value.start_mark.line + 1)
        order = self.r.integer(fields["order"].value, f"{key}.order", 0, None) if "order" in fields else None
        if order is not None and order in orders:
            self.r.problem(
                fields["order"].value,
                f"{key}.order",
                f"order {order} is also used by rule {orders[order]!r}; orders must be unique",
            )
            ok = False
        elif order is not None:
            orders[order] = rule_id
        description = (
            self._text(fields.get("description"), f"{key}.description") if "description" in fields else ""
        )
        enabled = self.r.boolean(fields["enabled"].value, f"{key}.enabled") if "enabled" in fields else True
        when: Condition | None = All(())
        if "when" in fields:
            when = (
                parse_when(self.r, fields["when"].value, f"{key}.when", ctx, rule_level=True)
                if ctx is not None
                else None
            )
        route = self._then(fields["then"].value, f"{key}.then", teams) if "then" in fields else None
        if not ok or None in (order, description, enabled, when, route):
            return None
        assert order is not None and description is not None and enabled is not None
        assert isinstance(when, All) and route is not None
        return Rule(rule_id, order, description, when, route, node.start_mark.line + 1, enabled)


def _priorities(rules: list[Rule], default: Route) -> frozenset[int]:
    """The priorities the file's routes have, disabled rules included (enabling one must not make the time
    limits invalid)."""
    return frozenset({r.route.priority for r in rules} | {default.priority})
