"""Durations as rule files write them: `15m`, `2h`, `1h30m`, `3d`, `1w`, `45s`.

A bare number is refused on purpose: `sla: 2` could mean hours or days, and a wrong SLA is a silent bug.
"""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)\s*([wdhms])")
_WHOLE = re.compile(r"^\s*(?:\d+\s*[wdhms]\s*)+$")
_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """Parse `1d12h`-style text into a positive timedelta; raise ValueError saying what is accepted."""
    if not _WHOLE.match(text):
        raise ValueError(
            f"bad duration {text!r}: write a number and a unit (w, d, h, m, s), e.g. 30m, 2h, 1d12h"
        )
    seconds = sum(int(n) * _SECONDS[unit] for n, unit in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"bad duration {text!r}: must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest `1d2h30m` form of a timedelta (whole seconds), the inverse of `parse_duration`."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        n, seconds = divmod(seconds, _SECONDS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)
