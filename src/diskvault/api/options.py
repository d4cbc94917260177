"""``OPTIONS`` on any route: 204 with ``Allow``, the methods the path takes.

Browsers send it as a CORS preflight; with ``CORS_ORIGINS`` set, the CORS
middleware (outside this one) answers those with its headers first. Without it,
the answer still says which methods exist, and grants no origin. The methods
come from the OpenAPI document (the routes as published); an unknown path is 404.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

Table = list[tuple[re.Pattern[str], int, frozenset[str]]]


def _table(app: Any) -> Table:
    table: Table | None = getattr(app.state, "options_table", None)
    if table is None:
        table = [
            (compile_path(path)[0], path.count("{"), frozenset(m.upper() for m in ops))
            for path, ops in app.openapi().get("paths", {}).items()
        ]
        app.state.options_table = table
    return table


def allowed(app: Any, path: str) -> set[str]:
    """The methods of the most specific documented path matching: ``/backup/chain``
    is its own resource, not ``/backup/{backup_id}``."""
    matches = [(params, ops) for regex, params, ops in _table(app) if regex.match(path)]
    fewest = min((params for params, _ in matches), default=0)
    methods: set[str] = set()
    for params, ops in matches:
        if params == fewest:
            methods |= ops
    if "GET" in methods:
        methods.add("HEAD")
    return methods


class Options:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        methods = allowed(scope["app"], scope["path"])
        if methods:
            allow = ", ".join(sorted(methods | {"OPTIONS"}))
            status, headers = 204, [(b"allow", allow.encode())]
        else:
            status, headers = 404, []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
