"""The walk over a v1 listing's cursor pages (``listing.py``), and the token that lets
another process rebuild it at page N without walking from page 1 (see ``listing.py``).

A walk stands at a page: the cursor leading there, the objects the page before listed (plain
pages), and, when sorted by object, the last object listed and the documents held back of the
object the page before ended on. Its ``origin`` is the page from which a walk that carries
nothing arrives at the same state: the page itself when nothing is held, else the page where
the object held began (plain pages: the page before, whose objects must be known).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sync_service.upstream.port import ListOrder

__all__ = ["Doc", "Walk", "WalkKey", "walk_from_token"]

#: A listing: collection, order, changed-since filter, page size.
WalkKey = tuple[str, ListOrder, float | None, int]
Doc = dict[str, Any]


@dataclass
class Walk:
    """Where a listing stands: the page number ``cursor`` leads to, and what is carried."""

    page: int = 1
    cursor: str | None = None
    #: Objects listed on the page before (plain pages: an object straddling two pages is
    #: listed on the first only).
    previous: frozenset[str] = frozenset()
    #: By-object order: the last object listed, and the documents of the object held back.
    last: str | None = None
    carry: list[Doc] = field(default_factory=list)
    #: Where another process can rebuild this walk from: the page (its cursor, and the last
    #: object listed before it) from which a walk carrying nothing arrives here as this one.
    origin: tuple[int, str | None, str | None] = (1, None, None)

    def token(self, key: WalkKey, sorted_: bool) -> str:
        """The resume token leading to this walk's page (see the module's docstring)."""
        page, cursor, last = self.origin
        fits = _fits(key, sorted_)
        return json.dumps({"page": self.page, "from": [page, cursor, last], "fits": fits})


def _fits(key: WalkKey, sorted_: bool) -> dict[str, Any]:
    """What a token must have been written for: the listing's order, filter and page size,
    and whether it was sorted."""
    _, order, since, size = key
    return {"order": order.value, "since": since, "size": size, "sorted": sorted_}


def walk_from_token(token: str | None, key: WalkKey, page: int, sorted_: bool) -> Walk | None:
    """The walk to rebuild page ``page`` from, if ``token`` leads there for this listing."""
    if not token:
        return None
    try:
        data = json.loads(token)
        if data["page"] != page or data["fits"] != _fits(key, sorted_):
            return None
        origin, cursor, last = data["from"]
        if not (isinstance(origin, int) and 1 <= origin <= page):
            return None
        if not (cursor is None or isinstance(cursor, str)) or not (
            last is None or isinstance(last, str)
        ):
            return None
    except (ValueError, TypeError, KeyError):
        return None  # not a token this code wrote
    return Walk(page=origin, cursor=cursor, last=last, origin=(origin, cursor, last))
