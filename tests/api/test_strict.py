"""Issue 20: an unknown or misspelt field is refused, never silently ignored."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from support.http import assert_problem, auth

EXTRA = "zz_not_a_field"
# Streams its own multipart/sparse body: the query string is all FastAPI validates.
RAW_BODY = {("post", "/api/v1/images/upload")}


def _extra_body(op: dict[str, Any]) -> dict[str, Any]:
    """One unknown field; a tagged union (sources) also needs its tag to know its fields."""
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    body: dict[str, Any] = {EXTRA: 1}
    tag = schema.get("discriminator")
    if tag:
        body[tag["propertyName"]] = sorted(tag["mapping"])[0]
    return body


def _unknown(body: dict[str, Any], name: str) -> dict[str, Any]:
    hits = [e for e in body["errors"] if e["loc"][-1] == name]
    assert hits, body
    return hits[0]


def test_every_route_refuses_an_extra_field(app_client: TestClient, admin_token: str) -> None:
    """Walks the OpenAPI document: a new route that forgets the rule fails here."""
    schema = app_client.get("/openapi.json").json()
    checked = 0
    for path, ops in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "1234", path)  # a 4+ character id prefix
        for method, op in ops.items():
            has_body = "requestBody" in op and (method, path) not in RAW_BODY
            kwargs: dict[str, Any] = (
                {"json": _extra_body(op)} if has_body else {"params": {EXTRA: "1"}}
            )
            resp = app_client.request(method.upper(), concrete, headers=auth(admin_token), **kwargs)
            problem = assert_problem(resp, 422)
            err = _unknown(problem, EXTRA)
            assert err["loc"][0] == ("body" if has_body else "query"), (method, path, err)
            assert "unknown field" in err["msg"] and EXTRA in problem["detail"]
            checked += 1
    assert checked >= 60


def test_misspelt_field_names_every_unknown_and_creates_nothing(
    app_client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    h = auth(admin_token)
    body = {
        "name": "enc",
        "path": str(tmp_path / "enc"),
        "encrypt": "luks",
        "keyfile": "/k",
        "immutabilty_days": 3,
    }
    problem = assert_problem(app_client.post("/api/v1/repositories", json=body, headers=h), 422)
    assert {e["loc"][-1] for e in problem["errors"]} == {"encrypt", "keyfile", "immutabilty_days"}
    assert "did you mean `immutability_days`" in _unknown(problem, "immutabilty_days")["msg"]
    assert "did you mean `encryption`" in _unknown(problem, "encrypt")["msg"]
    assert "did you mean `key_file`" in _unknown(problem, "keyfile")["msg"]
    assert not (tmp_path / "enc").exists()
    listed = app_client.get("/api/v1/repositories", headers=h).json()["items"]
    assert "enc" not in [r["name"] for r in listed]

    policy = {"name": "p", "sources": ["vm"], "keep_dayly": 7}
    problem = assert_problem(app_client.post("/api/v1/policies", json=policy, headers=h), 422)
    assert "keep_dayly: unknown field; did you mean `keep_daily`?" in problem["detail"]
    assert app_client.get("/api/v1/policies", headers=h).json()["total"] == 0


def test_read_only_fields_are_called_read_only(app_client: TestClient, admin_token: str) -> None:
    body = {"name": "t", "id": "abc", "created_at": "2020-01-01T00:00:00Z"}
    problem = assert_problem(
        app_client.post("/api/v1/auth/tokens", json=body, headers=auth(admin_token)), 422
    )
    for name in ("id", "created_at"):
        err = _unknown(problem, name)
        assert err["type"] == "read_only" and "read-only" in err["msg"]
    assert app_client.get("/api/v1/auth/tokens", headers=auth(admin_token)).json() == []


def test_unknown_query_parameters_are_refused(app_client: TestClient, admin_token: str) -> None:
    h = auth(admin_token)
    problem = assert_problem(app_client.get("/api/v1/images?limt=5&stauts=x", headers=h), 422)
    assert "limt: unknown field; did you mean `limit`?" in problem["detail"]
    assert "stauts: unknown field; did you mean `status`?" in problem["detail"]
    assert app_client.get("/api/v1/images?limit=5&status=READY", headers=h).status_code == 200


def test_source_config_is_checked_by_its_kind(
    app_client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    h = auth(admin_token)
    typo = {"name": "s", "kind": "qcow2", "dsks": [str(tmp_path / "a.qcow2")]}
    problem = assert_problem(app_client.post("/api/v1/sources", json=typo, headers=h), 422)
    assert problem["detail"] == "dsks: unknown field; did you mean `disks`?"  # no "qcow2." tag
    # A field of another kind is unknown to this one.
    wrong_kind = {"name": "s", "kind": "qmp", "socket": "/run/q.sock", "disks": ["n"], "url": "x"}
    problem = assert_problem(app_client.post("/api/v1/sources", json=wrong_kind, headers=h), 422)
    assert _unknown(problem, "url")
    nested = {"name": "s", "kind": "nbd", "disks": [{"url": "nbd://h/x", "bitmpa": "b"}]}
    problem = assert_problem(app_client.post("/api/v1/sources", json=nested, headers=h), 422)
    # Only the object branch of `url-string | {url, bitmap}` is reported: the input was one.
    assert problem["detail"] == "disks.0.bitmpa: unknown field; did you mean `bitmap`?"
    assert app_client.get("/api/v1/sources", headers=h).json()["total"] == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/operations", {"type": "scan", "location": "file:///x", "dryrun": True}),
        ("/api/v1/targets", {"image_id": "x", "chap": {"user": "u", "secrte": "s"}}),
        ("/api/v1/machines", {"name": "m", "mac": "52:54:00:00:00:01", "image": "x"}),
    ],
)
def test_other_domains_are_strict_too(
    app_client: TestClient, admin_token: str, path: str, body: dict[str, Any]
) -> None:
    problem = assert_problem(app_client.post(path, json=body, headers=auth(admin_token)), 422)
    assert any("unknown field" in e["msg"] for e in problem["errors"]), problem
