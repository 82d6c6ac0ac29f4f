"""The worker's heap report (pipeline.runtime.heap, CITYOPS_HEAP_REPORT): what it says must be what is held."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from pipeline.config import Settings
from pipeline.runtime.heap import malloc_info, report, status_mib


def test_settings_read_the_switches() -> None:
    s = Settings.from_env({"CITYOPS_HEAP_REPORT": "/tmp/x/heap.txt", "CITYOPS_HEAP_TRACE": "5"})
    assert s.heap_report == Path("/tmp/x/heap.txt") and s.heap_trace == 5
    off = Settings.from_env({})
    assert off.heap_report is None and off.heap_trace == 0


def test_report_names_the_holder_of_a_large_allocation(tmp_path: Path) -> None:
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start(4)
    try:
        held = [bytearray(4096) for _ in range(4000)]          # 16 MiB from this line
        line = test_report_names_the_holder_of_a_large_allocation.__code__.co_firstlineno + 5
        report(tmp_path / "heap.txt", "test")
    finally:
        if not was:
            tracemalloc.stop()
    text = (tmp_path / "heap.txt").read_text()
    assert "VmRSS" in text and "VmHWM" in text
    by_line = text.split("by line:")[1].splitlines()[1]       # the largest holder first
    size = float(by_line.split()[0])
    assert f"test_heap_report.py:{line}" in by_line and 15.6 <= size <= 17.0, by_line
    assert len(held) == 4000


def test_status_and_malloc_figures_are_consistent() -> None:
    status = status_mib()
    assert 0 < status["VmRSS"] <= status["VmHWM"]
    info = malloc_info()
    if info:        # glibc: what malloc has in use fits in what it holds
        assert info["uordblks"] <= info["arena"] + info["hblkhd"] + 1e-6
