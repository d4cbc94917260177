"""``limit``/``offset`` pages: one query for the rows, one for the count, one shape.

Services page their queries here; the API turns query parameters into
``PageParams`` (api/pagination.py) and returns what ``page()`` builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


class PageParams(BaseModel):
    limit: int = 50
    offset: int = 0


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def paginate(session: Session, stmt: Select[Any], params: PageParams) -> tuple[list[Any], int]:
    """Run ``stmt`` for one page and count all rows it would return."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = session.scalars(stmt.limit(params.limit).offset(params.offset)).all()
    return list(rows), int(total)


def page(items: Sequence[Any], total: int, params: PageParams, **extra: Any) -> dict[str, Any]:
    """The body of every list response: ``items``, ``total``, ``limit``, ``offset``."""
    return {
        "items": list(items),
        "total": total,
        "limit": params.limit,
        "offset": params.offset,
        **extra,
    }
