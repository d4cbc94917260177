"""FastAPI dependencies: settings, DB session, the calling principal, roles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from diskvault.auth import service as auth_service
from diskvault.auth.errors import MissingToken, RoleRequired
from diskvault.auth.models import Role
from diskvault.auth.service import Principal
from diskvault.config import Settings
from diskvault.db.engine import session_factory, session_scope

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    session = session_factory(request.app.state.settings.DATABASE_URL)()
    try:
        yield session
    finally:
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Session, Depends(get_db)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def optional_principal(request: Request, settings: SettingsDep) -> Principal | None:
    """The caller, resolved once: ``api.guard.Gate`` did it before the body was read."""
    state = request.scope.setdefault("state", {})
    if "principal" in state:
        principal: Principal | None = state["principal"]
        return principal
    token = bearer_token(request)
    if token is None:
        return None
    with session_scope(settings.DATABASE_URL) as session:
        principal = auth_service.resolve(session, settings, token)
    state["principal"] = principal
    return principal


def current_principal(
    request: Request, principal: Annotated[Principal | None, Depends(optional_principal)]
) -> Principal:
    """Any authenticated user; viewers are refused on every mutating method."""
    if principal is None:
        raise MissingToken()
    if request.method not in SAFE_METHODS and principal.role == Role.viewer:
        raise RoleRequired(role="operator", current=principal.role.value)
    return principal


# The role each principal dependency demands. ``api.guard`` walks a route's
# dependencies for these and enforces the strictest before the body is read.
ROLE_OF: dict[object, Role] = {current_principal: Role.viewer}


def require_role(role: Role) -> object:
    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role.rank < role.rank:
            raise RoleRequired(role=role.value, current=principal.role.value)
        return principal

    ROLE_OF[check] = role
    return Depends(check)


PrincipalDep = Annotated[Principal, Depends(current_principal)]
OperatorDep = Annotated[Principal, require_role(Role.operator)]
AdminDep = Annotated[Principal, require_role(Role.admin)]
