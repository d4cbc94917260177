"""Password hashing (argon2) and token encoding (JWT HS256, opaque API tokens)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from diskvault.auth.errors import InvalidToken

_hasher = PasswordHasher()
API_TOKEN_PREFIX = "dvt_"  # noqa: S105 - a public prefix, not a secret
ALGORITHM = "HS256"
HASHING_NICE = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hashing_pool(workers: int) -> ThreadPoolExecutor:
    """Threads for password checks only, at a lower CPU priority.

    A flood of logins then queues here, and its argon2 work yields the CPU to
    every other request instead of taking the shared worker threads and cores.
    """
    return ThreadPoolExecutor(workers, "argon2", initializer=_lower_priority)


def _lower_priority() -> None:
    # Linux: the nice value is per thread (argon2's own lane threads inherit it).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICE)


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
