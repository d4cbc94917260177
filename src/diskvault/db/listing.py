"""Sorting and text filtering of list queries, one way for every kind.

A kind declares which columns it can be sorted by (``sorts``: key -> column)
and which it searches (``search``); a request names a key, with a leading
``-`` for descending order, and a text to find. Unknown keys fall back to the
kind's default, so a stale link never errors. The id is the tie-breaker, so
pages never repeat or skip a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, or_


@dataclass(frozen=True)
class Listing:
    sort: str = ""
    q: str = ""


def apply(
    stmt: Select[Any],
    listing: Listing | None,
    *,
    sorts: dict[str, Any],
    default: str,
    search: tuple[Any, ...] = (),
    tiebreak: Any = None,
) -> Select[Any]:
    """``stmt`` ordered by the requested (or default) key and filtered by the text."""
    listing = listing or Listing()
    key = listing.sort if listing.sort.lstrip("-") in sorts else default
    column = sorts[key.lstrip("-")]
    order = [column.desc() if key.startswith("-") else column.asc()]
    if tiebreak is not None:
        order.append(tiebreak)
    stmt = stmt.order_by(None).order_by(*order)
    if listing.q and search:
        stmt = stmt.where(or_(*(c.contains(listing.q, autoescape=True) for c in search)))
    return stmt


def effective_sort(listing: Listing | None, sorts: dict[str, Any], default: str) -> str:
    """The key the page was sorted by (for the arrows on column headers)."""
    sort = listing.sort if listing else ""
    return sort if sort.lstrip("-") in sorts else default
