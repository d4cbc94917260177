"""Console sign-in, CSRF, roles, audit, escaping and error pages (in-process, no browser)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from diskvault.auth.models import ApiToken, AuditLog
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.images.models import Image, ImageStatus, ImageType
from diskvault.web.session import COOKIE
from support.console import csrf_of, sign_in
from support.http import assert_problem, auth

PAGES = ["/", "/images", "/jobs", "/backups", "/restore", "/targets", "/machines", "/organizer"]


def _viewer(client: TestClient, token: str, name: str = "vera") -> None:
    resp = client.post(
        "/api/v1/auth/signup",
        json={"username": name, "password": "viewer-password", "role": "viewer"},
        headers=auth(token),
    )
    assert resp.status_code == 201, resp.text


def test_pages_send_a_stranger_to_login_and_back(app_client: TestClient) -> None:
    for page in [*PAGES, "/admin", "/images/nope"]:
        resp = app_client.get(page, follow_redirects=False)
        assert resp.status_code == 303, page
        assert resp.headers["location"].startswith("/login"), page
    resp = app_client.get("/jobs?status=failed", follow_redirects=False)
    assert resp.headers["location"] == "/login?next=/jobs%3Fstatus%3Dfailed"
    nonce = csrf_of(app_client.get(resp.headers["location"]).text)
    back = app_client.post(
        "/login",
        data={
            "username": "admin",
            "password": "admin-password-for-tests",
            "csrf": nonce,
            "next": "/jobs?status=failed",
        },
        follow_redirects=False,
    )
    assert back.status_code == 303 and back.headers["location"] == "/jobs?status=failed"
    cookie = back.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie


def test_login_refuses_bad_password_and_foreign_next(app_client: TestClient) -> None:
    nonce = csrf_of(app_client.get("/login").text)
    bad = app_client.post(
        "/login", data={"username": "admin", "password": "wrong", "csrf": nonce, "next": "/"}
    )
    assert bad.status_code == 401 and "Sign in" in bad.text
    assert COOKIE not in app_client.cookies
    resp = app_client.post(
        "/login",
        data={
            "username": "admin",
            "password": "admin-password-for-tests",
            "csrf": nonce,
            "next": "//evil.example/x",
        },
        follow_redirects=False,
    )
    assert resp.headers["location"] == "/"


def test_login_form_without_its_token_is_refused(app_client: TestClient) -> None:
    app_client.get("/login")
    resp = app_client.post(
        "/login", data={"username": "admin", "password": "admin-password-for-tests"}
    )
    assert resp.status_code == 403
    assert COOKIE not in app_client.cookies


def test_logout_revokes_the_session(app_client: TestClient, settings: Settings) -> None:
    csrf = sign_in(app_client)
    stolen = app_client.cookies[COOKIE]
    resp = app_client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    app_client.cookies.set(COOKIE, stolen)  # a copy of the cookie kept from before
    again = app_client.get("/", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/login")
    with session_scope(settings.DATABASE_URL) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == "console session"))
        assert row is not None and row.revoked_at is not None


def test_change_without_csrf_is_403_and_with_it_is_audited(
    app_client: TestClient, settings: Settings
) -> None:
    csrf = sign_in(app_client)
    refused = app_client.post("/admin/users", data={"username": "olga", "password": "x" * 10})
    assert refused.status_code == 403
    assert "security token" in refused.text
    wrong = app_client.post(
        "/admin/users", data={"username": "olga", "password": "x" * 10, "csrf": "0" * 64}
    )
    assert wrong.status_code == 403
    ok = app_client.post(
        "/admin/users",
        data={"username": "olga", "password": "x" * 10, "role": "operator", "csrf": csrf},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    page = app_client.get(ok.headers["location"]).text
    assert "Created operator olga" in page and "olga" in page
    with session_scope(settings.DATABASE_URL) as s:
        actions = [(a.username, a.action, a.status) for a in s.scalars(select(AuditLog))]
    assert ("admin", "POST /admin/users", 303) in actions
    assert ("admin", "POST /admin/users", 403) in actions


def test_viewer_sees_no_buttons_and_is_refused(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    _viewer(app_client, admin_token)
    image = _image(settings, "kept")
    csrf = sign_in(app_client, "vera", "viewer-password")
    page = app_client.get(f"/images/{image}").text
    assert "Delete image" not in page and "Convert" not in page and "Upload" not in page
    assert "Admin" not in app_client.get("/").text
    forced = app_client.post(f"/images/{image}/delete", data={"csrf": csrf})
    assert forced.status_code == 403
    assert app_client.get("/admin").status_code == 403
    with session_scope(settings.DATABASE_URL) as s:
        assert s.get(Image, image) is not None


def _image(settings: Settings, name: str) -> str:
    with session_scope(settings.DATABASE_URL) as s:
        row = Image(
            name=name,
            image_type=ImageType.data,
            status=ImageStatus.ERROR,
            error="<b>not bold</b>",
            format="raw",
            details={},
        )
        s.add(row)
        s.flush()
        return row.id


def test_names_render_as_text(app_client: TestClient, settings: Settings) -> None:
    image = _image(settings, "<script>alert(1)</script>")
    sign_in(app_client)
    for page in ("/images", f"/images/{image}", "/images?q=%3Cscript%3E"):
        html = app_client.get(page).text
        assert "<script>alert(1)</script>" not in html, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, page
    assert "<b>not bold</b>" not in app_client.get(f"/images/{image}").text


def test_delete_refusal_shows_the_reason_on_the_page(
    app_client: TestClient, settings: Settings
) -> None:
    csrf = sign_in(app_client)
    resp = app_client.post(
        "/images/0000missing/delete",
        data={"csrf": csrf},
        headers={"referer": "http://testserver/images"},
        follow_redirects=False,
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/images"
    assert "was not found" in app_client.get("/images").text


def test_missing_page_is_a_friendly_404(app_client: TestClient) -> None:
    stranger = app_client.get("/no/such/page")
    assert stranger.status_code == 404 and "Back to the dashboard" in stranger.text
    sign_in(app_client)
    resp = app_client.get("/images/doesnotexist")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("text/html")
    assert "doesnotexist" in resp.text and "Back to the dashboard" in resp.text
    assert_problem(app_client.get("/api/v1/images/doesnotexist"), 401)


def test_bearer_api_is_unchanged_and_ignores_the_cookie(
    app_client: TestClient, admin_token: str
) -> None:
    assert app_client.get("/api/v1/images", headers=auth(admin_token)).status_code == 200
    sign_in(app_client)
    assert_problem(app_client.get("/api/v1/images"), 401)  # a cookie alone is no API login


def test_every_page_renders_for_admin(app_client: TestClient) -> None:
    sign_in(app_client)
    for page in [*PAGES, "/admin", "/account/tokens"]:
        resp = app_client.get(page)
        assert resp.status_code == 200, (page, resp.text[:500])
        assert "Log out" in resp.text


def test_static_files_are_vendored(app_client: TestClient) -> None:
    js = app_client.get("/static/vendor/htmx-2.0.11.min.js")
    assert js.status_code == 200 and "htmx" in js.text
    assert app_client.get("/static/vendor/htmx-LICENSE.txt").status_code == 200
    assert app_client.get("/static/console.css").status_code == 200


def test_expired_session_goes_to_login_and_back(app_client: TestClient, settings: Settings) -> None:
    sign_in(app_client)
    with session_scope(settings.DATABASE_URL) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == "console session"))
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    resp = app_client.get("/backups?limit=25", follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login?next=/backups%3Flimit%3D25"


def test_cookie_is_secure_over_https(settings: Settings) -> None:
    from diskvault.api.app import create_app

    with TestClient(create_app(settings), base_url="https://testserver") as client:
        nonce = csrf_of(client.get("/login").text)
        resp = client.post(
            "/login",
            data={"username": "admin", "password": "admin-password-for-tests", "csrf": nonce},
            follow_redirects=False,
        )
    assert resp.status_code == 303
    assert "Secure" in resp.headers["set-cookie"] and "HttpOnly" in resp.headers["set-cookie"]


def test_live_token_opens_the_upload_api_for_the_signed_in_user(app_client: TestClient) -> None:
    assert app_client.get("/session/live-token", follow_redirects=False).status_code == 303
    sign_in(app_client)
    token = app_client.get("/session/live-token").json()["token"]
    assert app_client.get("/api/v1/auth/me", headers=auth(token)).json()["username"] == "admin"


def test_bad_query_is_an_html_error_and_api_keeps_problem_json(
    app_client: TestClient, admin_token: str
) -> None:
    sign_in(app_client)
    resp = app_client.get("/images?limit=100000")
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("text/html")
    assert "limit" in resp.text
    api = app_client.get("/api/v1/images?limit=100000", headers=auth(admin_token))
    assert_problem(api, 422)
