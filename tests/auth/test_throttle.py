"""Login throttling: the counter itself (on a fake clock) and the login route."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from diskvault.auth.throttle import LoginThrottle
from diskvault.config import Settings
from support.http import assert_problem, auth
from support.server import ADMIN_PASSWORD

LOGIN = "/api/v1/auth/login"


def test_attempts_count_when_they_start_and_expire_with_the_window() -> None:
    now = [1000.0]
    throttle = LoginThrottle(per_user=3, per_ip=100, window_s=60, clock=lambda: now[0])
    for _ in range(3):  # three checks in flight at once, none finished yet
        assert throttle.begin("admin", "10.0.0.1") is None
        now[0] += 1
    refusal = throttle.begin("Admin", "10.0.0.2")  # any case, any address
    assert refusal is not None and refusal.new
    assert refusal.retry_after == 57.0  # the first attempt (t=1000) leaves the window at 1060
    assert refusal.setting == "DISKVAULT_LOGIN_MAX_FAILURES_PER_USER"
    again = throttle.begin("admin", "10.0.0.3")
    assert again is not None and not again.new  # one lockout, audited once
    now[0] = 1060.0
    assert throttle.begin("admin", "10.0.0.1") is None


def test_a_success_clears_the_user_but_not_the_address() -> None:
    throttle = LoginThrottle(per_user=2, per_ip=3, window_s=60, clock=lambda: 0.0)
    assert throttle.begin("alice", "10.0.0.1") is None
    assert throttle.begin("alice", "10.0.0.1") is None
    throttle.succeeded("alice", "10.0.0.1")  # the address keeps the failed attempt
    assert throttle.begin("alice", "10.0.0.1") is None  # user count cleared
    assert throttle.begin("bob", "10.0.0.1") is None
    refusal = throttle.begin("carol", "10.0.0.1")  # the address holds 3 attempts now
    assert refusal is not None and refusal.subject == "client 10.0.0.1"
    assert refusal.setting == "DISKVAULT_LOGIN_MAX_FAILURES_PER_IP"


def _bad(client: TestClient, username: str) -> int:
    return client.post(LOGIN, json={"username": username, "password": "wrong"}).status_code


def test_login_locks_a_user_out_with_429_and_audits_it_once(
    app_client: TestClient, admin_token: str
) -> None:
    assert [_bad(app_client, "admin") for _ in range(5)] == [401] * 5
    right = app_client.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
    body = assert_problem(right, 429)  # even the right password waits out the lockout
    assert 0 < int(right.headers["retry-after"]) <= 300
    assert "DISKVAULT_LOGIN_MAX_FAILURES_PER_USER" in body["detail"]
    assert body["setting"] == "DISKVAULT_LOGIN_MAX_FAILURES_PER_USER"
    assert _bad(app_client, "admin") == 429
    audit = app_client.get("/api/v1/audit", headers=auth(admin_token)).json()["items"]
    lockouts = [e for e in audit if e["action"] == "login locked out"]
    assert len(lockouts) == 1 and lockouts[0]["username"] == "admin"
    assert lockouts[0]["status"] == 429 and lockouts[0]["target"] == "testclient"
    # Tokens issued before keep working: only logins are throttled.
    assert app_client.get("/api/v1/auth/me", headers=auth(admin_token)).status_code == 200


def test_login_locks_out_a_client_trying_many_names(app_client: TestClient) -> None:
    assert {_bad(app_client, f"user{i}") for i in range(20)} == {401}
    resp = app_client.post(LOGIN, json={"username": "fresh", "password": "wrong"})
    body = assert_problem(resp, 429)
    assert body["setting"] == "DISKVAULT_LOGIN_MAX_FAILURES_PER_IP"
    assert "client testclient" in body["detail"]


def test_a_good_login_resets_the_user_count(app_client: TestClient) -> None:
    good = {"username": "admin", "password": ADMIN_PASSWORD}
    for _ in range(3):
        assert [_bad(app_client, "admin") for _ in range(4)] == [401] * 4
        assert app_client.post(LOGIN, json=good).status_code == 200


def test_health_and_reads_answer_while_every_hashing_thread_is_busy(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    pool = app_client.app.state.login_hashing  # type: ignore[attr-defined]
    release = threading.Event()
    for _ in range(settings.LOGIN_HASH_WORKERS):
        pool.submit(release.wait)
    answers: dict[str, int] = {}

    def bad_login() -> None:
        answers["login"] = _bad(app_client, "admin")

    waiting = threading.Thread(target=bad_login)
    waiting.start()
    try:
        assert app_client.get("/health").status_code == 200
        assert app_client.get("/api/v1/auth/me", headers=auth(admin_token)).status_code == 200
        assert waiting.is_alive()  # the login queues for a hashing thread
    finally:
        release.set()
        waiting.join()
    assert answers == {"login": 401}
