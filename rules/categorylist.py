"""A list of taxonomy codes and prefixes named by a ruleset block (`after_photo`, `check_first.categories`),
written and validated as `category` in `when` (unknown codes, prefixes that match nothing: problems with file
and line)."""

from __future__ import annotations

from dataclasses import dataclass

from yaml.nodes import Node

from rules.conditions import CodeMatch
from rules.leaves import WhenContext, _category
from rules.nodes import NodeReader


@dataclass(frozen=True)
class CategoryList:
    """Exact codes and prefixes (`P01` for `P01*`)."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def covers(self, category: str) -> bool:
        return category in self.exact or (bool(self.prefixes) and category.startswith(self.prefixes))


def read_categories(reader: NodeReader, node: Node, key: str, ctx: WhenContext) -> CodeMatch | None:
    """The block's list as a category match; None after recording problems."""
    match = _category(reader, node, key, ctx)
    return match if isinstance(match, CodeMatch) else None
