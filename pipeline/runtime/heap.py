"""A worker's heap report, for finding what holds its memory (issue #23: a month of state peaked about 300 MiB
above what its state accounts for). Off unless `CITYOPS_HEAP_REPORT` names a file (Settings.heap_report; `{pid}`
in it becomes the process id).

The report is written when the resident set passes its previous high by `STEP_MIB` (checked every `EVERY_S`),
and when the worker stops (to `<file>.stop`): so the report of a killed worker is the one nearest its peak. It
holds the process's resident set and peak, the C allocator's view (glibc `mallinfo2`, all arenas: bytes in use
and free in its heaps and mapped chunks), Python's own allocator (`sys._debugmallocstats`: arenas, pools and
blocks; silent while tracemalloc runs), the objects the cyclic collector tracks by type with their shallow sizes
(listing them costs 8 bytes an object for the report's time), and with `CITYOPS_HEAP_TRACE=N` (tracemalloc from
the start, N frames a traceback) the allocations alive now grouped by traceback. Tracing slows the worker
several times and adds its own memory: use it on a restarted worker (a month's state restored and one batch),
not on the month itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from mode import Service

STEP_MIB = 32.0
EVERY_S = 2.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def status_mib() -> dict[str, float]:
    """VmRSS and VmHWM of this process, in MiB (/proc/self/status)."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def malloc_info() -> dict[str, float]:
    """glibc's own accounting, in MiB: heap (`arena`), mapped chunks (`hblkhd`), in use (`uordblks`), free but
    kept (`fordblks`). Empty where the C library has no `mallinfo2`."""
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {k: getattr(info, k) / 2**20 for k in ("arena", "hblkhd", "uordblks", "fordblks")}


def pymalloc_summary() -> list[str]:
    """The totals of `sys._debugmallocstats` (written by C to stderr; read back through a temporary file)."""
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    keep = ("# arenas", "bytes in allocated blocks", "bytes in available blocks", "unused pools",
            "bytes lost to", "Total ")
    return [line.strip() for line in text.splitlines() if any(k in line for k in keep)]


def tracked_types(top: int = 25) -> tuple[int, list[tuple[str, int, float]]]:
    """How many objects the cyclic collector tracks, and (type, count, shallow MiB) of them, the largest first.
    Strings, bytes, numbers and datetimes are not tracked: the containers holding them are."""
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    objects = gc.get_objects()      # a list of them all: 8 bytes each, for the report's time
    for obj in objects:
        name = type(obj).__qualname__
        count[name] += 1
        size[name] += sys.getsizeof(obj)
    return len(objects), [(name, count[name], b / 2**20) for name, b in size.most_common(top)]


def report(path: Path, why: str, top: int = 30) -> None:
    """Write the report (see the module docstring) to `path`, replacing what was there."""
    lines = [f"heap report at {time.strftime('%H:%M:%S')} ({why}), pid {os.getpid()}"]
    lines += [f"{k}: {v:.1f} MiB" for k, v in status_mib().items()]
    lines += [f"malloc {k}: {v:.1f} MiB" for k, v in malloc_info().items()]
    lines += ["pymalloc: " + line for line in pymalloc_summary()]
    tracked, by_type = tracked_types()
    lines.append(f"{tracked:,d} tracked objects; by type (count, shallow MiB):")
    lines += [f"  {name:40s} {n:>10,d} {mib:8.1f}" for name, n, mib in by_type]
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        total = sum(s.size for s in snap.statistics("filename"))
        lines.append(f"traced: {total / 2**20:.1f} MiB; by traceback, the largest first:")
        for stat in snap.statistics("traceback")[:top]:
            lines.append(f"  {stat.size / 2**20:8.1f} MiB {stat.count:>9,d} blocks")
            lines += [f"      {frame.filename}:{frame.lineno}" for frame in stat.traceback]
        lines.append("by line:")
        for stat in snap.statistics("lineno")[:top]:
            frame = stat.traceback[0]
            lines.append(f"  {stat.size / 2**20:8.1f} MiB {stat.count:>9,d} {frame.filename}:{frame.lineno}")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def start_tracing(frames: int) -> None:
    if frames > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(frames)


class HeapReporter(Service):
    """Writes the heap report at each new high of the resident set (by `STEP_MIB`) and when the worker stops."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(str(path).replace("{pid}", str(os.getpid())))
        self.high = 0.0

    @Service.timer(EVERY_S)
    async def _watch(self) -> None:
        rss = status_mib().get("VmRSS", 0.0)
        if rss >= self.high + STEP_MIB:
            self.high = rss
            report(self.path, f"resident set {rss:.0f} MiB, a new high")

    async def on_stop(self) -> None:
        report(self.path.with_name(self.path.name + ".stop"), "stopping")
