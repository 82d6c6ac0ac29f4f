"""`WatchedFile`: a value loaded from a file that a running process keeps using, swapped for the file's new
version only when that version loads and validates in full.

The rules, the grid, the sensor registry, the web's users and the notifier's targets are each one of these.
Construction loads the file and raises when it is invalid (a process must not start on a bad file).
`maybe_reload()` is cheap (one `stat`): it reloads when the file's signature (modification time, size, inode,
change time) differs from the one taken before the last read, so a write during a read is seen by the next
check and a refused file is reported once, not at every check. A refused version leaves `current` as it was;
`refusals` grows, `last_error` says why (file, line and key where the loader knows them) and a WARNING is logged.
Readers take `holder.current` once per batch: the swap is one reference assignment, so nobody sees half a file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("cityops.watched")
Signature = tuple[int, int, int, int]


class WatchedFile(ABC, Generic[T]):
    """Subclasses say how to `load` the file and which errors mean "refuse this version" (`refused`); they may
    start from something else than the file (`first`), call two versions the same (`same`: no swap), and word
    the refusal (`problem`) and the log lines (`label`, `on_refused`, `on_installed`). A subclass sets what its
    `load` needs before calling `WatchedFile.__init__`, which loads the first version."""

    label: ClassVar[str] = "file"
    refused: ClassVar[tuple[type[Exception], ...]] = (ValueError, OSError, UnicodeDecodeError)

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature = self.signature()
        self.current: T = self.first()
        self.loaded_at = time.time()
        self.last_error: str | None = None
        self.last_refused_at: float | None = None
        self.refusals = 0
        self.reloads = 0

    # -- what a subclass says --------------------------------------------------------------------------------

    @abstractmethod
    def load(self) -> T:
        """Read and check the file at `self.path`; raise one of `refused` to refuse this version."""

    def first(self) -> T:
        return self.load()

    def same(self, old: T, new: T) -> bool:
        return False

    def problem(self, err: Exception) -> str:
        return str(err)

    def on_refused(self, err: Exception) -> None:
        log.warning("%s %s refused, keeping the running version: %s", self.label, self.path, self.last_error)

    def on_installed(self, previous: T) -> None:
        log.info("%s %s reloaded", self.label, self.path)

    def file(self) -> Path:
        if self.path is None:
            raise ValueError(f"{self.label}: no file to load")
        return self.path

    # -- watching ----------------------------------------------------------------------------------------------

    def signature(self) -> Signature | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)

    def maybe_reload(self) -> bool:
        """Reload if the file changed since the last look; True when a new version was installed."""
        if self.signature() == self._signature:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Load the file now; True when a new version was installed, False if refused or the same."""
        if self.path is None:
            return False
        with self._lock:
            self._signature = self.signature()     # before reading: a write during the read is seen next time
            try:
                fresh = self.load()
            except self.refused as err:
                self.refusals += 1
                self.last_error = self.problem(err)
                self.last_refused_at = time.time()
                self.on_refused(err)
                return False
            self.last_error = None
            if self.same(self.current, fresh):
                return False
            previous, self.current = self.current, fresh
            self.reloads += 1
            self.loaded_at = time.time()
            self.on_installed(previous)
            return True
