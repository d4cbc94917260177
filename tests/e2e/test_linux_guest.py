"""A real Linux guest (Debian kernel, busybox initramfs, extlinux) backed up, boot-verified
under TCG and instantly recovered through ``/boot/ipxe``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from diskvault.tools import qemu_img
from support.boot_env import cleanup_layers, pxe_vm, tgtd_env, write_tftp
from support.jobs import wait_for
from support.linux_guest import LINUX_MARKER, build_disk, missing
from support.server import ServerProcess
from support.targets_tgtd import kill_tgtd, tgtd_pid

pytestmark = pytest.mark.slow
MAC = "52:54:00:12:34:57"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    if why := missing():
        pytest.fail(f"the Linux test guest cannot be built: {why}; run scripts/install-system-deps")
    env = {
        **tgtd_env(),
        "DISKVAULT_BOOT_VERIFY_ACCEL": "tcg",
        "DISKVAULT_BOOT_VERIFY_MEMORY_MB": "128",
        "DISKVAULT_WORKERS": "2",
    }
    data = tmp_path_factory.mktemp("linux-e2e")
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


def _backup(client: httpx.Client, kind: str) -> dict[str, Any]:
    resp = client.post("/api/v1/backup/start", json={"vm_name": "linux", "backup_type": kind})
    job = wait_for(client, resp.json()["id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    point: dict[str, Any] = client.get(f"/api/v1/backup/{job['result']['backup_ids'][0]}").json()
    assert point["backup_type"] == kind
    return point


def _verify(client: httpx.Client, point: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(f"/api/v1/backup/{point['id']}/verify-boot")
    assert resp.status_code == 202, resp.text
    wait_for(client, resp.json()["id"], {"succeeded", "failed"}, timeout=120)
    shown: dict[str, Any] = client.get(f"/api/v1/backup/{point['id']}").json()
    return shown


def test_linux_guest_verifies_fails_when_broken_and_recovers_over_ipxe(
    srv: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    server, tftp = srv
    raw = build_disk(tmp_path / "linux.raw")
    disk = tmp_path / "linux.qcow2"
    qemu_img.convert(raw, "raw", disk, "qcow2")
    with server.client(server.login()) as client:
        body = {"name": "linux", "kind": "qcow2", "disks": [str(disk)], "boot_timeout_s": 60}
        assert client.post("/api/v1/sources", json=body).status_code == 201
        good = _backup(client, "full")
        shown = _verify(client, good)
        assert shown["boot_status"] == "passed", shown
        shot = client.get(shown["boot_screenshot_url"])
        assert shot.status_code == 200 and len(set(shot.content)) > 16

        # A broken MBR in the source: the next (incremental) point no longer boots.
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -z 0 512", str(disk)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        broken = _backup(client, "incremental")
        shown = _verify(client, broken)
        assert shown["boot_status"] == "failed" and "bootable" in shown["boot_detail"], shown
        assert _verify(client, good)["boot_status"] == "passed"

        # Instant recovery of the good point: the guest boots it through iPXE.
        resp = client.post(f"/api/v1/backup/{good['id']}/boot", json={"mac": MAC})
        assert resp.status_code == 201, resp.text
        vm = pxe_vm(tftp, MAC, tmp_path / "serial.log").start()
        try:
            vm.wait_for_serial(LINUX_MARKER, timeout=120)
        finally:
            vm.stop()
        assert client.delete(f"/api/v1/recoveries/{resp.json()['id']}").status_code == 204
