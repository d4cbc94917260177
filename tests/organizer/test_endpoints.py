"""The operations API in-process (no worker runs: jobs stay queued)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from diskvault.config import Settings
from support.http import assert_problem, auth


@pytest.fixture
def share(settings: Settings, tmp_path: Path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    settings.ORGANIZER_ROOTS = [root.as_uri()]
    return root


def test_create_list_get_and_items(share: Path, app_client: TestClient, admin_token: str) -> None:
    headers = auth(admin_token)
    resp = app_client.post(
        "/api/v1/operations", json={"type": "scan", "location": str(share)}, headers=headers
    )
    assert resp.status_code == 202, resp.text
    op = resp.json()
    assert (op["type"], op["status"], op["location"]) == ("scan", "queued", share.as_uri())

    job = app_client.get(f"/api/v1/jobs/{op['id']}", headers=headers).json()
    assert job["kind"] == "organizer-scan"  # the operation id is its job's id

    listed = app_client.get("/api/v1/operations", params={"type": "scan"}, headers=headers)
    assert [o["id"] for o in listed.json()["items"]] == [op["id"]]
    assert (
        app_client.get(f"/api/v1/operations/{op['id']}", headers=headers).json()["id"] == op["id"]
    )
    page = app_client.get(f"/api/v1/operations/{op['id']}/items", headers=headers).json()
    assert (page["kind"], page["total"]) == ("files", 0)


def test_plan_needs_valid_rules_and_rollback_needs_a_finished_change(
    share: Path, app_client: TestClient, admin_token: str
) -> None:
    headers = auth(admin_token)
    body = {"type": "plan", "location": share.as_uri()}
    assert (
        "rules"
        in assert_problem(app_client.post("/api/v1/operations", json=body, headers=headers), 400)[
            "detail"
        ]
    )
    body["rules"] = [{"action": "copy", "destination": "x/{name}"}]
    plan = app_client.post("/api/v1/operations", json=body, headers=headers).json()
    assert plan["params"]["dry_run"] is True
    assert_problem(
        app_client.post(
            "/api/v1/operations", json={"type": "apply", "plan_id": plan["id"]}, headers=headers
        ),
        409,
    )  # the plan has not run yet
    applied = app_client.post(
        "/api/v1/operations", json={**body, "type": "apply"}, headers=headers
    ).json()
    assert_problem(
        app_client.post(f"/api/v1/operations/{applied['id']}/rollback", headers=headers), 409
    )  # still queued
    assert_problem(
        app_client.post(
            "/api/v1/operations",
            json={"type": "dedupe", "location": share.as_uri(), "strategy": "shred"},
            headers=headers,
        ),
        422,
    )
    assert_problem(app_client.get("/api/v1/operations"), 401)
