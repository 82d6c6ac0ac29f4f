"""A worker process's identity: its slot among the live workers of its group on this host, so a restarted worker
takes over its predecessor's transactional id and evicts its predecessor's group membership at once
(pipeline.runtime.consumer)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger("cityops.worker")

TRANSACTION_TIMEOUT_MS = 60_000  # a transaction left open by a process that died and was not restarted is
                                 # aborted after this long (a restarted one is aborted at once, see InstanceSlot)


class InstanceSlot:
    """This process's slot among the live workers of `group` on this host: the lowest number whose lock file no
    live process holds (the kernel releases a dead process's lock). Gives a stable transactional id.

    The lock file also holds the consumer group member id of the process holding the slot (`remember_member`,
    cleared by `forget_member` when it leaves the group cleanly): a process taking the slot over finds there the
    member id its killed predecessor left in the group (`predecessor`)."""

    def __init__(self, path: Path, fd: int, number: int, group: str) -> None:
        self.path, self._fd, self.number = path, fd, number
        self.transactional_id = f"{group}-{socket.gethostname()}-{number}"
        self.predecessor = self._read()     # the member id the slot's last holder left behind, or ""
        self._member = self.predecessor

    def _read(self) -> str:
        try:
            return os.pread(self._fd, 512, 0).decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def remember_member(self, member_id: str) -> None:
        """Record this process's group member id (written when it changes; a write error only costs the next
        process's quick takeover)."""
        if member_id == self._member or self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, member_id.encode(), 0)
            self._member = member_id
        except OSError:
            pass

    def forget_member(self) -> None:
        """This process left the group cleanly: there is nothing to evict after it."""
        self.remember_member("")

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


async def evict_predecessor(consumer: Any, group: str, slot: InstanceSlot) -> str | None:
    """Take a killed predecessor's place in the group at once; the name of the group coordinator's answer, or None
    when nothing was asked.

    A process killed without leaving (SIGKILL, OOM, a lost machine) stays a member until its session times out
    (10 s), and the group assigns nothing until then: a restarted worker waited for it before it could restore
    anything (issue #23's recovery phase). The lock file of this process's slot holds the member id its last
    holder had, and the kernel released that lock, so that process is gone: a LeaveGroup in its name removes it
    now. A member id the group no longer knows (it timed out, or left cleanly) is answered with an error and
    nothing else happens. Static membership (KIP-345) would do the same but keeps a cleanly stopped worker's
    partitions until its session times out too: aiokafka sends no LeaveGroup for a static member."""
    member = slot.predecessor
    client = getattr(consumer, "_client", None)
    if not member or client is None:
        return None
    from aiokafka.client import CoordinationType
    from aiokafka.errors import for_code
    from aiokafka.protocol.group import LeaveGroupRequest

    try:
        coordinator = await asyncio.wait_for(client.coordinator_lookup(CoordinationType.GROUP, group), 10)
        resp = await asyncio.wait_for(client.send(coordinator, LeaveGroupRequest(group, member)), 10)
    except Exception as err:        # the session timeout removes it instead
        log.warning("%s: could not remove the previous member %s of this slot: %s", group, member, err)
        return None
    answer: str = for_code(resp.error_code).__name__
    if resp.error_code == 0:        # the previous process of this slot died in the group: worth a line
        log.warning("%s: the previous process of this slot was still a member (%s), removed from the group",
                    group, member)
    else:                           # it timed out already (or the coordinator says why not)
        log.warning("%s: the previous process of this slot had left the group already (%s: %s)", group,
                    member, answer)
    return answer
