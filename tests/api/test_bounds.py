"""Issue 14 item 4: every number bounded, every path NUL-free, sources checked (422, not 500)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from support.backups_env import create_disk
from support.http import assert_problem, auth

HUGE = 2**63


def test_offset_2_63_on_every_paginated_list_is_422(
    app_client: TestClient, admin_token: str
) -> None:
    schema = app_client.get("/openapi.json").json()
    lists = [
        path
        for path, ops in schema["paths"].items()
        if any(p["name"] == "offset" for p in ops.get("get", {}).get("parameters", []))
    ]
    assert len(lists) >= 12
    for path in lists:
        concrete = path.replace("{", "").replace("}", "")
        for value in (HUGE, 2**31 + 1):
            resp = app_client.get(f"{concrete}?offset={value}", headers=auth(admin_token))
            assert "offset" in assert_problem(resp, 422)["detail"], path
        declared = next(
            p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "offset"
        )
        assert declared["schema"]["maximum"] == 2**31


def test_version_numbers_are_bounded(app_client: TestClient, admin_token: str) -> None:
    h = auth(admin_token)
    for method, path in (
        ("POST", f"/api/v1/images/x/versions/{HUGE}/rollback"),
        ("DELETE", f"/api/v1/images/x/versions/{HUGE}"),
    ):
        assert (
            "version" in assert_problem(app_client.request(method, path, headers=h), 422)["detail"]
        )


def test_nul_in_a_path_is_422(app_client: TestClient, admin_token: str, tmp_path: Path) -> None:
    h = auth(admin_token)
    repo = {"name": "nul", "path": f"{tmp_path}/a\x00b"}
    problem = assert_problem(app_client.post("/api/v1/repositories", json=repo, headers=h), 422)
    assert "path: must not contain a NUL byte" in problem["detail"]
    restore = {"target": "file", "path": "/tmp/x\x00"}
    problem = assert_problem(
        app_client.post("/api/v1/backup/abcd1234/restore", json=restore, headers=h), 422
    )
    assert "NUL" in problem["detail"]
    imported = {"path": "/srv/\x00.qcow2"}
    assert_problem(app_client.post("/api/v1/images/import", json=imported, headers=h), 422)
    assert_problem(app_client.get("/api/v1/images/ab%00c", headers=h), 422)
    assert_problem(app_client.get("/api/v1/restore/x/files?path=/a%00", headers=h), 422)


def test_days_are_finite_and_bounded(
    app_client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    h = auth(admin_token)
    for days in (1e308, 36501, -1, True, "7"):
        repo = {"name": "r", "path": str(tmp_path / "r"), "immutability_days": days}
        resp = app_client.post("/api/v1/repositories", json=repo, headers=h)
        assert "immutability_days" in assert_problem(resp, 422)["detail"], days
    assert not (tmp_path / "r").exists()
    ok = {"name": "r", "path": str(tmp_path / "r"), "immutability_days": 7}
    assert app_client.post("/api/v1/repositories", json=ok, headers=h).status_code == 201


def test_expires_days_must_be_an_integer(app_client: TestClient, admin_token: str) -> None:
    h = auth(admin_token)
    for value in (True, "30", 1.5, 2**63):
        body = {"name": "t", "expires_days": value}
        resp = app_client.post("/api/v1/auth/tokens", json=body, headers=h)
        assert "expires_days" in assert_problem(resp, 422)["detail"], value
    assert app_client.get("/api/v1/auth/tokens", headers=h).json() == []


def test_other_numbers_are_bounded(app_client: TestClient, admin_token: str) -> None:
    h = auth(admin_token)
    cases = [
        ("/api/v1/images/x/resize", {"size": HUGE}),
        ("/api/v1/backup/start", {"vm_name": "v", "speed": HUGE}),
        ("/api/v1/backup/prune", {"vm_name": "v", "keep_daily": HUGE}),
        ("/api/v1/backup/prune", {"vm_name": "v", "keep_daily": True}),
        ("/api/v1/policies", {"name": "p", "sources": ["v"], "max_chain_length": HUGE}),
    ]
    for path, body in cases:
        assert_problem(app_client.post(path, json=body, headers=h), 422)
    partition = app_client.get(f"/api/v1/restore/x/files?partition={HUGE}", headers=h)
    assert "partition" in assert_problem(partition, 422)["detail"]


def test_source_disks_must_exist_unless_unverified(
    app_client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    h = auth(admin_token)
    missing = str(tmp_path / "nope.qcow2")
    body = {"name": "vm", "kind": "qcow2", "disks": [missing]}
    problem = assert_problem(app_client.post("/api/v1/sources", json=body, headers=h), 422)
    assert f"{missing} does not exist" in problem["detail"] and "unverified" in problem["detail"]
    sock = {"name": "vm", "kind": "qmp", "socket": str(tmp_path / "q.sock"), "disks": ["n"]}
    assert_problem(app_client.post("/api/v1/sources", json=sock, headers=h), 422)
    if os.geteuid() != 0:  # root reads everything: the unreadable case needs a user
        locked = create_disk(tmp_path / "locked.qcow2", size=1024 * 1024)
        locked.chmod(0)
        raw = {"name": "vm", "kind": "raw", "path": str(locked)}
        problem = assert_problem(app_client.post("/api/v1/sources", json=raw, headers=h), 422)
        assert "not readable" in problem["detail"]
    assert app_client.get("/api/v1/sources", headers=h).json()["total"] == 0

    later = app_client.post("/api/v1/sources", json={**body, "unverified": True}, headers=h)
    assert later.status_code == 201, later.text
    assert later.json()["config"]["unverified"] is True
    disk = create_disk(tmp_path / "ok.qcow2", size=1024 * 1024)
    ok = {"name": "vm2", "kind": "qcow2", "disks": [str(disk)]}
    created = app_client.post("/api/v1/sources", json=ok, headers=h)
    assert created.status_code == 201 and "unverified" not in created.json()["config"]


def _unbounded(node: Any, where: str, comps: dict[str, Any], seen: frozenset[str]) -> list[str]:
    if isinstance(node, list):
        return [u for item in node for u in _unbounded(item, where, comps, seen)]
    if not isinstance(node, dict):
        return []
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return [] if name in seen else _unbounded(comps[name], where, comps, seen | {name})
    found = []
    if node.get("type") in ("integer", "number") and not (
        {"maximum", "exclusiveMaximum"} & node.keys()
    ):
        found.append(where)
    for key, value in node.items():
        if key == "properties":
            for name, prop in value.items():
                found += _unbounded(prop, f"{where}.{name}", comps, seen)
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            found += _unbounded(value, where, comps, seen)
    return found


def test_every_integer_the_api_takes_has_a_maximum(app_client: TestClient) -> None:
    """A new route or field without bounds fails here (2^63 was a 500)."""
    schema = app_client.get("/openapi.json").json()
    comps = schema["components"]["schemas"]
    unbounded = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                where = f"{method} {path} {param['name']}"
                unbounded += _unbounded(param["schema"], where, comps, frozenset())
            for content in op.get("requestBody", {}).get("content", {}).values():
                unbounded += _unbounded(content["schema"], f"{method} {path}", comps, frozenset())
    assert unbounded == []
