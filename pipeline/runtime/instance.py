"""A worker process's transactional identity: its slot among the live workers of its group on this host, so a
restarted worker takes over its predecessor's transactional id (pipeline.runtime.consumer)."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

TRANSACTION_TIMEOUT_MS = 60_000  # a transaction left open by a process that died and was not restarted is
                                 # aborted after this long (a restarted one is aborted at once, see InstanceSlot)


class InstanceSlot:
    """This process's slot among the live workers of `group` on this host: the lowest number whose lock file no
    live process holds (the kernel releases a dead process's lock). Gives a stable transactional id."""

    def __init__(self, path: Path, fd: int, number: int, group: str) -> None:
        self.path, self._fd, self.number = path, fd, number
        self.transactional_id = f"{group}-{socket.gethostname()}-{number}"

    @classmethod
    def take(cls, directory: Path, group: str, limit: int = 1024) -> InstanceSlot:
        directory.mkdir(parents=True, exist_ok=True)
        for number in range(limit):
            path = directory / f"{group}.{number}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(path, fd, number, group)
        raise RuntimeError(f"more than {limit} workers of {group} on this host")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)      # closing releases the lock
            self._fd = -1

