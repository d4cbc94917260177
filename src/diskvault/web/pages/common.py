"""What every page handler shares: list parameters and turning form fields into schemas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_args, get_origin

from fastapi import Depends, Query
from pydantic import BaseModel, ValidationError

from diskvault.db import pagination
from diskvault.db.listing import Listing, effective_sort
from diskvault.db.pagination import PageParams
from diskvault.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ListQuery:
    page: PageParams
    sort: str
    q: str

    def listing(self) -> Listing:
        return Listing(self.sort, self.q)

    def sorted_out(
        self, items: list[Any], total: int, sorts: dict[str, Any], default: str
    ) -> dict[str, Any]:
        """:meth:`out`, with the key the rows were sorted by (for the header arrows)."""
        return {**self.out(items, total), "sort": effective_sort(self.listing(), sorts, default)}

    def out(self, items: list[Any], total: int) -> dict[str, Any]:
        return pagination.page(items, total, self.page, sort=self.sort, q=self.q)


def list_query(
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=10**9),
    sort: str = Query("", max_length=32, pattern=r"^-?[a-z_]*$"),
    q: str = Query("", max_length=200),
) -> ListQuery:
    return ListQuery(PageParams(limit=limit, offset=offset), sort, q.strip())


ListDep = Annotated[ListQuery, Depends(list_query)]


class InvalidForm(BadRequest):
    status = 422
    title = "Invalid form"
    template = "{detail}"


def parse(model: type[M], form: dict[str, Any], **extra: Any) -> M:
    """Validate form fields with the API's own request schema; empty fields count as absent."""
    data = {
        k: _form_int(model, k, v) for k, v in form.items() if v != "" and k not in ("csrf", "next")
    }
    try:
        return model.model_validate({**data, **extra})
    except ValidationError as exc:
        raise InvalidForm(form_errors(exc)) from None


def form_errors(exc: ValidationError) -> str:
    """The schema's refusals as one line: ``field: why; field: why``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
    )


def _form_int(model: type[BaseModel], name: str, value: Any) -> Any:
    """A form sends text; the API's schemas take JSON integers only, so "7" becomes 7
    for integer fields (anything else is left for the schema to refuse)."""
    field = model.model_fields.get(name)
    if field is None or not isinstance(value, str):
        return value
    if not _takes_int(field.annotation):
        return value
    try:
        return int(value.strip())
    except ValueError:
        return value


def _takes_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    if get_origin(annotation) is Annotated:
        return _takes_int(get_args(annotation)[0])
    return any(_takes_int(a) for a in get_args(annotation))


def checkbox(form: dict[str, Any], name: str) -> bool:
    return form.get(name) in ("on", "true", "1")
