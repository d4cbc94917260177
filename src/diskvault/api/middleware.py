"""Pure-ASGI middleware: request ids, access log, metrics, audit.

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
