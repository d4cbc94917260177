"""One password check for every way in (the API's login and the console's sign-in).

Both go through the same throttle and the same bounded argon2 pool, so neither can be
used to guess passwords faster or to starve the server of threads.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import structlog

from diskvault.auth import security, service
from diskvault.auth.errors import InvalidCredentials, LoginThrottled
from diskvault.auth.models import User
from diskvault.auth.throttle import LoginThrottle
from diskvault.config import Settings

log = structlog.get_logger("diskvault.auth")


def _throttle(state: Any, settings: Settings) -> LoginThrottle:
    throttle: LoginThrottle | None = getattr(state, "login_throttle", None)
    if throttle is None:
        throttle = state.login_throttle = LoginThrottle(
            settings.LOGIN_MAX_FAILURES_PER_USER,
            settings.LOGIN_MAX_FAILURES_PER_IP,
            settings.LOGIN_WINDOW_S,
        )
    return throttle


def _hashing(state: Any, settings: Settings) -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor | None = getattr(state, "login_hashing", None)
    if pool is None:
        pool = state.login_hashing = security.hashing_pool(settings.LOGIN_HASH_WORKERS)
    return pool


def shutdown(state: Any) -> None:
    pool: ThreadPoolExecutor | None = getattr(state, "login_hashing", None)
    state.login_hashing = None  # a later start makes a new one
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


async def check_password(
    state: Any,
    settings: Settings,
    username: str,
    password: str,
    client: str,
    request_id: str | None,
) -> User:
    """The active user with this password, or LoginThrottled / InvalidCredentials.

    ``state`` holds the throttle and the hashing pool (the app's state).
    """
    throttle = _throttle(state, settings)
    refusal = throttle.begin(username, client)
    if refusal is not None:
        retry_after = math.ceil(refusal.retry_after)
        err = LoginThrottled(
            subject=refusal.subject, retry_after=retry_after, setting=refusal.setting
        )
        if refusal.new:
            await anyio.to_thread.run_sync(
                service.record_lockout, settings, username, client, err.message, request_id
            )
            log.warning("login locked out", subject=refusal.subject, retry_after=retry_after)
        raise err
    user, stored = await anyio.to_thread.run_sync(service.login_candidate, settings, username)
    pool = _hashing(state, settings)
    ok = await asyncio.wrap_future(pool.submit(security.verify_password, stored, password))
    if user is None or not ok or not user.is_active:
        raise InvalidCredentials()
    throttle.succeeded(username, client)
    return user
