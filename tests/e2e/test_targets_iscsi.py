"""Targets end to end: a real ``diskvault serve`` managing its own tgtd, a real initiator.

The server starts tgtd itself (DISKVAULT_TGT_MANAGE=1) on a private control
port and a free 127.0.0.1 portal, so it never meets another test's tgtd. The
image is uploaded through the images API when that domain is built; until
then the known bytes are served by path (a file under WRITEBACK_PATH), which
goes through the same target code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diskvault.targets.backends import Chap
from support.http import assert_problem
from support.iscsi import IscsiError, IscsiSession, read_lun
from support.server import ServerProcess
from support.targets_images import upload_image
from support.targets_tgtd import (
    INITIATOR,
    OTHER_INITIATOR,
    free_control_port,
    free_tcp_port,
    kill_tgtd,
    tgtd_pid,
    unique_domain,
    wait_until,
    write_known_image,
)

API = "/api/v1/targets"
CLI = str(Path(sys.executable).parent / "diskvault")


class Env:
    def __init__(self, server: ServerProcess, control_port: int, portal: str) -> None:
        self.server = server
        self.control_port = control_port
        self.portal = portal


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    control_port = free_control_port()
    portal = f"127.0.0.1:{free_tcp_port()}"
    server = ServerProcess(
        tmp_path_factory.mktemp("targets-e2e"),
        env={
            "DISKVAULT_TGT_MANAGE": "1",
            "DISKVAULT_TGT_CONTROL_PORT": str(control_port),
            "DISKVAULT_ISCSI_PORTAL": portal,
            "DISKVAULT_IQN_DOMAIN": unique_domain(),
            "DISKVAULT_TARGET_RECONCILE_INTERVAL_S": "0.5",
        },
    )
    server.start()
    yield Env(server, control_port, portal)
    server.stop()
    if tgtd_pid(control_port) is not None:  # the server died without its shutdown hook
        kill_tgtd(control_port)


@pytest.fixture(scope="module")
def client(env: Env) -> Iterator[httpx.Client]:
    with env.server.client(env.server.login()) as c:
        yield c


@pytest.fixture(scope="module")
def known(env: Env, client: httpx.Client) -> tuple[dict[str, Any], bytes]:
    """(the request fields naming the known image, its bytes)."""
    path = env.server.data_dir / "writebacks" / "known.raw"
    data = write_known_image(path, seed=6)
    image = upload_image(client, "known", data)
    if image is None:  # no images domain: serve the same bytes by path
        return {"path": str(path)}, data
    assert image["format"] == "raw"
    return {"image_id": image["id"]}, data


def create(client: httpx.Client, source: dict[str, Any], **extra: Any) -> dict[str, Any]:
    resp = client.post(API, json={**source, **extra})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_managed_tgtd_started_with_the_server(env: Env) -> None:
    assert tgtd_pid(env.control_port) is not None


def test_read_back_byte_for_byte_and_other_initiator_refused(
    env: Env, client: httpx.Client, known: tuple[dict[str, Any], bytes], tmp_path: Path
) -> None:
    source, data = known
    target = create(client, source, name="read-back", initiators=[INITIATOR])
    out = read_lun(env.portal, target["iqn"], 1, tmp_path / "out.raw", INITIATOR)
    assert out.read_bytes() == data
    with pytest.raises(IscsiError):
        read_lun(env.portal, target["iqn"], 1, tmp_path / "other.raw", OTHER_INITIATOR)
    assert not (tmp_path / "other.raw").exists()
    assert client.delete(f"{API}/{target['id']}").status_code == 204


def test_chap_wrong_secret_refused_right_secret_works(
    env: Env, client: httpx.Client, known: tuple[dict[str, Any], bytes], tmp_path: Path
) -> None:
    source, data = known
    chap = {"user": "e2e-user", "secret": "e2e-secret-123"}
    target = create(client, source, name="chap", initiators=[INITIATOR], chap=chap)
    for wrong in (None, Chap("e2e-user", "not-the-secret")):
        with pytest.raises(IscsiError, match="Authentication failure"):
            read_lun(env.portal, target["iqn"], 1, tmp_path / "x.raw", INITIATOR, wrong)
    right = Chap(chap["user"], chap["secret"])
    out = read_lun(env.portal, target["iqn"], 1, tmp_path / "out.raw", INITIATOR, right)
    assert out.read_bytes() == data
    assert client.delete(f"{API}/{target['id']}").status_code == 204


def test_status_shows_connected_initiator_and_delete_needs_force(
    env: Env, client: httpx.Client, known: tuple[dict[str, Any], bytes]
) -> None:
    source, _ = known
    target = create(client, source, name="connected")
    with IscsiSession(env.portal, target["iqn"], 1, OTHER_INITIATOR):
        status = client.get(f"{API}/{target['id']}/status").json()
        assert status["connected"] and status["initiators"] == [OTHER_INITIATOR]
        assert_problem(client.delete(f"{API}/{target['id']}"), 409)
        assert client.get(f"{API}/{target['id']}").status_code == 200
        resp = client.delete(f"{API}/{target['id']}", params={"force": True})
        assert resp.status_code == 204
    assert_problem(client.get(f"{API}/{target['id']}"), 404)


def test_killed_tgtd_is_restarted_and_targets_come_back(
    env: Env, client: httpx.Client, known: tuple[dict[str, Any], bytes], tmp_path: Path
) -> None:
    source, data = known
    chap = Chap("back-user", "back-secret-123")
    target = create(
        client,
        source,
        name="survivor",
        initiators=[INITIATOR],
        chap={"user": chap.user, "secret": chap.secret},
    )
    old = kill_tgtd(env.control_port)
    # The periodic reconciler notices, starts a new tgtd and re-creates the target.
    wait_until(
        lambda: (
            tgtd_pid(env.control_port) not in (None, old)
            and client.get(f"{API}/{target['id']}/status").json().get("present")
        ),
        what="the reconciler to restart tgtd and re-create the target",
    )
    out = read_lun(env.portal, target["iqn"], 1, tmp_path / "out.raw", INITIATOR, chap)
    assert out.read_bytes() == data
    assert client.get(f"{API}/{target['id']}").json()["status"] == "ACTIVE"
    assert client.delete(f"{API}/{target['id']}").status_code == 204


def test_cli_create_list_status_restart_rm(
    env: Env, client: httpx.Client, known: tuple[dict[str, Any], bytes], tmp_path: Path
) -> None:
    source, data = known
    cli_env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path),
        "DISKVAULT_URL": env.server.url,
        "DISKVAULT_TOKEN": client.headers["authorization"].split()[1],
        "COLUMNS": "250",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, "target", *args], env=cli_env, capture_output=True, text=True, timeout=60
        )

    source_args = ["--image", source["image_id"]] if "image_id" in source else []
    source_args = source_args or ["--path", source["path"]]
    made = cli(
        "create",
        *source_args,
        "--name",
        "cli",
        "--initiator",
        INITIATOR,
        "--chap",
        "cli-user:cli-secret-123",
    )
    assert made.returncode == 0, made.stderr
    (target,) = client.get(API).json()["items"]
    assert target["id"] in made.stdout and target["chap_user"] == "cli-user"
    chap = Chap("cli-user", "cli-secret-123")
    out = read_lun(env.portal, target["iqn"], 1, tmp_path / "out.raw", INITIATOR, chap)
    assert out.read_bytes() == data

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    # Lists show ids at their shortest unique length, 8 characters at least.
    assert target["id"][:8] in listed.stdout and "ACTIVE" in listed.stdout
    status = cli("status", target["id"])
    assert status.returncode == 0 and "present" in status.stdout
    restarted = cli("restart", target["id"])
    assert restarted.returncode == 0 and target["iqn"] in restarted.stdout
    bad = cli("create", *source_args, "--chap", "no-colon")
    assert bad.returncode == 2 and "USER:SECRET" in bad.stderr
    dup = cli("create", *source_args, "--name", "cli")
    assert dup.returncode == 5 and "already exists" in dup.stderr
    with IscsiSession(env.portal, target["iqn"], 1, INITIATOR, chap):
        busy = cli("rm", target["id"])
        assert busy.returncode == 5 and "connected initiators" in busy.stderr
        assert cli("rm", target["id"], "--force").returncode == 0
    assert client.get(API).json()["total"] == 0


def test_image_in_use_cannot_be_deleted_and_qcow2_is_refused(
    env: Env, client: httpx.Client, known: tuple[dict[str, Any], bytes]
) -> None:
    source, data = known
    if "image_id" not in source:
        pytest.skip("the images domain is not built")
    target = create(client, source, name="in-use")
    problem = assert_problem(client.delete(f"/api/v1/images/{source['image_id']}"), 409)
    assert target["iqn"] in problem["detail"]
    assert client.delete(f"{API}/{target['id']}").status_code == 204
    qcow2 = upload_image(client, "as-qcow2", data[: 1024 * 1024], target_format="qcow2")
    assert qcow2 is not None and qcow2["format"] == "qcow2"
    problem = assert_problem(client.post(API, json={"image_id": qcow2["id"]}), 422)
    assert "raw" in problem["detail"]
    assert_problem(client.post(API, json={"image_id": "f" * 32}), 404)
    assert client.get(API).json()["total"] == 0


def test_shutdown_stops_the_managed_tgtd(env: Env) -> None:
    env.server.stop()
    assert tgtd_pid(env.control_port) is None, env.server.log()[-6000:]
