"""Instant recovery end to end: a real ``diskvault serve``, tgtd and an iPXE-booting QEMU.

A qcow2 source holding the INT 13h writer boot sector is backed up; the
restore point is booted on a MAC through ``/boot/ipxe`` (iPXE sanboots its
recovery target); the guest's write lands in the recovery's overlay, promote
carries it into a new image, and the chain's files are unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diskvault.boot import writeback
from diskvault.boot.recovery import layer_key
from diskvault.config import load_settings
from diskvault.tools import qemu_img
from support.boot_env import cleanup_layers, pxe_vm, read_sector, sha256, tgtd_env, write_tftp
from support.boot_sectors import WRITE_OK, write_disk, writer_sector
from support.http import assert_problem
from support.jobs import wait_for
from support.server import ServerProcess
from support.targets_tgtd import kill_tgtd, tgtd_pid

MAC = "52:54:00:12:34:57"
CLI = str(Path(sys.executable).parent / "diskvault")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    env = tgtd_env()
    data = tmp_path_factory.mktemp("recovery-e2e")
    server = ServerProcess(data, env=env)
    server.start()
    try:
        yield server, write_tftp(data / "tftp", server.port)
    finally:
        server.stop()
        cleanup_layers(data / "writebacks")
        port = int(env["DISKVAULT_TGT_CONTROL_PORT"])
        if tgtd_pid(port) is not None:
            kill_tgtd(port)


def _cli(server: ServerProcess, token: str, *args: str) -> str:
    env = {**os.environ, "DISKVAULT_URL": server.url, "DISKVAULT_TOKEN": token, "COLUMNS": "200"}
    out = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def _point(client: httpx.Client, tmp_path: Path) -> dict[str, Any]:
    raw = write_disk(tmp_path / "writer.raw", writer_sector())
    disk = tmp_path / "writer.qcow2"
    qemu_img.convert(raw, "raw", disk, "qcow2")
    resp = client.post(
        "/api/v1/sources", json={"name": "writer", "kind": "qcow2", "disks": [str(disk)]}
    )
    assert resp.status_code == 201, resp.text
    resp = client.post("/api/v1/backup/start", json={"vm_name": "writer", "backup_type": "full"})
    job = wait_for(client, resp.json()["id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    point: dict[str, Any] = client.get(f"/api/v1/backup/{job['result']['backup_ids'][0]}").json()
    return point


def test_a_restore_point_boots_over_ipxe_and_its_writes_are_promoted(
    srv: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    server, tftp = srv
    token = server.login()
    with server.client(token) as client:
        point = _point(client, tmp_path)
        folder = server.data_dir / "backups" / Path(point["path"]).parent
        chain_sums = {p.name: sha256(p) for p in folder.iterdir()}

        booted = _cli(server, token, "backup", "boot", point["id"][:12], "--mac", MAC)
        assert "52:54:00:12:34:57" in booted
        (rec,) = client.get("/api/v1/recoveries").json()["items"]
        settings = load_settings(DATA_DIR=server.data_dir)
        layer = writeback.layer_paths(settings, layer_key(rec["id"]))

        vm = pxe_vm(tftp, MAC, tmp_path / "serial.log").start()
        try:
            vm.wait_for_serial(WRITE_OK, timeout=90)
            refused = assert_problem(client.delete(f"/api/v1/backup/{point['id']}"), 409)
            assert rec["id"] in refused["detail"]
        finally:
            vm.stop()
        # The guest's INT 13h write is in the overlay, served at LBA 1.
        assert read_sector(layer.disk, 1) == writer_sector()
        assert "(temporary)" in _cli(server, token, "recovery", "list")

        promoted = _cli(
            server, token, "recovery", "promote", MAC, "--to", "image", "--name", "recovered"
        )
        assert "image_id" in promoted
        image = client.get("/api/v1/images", params={"limit": 100}).json()["items"]
        (row,) = [i for i in image if i["name"] == "recovered"]
        for _ in range(600):
            row = client.get(f"/api/v1/images/{row['id']}").json()
            if row["status"] in ("READY", "ERROR", "FAILED"):
                break
            time.sleep(0.1)
        assert row["status"] == "READY", row
        (stored,) = (server.data_dir / "images" / row["id"]).glob("*")
        flat = tmp_path / "flat.raw"
        qemu_img.convert(stored, row["format"], flat, "raw")
        assert read_sector(flat, 0) == writer_sector() and read_sector(flat, 1) == writer_sector()

        assert "stopped" in _cli(server, token, "recovery", "stop", MAC)
        assert not layer.root.exists()
        assert {p.name: sha256(p) for p in folder.iterdir()} == chain_sums
        assert qemu_img.compare(server.data_dir / "backups" / point["path"], flat) is False
