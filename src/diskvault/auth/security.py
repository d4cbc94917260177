"""Password hashing (argon2) and token encoding (JWT HS256, opaque API tokens)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from diskvault.auth.errors import InvalidToken

_hasher = PasswordHasher()
API_TOKEN_PREFIX = "dvt_"  # noqa: S105 - a public prefix, not a secret
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def encode_token(secret: str, *, sub: str, kind: str, ttl: timedelta, **claims: Any) -> str:
    now = datetime.now(UTC)
    payload = {"sub": sub, "typ": kind, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str, *, kind: str) -> dict[str, Any]:
    try:
        payload: dict[str, Any] = jwt.decode(token, secret, algorithms=[ALGORITHM])
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(str(exc) or "malformed token") from None
    if payload.get("typ") != kind:
        raise InvalidToken(f"expected a {kind} token")
    return payload


def new_api_token() -> tuple[str, str]:
    """Return (plaintext, sha256 hex). Only the hash is stored."""
    plain = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return plain, hash_api_token(plain)


def hash_api_token(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()
