"""The query parameters of every list endpoint; pages themselves are db/pagination.py's."""

from __future__ import annotations

from fastapi import Query

from diskvault.db.pagination import Page, PageParams, page, paginate
from diskvault.schemas_base import MAX_INT

__all__ = ["Page", "PageParams", "page", "page_params", "paginate"]


def page_params(
    limit: int = Query(50, ge=1, le=1000, description="items per page"),
    offset: int = Query(0, ge=0, le=MAX_INT, description="items to skip"),
) -> PageParams:
    return PageParams(limit=limit, offset=offset)
