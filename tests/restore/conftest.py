"""Session-wide guest disks and backups (see ``support.restore_world``), the
in-process app on their database, and a mount of the newest gpt point per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from diskvault.db.engine import session_scope
from diskvault.restore import service
from diskvault.tools import mount as mount_tool
from support.restore_world import World, build_world
from support.server import ADMIN_PASSWORD

NEEDS = "needs loop devices and FUSE"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    if not (mount_tool.loop_available() and mount_tool.fuse_available()):
        pytest.skip(NEEDS)
    return build_world(tmp_path_factory.mktemp("restore"))


@pytest.fixture(scope="session")
def api(world: World) -> Iterator[TestClient]:
    """The in-process app on the world's database, logged in as admin."""
    from diskvault.api.app import create_app

    with TestClient(create_app(world.settings)) as client:
        resp = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        client.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
        yield client


@pytest.fixture(scope="module")
def gpt_mount(world: World, api: TestClient) -> Iterator[str]:
    """The newest gpt point, mounted once per module that browses it."""
    resp = api.post("/api/v1/restore/mount", json={"backup_id": world.gpt_points[-1]})
    assert resp.status_code == 201, resp.text
    mount_id: str = resp.json()["mount_id"]
    yield mount_id
    with session_scope(world.settings.DATABASE_URL) as s:
        service.unmount(s, world.settings, mount_id)
