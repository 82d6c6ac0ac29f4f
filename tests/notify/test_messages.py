"""Who hears about which assignment, and what they read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ROOT
from pipeline.model.taxonomy import default_taxonomy
from pipeline.notify.place import Places
from pipeline.notify.plan import plan, recipients
from pipeline.notify.targets import TargetsSpec, names_in_rules
from pipeline.notify.targetsfile import parse_targets
from pipeline.notify.templates import Renderer
from rules.engine import load_ruleset
from tests.notify.support import assignment, targets_yaml, write_targets

RULES = load_ruleset(ROOT / "rules" / "hongkou.yaml").spec


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(default_taxonomy(), Places.load())


@pytest.fixture
def spec(tmp_path: Path) -> TargetsSpec:
    path = write_targets(tmp_path / "t.yaml", targets_yaml("http://127.0.0.1:9") + "command_notify: [hotline-desk]\n")
    return parse_targets(path, required=names_in_rules(RULES))


def test_dispatch_and_reroute_notify_their_own_list(spec: TargetsSpec) -> None:
    """A dispatch or re-route notifies exactly the assignment's `notify` (the rule's list with its team's)."""
    for kind in ("dispatch", "reroute"):
        assert recipients(assignment(1, kind=kind), RULES, spec) == ["gas-company", "district-command"]


def test_rework_notifies_the_rules_list_only_for_priority_1(spec: TargetsSpec) -> None:
    """Rework carries no list: a priority-1 case's rule list is told (the leak is not fixed); others are not."""
    assert recipients(assignment(1, kind="rework", notify=(), priority=1), RULES, spec) == \
        ["gas-company", "district-command"]
    assert recipients(assignment(1, kind="rework", notify=(), priority=2, rule_id="heritage-building-sensor"),
                      RULES, spec) == []


def test_escalation_notifies_the_rules_list_and_the_escalation_teams(spec: TargetsSpec) -> None:
    """To supervision: the rule's list plus supervision's notify (district-command); to the command centre:
    the rule's list plus `command_notify`."""
    up = assignment(1, kind="escalation", notify=(), team="supervision", rule_id="illegal-structure")
    assert recipients(up, RULES, spec) == ["district-command"]
    cmd = assignment(1, kind="escalation", notify=(), team="command", rule_id="gas-leak")
    assert recipients(cmd, RULES, spec) == ["gas-company", "district-command", "hotline-desk"]


def test_every_channel_of_every_target_is_one_delivery_with_a_stable_id(spec: TargetsSpec) -> None:
    """gas-company (WeCom + SMS) and district-command (DingTalk): 3 deliveries, the same ids on a replay; an
    unknown target is reported, not delivered."""
    a = assignment(7, notify=("gas-company", "district-command", "nobody"))
    deliveries, missing = plan(a, RULES, spec)
    assert [(d.target, d.channel) for d in deliveries] == [("gas-company", "wecom"), ("gas-company", "sms"),
                                                          ("district-command", "dingtalk")]
    assert [d.delivery_id for d in plan(a, RULES, spec)[0]] == [d.delivery_id for d in deliveries]
    assert [m.target for m in missing] == ["nobody"]


def test_the_message_is_chinese_with_category_place_priority_due_time_and_link(
        spec: TargetsSpec, renderer: Renderer) -> None:
    """Category name from the taxonomy, sub-district and nearest gazetteer address, due time in Shanghai."""
    a = assignment(1)        # due 06:30 UTC = 14:30 Shanghai, on the North Bund
    target = spec.targets["gas-company"]
    m = renderer.render(a, target, target.channels[0], spec)
    name = default_taxonomy().categories["E0403"].name
    assert name in m.text and "地点：北外滩街道 · 上海国际客运中心附近" in m.text
    assert "11-05 14:30 前" in m.text and "优先级：**1 级**" in m.text
    assert "http://ops.example/cases/C310109018001-000000000001" in m.text
    assert m.subject.startswith("【城运通知·派遣】P1 ")


def test_free_text_is_masked_and_sms_is_short(spec: TargetsSpec, renderer: Renderer) -> None:
    """A phone number in the reason (a team's rejection note) never leaves; an SMS fits one segment."""
    a = assignment(1, kind="reroute", reason="rejected by handling: 业主王先生13812345678说不是燃气")
    target = spec.targets["gas-company"]
    wecom = renderer.render(a, target, target.channels[0], spec)
    assert "13812345678" not in wecom.text and "138****5678" in wecom.text
    sms = renderer.render(a, target, target.channels[1], spec)
    assert len(sms.text) <= 70 and sms.text.startswith("【城运】P1 ") and "13812345678" not in sms.text
