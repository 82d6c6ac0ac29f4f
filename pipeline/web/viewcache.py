"""The views every client asks the same, serialized once: the board of an operator and the feed of a team are the
same for every operator and every member of that team, so they are computed and turned into JSON once per board
version and second (due-soon and overdue change with the clock alone), whatever the number of phones and screens
asking or listening (issue #21: 200 live streams plus 100 requests/s)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import orjson

from pipeline.web import auth
from pipeline.web.live import LiveBoard
from pipeline.web.users import User


class ViewCache:
    """`get` answers the view of the current board version and second, computing it when needed. With
    `stale_ok` (on an event loop: requests and streams), a view that is out of date answers at once with what
    was computed last, at most `max_stale_s` old, and is recomputed right after (once, however many ask): no
    request waits for a recomputation that another request already triggered."""

    def __init__(self, board: LiveBoard, clock: Callable[[], float] = time.time, max_stale_s: float = 2.0) -> None:
        self.board = board
        self.clock = clock
        self.max_stale_s = max_stale_s
        self._views: dict[Hashable, tuple[tuple[int, int], float, bytes]] = {}
        self._refreshing: set[Hashable] = set()
        self.hits = self.misses = self.stale = 0

    def _compute(self, key: Hashable, make: Callable[[], Any]) -> bytes:
        now = self.clock()
        data = orjson.dumps(make())
        self._views[key] = ((self.board.version, int(now)), now, data)
        return data

    def get(self, key: Hashable, make: Callable[[], Any], stale_ok: bool = False) -> bytes:
        now = self.clock()
        found = self._views.get(key)
        if found is not None and found[0] == (self.board.version, int(now)):
            self.hits += 1
            return found[2]
        if stale_ok and found is not None and now - found[1] <= self.max_stale_s:
            self.stale += 1
            if key not in self._refreshing:
                self._refreshing.add(key)

                def refresh() -> None:
                    self._refreshing.discard(key)
                    self._compute(key, make)
                asyncio.get_running_loop().call_soon(refresh)
            return found[2]
        self.misses += 1
        return self._compute(key, make)


def view_key(user: User) -> Hashable:
    """What a user's view depends on: an operator's board, or a team's feed (role, team, patrol team)."""
    if auth.may_view_ops(user):
        return ("board",)
    return ("feed", user.role, user.team, user.patrol_team)


_CACHES: weakref.WeakKeyDictionary[LiveBoard, ViewCache] = weakref.WeakKeyDictionary()


def of(board: LiveBoard) -> ViewCache:
    cache = _CACHES.get(board)
    if cache is None:
        cache = _CACHES[board] = ViewCache(board)
    return cache
