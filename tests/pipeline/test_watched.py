"""`WatchedFile`, the one file-watching holder (rules, grid, sensor registry, users, notify targets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.model.watched import WatchedFile


class Numbers(WatchedFile[list[int]]):
    """A file of integers, one per line; anything else is refused."""

    label = "numbers"
    loads = 0

    def load(self) -> list[int]:
        Numbers.loads += 1
        return [int(line) for line in self.file().read_text(encoding="utf-8").split()]

    def same(self, old: list[int], new: list[int]) -> bool:
        return old == new


def write(path: Path, text: str, tick: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(tick * 10**9, tick * 10**9))     # a new modification time, however fast the test runs


def test_a_changed_file_is_taken_a_bad_one_refused_once_and_the_running_version_kept(tmp_path: Path) -> None:
    path = tmp_path / "numbers.txt"
    write(path, "1\n2\n", 1)
    holder = Numbers(path)
    assert holder.current == [1, 2] and holder.maybe_reload() is False          # unchanged: not re-read

    write(path, "1\ntwo\n", 2)
    loads = Numbers.loads
    assert holder.maybe_reload() is False and holder.current == [1, 2]
    assert holder.refusals == 1 and holder.last_error is not None and "two" in holder.last_error
    assert holder.maybe_reload() is False and holder.refusals == 1 and Numbers.loads == loads + 1  # once

    write(path, "3\n", 3)
    assert holder.maybe_reload() is True and holder.current == [3]
    assert holder.last_error is None and holder.reloads == 1

    write(path, "3\n\n", 4)                              # changed bytes, same value: no swap
    before = holder.current
    assert holder.maybe_reload() is False and holder.current is before and holder.reloads == 1


def test_construction_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "numbers.txt"
    write(path, "x\n", 1)
    with pytest.raises(ValueError):
        Numbers(path)
