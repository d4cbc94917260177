"""Console sign-in: a revocable server-side session in an HttpOnly cookie, plus CSRF.

The session is an API-token row (``name = "console session"``) whose plaintext
lives only in the cookie: logout sets ``revoked_at``, expiry is ``expires_at``,
and resolving it applies the rules ``auth_service.resolve`` applies to API tokens
(revoked, expired, disabled user). The CSRF token is an HMAC of the session
token, so it needs no storage and dies with the session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from sqlalchemy import select

from diskvault.api.deps import SettingsDep
from diskvault.auth import security
from diskvault.auth import service as auth_service
from diskvault.auth.errors import RoleRequired
from diskvault.auth.models import ApiToken, Role, User
from diskvault.auth.service import Principal
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.errors import Forbidden

COOKIE = "dv_session"
LOGIN_COOKIE = "dv_login"  # double-submit CSRF for the login form, before a session exists
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_NAME = "console session"
LIVE_TOKEN_MINUTES = 10
TOUCH_EVERY = timedelta(
    minutes=5
)  # the short JWT handed to the page's JS for uploads and WebSockets


class LoginRequired(Exception):
    """No valid session: the handler sends the browser to /login?next=<page>."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfFailed(Forbidden):
    template = "the form's security token is missing or stale; reload the page and try again"


def csrf_for(settings: Settings, token: str) -> str:
    return hmac.new(
        settings.SECRET_KEY.encode(), b"csrf:" + token.encode(), hashlib.sha256
    ).hexdigest()


def safe_next(value: str | None) -> str:
    """Only same-site paths: never ``//host``, a scheme, or a backslash trick."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value[:1000]


def login_url(next_path: str) -> str:
    return "/login" if next_path == "/" else f"/login?next={quote(next_path, safe='/')}"


def open_session(settings: Settings, user: User) -> tuple[str, Principal]:
    """Store a revocable session row for a user whose password was just checked."""
    with session_scope(settings.DATABASE_URL) as s:
        plain, digest = security.new_api_token()
        expires = datetime.now(UTC) + timedelta(hours=settings.WEB_SESSION_HOURS)
        s.add(ApiToken(user_id=user.id, name=SESSION_NAME, token_hash=digest, expires_at=expires))
        return plain, Principal(user.id, user.username, user.role, "console")


def close_session(settings: Settings, token: str) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        row = s.scalar(
            select(ApiToken).where(ApiToken.token_hash == security.hash_api_token(token))
        )
        if row is not None and row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)


def set_session_cookie(
    request: Request, response: Response, settings: Settings, token: str
) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=settings.WEB_SESSION_HOURS * 3600,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def login_nonce(request: Request) -> str:
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)


def set_login_cookie(request: Request, response: Response, nonce: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _page_path(request: Request) -> str:
    if request.method == "GET":
        query = f"?{request.url.query}" if request.url.query else ""
        return safe_next(request.url.path + query)
    referer = urlsplit(request.headers.get("referer", ""))
    return safe_next(referer.path) if referer.netloc == request.url.netloc else "/"


@dataclass
class Console:
    """The signed-in user of one console request."""

    principal: Principal
    token: str
    csrf: str
    form: dict[str, Any] = field(default_factory=dict)
    form_lists: dict[str, list[str]] = field(default_factory=dict)  # repeated fields

    @property
    def can_operate(self) -> bool:
        return self.principal.role.rank >= Role.operator.rank

    @property
    def is_admin(self) -> bool:
        return self.principal.role == Role.admin


def _resolve(settings: Settings, token: str) -> Principal | None:
    """The session's user, like ``auth_service.resolve`` for API tokens, but writing
    ``last_used_at`` at most every TOUCH_EVERY: a commit per page view is the slowest
    part of a page on PostgreSQL."""
    now = datetime.now(UTC)
    with session_scope(settings.DATABASE_URL) as s:
        row = s.scalar(
            select(ApiToken).where(ApiToken.token_hash == security.hash_api_token(token))
        )
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and _aware(row.expires_at) < now:
            return None
        user = s.get(User, row.user_id)
        if user is None or not user.is_active:
            return None
        if row.last_used_at is None or _aware(row.last_used_at) < now - TOUCH_EVERY:
            row.last_used_at = now
        return Principal(user.id, user.username, user.role, "console")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def console_user(request: Request, settings: SettingsDep) -> Console:
    """Any signed-in user; an absent, revoked or expired session goes to the login page."""
    token = request.cookies.get(COOKIE, "")
    if not token.startswith(security.API_TOKEN_PREFIX):
        raise LoginRequired(_page_path(request))
    principal = _resolve(settings, token)
    if principal is None:
        raise LoginRequired(_page_path(request))
    request.state.principal = principal  # the audit middleware records changes under this name
    who = request.state.console = Console(principal, token, csrf_for(settings, token))
    return who


def writer(role: Role) -> Any:
    """A change: role checked first (before the body is read), then the CSRF token."""

    async def check(
        request: Request, settings: SettingsDep, who: Annotated[Console, Depends(console_user)]
    ) -> Console:
        if who.principal.role.rank < role.rank:
            raise RoleRequired(role=role.value, current=who.principal.role.value)
        sent = request.headers.get(CSRF_HEADER, "")
        form = await request.form()
        who.form = {k: v for k, v in form.items() if isinstance(v, str)}
        who.form_lists = {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form}
        sent = sent or who.form.get(CSRF_FIELD, "")
        if not hmac.compare_digest(sent.encode(), who.csrf.encode()):
            raise CsrfFailed()
        return who

    return Depends(check)


def reader(role: Role) -> Any:
    """A page only ``role`` and above may read (the API's rule for the same data)."""

    def check(who: Annotated[Console, Depends(console_user)]) -> Console:
        if who.principal.role.rank < role.rank:
            raise RoleRequired(role=role.value, current=who.principal.role.value)
        return who

    return Depends(check)


def live_token(settings: Settings, principal: Principal) -> str:
    """A short access token the page's JS uses for the upload API and the job WebSockets."""
    with session_scope(settings.DATABASE_URL) as s:
        user = s.get(User, principal.user_id)
        if user is None:
            raise LoginRequired("/")
        return auth_service.access_token(settings, user, timedelta(minutes=LIVE_TOKEN_MINUTES))


ReaderDep = Annotated[Console, Depends(console_user)]
OperatorReaderDep = Annotated[Console, reader(Role.operator)]
AdminReaderDep = Annotated[Console, reader(Role.admin)]
AnyWriterDep = Annotated[Console, writer(Role.viewer)]
OperatorWriterDep = Annotated[Console, writer(Role.operator)]
AdminWriterDep = Annotated[Console, writer(Role.admin)]
