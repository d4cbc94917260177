"""RFC 9457 problem+json for every error; never a stack trace in a response."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from diskvault.errors import DiskvaultError
from diskvault.schemas_base import describe, explain

log = structlog.get_logger("diskvault.api")
MEDIA_TYPE = "application/problem+json"
CLIENT_CLOSED_REQUEST = 499


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=MEDIA_TYPE, headers=headers)


def _instance(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    body.setdefault("instance", request.url.path)
    rid = getattr(request.state, "request_id", None)
    if rid:
        body["request_id"] = rid
    return body


async def _diskvault_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DiskvaultError)
    if exc.status >= 500:
        log.error("request failed", error=exc.message, error_type=type(exc).__name__)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if "retry_after" in exc.fields:
        headers["Retry-After"] = str(exc.fields["retry_after"])
    return problem_response(_instance(request, exc.problem()), headers)


def _body_root(request: Request) -> tuple[Any, int]:
    """The type the route validates its body as, and how many location parts precede
    its fields (``body``, plus the parameter name when the body is embedded)."""
    route = request.scope.get("route")
    params = getattr(getattr(route, "dependant", None), "body_params", None) or []
    if len(params) == 1 and not getattr(params[0].field_info, "embed", False):
        return params[0].field_info.annotation, 1
    return None, 1


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    root, prefix = _body_root(request)
    body_errors = [e for e in exc.errors() if tuple(e.get("loc", ()))[:1] == ("body",)]
    other = [e for e in exc.errors() if tuple(e.get("loc", ()))[:1] != ("body",)]
    errors = explain(body_errors, root, prefix) + explain(other, None)
    body = {
        "type": "urn:diskvault:error:validation",
        "title": "Invalid request",
        "status": 422,
        "detail": "; ".join(describe(e) for e in errors) or "invalid request",
        "errors": errors,
    }
    return problem_response(_instance(request, body))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = {
        "type": "about:blank",
        "title": str(exc.detail) if exc.status_code < 500 else "Server error",
        "status": exc.status_code,
        "detail": str(exc.detail),
    }
    return problem_response(_instance(request, body), dict(exc.headers or {}))


async def _client_left(request: Request, exc: Exception) -> Response:
    # Not a server error: the client went away mid-body. Whatever cleanup the
    # route does ran on its way out; 499 (nginx's code) only reaches the access log.
    log.info("client disconnected before the request body was complete", path=request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", error_type=type(exc).__name__)
    body = {
        "type": "about:blank",
        "title": "Internal error",
        "status": 500,
        "detail": "internal error; the server log has the details under this request_id",
    }
    return problem_response(_instance(request, body))


def install(app: FastAPI) -> None:
    app.add_exception_handler(DiskvaultError, _diskvault_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_exception_handler(Exception, _unexpected)
