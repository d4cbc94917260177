"""The web console: server-rendered pages (Jinja2 + htmx) over the same services as the API.

``install(app)`` is the one hook the application factory calls: it adds the
page routers, the static files and error handlers that answer console paths
with HTML (a friendly 404, a redirect to the login page) while API paths keep
their problem+json.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from diskvault.api.paths import is_console_path
from diskvault.errors import DiskvaultError
from diskvault.web.render import HERE, back_to, error_page, redirect
from diskvault.web.session import Console, LoginRequired, login_url

# What a middleware that refuses unauthenticated requests must let through to the app.
PUBLIC_PATHS = ("/login", "/static/")

Handler = Callable[[Request, Exception], Any]


def is_console(request: Request) -> bool:
    return is_console_path(request.url.path)


def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    url = login_url(exc.next_path)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _html_errors(prior: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if not is_console(request):
            answer = prior(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        if isinstance(exc, DiskvaultError):
            status, title, detail = exc.status, exc.title, exc.message
        elif isinstance(exc, RequestValidationError):
            status, title = 422, "Invalid request"
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                for e in exc.errors()
            )
        elif isinstance(exc, StarletteHTTPException):
            status, title = exc.status_code, str(exc.detail)
            detail = "There is no page here." if status == 404 else str(exc.detail)
        else:
            status, title = 500, "Internal error"
            detail = "Something failed on the server; its log has the details."
        who: Any = getattr(request.state, "console", None)
        # A change that failed for a reason about the object (409, 404, 422...) goes back
        # to the page it came from with the reason on it; refusals (401/403) stay put.
        if isinstance(who, Console) and request.method == "POST" and status not in (401, 403):
            return redirect(back_to(request, who, "/"), ("error", detail))
        return error_page(request, status, title, detail)

    return handle


def install(app: FastAPI) -> None:
    from diskvault.web.pages import ROUTERS

    for router in ROUTERS:
        app.include_router(router, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(LoginRequired, _login_required)
    for kind in (DiskvaultError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _html_errors(app.exception_handlers[kind]))
