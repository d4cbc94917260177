"""Pure-ASGI middleware: request ids, access log, metrics, audit, body limit.

Pure ASGI (not BaseHTTPMiddleware) so multi-GiB uploads stream through
untouched and WebSockets pass straight by.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import structlog

from diskvault.api import metrics
from diskvault.errors import PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AuditFn = Callable[[Scope, int], None]

log = structlog.get_logger("diskvault.access")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestContext:
    """Assigns a request id, logs one access line, counts metrics, audits changes."""

    def __init__(self, app: ASGIApp, audit: AuditFn) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        structlog.contextvars.bind_contextvars(request_id=rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            metrics.observe_request(scope["method"], path, status, elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(elapsed * 1000, 1),
            )
            if scope["method"] in MUTATING and scope["state"].get("principal") is not None:
                await anyio.to_thread.run_sync(self.audit, scope, status)
            structlog.contextvars.unbind_contextvars("request_id")


class BodyLimit:
    """Refuses bodies over ``limit`` bytes, except on streaming upload routes."""

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope.get("headers") or []:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                scope["state"] = scope.get("state") or {}
                await self._refuse(scope, receive, send)
                return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        from diskvault.api.problems import problem_response

        err = PayloadTooLarge(f"request body exceeds the {self.limit}-byte limit")
        body = err.problem()
        body["instance"] = scope["path"]
        await problem_response(body)(scope, receive, send)
