"""API skeleton behaviour: problem+json, auth on every route, limits, metrics."""

import re
from datetime import timedelta

from fastapi.testclient import TestClient

from diskvault.auth import security
from diskvault.config import Settings
from support.http import assert_problem, auth

PUBLIC = {"/health", "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/signup"}


def test_every_route_requires_a_token(app_client: TestClient) -> None:
    schema = app_client.get("/openapi.json").json()
    checked = 0
    for path, methods in schema["paths"].items():
        if path in PUBLIC or path.startswith("/boot/"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "00000000", path)
        for method in methods:
            resp = app_client.request(method.upper(), concrete)
            assert_problem(resp, 401)
            checked += 1
    assert checked >= 8


def test_health_docs_openapi_are_served(app_client: TestClient) -> None:
    assert app_client.get("/health").json() == {"status": "ok"}
    assert "swagger" in app_client.get("/docs").text.lower()
    assert app_client.get("/openapi.json").json()["info"]["title"] == "diskvault"


def test_status_reports_db_queue_and_space(app_client: TestClient, admin_token: str) -> None:
    body = app_client.get("/api/v1/status", headers=auth(admin_token)).json()
    assert body["database"]["ok"] is True and body["queue"]["ok"] is True
    assert body["storage"]["IMAGE_STORAGE_PATH"]["free_bytes"] > 0
    assert body["uptime_s"] >= 0 and body["version"]


def test_malformed_missing_and_oversized_bodies(app_client: TestClient, settings: Settings) -> None:
    bad_json = app_client.post(
        "/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(bad_json, 422)
    missing = assert_problem(app_client.post("/api/v1/auth/login", json={"username": "a"}), 422)
    assert "password" in missing["detail"]
    huge = b'{"username": "' + b"a" * (settings.MAX_BODY_BYTES + 10) + b'"}'
    too_big = app_client.post(
        "/api/v1/auth/login", content=huge, headers={"content-type": "application/json"}
    )
    assert_problem(too_big, 413)


def test_expired_tampered_and_unknown_user_tokens(
    app_client: TestClient, settings: Settings, admin_token: str
) -> None:
    expired = security.encode_token(
        settings.SECRET_KEY, sub="x", kind="access", ttl=timedelta(seconds=-1)
    )
    assert (
        "expired"
        in assert_problem(app_client.get("/api/v1/auth/me", headers=auth(expired)), 401)["detail"]
    )
    tampered = admin_token[:-3] + ("AAA" if not admin_token.endswith("AAA") else "BBB")
    assert_problem(app_client.get("/api/v1/auth/me", headers=auth(tampered)), 401)
    ghost = security.encode_token(
        settings.SECRET_KEY, sub="nobody", kind="access", ttl=timedelta(minutes=5)
    )
    assert_problem(app_client.get("/api/v1/auth/me", headers=auth(ghost)), 401)


def test_unknown_route_is_problem_json(app_client: TestClient) -> None:
    assert_problem(app_client.get("/api/v1/nope"), 404)


def test_metrics_and_request_id(app_client: TestClient, admin_token: str) -> None:
    resp = app_client.get("/metrics", headers=auth(admin_token))
    assert resp.status_code == 200 and "diskvault_http_requests_total" in resp.text
    assert len(resp.headers["x-request-id"]) >= 16
    echoed = app_client.get("/health", headers={"x-request-id": "req-123"})
    assert echoed.headers["x-request-id"] == "req-123"


def test_gzip_on_large_responses(app_client: TestClient, admin_token: str) -> None:
    resp = app_client.get("/openapi.json", headers={**auth(admin_token), "accept-encoding": "gzip"})
    assert resp.headers.get("content-encoding") == "gzip"


def test_pagination_validates_limits(app_client: TestClient, admin_token: str) -> None:
    page = app_client.get("/api/v1/users?limit=1&offset=0", headers=auth(admin_token)).json()
    assert page["limit"] == 1 and page["total"] == 1 and len(page["items"]) == 1
    assert_problem(app_client.get("/api/v1/users?limit=0", headers=auth(admin_token)), 422)
