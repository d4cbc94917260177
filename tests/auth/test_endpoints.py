"""Auth flows through the in-process app, on SQLite and PostgreSQL."""

from fastapi.testclient import TestClient

from support.http import assert_problem, auth
from support.server import ADMIN_PASSWORD


def _signup(client: TestClient, token: str, name: str, role: str) -> str:
    resp = client.post(
        "/api/v1/auth/signup",
        json={"username": name, "password": "password-" + name, "role": role},
        headers=auth(token),
    )
    assert resp.status_code == 201, resp.text
    login = client.post(
        "/api/v1/auth/login", json={"username": name, "password": "password-" + name}
    )
    token_out: str = login.json()["access_token"]
    return token_out


def test_login_me_refresh(app_client: TestClient) -> None:
    resp = app_client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    body = resp.json()
    assert resp.status_code == 200 and body["token_type"] == "bearer"
    me = app_client.get("/api/v1/auth/me", headers=auth(body["access_token"])).json()
    assert me["username"] == "admin" and me["role"] == "admin"
    again = app_client.post("/api/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert again.status_code == 200 and again.json()["access_token"]
    # An access token is not a refresh token.
    assert_problem(
        app_client.post("/api/v1/auth/refresh", json={"refresh_token": body["access_token"]}), 401
    )


def test_signup_is_admin_only_once_an_admin_exists(
    app_client: TestClient, admin_token: str
) -> None:
    anon = app_client.post(
        "/api/v1/auth/signup", json={"username": "eve", "password": "password123"}
    )
    assert_problem(anon, 403)
    viewer = _signup(app_client, admin_token, "vic", "viewer")
    by_viewer = app_client.post(
        "/api/v1/auth/signup",
        json={"username": "eve", "password": "password123"},
        headers=auth(viewer),
    )
    assert_problem(by_viewer, 403)
    dup = app_client.post(
        "/api/v1/auth/signup",
        json={"username": "vic", "password": "password123"},
        headers=auth(admin_token),
    )
    assert_problem(dup, 409)


def test_viewer_is_read_only_and_operator_is_not_admin(
    app_client: TestClient, admin_token: str
) -> None:
    viewer = _signup(app_client, admin_token, "view", "viewer")
    operator = _signup(app_client, admin_token, "oper", "operator")
    assert app_client.get("/api/v1/status", headers=auth(viewer)).status_code == 200
    body = assert_problem(
        app_client.post("/api/v1/auth/tokens", json={"name": "x"}, headers=auth(viewer)), 403
    )
    assert "operator" in body["detail"]
    assert (
        app_client.post(
            "/api/v1/auth/tokens", json={"name": "x"}, headers=auth(operator)
        ).status_code
        == 201
    )
    assert_problem(app_client.get("/api/v1/audit", headers=auth(operator)), 403)


def test_api_token_create_use_revoke(app_client: TestClient, admin_token: str) -> None:
    created = app_client.post(
        "/api/v1/auth/tokens", json={"name": "ci"}, headers=auth(admin_token)
    ).json()
    plain = created["token"]
    assert app_client.get("/api/v1/auth/me", headers=auth(plain)).json()["username"] == "admin"
    listed = app_client.get("/api/v1/auth/tokens", headers=auth(admin_token)).json()
    assert [t["name"] for t in listed] == ["ci"] and "token" not in listed[0]
    app_client.delete(f"/api/v1/auth/tokens/{created['id']}", headers=auth(admin_token))
    assert_problem(app_client.get("/api/v1/auth/me", headers=auth(plain)), 401)


def test_password_change_invalidates_refresh_tokens(
    app_client: TestClient, admin_token: str
) -> None:
    _signup(app_client, admin_token, "carl", "operator")
    tokens = app_client.post(
        "/api/v1/auth/login", json={"username": "carl", "password": "password-carl"}
    ).json()
    users = app_client.get("/api/v1/users", headers=auth(admin_token)).json()
    carl = next(u for u in users["items"] if u["username"] == "carl")
    assert users["total"] == 2
    app_client.patch(
        f"/api/v1/users/{carl['id']}", json={"password": "new-password"}, headers=auth(admin_token)
    )
    assert_problem(
        app_client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        401,
    )


def test_audit_log_records_changes(app_client: TestClient, admin_token: str) -> None:
    app_client.post("/api/v1/auth/tokens", json={"name": "audited"}, headers=auth(admin_token))
    page = app_client.get("/api/v1/audit", headers=auth(admin_token)).json()
    actions = [(e["username"], e["action"], e["status"]) for e in page["items"]]
    assert ("admin", "POST /api/v1/auth/tokens", 201) in actions
    assert page["total"] >= 1


def test_bad_credentials_and_unknown_user_get_401(app_client: TestClient) -> None:
    for creds in (
        {"username": "admin", "password": "nope"},
        {"username": "ghost", "password": "x"},
    ):
        body = assert_problem(app_client.post("/api/v1/auth/login", json=creds), 401)
        assert body["detail"] == "invalid username or password"


def test_access_tokens_stop_at_once_on_password_role_or_active_change(
    app_client: TestClient, admin_token: str
) -> None:
    """Finding 10: the token version is in access tokens too, checked on every request."""
    users = "/api/v1/users"
    for name, change in (
        ("dora", {"password": "changed-password"}),
        ("emil", {"role": "viewer"}),
        ("fay", {"is_active": False}),
    ):
        token = _signup(app_client, admin_token, name, "operator")
        me = app_client.get("/api/v1/auth/me", headers=auth(token)).json()
        unchanged = app_client.patch(
            f"{users}/{me['id']}", json={"role": "operator"}, headers=auth(admin_token)
        )
        assert unchanged.status_code == 200  # the same role again is no change
        assert app_client.get("/api/v1/auth/me", headers=auth(token)).status_code == 200
        resp = app_client.patch(f"{users}/{me['id']}", json=change, headers=auth(admin_token))
        assert resp.status_code == 200, resp.text
        assert_problem(app_client.get("/api/v1/auth/me", headers=auth(token)), 401)
    # The admin's own token is untouched by changes to others.
    assert app_client.get("/api/v1/auth/me", headers=auth(admin_token)).status_code == 200
    fresh = app_client.post(
        "/api/v1/auth/login", json={"username": "dora", "password": "changed-password"}
    ).json()["access_token"]
    assert app_client.get("/api/v1/auth/me", headers=auth(fresh)).json()["username"] == "dora"
