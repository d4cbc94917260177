from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, status

from diskvault.api.deps import AdminDep, DbDep, PrincipalDep, SettingsDep, optional_principal
from diskvault.api.pagination import Page, PageParams, page_params
from diskvault.api.responses import problems
from diskvault.auth import errors, service
from diskvault.auth import login as password_login
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
from diskvault.db import pagination
from diskvault.errors import NotFound

router = APIRouter(prefix="/api/v1", tags=["auth"], responses=problems(errors, NotFound))
PageDep = Annotated[PageParams, Depends(page_params)]
log = structlog.get_logger("diskvault.auth")


def shutdown(app: FastAPI) -> None:
    password_login.shutdown(app.state)


@router.post(
    "/auth/login",
    response_model=TokenPair,
    summary="Log in with username and password (429 with Retry-After after repeated failures)",
)
async def login(body: LoginRequest, request: Request, settings: SettingsDep) -> Any:
    client = request.client.host if request.client else "unknown"
    rid = getattr(request.state, "request_id", None)
    user = await password_login.check_password(
        request.app.state, settings, body.username, body.password, client, rid
    )
    return service.issue_tokens(settings, user)


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
    return pagination.page(items, total, page)


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(user_id: str, body: UserUpdate, _: AdminDep, db: DbDep) -> Any:
    return service.update_user(
        db, user_id, role=body.role, is_active=body.is_active, password=body.password
    )


@router.get("/audit", response_model=Page[AuditOut], summary="Audit log (admin)")
def audit(_: AdminDep, db: DbDep, page: PageDep) -> Any:
    items, total = service.list_audit(db, page)
    return pagination.page(items, total, page)
