"""Path ids: a full id, a unique prefix of 4+ characters, or the name, on every route."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.images.models import Image, ImageStatus
from support.backups_env import create_disk
from support.http import assert_problem, auth

IDS = ["cafe0001" + "0" * 24, "cafe0002" + "0" * 24, "f00d" + "7" * 28]


def test_path_ids_take_prefixes_and_names(
    app_client: TestClient, admin_token: str, settings: Settings, tmp_path: Path
) -> None:
    h = auth(admin_token)
    with session_scope(settings.DATABASE_URL) as s:
        for i, id_ in enumerate(IDS):
            s.add(Image(id=id_, name=f"img-{i}", status=ImageStatus.READY, format="raw"))

    def image(ref: str) -> str:
        resp = app_client.get(f"/api/v1/images/{ref}", headers=h)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["id"])

    assert image(IDS[2]) == IDS[2]
    assert image("f00d") == IDS[2]
    assert image("CAFE0002") == IDS[1]
    assert image("img-0") == IDS[0]
    ambiguous = assert_problem(app_client.get("/api/v1/images/cafe", headers=h), 409)
    assert "cafe0001" in ambiguous["detail"] and "cafe0002" in ambiguous["detail"]
    assert (
        "at least 4"
        in assert_problem(app_client.get("/api/v1/images/caf", headers=h), 422)["detail"]
    )
    assert_problem(app_client.get("/api/v1/images/beadbead", headers=h), 404)
    # Changes take them too.
    resp = app_client.delete("/api/v1/images/img-1", headers=h)
    assert resp.status_code in (200, 202, 204), resp.text
    assert_problem(app_client.get(f"/api/v1/images/{IDS[1]}", headers=h), 404)
    assert image("cafe") == IDS[0]  # no longer ambiguous

    # Sources (already "name or id") gain prefixes.
    disk = create_disk(tmp_path / "a.qcow2", size=1024 * 1024)
    body = {"name": "vm-a", "kind": "qcow2", "path": str(disk)}
    source = app_client.post("/api/v1/sources", json=body, headers=h).json()
    assert app_client.get(f"/api/v1/sources/{source['id'][:6]}", headers=h).json()["name"] == "vm-a"
