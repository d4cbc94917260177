"""Query strings and path parameters are checked before any route runs.

One dependency, given to the whole application in :func:`create_app`, so a new
route is covered without doing anything: a query parameter the route does not
declare (aliases included) is a 422 naming it with a did-you-mean, and a NUL
byte in any query value or path parameter is a 422 (the OS and PostgreSQL
would refuse it later, as a 500).
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection

from diskvault.api.paths import is_console_path
from diskvault.schemas_base import unknown_field_message


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def refuse_unknown_query(conn: HTTPConnection) -> None:
    route = conn.scope.get("route")
    if conn.scope["type"] != "http" or route is None:
        return
    if is_console_path(conn.url.path):
        return  # the console's pages: HTML forms, not the documented API contract
    accepted = _query_names(route.dependant)
    errors: list[dict[str, Any]] = [
        {
            "type": "extra_forbidden",
            "loc": ("query", key),
            "msg": unknown_field_message(key, accepted, ()),
            "input": conn.query_params.get(key),
        }
        for key in sorted({k for k in conn.query_params if k not in accepted})
    ]
    for where, items in (("path", conn.path_params.items()), ("query", conn.query_params.items())):
        errors += [
            {"type": "value_error", "loc": (where, k), "msg": "must not contain a NUL byte"}
            for k, v in items
            if "\x00" in str(v) or "\x00" in k
        ]
    if errors:
        raise RequestValidationError(errors)
