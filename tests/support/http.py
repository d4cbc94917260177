"""Small HTTP helpers for tests."""

from __future__ import annotations

from typing import Any


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    """The response is RFC 9457 problem+json with ``status`` and a real detail."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["detail"] and isinstance(body["detail"], str)
    assert "Traceback" not in resp.text
    return body
