"""The targets file: what a valid one gives, and every mistake refused with file, line and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.config import ROOT
from pipeline.notify.targets import TargetsError, names_in_rules
from pipeline.notify.targetsfile import TargetsHolder, parse_targets
from rules.engine import load_ruleset
from tests.notify.support import targets_yaml, write_targets

HONGKOU = names_in_rules(load_ruleset(ROOT / "rules" / "hongkou.yaml").spec)
BROKEN = Path(__file__).parent / "broken"


def problems(path: Path, **kwargs: object) -> list[str]:
    with pytest.raises(TargetsError) as err:
        parse_targets(path, required=HONGKOU, **kwargs)  # type: ignore[arg-type]
    return err.value.problems


def test_the_local_stack_targets_cover_every_name_the_shipped_rules_use() -> None:
    """deploy/notify/targets.yaml defines every target rules/hongkou.yaml names, with valid addresses."""
    spec = parse_targets(ROOT / "deploy" / "notify" / "targets.yaml", required=HONGKOU)
    assert set(HONGKOU) <= set(spec.targets)
    gas = spec.targets["gas-company"]
    assert [c.kind for c in gas.channels] == ["wecom", "sms"] and gas.rate.burst == 60
    assert spec.targets["heritage-office"].quiet is not None and spec.smtp is not None


def test_each_broken_example_is_refused_naming_file_line_and_key() -> None:
    """Every file in tests/notify/broken/ is refused; its first line says which problem (line:key) it expects."""
    files = sorted(BROKEN.glob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        expected = path.read_text(encoding="utf-8").splitlines()[0].removeprefix("# expect: ").strip()
        found = problems(path, secrets={})
        assert any(p.startswith(f"{path}:{expected.split(' ', 1)[0]}") and expected.split(" ", 1)[1] in p
                   for p in found), (path.name, expected, found)


def test_a_secret_is_read_from_the_environment_settings_not_the_file(tmp_path: Path) -> None:
    """`{env: CITYOPS_NOTIFY_SECRET_X}` takes the value from Settings.notify_secrets; unset is refused."""
    text = targets_yaml("http://127.0.0.1:9").replace("token: sms-token",
                                                      "token: {env: CITYOPS_NOTIFY_SECRET_SMS}")
    path = write_targets(tmp_path / "t.yaml", text)
    spec = parse_targets(path, required=HONGKOU, secrets={"CITYOPS_NOTIFY_SECRET_SMS": "s3cret"})
    assert spec.targets["gas-company"].channels[1].secret == "s3cret"
    assert "s3cret" not in repr(spec.targets["gas-company"])
    assert any("CITYOPS_NOTIFY_SECRET_SMS is not set" in p for p in problems(path, secrets={}))


def test_the_holder_keeps_the_running_version_when_a_change_is_bad(tmp_path: Path) -> None:
    """A bad new file is refused (file, line, key in last_error); the running version stays; a good one wins."""
    path = write_targets(tmp_path / "t.yaml", targets_yaml("http://127.0.0.1:9"))
    holder = TargetsHolder(path, lambda: HONGKOU)
    running = holder.current
    shutil.copy(BROKEN / "unknown_key.yaml", path)
    assert holder.reload() is False
    assert holder.current is running
    assert holder.last_error is not None and f"{path}:" in holder.last_error and "chanels" in holder.last_error
    write_targets(path, targets_yaml("http://127.0.0.1:10"))
    assert holder.reload() is True
    assert holder.current.targets["hotline-desk"].channels[0].url.startswith("http://127.0.0.1:10/")
    assert holder.last_error is None


def test_quiet_hours_hold_until_their_end_in_local_time() -> None:
    """22:00-07:00 Shanghai: 23:30 local is held until 07:00 next morning; 12:00 is not held."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from pipeline.notify.targetparser import _parse_quiet

    q = _parse_quiet("22:00-07:00")
    assert q is not None
    tz = ZoneInfo("Asia/Shanghai")
    held = q.release_at(datetime(2026, 11, 5, 15, 30, tzinfo=UTC), tz)        # 23:30 in Shanghai
    assert held is not None and held.astimezone(tz).strftime("%d %H:%M") == "06 07:00"
    assert q.release_at(datetime(2026, 11, 5, 4, 0, tzinfo=UTC), tz) is None  # 12:00 in Shanghai
