"""The targets API in-process (TestClient) against the shared private tgtd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from diskvault.config import Settings
from diskvault.targets.backends import TgtBackend
from diskvault.tools.tgt import TgtdServer
from support.http import assert_problem, auth
from support.iscsi import IscsiSession
from support.targets_tgtd import INITIATOR, OTHER_INITIATOR, target_settings, write_known_image

API = "/api/v1/targets"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, tgtd: TgtdServer) -> Settings:
    """Overrides the shared ``settings``: ``app_client`` then talks to the test tgtd."""
    from support.server import ADMIN_PASSWORD

    return target_settings(
        tmp_path / "data",
        db_url,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        TGT_CONTROL_PORT=tgtd.control_port,
        ISCSI_PORTAL=tgtd.portal,
        # The app's scheduler would re-create a target a test removes behind its back
        # whenever a reconcile tick falls in between (seen under load).
        TARGET_RECONCILE_INTERVAL_S=3600,
    )


@pytest.fixture
def client(app_client: TestClient, admin_token: str) -> Iterator[TestClient]:
    app_client.headers.update(auth(admin_token))
    yield app_client
    for target in app_client.get(API, params={"limit": 1000}).json()["items"]:
        app_client.delete(f"{API}/{target['id']}", params={"force": True})


@pytest.fixture
def disk(settings: Settings) -> Path:
    path = settings.writeback_dir / "disk.raw"
    write_known_image(path)
    return path


def iqns(backend: TgtBackend) -> set[str]:
    return {t.iqn for t in backend.list_targets()}


def create(client: TestClient, disk: Path, **extra: Any) -> dict[str, Any]:
    resp = client.post(API, json={"path": str(disk), **extra})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_create_get_list_machine(client: TestClient, disk: Path, tgt_backend: TgtBackend) -> None:
    made = create(
        client,
        disk,
        name="pc-01",
        initiators=[INITIATOR],
        machine_id="machine-1",
        chap={"user": "api-user", "secret": "api-secret-123"},
    )
    assert made["status"] == "ACTIVE"
    assert made["iqn"].endswith(":pc-01")
    assert made["lun"] == 1 and made["initiators"] == [INITIATOR]
    assert made["chap_user"] == "api-user" and made["owner"] == "admin"
    assert "api-secret-123" not in str(made) and "chap_secret" not in made
    assert made["iqn"] in iqns(tgt_backend)
    assert client.get(f"{API}/{made['id']}").json()["iqn"] == made["iqn"]
    assert client.get(f"{API}/machine/machine-1").json()["id"] == made["id"]
    assert_problem(client.get(f"{API}/machine/nobody"), 404)
    assert_problem(client.get(f"{API}/{'0' * 32}"), 404)
    create(client, disk, name="pc-02")
    page = client.get(API, params={"limit": 1}).json()
    assert (page["total"], len(page["items"]), page["limit"]) == (2, 1, 1)
    assert client.get(API, params={"status": "ERROR"}).json()["total"] == 0


BAD_INPUT = [
    ({"iqn": "iqn.2024-01.com.Example:x"}, 422, "lowercase"),
    ({"iqn": "eui.123"}, 422, "16 hex digits"),
    ({"initiators": ["iqn.2024-01.com.example:has space"]}, 422, "suffix"),
    ({"portal": "192.0.2.1:3260"}, 422, "not an address of this host"),
    ({"portal": "127.0.0.1:99999"}, 422, "1-65535"),
    ({"lun": 0}, 422, "lun"),
    ({"chap": {"user": "u", "secret": "with space"}}, 422, "CHAP"),
    ({"mutual_chap": {"user": "m", "secret": "mutual-secret-1"}}, 422, "mutual CHAP needs"),
    ({"path": "/etc/hostname"}, 422, "only files under"),
    ({"path": None}, 422, "exactly one"),
    ({"image_id": "abc"}, 422, "exactly one"),
]


def test_bad_input_is_4xx_and_creates_nothing(
    client: TestClient, disk: Path, tgt_backend: TgtBackend
) -> None:
    before = iqns(tgt_backend)
    for body, status, needle in BAD_INPUT:
        problem = assert_problem(client.post(API, json={"path": str(disk), **body}), status)
        assert needle in problem["detail"], (body, problem)
    assert iqns(tgt_backend) == before
    assert client.get(API).json()["total"] == 0


def test_duplicate_iqn_is_409(client: TestClient, disk: Path, tgt_backend: TgtBackend) -> None:
    made = create(client, disk, name="twice")
    before = iqns(tgt_backend)
    problem = assert_problem(client.post(API, json={"path": str(disk), "name": "twice"}), 409)
    assert made["iqn"] in problem["detail"]
    assert iqns(tgt_backend) == before and client.get(API).json()["total"] == 1


def test_rollback_when_a_backend_step_fails(
    client: TestClient, disk: Path, tgt_backend: TgtBackend
) -> None:
    create(client, disk, name="owner", chap={"user": "taken", "secret": "first-secret-1"})
    before = iqns(tgt_backend)
    body = {"path": str(disk), "name": "thief", "chap": {"user": "taken", "secret": "x-secret-2"}}
    problem = assert_problem(client.post(API, json=body), 409)
    assert "already bound" in problem["detail"]
    assert iqns(tgt_backend) == before
    assert [t["name"] for t in client.get(API).json()["items"]] == ["owner"]


def test_status_delete_409_unless_force_and_restart(
    client: TestClient, disk: Path, tgt_backend: TgtBackend, tgtd: TgtdServer
) -> None:
    made = create(client, disk, name="live", initiators=[INITIATOR, OTHER_INITIATOR])
    idle = client.get(f"{API}/{made['id']}/status").json()
    assert (idle["present"], idle["connected"], idle["initiators"]) == (True, False, [])
    with IscsiSession(tgtd.portal, made["iqn"], 1, OTHER_INITIATOR):
        live = client.get(f"{API}/{made['id']}/status").json()
        assert live["connected"] and live["initiators"] == [OTHER_INITIATOR]
        assert live["sessions"][0]["addresses"] == ["127.0.0.1"]
        assert (
            OTHER_INITIATOR in assert_problem(client.delete(f"{API}/{made['id']}"), 409)["detail"]
        )
        assert_problem(client.post(f"{API}/{made['id']}/restart"), 409)
        restarted = client.post(f"{API}/{made['id']}/restart", params={"force": True})
        assert restarted.status_code == 200 and restarted.json()["status"] == "ACTIVE"
    tgt_backend.delete_target(made["iqn"])
    assert client.get(f"{API}/{made['id']}/status").json()["present"] is False
    assert client.post(f"{API}/{made['id']}/restart").json()["status"] == "ACTIVE"
    assert client.delete(f"{API}/{made['id']}").status_code == 204
    assert made["iqn"] not in iqns(tgt_backend)
    assert_problem(client.get(f"{API}/{made['id']}"), 404)


def test_viewer_can_read_but_not_change(client: TestClient, disk: Path) -> None:
    made = create(client, disk, name="viewed")
    resp = client.post(
        "/api/v1/auth/signup",
        json={"username": "viewer1", "password": "viewer-password", "role": "viewer"},
    )
    assert resp.status_code == 201, resp.text
    login = client.post(
        "/api/v1/auth/login", json={"username": "viewer1", "password": "viewer-password"}
    )
    viewer = auth(login.json()["access_token"])
    assert client.get(f"{API}/{made['id']}", headers=viewer).status_code == 200
    assert_problem(client.post(API, json={"path": str(disk)}, headers=viewer), 403)
    assert_problem(client.delete(f"{API}/{made['id']}", headers=viewer), 403)
    assert_problem(client.post(f"{API}/{made['id']}/restart", headers=viewer), 403)
    assert_problem(client.get(API, headers={"Authorization": ""}), 401)
