"""Auth rules: login, refresh, token resolution, users, API tokens, audit."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from diskvault.auth import security
from diskvault.auth.errors import (
    AdminRequiredForSignup,
    InvalidToken,
    LastAdmin,
    UserExists,
)
from diskvault.auth.models import ApiToken, AuditLog, Role, User
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.db.listing import Listing
from diskvault.db.listing import apply as listing_apply
from diskvault.db.pagination import PageParams, paginate
from diskvault.errors import NotFound


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from a JWT or an API token."""

    user_id: str
    username: str
    role: Role
    via: str  # "jwt" | "api-token"


def access_token(settings: Settings, user: User, ttl: timedelta) -> str:
    """An access token that stops working when the user's password or role changes."""
    return security.encode_token(
        settings.SECRET_KEY,
        sub=user.id,
        kind="access",
        ttl=ttl,
        role=user.role.value,
        ver=user.token_version,
    )


def issue_tokens(settings: Settings, user: User) -> dict[str, Any]:
    access_ttl = timedelta(minutes=settings.ACCESS_TOKEN_MINUTES)
    return {
        "access_token": access_token(settings, user, access_ttl),
        "refresh_token": security.encode_token(
            settings.SECRET_KEY,
            sub=user.id,
            kind="refresh",
            ttl=timedelta(days=settings.REFRESH_TOKEN_DAYS),
            ver=user.token_version,
        ),
        "token_type": "bearer",
        "expires_in": int(access_ttl.total_seconds()),
    }


def login_candidate(settings: Settings, username: str) -> tuple[User | None, str]:
    """The user (detached) and the hash to check the password against.

    An unknown user is checked against a dummy hash, so timing does not tell
    which names exist. The argon2 check itself is the caller's, in its own pool.
    """
    with session_scope(settings.DATABASE_URL) as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            return None, DUMMY_HASH
        session.expunge(user)
        return user, user.password_hash


def record_lockout(
    settings: Settings, username: str, client: str, detail: str, request_id: str | None
) -> None:
    with session_scope(settings.DATABASE_URL) as session:
        record_audit(
            session,
            username=username[:64],
            action="login locked out",
            target=client[:300],
            status=429,
            request_id=request_id,
            details={"detail": detail},
        )


DUMMY_HASH = security.hash_password(secrets.token_hex(8))


def refresh(session: Session, settings: Settings, refresh_token: str) -> dict[str, Any]:
    payload = security.decode_token(settings.SECRET_KEY, refresh_token, kind="refresh")
    user = session.get(User, payload["sub"])
    if not user or not user.is_active or payload.get("ver") != user.token_version:
        raise InvalidToken("refresh token is no longer valid")
    return issue_tokens(settings, user)


def resolve(session: Session, settings: Settings, token: str) -> Principal:
    """Turn a bearer token (JWT access token or API token) into a Principal."""
    if token.startswith(security.API_TOKEN_PREFIX):
        row = session.scalar(
            select(ApiToken).where(ApiToken.token_hash == security.hash_api_token(token))
        )
        now = datetime.now(UTC)
        if row is None or row.revoked_at is not None:
            raise InvalidToken("unknown or revoked API token")
        if row.expires_at is not None and row.expires_at < now:
            raise InvalidToken("API token expired")
        user = session.get(User, row.user_id)
        if user is None or not user.is_active:
            raise InvalidToken("the token's user is disabled")
        row.last_used_at = now
        session.commit()
        return Principal(user.id, user.username, user.role, "api-token")
    payload = security.decode_token(settings.SECRET_KEY, token, kind="access")
    user = session.get(User, payload["sub"])
    if user is None or not user.is_active:
        raise InvalidToken("unknown or disabled user")
    if payload.get("ver") != user.token_version:
        raise InvalidToken("the user's password or role changed since this token was issued")
    return Principal(user.id, user.username, user.role, "jwt")


def has_admin(session: Session) -> bool:
    return session.scalar(select(User.id).where(User.role == Role.admin).limit(1)) is not None


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    if session.scalar(select(User.id).where(User.username == username)):
        raise UserExists(username=username)
    user = User(username=username, password_hash=security.hash_password(password), role=role)
    session.add(user)
    session.commit()
    return user


def signup(
    session: Session, caller: Principal | None, username: str, password: str, role: Role
) -> User:
    """Open only while no admin exists (then the first user is admin); admin-only after."""
    if has_admin(session):
        if caller is None or caller.role != Role.admin:
            raise AdminRequiredForSignup()
    else:
        role = Role.admin
    return create_user(session, username, password, role)


def bootstrap_admin(session: Session, password: str | None) -> str | None:
    """Create ``admin`` on first start. Returns the generated password, if any."""
    if has_admin(session):
        return None
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    create_user(session, "admin", password, Role.admin)
    return generated


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(kind="user", id=user_id)
    return user


def update_user(
    session: Session,
    user_id: str,
    *,
    role: Role | None,
    is_active: bool | None,
    password: str | None,
) -> User:
    user = get_user(session, user_id)
    demoted = (role is not None and role != Role.admin) or is_active is False
    if demoted and user.role == Role.admin and user.is_active and _active_admins(session) <= 1:
        raise LastAdmin(username=user.username)
    # Any change to who the user is or what they may do ends every token issued before it.
    changed = password is not None
    if role is not None and role != user.role:
        user.role = role
        changed = True
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        changed = True
    if password is not None:
        user.password_hash = security.hash_password(password)
    if changed:
        user.token_version += 1
    session.commit()
    return user


def _active_admins(session: Session) -> int:
    where = (User.role == Role.admin) & User.is_active.is_(True)
    return session.scalar(select(func.count()).select_from(User).where(where)) or 0


def list_users(session: Session, params: PageParams) -> tuple[list[User], int]:
    return paginate(session, select(User).order_by(User.username), params)


def create_api_token(
    session: Session, caller: Principal, name: str, expires_days: int | None
) -> tuple[ApiToken, str]:
    plain, digest = security.new_api_token()
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    row = ApiToken(user_id=caller.user_id, name=name, token_hash=digest, expires_at=expires)
    session.add(row)
    session.commit()
    return row, plain


def list_api_tokens(session: Session, caller: Principal) -> list[ApiToken]:
    stmt = select(ApiToken).where(ApiToken.user_id == caller.user_id).order_by(ApiToken.created_at)
    return list(session.scalars(stmt))


def revoke_api_token(session: Session, caller: Principal, token_id: str) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != caller.user_id and caller.role != Role.admin):
        raise NotFound(kind="API token", id=token_id)
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.commit()
    return row


def record_audit(
    session: Session,
    *,
    username: str,
    action: str,
    target: str | None,
    status: int,
    request_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditLog(
            username=username,
            action=action,
            target=target,
            status=status,
            request_id=request_id,
            details=details,
        )
    )
    session.commit()


AUDIT_SORTS: dict[str, Any] = {"time": AuditLog.id, "user": AuditLog.username}


def list_audit(
    session: Session, params: PageParams, listing: Listing | None = None
) -> tuple[list[AuditLog], int]:
    stmt = listing_apply(
        select(AuditLog), listing, sorts=AUDIT_SORTS, default="-time", tiebreak=AuditLog.id,
        search=(AuditLog.username, AuditLog.action, AuditLog.target),
    )  # fmt: skip
    return paginate(session, stmt, params)
