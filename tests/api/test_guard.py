"""Auth, role and body limit are decided before the app reads a byte of the body.

Each request is driven straight through the ASGI app with a ``receive`` that
counts the body bytes the app asked for: a refused request must have taken none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from diskvault.config import Settings
from support.http import auth

GIB = 1024**3
CHUNK = b"{" + b" " * (1024 * 1024 - 1)  # 1 MiB of would-be JSON
CONVERT = "/api/v1/images/upload-x/convert"


@dataclass
class Sent:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    consumed: int = 0  # body bytes the app pulled through receive()


def call(
    client: TestClient,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    chunks: Iterator[bytes],
    disconnect_after: bool = False,
) -> Sent:
    """One request through the real app; the body arrives chunk by chunk on demand."""
    app: Any = client.app
    sent = Sent()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }

    async def receive() -> dict[str, Any]:
        chunk = next(chunks, None)
        if chunk is None:
            if disconnect_after:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": b"", "more_body": False}
        sent.consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.status = message["status"]
            sent.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            sent.body += message.get("body", b"")

    anyio.run(app, scope, receive, send)
    return sent


def gib_of_chunks() -> Iterator[bytes]:
    return iter([CHUNK] * (GIB // len(CHUNK)))


def _user(client: TestClient, admin_token: str, name: str, role: str) -> str:
    password = "password-" + name
    body = {"username": name, "password": password, "role": role}
    assert client.post("/api/v1/auth/signup", json=body, headers=auth(admin_token)).is_success
    login = client.post("/api/v1/auth/login", json={"username": name, "password": password})
    token: str = login.json()["access_token"]
    return token


def test_a_gib_with_no_token_is_refused_unread(app_client: TestClient) -> None:
    """Finding 1: the path starts like the upload route, so it was exempt and buffered."""
    length = {"content-type": "application/json", "content-length": str(GIB)}
    for headers in (length, {"content-type": "application/json"}):  # sized, then chunked
        sent = call(app_client, "POST", CONVERT, headers=headers, chunks=gib_of_chunks())
        assert sent.status == 401, sent.body
        assert sent.consumed == 0
        assert sent.headers["content-type"] == "application/problem+json"
        assert sent.headers["www-authenticate"] == "Bearer"


def test_the_upload_route_checks_token_and_role_before_reading(
    app_client: TestClient, admin_token: str
) -> None:
    viewer = _user(app_client, admin_token, "uploadviewer", "viewer")
    multipart = {"content-type": "multipart/form-data; boundary=x", "content-length": str(GIB)}
    anonymous = call(
        app_client, "POST", "/api/v1/images/upload", headers=multipart, chunks=gib_of_chunks()
    )
    assert (anonymous.status, anonymous.consumed) == (401, 0)
    as_viewer = call(
        app_client,
        "POST",
        "/api/v1/images/upload",
        headers={**multipart, **auth(viewer)},
        chunks=gib_of_chunks(),
    )
    assert (as_viewer.status, as_viewer.consumed) == (403, 0)
    assert b"operator" in as_viewer.body


def test_over_the_limit_is_413_before_or_while_reading(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    headers = {"content-type": "application/json", **auth(admin_token)}
    sized = call(
        app_client,
        "POST",
        CONVERT,
        headers={**headers, "content-length": str(GIB)},
        chunks=gib_of_chunks(),
    )
    assert (sized.status, sized.consumed) == (413, 0)
    assert b"DISKVAULT_MAX_BODY_BYTES" in sized.body
    chunked = call(app_client, "POST", CONVERT, headers=headers, chunks=gib_of_chunks())
    assert chunked.status == 413, chunked.body
    assert chunked.consumed <= settings.MAX_BODY_BYTES + len(CHUNK)
    assert b'"setting":"DISKVAULT_MAX_BODY_BYTES"' in chunked.body


def test_a_role_too_low_is_refused_before_the_body(
    app_client: TestClient, admin_token: str
) -> None:
    operator = _user(app_client, admin_token, "lowrole", "operator")
    headers = {"content-type": "application/json", "content-length": "100", **auth(operator)}
    sent = call(
        app_client, "PATCH", "/api/v1/users/someone", headers=headers, chunks=iter([b" " * 100])
    )
    assert (sent.status, sent.consumed) == (403, 0)
    assert b"admin" in sent.body


def test_a_client_leaving_mid_upload_is_an_info_line(
    app_client: TestClient, admin_token: str
) -> None:
    """Issue 14: the dropped upload ends the image in ERROR, logs no 500 and no traceback."""
    headers = {"content-type": "multipart/form-data; boundary=x", **auth(admin_token)}
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.img"\r\n\r\n'
    with capture_logs() as logs:
        sent = call(
            app_client,
            "POST",
            "/api/v1/images/upload",
            headers=headers,
            chunks=iter([part + b"\0" * 65536]),
            disconnect_after=True,
        )
    assert sent.status == 499
    assert all(e["log_level"] not in ("error", "exception", "critical") for e in logs), logs
    left = [e for e in logs if e["event"].startswith("client disconnected")]
    assert left and left[0]["log_level"] == "info"
    images = app_client.get("/api/v1/images", headers=auth(admin_token)).json()["items"]
    assert [i["status"] for i in images] == ["ERROR"]
