"""Giving freed memory back to the system (glibc), so that a worker's resident set follows what it holds.

A worker allocates and frees large buffers all the time: fetched record batches, the checkpoints' encoded state
changes (a district's sensor states, every changed case), the sink's columns, the changelog's bytes restored after
a restart, decoded and dropped. glibc serves these from its heaps and keeps what they free there: a free chunk
between two live ones is not returned, however large. Measured (issue #23) on the month's 65,499 restored cases:
after their 137 MiB of changelog bytes were decoded and dropped, 141.8 MiB sat free in the heap and resident
(376 MiB resident, 5 MiB of it in use by malloc); `malloc_trim(0)` gave it back (235 MiB resident).

`Trimmer` calls `malloc_trim(0)` every `CITYOPS_MALLOC_TRIM` seconds (Settings.malloc_trim_s, default 1; 0: never)
of a running worker. It is a no-op where the C library has no `malloc_trim` (not glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Any

from mode import Service


def _trim_function() -> Any:
    name = ctypes.util.find_library("c")
    fn = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_TRIM = _trim_function()


def trim() -> bool:
    """Return the free pages of the C heaps to the system; whether the C library could (glibc's answer: some
    memory was released)."""
    return bool(_TRIM(0)) if _TRIM is not None else False


class Trimmer(Service):
    """Trims the C heaps every `every_s` seconds (see the module docstring); `seconds` is the time it took."""

    def __init__(self, every_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.every_s = every_s
        self.seconds = 0.0
        self.calls = 0

    async def on_started(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        while not self.should_stop:
            await self.sleep(self.every_s)
            started = time.perf_counter()
            trim()
            self.seconds += time.perf_counter() - started
            self.calls += 1
