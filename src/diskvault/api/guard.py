"""Authentication, roles and the body limit, all decided before the app reads a byte.

FastAPI reads and parses a JSON body before it runs a route's dependencies, so
a check in a dependency comes too late: a 1 GiB body sent with no token was
buffered whole before the 401. :class:`Gate` is pure ASGI and wraps the app's
``receive``: when the app first asks for the body, the router has matched the
route (``scope["route"]``, exact), so the gate reads which principal and role
that route's dependencies declare (see ``api.deps``), resolves the
``Authorization`` header and refuses with 401/403 before handing over a byte.
Then it checks ``Content-Length`` against ``MAX_BODY_BYTES`` and counts the
bytes of a chunked body as they arrive.

:func:`principal_from_headers` and :func:`authorize` are the same checks as
plain functions, for any other way in (a cookie session, say). A middleware
outside this one that has found the caller by other means puts it in
``scope["state"]["principal"]``; the role check then applies to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from diskvault.api import deps
from diskvault.api.middleware import ASGIApp, Message, Receive, Scope, Send
from diskvault.api.problems import problem_response
from diskvault.auth import service as auth_service
from diskvault.auth.errors import MissingToken, RoleRequired
from diskvault.auth.models import Role
from diskvault.auth.service import Principal
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.errors import DiskvaultError, PayloadTooLarge


@dataclass(frozen=True)
class Need:
    """What a route asks of its caller: nothing, a principal if one is offered, or a role."""

    role: Role | None = None  # None: anonymous callers are let in
    optional: bool = False  # a token, when sent, is resolved (and must be valid)

    @property
    def resolves(self) -> bool:
        return self.role is not None or self.optional


PUBLIC = Need()


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (names lower-case), if any."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def resolve_token(settings: Settings, token: str) -> Principal:
    """Blocking (one DB round trip); raises ``InvalidToken``."""
    with session_scope(settings.DATABASE_URL) as session:
        return auth_service.resolve(session, settings, token)


def principal_from_headers(settings: Settings, headers: Mapping[str, str]) -> Principal | None:
    """The caller named by the headers' bearer token, None when there is none.

    Blocking; raises ``InvalidToken`` for a token that is bad, expired or revoked.
    """
    token = bearer(headers)
    return None if token is None else resolve_token(settings, token)


def authorize(principal: Principal | None, role: Role, method: str) -> Principal:
    """Refuse a missing principal (401) or one below ``role`` (403); viewers never mutate."""
    if principal is None:
        raise MissingToken()
    if method not in deps.SAFE_METHODS and role.rank < Role.operator.rank:
        role = Role.operator
    if principal.role.rank < role.rank:
        raise RoleRequired(role=role.value, current=principal.role.value)
    return principal


def _calls(dependant: Dependant) -> Iterable[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def need_of(route: APIRoute) -> Need:
    """The strictest principal dependency anywhere in the route's dependency tree."""
    roles = [deps.ROLE_OF[c] for c in _calls(route.dependant) if c in deps.ROLE_OF]
    if roles:
        return Need(role=max(roles, key=lambda r: r.rank))
    return Need(optional=any(c is deps.optional_principal for c in _calls(route.dependant)))


class Gate:
    """Pure-ASGI guard of the request body: auth and role, ``Content-Length``, counted bytes.

    The router matches the route before anything reads the body, so the checks
    run on the app's first ``receive()``, against ``scope["route"]``: exactly
    the route that will run, never a path prefix. A refusal is sent from there;
    the app is told the client left, and what it answers is dropped.
    ``streaming`` holds the (method, route path) pairs whose bodies go to disk
    and so are exempt from ``MAX_BODY_BYTES`` (still authenticated first).
    """

    def __init__(
        self, app: ASGIApp, settings: Settings, streaming: frozenset[tuple[str, str]]
    ) -> None:
        self.app = app
        self.settings = settings
        self.limit = settings.MAX_BODY_BYTES
        self.streaming = streaming
        self._needs: dict[int, Need] = {}

    def _need(self, route: object) -> Need:
        if not isinstance(route, APIRoute):
            return PUBLIC  # docs, unmatched paths: nothing here reads a body
        need = self._needs.get(id(route))
        if need is None:
            need = self._needs[id(route)] = need_of(route)
        return need

    def _streams(self, scope: Scope) -> bool:
        return (scope["method"], getattr(scope.get("route"), "path", None)) in self.streaming

    async def _check(self, scope: Scope) -> DiskvaultError | None:
        """The refusal for this request, if any; resolves the principal into the state."""
        route = scope.get("route")
        need = self._need(route)
        state = scope.setdefault("state", {})
        if need.resolves:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                if "principal" in state:  # the route's dependencies ran first
                    principal = state["principal"]
                else:
                    principal = await anyio.to_thread.run_sync(
                        principal_from_headers, self.settings, headers
                    )
                if need.role is not None:
                    authorize(principal, need.role, scope["method"])
            except DiskvaultError as exc:
                return exc
            state["principal"] = principal
        if self._streams(scope):
            return None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return self._too_large()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        checked = False
        limited = True
        refused = False  # once set, the app reads "disconnected" and its answer is dropped
        started = False
        seen = 0

        async def refuse(exc: DiskvaultError) -> Message:
            nonlocal refused, started
            refused = True
            if not started:
                started = True
                await self._refuse(exc, scope, receive, send)
            return {"type": "http.disconnect"}

        async def guarded_receive() -> Message:
            nonlocal checked, limited, seen
            if refused:
                return {"type": "http.disconnect"}
            if started:  # answered already (a response listening for the client to leave)
                return await receive()
            if not checked:
                checked = True
                exc = await self._check(scope)
                if exc is not None:
                    return await refuse(exc)
                limited = not self._streams(scope)
            message = await receive()
            if message["type"] == "http.request" and limited:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    return await refuse(self._too_large())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is over the {self.limit}-byte limit; "
            "send less, or raise DISKVAULT_MAX_BODY_BYTES",
            limit=self.limit,
            setting="DISKVAULT_MAX_BODY_BYTES",
        )

    async def _refuse(
        self, exc: DiskvaultError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = exc.problem()
        body["instance"] = scope["path"]
        rid = scope.get("state", {}).get("request_id")
        if rid:
            body["request_id"] = rid
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        await problem_response(body, headers)(scope, receive, send)
