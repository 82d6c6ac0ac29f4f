"""The views every client asks the same, serialized once: the board of an operator and the feed of a team are the
same for every operator and every member of that team, so they are computed and turned into JSON once per board
version and second (due-soon and overdue change with the clock alone), whatever the number of phones and screens
asking or listening (issue #21: 200 live streams plus 100 requests/s)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import orjson

from pipeline.web import auth
from pipeline.web.live import LiveBoard
from pipeline.web.users import User


class ViewCache:
    def __init__(self, board: LiveBoard, clock: Callable[[], float] = time.time) -> None:
        self.board = board
        self.clock = clock
        self._views: dict[Hashable, tuple[tuple[int, int], bytes]] = {}
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> bytes:
        stamp = (self.board.version, int(self.clock()))
        found = self._views.get(key)
        if found is not None and found[0] == stamp:
            self.hits += 1
            return found[1]
        self.misses += 1
        data = orjson.dumps(make())
        self._views[key] = (stamp, data)
        return data


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
