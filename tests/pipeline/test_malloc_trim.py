"""pipeline.runtime.malloc: freed heap memory between live chunks goes back to the system when trimmed."""

from __future__ import annotations

import pytest

from pipeline.config import Settings
from pipeline.runtime import malloc
from pipeline.runtime.heap import malloc_info, status_mib


def test_setting() -> None:
    assert Settings.from_env({}).malloc_trim_s == 1.0
    assert Settings.from_env({"CITYOPS_MALLOC_TRIM": "0"}).malloc_trim_s == 0
    assert Settings.from_env({"CITYOPS_MALLOC_TRIM": "2.5"}).malloc_trim_s == 2.5


def test_trim_returns_free_chunks_between_live_ones() -> None:
    if malloc._TRIM is None:
        pytest.skip("no malloc_trim in this C library (not glibc): the trimmer does nothing here")
    # changelog-sized values (2 KiB, glibc's heap, not Python's small-object arenas), every 64th kept: the heap's
    # top stays in use, so free() alone gives nothing back
    values = [bytes(2048) + i.to_bytes(4, "little") for i in range(64 * 1024)]     # 128 MiB
    kept = values[::64]
    del values
    before, free = status_mib()["VmRSS"], malloc_info()["fordblks"]
    assert free > 100, free              # what free() kept
    assert malloc.trim()
    after = status_mib()["VmRSS"]
    assert before - after > 80, (before, after)
    assert len(kept) == 1024
