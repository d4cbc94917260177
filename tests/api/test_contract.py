"""Issue 14 item 5: the OpenAPI document is the contract; each schemathesis finding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from diskvault.config import Settings
from support.http import assert_problem, auth

PROBLEM = "application/problem+json"


def _ops(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, ops in schema["paths"].items() for m, op in ops.items()]


def test_every_route_declares_its_problems(app_client: TestClient) -> None:
    schema = app_client.get("/openapi.json").json()
    for path, method, op in _ops(schema):
        responses = op["responses"]
        for status in ("400", "401", "403", "413", "422"):
            assert PROBLEM in responses[status]["content"], (method, path, status)
        assert "urn:diskvault:error:validation" in responses["422"]["description"]
        assert "urn:diskvault:error:role-required" in responses["403"]["description"]
        if "{" in path:
            assert "404" in responses, (method, path)
    create = schema["paths"]["/api/v1/sources"]["post"]["responses"]
    assert "urn:diskvault:error:source-exists" in create["409"]["description"]
    assert "urn:diskvault:error:invalid-source" in create["422"]["description"]


def test_a_body_that_is_not_json_text_is_a_declared_400(app_client: TestClient) -> None:
    """schemathesis: invalid UTF-8 got an undeclared 400."""
    resp = app_client.post(
        "/api/v1/auth/login", content=b"\xff\xfe\x80", headers={"content-type": "application/json"}
    )
    assert resp.status_code in (400, 422)
    assert resp.headers["content-type"].startswith(PROBLEM)
    declared = app_client.get("/openapi.json").json()["paths"]["/api/v1/auth/login"]["post"]
    assert str(resp.status_code) in declared["responses"]


def test_options_answers_with_the_paths_methods(app_client: TestClient) -> None:
    """OPTIONS was 405; schemathesis then found /backup/chain advertising DELETE."""
    resp = app_client.options("/api/v1/images/abc")
    assert resp.status_code == 204
    assert resp.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
    assert "access-control-allow-origin" not in resp.headers
    assert app_client.options("/api/v1/backup/chain").headers["allow"] == "GET, HEAD, OPTIONS"
    assert app_client.options("/api/v1/sources").headers["allow"] == "GET, HEAD, OPTIONS, POST"
    preflight = app_client.options(
        "/api/v1/images",
        headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 204 and "access-control-allow-origin" not in preflight.headers
    assert app_client.options("/no/such/path").status_code == 404


def test_options_with_cors_origins_is_a_cors_preflight(settings: Settings) -> None:
    from diskvault.api.app import create_app

    settings.CORS_ORIGINS = ["https://ui.example"]
    with TestClient(create_app(settings)) as client:
        resp = client.options(
            "/api/v1/images",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "GET"},
        )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "https://ui.example"


def test_json_types_are_what_the_schema_says(
    app_client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    """schemathesis: `"attach": 0` was taken as false; `expires_days: 438.0` refused."""
    h = auth(admin_token)
    repo = {"name": "r", "path": str(tmp_path / "r"), "attach": 0}
    assert (
        "attach"
        in assert_problem(app_client.post("/api/v1/repositories", json=repo, headers=h), 422)[
            "detail"
        ]
    )
    made = app_client.post(
        "/api/v1/auth/tokens", json={"name": "t", "expires_days": 438.0}, headers=h
    )
    assert made.status_code == 201, made.text
    schema = app_client.get("/openapi.json").json()["components"]["schemas"]
    expires = schema["ApiTokenCreate"]["properties"]["expires_days"]["anyOf"][0]
    assert (expires["minimum"], expires["maximum"]) == (1, 3650)
    chain = schema["PolicyCreate"]["properties"]["max_chain_length"]["anyOf"][0]
    assert chain["minimum"] == 1
    assert schema["ResizeRequest"]["properties"]["size"]["multipleOf"] == 512


def test_the_last_admin_cannot_lock_everyone_out(app_client: TestClient, admin_token: str) -> None:
    """schemathesis (stateful): PATCH /users/{own id} {"is_active": false} locked it out."""
    h = auth(admin_token)
    me = app_client.get("/api/v1/auth/me", headers=h).json()
    for change in ({"is_active": False}, {"role": "viewer"}):
        resp = app_client.patch(f"/api/v1/users/{me['id']}", json=change, headers=h)
        assert "last active admin" in assert_problem(resp, 409)["detail"]
    assert app_client.get("/api/v1/auth/me", headers=h).json()["role"] == "admin"
    other = {"username": "second", "password": "second-password", "role": "admin"}
    assert app_client.post("/api/v1/auth/signup", json=other, headers=h).status_code == 201
    demoted = app_client.patch(f"/api/v1/users/{me['id']}", json={"role": "operator"}, headers=h)
    assert demoted.status_code == 200 and demoted.json()["role"] == "operator"


def test_byte_bounds_are_exact_in_json(app_client: TestClient, admin_token: str) -> None:
    """schemathesis: 2^60 + 23 passed the schema's check (floats) yet the model refused it."""
    schema = app_client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["ResizeRequest"]["properties"]["size"]["maximum"] <= 2**53
    speed = schema["BackupStart"]["properties"]["speed"]["anyOf"][0]["maximum"]
    assert speed <= 2**53
    body = {"vm_name": "v", "speed": int(speed) + 1}
    resp = app_client.post("/api/v1/backup/start", json=body, headers=auth(admin_token))
    assert "speed" in assert_problem(resp, 422)["detail"]
