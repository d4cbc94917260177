"""Sign in and out, and the short token the page's JS needs for uploads and WebSockets."""

from __future__ import annotations

import hmac
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response

from diskvault.api.deps import SettingsDep
from diskvault.auth import login as password_login
from diskvault.auth.errors import InvalidCredentials, LoginThrottled
from diskvault.web import session
from diskvault.web.render import redirect, render
from diskvault.web.session import AnyWriterDep, ReaderDep

router = APIRouter()


def _login_form(
    request: Request, *, next_path: str, username: str = "", error: str = "", status: int = 200
) -> Response:
    nonce = session.login_nonce(request)
    context = {"next": next_path, "username": username, "error": error, "nonce": nonce}
    response = render(request, "login.html", None, context, status)
    session.set_login_cookie(request, response, nonce)
    return response


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return _login_form(request, next_path=session.safe_next(next))


@router.post("/login")
async def login(request: Request, settings: SettingsDep) -> Response:
    form = await request.form()
    fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    nonce = request.cookies.get(session.LOGIN_COOKIE, "")
    sent = str(fields.get(session.CSRF_FIELD, ""))
    if not nonce or not hmac.compare_digest(nonce.encode(), sent.encode()):
        raise session.CsrfFailed()
    next_path = session.safe_next(fields.get("next"))
    username = str(fields.get("username", ""))[:64]
    password = str(fields.get("password", ""))[:1024]
    client = request.client.host if request.client else "unknown"
    rid = getattr(request.state, "request_id", None)
    try:
        # The API's check: the same throttle and the same bounded argon2 pool.
        user = await password_login.check_password(
            request.app.state, settings, username, password, client, rid
        )
    except (InvalidCredentials, LoginThrottled) as exc:
        return _login_form(
            request, next_path=next_path, username=username, error=exc.message, status=exc.status
        )
    token, principal = await anyio.to_thread.run_sync(session.open_session, settings, user)
    request.state.principal = principal  # audited: "POST /login" under the user's name
    response = redirect(next_path)
    session.set_session_cookie(request, response, settings, token)
    response.delete_cookie(session.LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(who: AnyWriterDep, settings: SettingsDep) -> Response:
    session.close_session(settings, who.token)
    response = redirect("/login", ("info", "You are signed out."))
    response.delete_cookie(session.COOKIE, path="/")
    return response


@router.get("/session/live-token")
def live_token(who: ReaderDep, settings: SettingsDep) -> dict[str, Any]:
    return {
        "token": session.live_token(settings, who.principal),
        "expires_in": session.LIVE_TOKEN_MINUTES * 60,
    }
