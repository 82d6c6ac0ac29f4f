"""Reading a YAML file as marked nodes, so every mistake can name its line, column and key.

PyYAML's `compose` keeps a start mark on each node; `NodeReader` turns nodes into plain values while recording
a problem (instead of raising) for anything of the wrong shape, so a loader reports every mistake in one pass.
Scalars meant as text are taken as written (`raw` text), which sidesteps YAML 1.1 surprises such as `22:00`
becoming the integer 1320 or `310109009` becoming a number.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rules.durations import parse_duration
from rules.errors import RulesError, format_problem

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


@dataclass(frozen=True)
class Entry:
    """One `key: value` pair of a mapping, with the key's text and both nodes."""

    key: str
    key_node: Node
    value: Node


def compose_file(path: Path, text: str | None = None) -> Node | None:
    """Parse a YAML file into its node tree; a syntax error becomes a RulesError naming line and column."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise RulesError([f"{path}:1:1: (file): cannot read: {err.strerror or err}"]) from err
        except UnicodeDecodeError as err:
            raise RulesError([f"{path}:1:1: (file): not UTF-8 text: {err.reason}"]) from err
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        what = err.problem or err.context or "invalid YAML"
        raise RulesError([format_problem(str(path), err.problem_mark, "(yaml)", what)]) from err
    except yaml.YAMLError as err:
        raise RulesError([f"{path}:1:1: (yaml): {err}"]) from err


class NodeReader:
    """Typed access to nodes of one file; each wrong node adds a problem and yields None."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[str] = []

    def problem(self, node: Node | None, key: str, message: str) -> None:
        self.problems.append(
            format_problem(self.file, node.start_mark if node is not None else None, key, message)
        )

    def raise_if_any(self) -> None:
        if self.problems:
            raise RulesError(self.problems)

    # -- mappings ------------------------------------------------------------------------------------------
    def mapping(
        self, node: Node | None, key: str, allowed: Iterable[str] | None = None, required: Iterable[str] = ()
    ) -> dict[str, Entry] | None:
        """The entries of a mapping node; unknown keys (when `allowed` is given), missing required keys and
        duplicate keys are problems."""
        if not isinstance(node, MappingNode):
            self.problem(node, key, f"expected a mapping, got {_kind(node)}")
            return None
        entries: dict[str, Entry] = {}
        allowed_set = set(allowed) if allowed is not None else None
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(key_node, key, "keys must be plain words")
                continue
            name = str(key_node.value)
            where = f"{key}.{name}" if key else name
            if name in entries:
                self.problem(key_node, where, "duplicate key (the earlier value would be silently lost)")
                continue
            if allowed_set is not None and name not in allowed_set:
                hint = difflib.get_close_matches(name, sorted(allowed_set), n=1)
                extra = (
                    f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(sorted(allowed_set))}"
                )
                self.problem(key_node, where, f"unknown key{extra}")
                continue
            entries[name] = Entry(name, key_node, value_node)
        for name in required:
            if name not in entries:
                self.problem(node, key, f"missing required key {name!r}")
        return entries

    # -- scalars -------------------------------------------------------------------------------------------
    def text(self, node: Node, key: str) -> str | None:
        """A non-empty scalar as written (numbers and dates stay text)."""
        if not isinstance(node, ScalarNode) or node.tag == _NULL:
            self.problem(node, key, f"expected text, got {_kind(node)}")
            return None
        value = str(node.value).strip()
        if not value:
            self.problem(node, key, "must not be empty")
            return None
        return value

    def integer(self, node: Node, key: str, low: int | None = None, high: int | None = None) -> int | None:
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            self.problem(node, key, f"expected a whole number, got {_kind(node)}")
            return None
        value = int(yaml.safe_load(node.value))
        if (low is not None and value < low) or (high is not None and value > high):
            self.problem(node, key, f"{value} is out of range {low}..{high}")
            return None
        return value

    def number(self, node: Node, key: str) -> float | None:
        if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT):
            self.problem(node, key, f"expected a number, got {_kind(node)}")
            return None
        return float(yaml.safe_load(node.value))

    def duration(self, node: Node, key: str) -> timedelta | None:
        """A positive duration written `30m`, `2h`, `1d12h` (rules/durations.py)."""
        text = self.text(node, key)
        if text is None:
            return None
        try:
            return parse_duration(text)
        except ValueError as err:
            self.problem(node, key, str(err))
            return None

    def boolean(self, node: Node, key: str) -> bool | None:
        if not isinstance(node, ScalarNode) or node.tag != _BOOL:
            self.problem(node, key, f"expected true or false, got {_kind(node)}")
            return None
        return bool(yaml.safe_load(node.value))

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _NULL

    # -- lists ---------------------------------------------------------------------------------------------
    def items(self, node: Node, key: str, allow_scalar: bool = True) -> list[tuple[Node, str]] | None:
        """The items of a sequence (or one scalar, when allowed) with their keys (`key[0]`, `key[1]`...)."""
        if isinstance(node, SequenceNode):
            if not node.value:
                self.problem(node, key, "must not be an empty list")
                return None
            return [(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        if allow_scalar and isinstance(node, ScalarNode) and node.tag != _NULL:
            return [(node, key)]
        self.problem(node, key, f"expected {'a value or ' if allow_scalar else ''}a list, got {_kind(node)}")
        return None

    def texts(self, node: Node, key: str) -> list[tuple[Node, str]] | None:
        """A scalar or list of scalars, each as written, with its node (for per-item checks)."""
        items = self.items(node, key)
        if items is None:
            return None
        out: list[tuple[Node, str]] = []
        for item, item_key in items:
            value = self.text(item, item_key)
            if value is not None:
                out.append((item, value))
        return out if len(out) == len(items) else None


def _kind(node: Node | None) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing (null)"
    return f"{node.value!r}"
