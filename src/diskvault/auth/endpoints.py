from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, status

from diskvault.api.deps import AdminDep, DbDep, PrincipalDep, SettingsDep, optional_principal
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.problems import problem_response
from diskvault.auth import security, service
from diskvault.auth.errors import LoginThrottled
from diskvault.auth.schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenOut,
    AuditOut,
    LoginRequest,
    RefreshRequest,
    SignupRequest,
    TokenPair,
    UserOut,
    UserUpdate,
)
from diskvault.auth.service import Principal
from diskvault.auth.throttle import LoginThrottle
from diskvault.config import Settings

router = APIRouter(prefix="/api/v1", tags=["auth"])
PageDep = Annotated[PageParams, Depends(page_params)]
log = structlog.get_logger("diskvault.auth")


def _throttle(app: Any, settings: Settings) -> LoginThrottle:
    throttle: LoginThrottle | None = getattr(app.state, "login_throttle", None)
    if throttle is None:
        throttle = app.state.login_throttle = LoginThrottle(
            settings.LOGIN_MAX_FAILURES_PER_USER,
            settings.LOGIN_MAX_FAILURES_PER_IP,
            settings.LOGIN_WINDOW_S,
        )
    return throttle


def _hashing(app: Any, settings: Settings) -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor | None = getattr(app.state, "login_hashing", None)
    if pool is None:
        pool = app.state.login_hashing = security.hashing_pool(settings.LOGIN_HASH_WORKERS)
    return pool


def shutdown(app: FastAPI) -> None:
    pool: ThreadPoolExecutor | None = getattr(app.state, "login_hashing", None)
    app.state.login_hashing = None  # a later start makes a new one
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


@router.post(
    "/auth/login",
    response_model=TokenPair,
    summary="Log in with username and password",
    responses={
        401: {"description": "wrong username or password"},
        429: {"description": "too many failed logins for this user or client; see Retry-After"},
    },
)
async def login(body: LoginRequest, request: Request, settings: SettingsDep) -> Any:
    client = request.client.host if request.client else "unknown"
    throttle = _throttle(request.app, settings)
    refusal = throttle.begin(body.username, client)
    if refusal is not None:
        retry_after = math.ceil(refusal.retry_after)
        err = LoginThrottled(
            subject=refusal.subject, retry_after=retry_after, setting=refusal.setting
        )
        if refusal.new:
            rid = getattr(request.state, "request_id", None)
            await anyio.to_thread.run_sync(
                service.record_lockout, settings, body.username, client, err.message, rid
            )
            log.warning("login locked out", subject=refusal.subject, retry_after=retry_after)
        problem = {**err.problem(), "instance": request.url.path}
        return problem_response(problem, headers={"Retry-After": str(retry_after)})
    user, stored = await anyio.to_thread.run_sync(service.login_candidate, settings, body.username)
    pool = _hashing(request.app, settings)
    ok = await asyncio.wrap_future(pool.submit(security.verify_password, stored, body.password))
    tokens = service.login_result(settings, user, ok)
    throttle.succeeded(body.username, client)
    return tokens


@router.post("/auth/refresh", response_model=TokenPair, summary="Trade a refresh token")
def refresh(body: RefreshRequest, db: DbDep, settings: SettingsDep) -> dict[str, Any]:
    return service.refresh(db, settings, body.refresh_token)


@router.post(
    "/auth/signup",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a user (admin-only once an admin exists)",
)
def signup(
    body: SignupRequest,
    db: DbDep,
    caller: Annotated[Principal | None, Depends(optional_principal)],
) -> Any:
    return service.signup(db, caller, body.username, body.password, body.role)


@router.get("/auth/me", response_model=UserOut)
def me(principal: PrincipalDep, db: DbDep) -> Any:
    return service.get_user(db, principal.user_id)


@router.get("/auth/tokens", response_model=list[ApiTokenOut], summary="Your API tokens")
def list_tokens(principal: PrincipalDep, db: DbDep) -> Any:
    return service.list_api_tokens(db, principal)


@router.post(
    "/auth/tokens",
    response_model=ApiTokenCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create a named API token (shown once)",
)
def create_token(body: ApiTokenCreate, principal: PrincipalDep, db: DbDep) -> Any:
    row, plain = service.create_api_token(db, principal, body.name, body.expires_days)
    return {**ApiTokenOut.model_validate(row).model_dump(), "token": plain}


@router.delete("/auth/tokens/{token_id}", response_model=ApiTokenOut, summary="Revoke a token")
def revoke_token(token_id: str, principal: PrincipalDep, db: DbDep) -> Any:
    return service.revoke_api_token(db, principal, token_id)


@router.get("/users", response_model=Page[UserOut])
def list_users(_: AdminDep, db: DbDep, page: PageDep) -> Any:
    items, total = service.list_users(db, page)
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(user_id: str, body: UserUpdate, _: AdminDep, db: DbDep) -> Any:
    return service.update_user(
        db, user_id, role=body.role, is_active=body.is_active, password=body.password
    )


@router.get("/audit", response_model=Page[AuditOut], summary="Audit log (admin)")
def audit(_: AdminDep, db: DbDep, page: PageDep) -> Any:
    items, total = service.list_audit(db, page)
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}
