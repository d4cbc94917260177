"""The proof: a real ``diskvault serve``, a real tgtd and QEMU machines that network-boot.

QEMU (TCG; iPXE hung under KVM on these hosts) gets boot.ipxe over its
built-in TFTP, which chains ``/boot/ipxe?mac=`` on the server through the
user network (the guest's 10.0.2.2 is the host's 127.0.0.1). The served
script sanboots the machine's own target, which serves its writeback layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.boot_env import (
    cleanup_layers,
    pxe_vm,
    read_sector,
    sha256,
    tgtd_env,
    write_tftp,
)
from support.boot_sectors import MARKER, WRITE_OK, marker_sector, write_disk, writer_sector
from support.http import assert_problem
from support.jobs import wait_for
from support.server import ServerProcess
from support.targets_images import upload_image
from support.targets_tgtd import kill_tgtd, tgtd_pid, wait_until

MAC = "52:54:00:12:34:56"
WRITER_MAC = "52:54:00:12:34:57"
CLI = str(Path(sys.executable).parent / "diskvault")
ZERO_SECTOR = bytes(512)


class Lab:
    def __init__(self, server: ServerProcess, client: httpx.Client, tftp: Path) -> None:
        self.server, self.client, self.tftp = server, client, tftp

    def machine(self, machine_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/api/v1/machines/{machine_id}").json()
        return body

    def golden(self, image: dict[str, Any]) -> Path:
        return next((self.server.data_dir / "images" / image["id"]).glob("*.raw"))

    def disk(self, machine_id: str) -> Path:
        return self.server.data_dir / "writebacks" / machine_id / "disk.raw"

    def overlay_data(self, machine_id: str) -> list[dict[str, Any]]:
        """Extents the machine's overlay itself holds (depth 0), read while its daemon runs."""
        overlay = self.server.data_dir / "writebacks" / machine_id / "overlay.qcow2"
        out = subprocess.run(
            ["qemu-img", "map", "-U", "--output=json", "-f", "qcow2", str(overlay)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return [e for e in json.loads(out) if e["depth"] == 0 and e["data"]]

    def register(self, name: str, mac: str, image: dict[str, Any], mode: str) -> dict[str, Any]:
        body = {"name": name, "mac": mac, "image_id": image["id"], "mode": mode}
        resp = self.client.post("/api/v1/machines", json=body)
        assert resp.status_code == 201, resp.text
        machine: dict[str, Any] = resp.json()
        assert machine["status"] == "READY", machine
        return machine

    def wait(self, what: str, check: Callable[[], object]) -> None:
        wait_until(check, what=what, timeout=30)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    env = tgtd_env()
    data = tmp_path_factory.mktemp("boot-e2e")
    server = ServerProcess(data, env={**env, "DISKVAULT_BOOT_SESSION_CHECK_INTERVAL_S": "0.5"})
    server.start()
    try:
        with server.client(server.login()) as client:
            yield Lab(server, client, write_tftp(data / "tftp", server.port))
    finally:
        server.stop()
        cleanup_layers(data / "writebacks")
        port = int(env["DISKVAULT_TGT_CONTROL_PORT"])
        if tgtd_pid(port) is not None:
            kill_tgtd(port)


def _upload(lab: Lab, name: str, sector: bytes, tmp_path: Path) -> dict[str, Any]:
    image = upload_image(
        lab.client, name, write_disk(tmp_path / f"{name}.raw", sector).read_bytes()
    )
    assert image is not None, "the images upload API is required"
    assert image["format"] == "raw"
    return image


def _boot(lab: Lab, mac: str, log: Path, marker: bytes) -> Any:
    vm = pxe_vm(lab.tftp, mac, log).start()
    try:
        vm.wait_for_serial(marker, timeout=90)
    except BaseException:
        vm.stop()
        raise
    return vm


def test_marker_machine_boots_over_iscsi(lab: Lab, tmp_path: Path) -> None:
    image = _upload(lab, "marker", marker_sector(), tmp_path)
    golden_sum = sha256(lab.golden(image))
    machine = lab.register("marker-pc", MAC, image, "discard")
    sessions_url = f"/api/v1/machines/{machine['id']}/sessions"

    def latest() -> dict[str, Any]:
        items = lab.client.get(sessions_url).json()["items"]
        return items[0] if items else {}

    vm = _boot(lab, MAC, tmp_path / "serial.log", MARKER)
    try:
        assert MARKER in vm.serial()
        lab.wait("the machine's iSCSI login", lambda: lab.machine(machine["id"])["connected"])
        initiators = lab.machine(machine["id"])["initiators"]
        assert initiators == [machine["initiator_iqn"]]
        lab.wait("the session to record the login", lambda: latest().get("connected_at"))
    finally:
        vm.stop()
    lab.wait("the boot session to end", lambda: latest()["ended_at"])
    session = lab.client.get(sessions_url).json()["items"][0]
    assert session["connected_at"] is not None and session["initiator"] == initiators[0]
    assert session["client_address"] == "127.0.0.1"
    assert sha256(lab.golden(image)) == golden_sum


def test_writes_land_in_the_overlay_and_discard_and_apply_handle_them(
    lab: Lab, tmp_path: Path
) -> None:
    image = _upload(lab, "writer", writer_sector(), tmp_path)
    golden = lab.golden(image)
    golden_sum = sha256(golden)
    writer = lab.register("writer-pc", WRITER_MAC, image, "keep")
    follower = lab.register("follower-pc", "52:54:00:12:34:58", image, "discard")
    base = f"/api/v1/machines/{writer['id']}"

    def booted_and_written() -> None:
        vm = _boot(lab, WRITER_MAC, tmp_path / "writer.log", WRITE_OK)
        try:
            lab.wait("the writer's iSCSI login", lambda: lab.machine(writer["id"])["connected"])
            assert (
                "booted"
                in assert_problem(lab.client.post(f"{base}/writeback/apply"), 409)["detail"]
            )
            assert_problem(lab.client.post(f"{base}/writeback/discard"), 409)
            assert_problem(lab.client.delete(base), 409)
        finally:
            vm.stop()
        lab.wait("the writer to log out", lambda: not lab.machine(writer["id"])["connected"])

    # 1. The write lands in the writer's overlay, never in the golden image.
    booted_and_written()
    assert read_sector(lab.disk(writer["id"]), 1) == writer_sector()
    assert [e["start"] for e in lab.overlay_data(writer["id"])] == [0]
    assert read_sector(golden, 1) == ZERO_SECTOR
    assert sha256(golden) == golden_sum

    # 2. Discard throws it away.
    resp = lab.client.post(f"{base}/writeback/discard")
    assert resp.status_code == 200, resp.text
    assert read_sector(lab.disk(writer["id"]), 1) == ZERO_SECTOR
    assert lab.overlay_data(writer["id"]) == []

    # 3. Apply makes it part of a new current version of the image.
    booted_and_written()
    resp = lab.client.post(f"{base}/writeback/apply", json={"comment": "wrote LBA 1"})
    assert resp.status_code == 202, resp.text
    job = wait_for(lab.client, resp.json()["job_id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    assert job["result"]["version"] == 2
    listed = lab.client.get(f"/api/v1/images/{image['id']}/versions").json()["items"]
    assert [(v["version"], v["is_current"], v["parent_version"]) for v in listed] == [
        (2, True, 1),
        (1, False, None),
    ]
    assert listed[0]["comment"] == "wrote LBA 1"
    (version_file,) = (lab.server.data_dir / "images" / "versions" / image["id"]).glob("*.raw")
    assert read_sector(version_file, 1) == writer_sector()
    assert sha256(golden) == golden_sum

    # 4. Another machine picks the new version up at its next boot; rollback undoes that.
    assert lab.machine(follower["id"])["layer_version"] == 1
    assert read_sector(lab.disk(follower["id"]), 1) == ZERO_SECTOR
    script = lab.client.get("/boot/ipxe", params={"mac": follower["mac"]}).text
    assert "sanboot iscsi:127.0.0.1::" in script
    assert lab.machine(follower["id"])["layer_version"] == 2
    assert read_sector(lab.disk(follower["id"]), 1) == writer_sector()
    rollback = lab.client.post(f"/api/v1/images/{image['id']}/versions/1/rollback")
    assert rollback.status_code == 200, rollback.text
    assert (
        "follower-pc"
        in assert_problem(lab.client.delete(f"/api/v1/images/{image['id']}/versions/2"), 409)[
            "detail"
        ]
    )
    lab.client.get("/boot/ipxe", params={"mac": follower["mac"]})
    assert lab.machine(follower["id"])["layer_version"] == 1
    assert read_sector(lab.disk(follower["id"]), 1) == ZERO_SECTOR


def test_cli_lists_machines_and_versions_and_discards(lab: Lab) -> None:
    env = {
        **os.environ,
        "DISKVAULT_URL": lab.server.url,
        "DISKVAULT_TOKEN": lab.server.login(),
        "COLUMNS": "200",
    }

    def cli(*args: str) -> str:
        out = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr + out.stdout
        return out.stdout

    assert "writer-pc" in cli("machine", "list") and MAC in cli("machine", "list")
    assert "wrote LBA 1" in cli("image", "versions", "writer")
    assert "version 2 is current" in cli("image", "rollback", "writer", "2")
    assert "discarded" in cli("machine", "writeback", "discard", "writer-pc")
    added = cli("machine", "add", "cli-pc", "--mac", "52-54-00-AB-CD-EF", "--image", "marker")
    assert "52:54:00:ab:cd:ef" in added
    cli("machine", "rm", "cli-pc")
    assert "cli-pc" not in cli("machine", "list")
