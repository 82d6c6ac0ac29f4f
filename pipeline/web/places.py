"""What a team's feed row says of where a case is and what it needs (issue #21): the category's name, the place
(sub-district, management grid, the nearest gazetteer address or landmark and how far it is from the case's
point) and whether its resolve needs an after photo; and the team's emergencies beyond the feed's first rows.
Distance and direction from the phone are worked out on the phone (its position never leaves it).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pipeline.web import auth
from pipeline.web.users import User

Json = dict[str, Any]


@cache
def _places() -> Any:
    from pipeline.notify.place import Places

    return Places.load()


def place_of(case: Json, places: Any | None = None) -> Json:
    """Where a case is, in words: sub-district name, management grid, cell, nearest address or landmark."""
    p = places if places is not None else _places()
    cell = str(case.get("cell") or "")
    sub = str(case.get("subdistrict") or "")
    lon, lat = case.get("lon"), case.get("lat")
    spot = p.nearest(lon, lat) if isinstance(lon, int | float) and isinstance(lat, int | float) else None
    return {"subdistrict": p.subdistrict(sub) if sub else "", "grid": cell[:12], "cell": cell,
            "spot": spot.text if spot else "", "spot_m": round(spot.distance_m) if spot else None}


_PLACE_CACHE: dict[tuple[Any, ...], Json] = {}      # a case's place never changes with its point


def decorate_feed(centre: Any, rows: list[Json]) -> None:
    """Add `category_name`, `place` and `after_photo_url` to feed rows (in place)."""
    tax = centre.taxonomy
    places = _places()
    after = after_photo_rule(centre)
    for row in rows:
        case = centre.board.cases.get(row["case_id"], {})
        cat = tax.categories.get(str(row.get("category")))
        row["category_name"] = cat.name if cat is not None else ""
        key = (row["case_id"], row.get("lon"), row.get("lat"))
        place = _PLACE_CACHE.get(key)
        if place is None:
            if len(_PLACE_CACHE) > 50_000:
                _PLACE_CACHE.clear()
            place = _PLACE_CACHE[key] = place_of(row, places)
        row["place"] = place
        row["after_photo_url"] = case.get("after_photo_url")
        row["after_photo_required"] = bool(after is not None and after.required(str(row.get("category"))))


def emergencies_beyond(board: Any, user: User, rows: list[Json], limit: int = 50) -> list[Json]:
    """The team's open priority-1 cases the feed's first rows left out: a team's emergencies are always in its
    feed, however many overdue cases come before them in the order of urgency."""
    if user.role != "member" or not user.team:
        return []
    shown = {r["case_id"] for r in rows}
    return list(board.cases_where(lambda c: c.get("case_id") not in shown and c.get("priority") == 1
                                  and board.is_open(c) and auth.may_view_case(user, c), limit))


def after_photo_rule(centre: Any) -> Any:
    """The running ruleset's `after_photo` (rules/photos.py), or None when the rules are not loaded."""
    rules = getattr(getattr(centre, "config", None), "rules", None)
    return getattr(getattr(rules, "current", None), "after_photo", None)


