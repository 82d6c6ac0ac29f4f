"""The ruleset's `after_photo` block: the categories whose resolution must carry an "after" photo.

    after_photo: [P01*, E0110, E0205]      # optional; codes or prefixes of the taxonomy, as `category` in `when`

A team that resolves a case of such a category sends the photo of the fixed spot with its `resolve`
(`photo_url` on `cityops.case-updates`); the case books refuse a resolve without one (docs/cases.md §4.2), so
the verifier always has a before (the reports' photos) and an after to compare. Absent: no category needs one.
Validation is `category`'s: unknown codes and prefixes that match nothing are problems with file and line.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.categorylist import CategoryList, read_categories
from rules.leaves import WhenContext
from rules.nodes import Entry, NodeReader


@dataclass(frozen=True)
class AfterPhoto(CategoryList):
    """The categories that need an after photo: exact codes and prefixes (`P01` for `P01*`)."""

    shown: tuple[str, ...] = ()

    def required(self, category: str) -> bool:
        return self.covers(category)


NO_AFTER_PHOTO = AfterPhoto()


def parse_after_photo(reader: NodeReader, entry: Entry | None, ctx: WhenContext | None) -> AfterPhoto | None:
    """The block (NO_AFTER_PHOTO when absent); None after recording problems."""
    if entry is None:
        return NO_AFTER_PHOTO
    if ctx is None:           # the time zone was bad: that problem is recorded already
        return None
    match = read_categories(reader, entry.value, "after_photo", ctx)
    if match is None:
        return None
    return AfterPhoto(frozenset(match.exact), tuple(match.prefixes), tuple(match.shown))
