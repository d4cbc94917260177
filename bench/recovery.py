"""Instant recovery against the classic restore-then-boot, and boot verification, for a real
Linux guest (Debian kernel, busybox initramfs, extlinux) on sparse disks of several sizes.

For each size: a qcow2 source holding the guest is backed up through a real
``diskvault serve`` (private tgtd, QEMU under TCG). Then, in one run:

- instant recovery: from ``POST /backup/{id}/boot`` to the guest's iSCSI login
  (the first read follows it at once) and to its marker on the serial port,
  with QEMU PXE-booting through ``/boot/ipxe``;
- classic: ``POST /backup/{id}/restore`` to a raw file, then QEMU boots that file
  as a local disk (no PXE, no iSCSI);
- classic, diskless: ``POST /backup/{id}/restore`` into the image library, then a
  machine on that image PXE-boots it through ``/boot/ipxe`` and iSCSI: the same boot
  path as instant recovery, so the two differ only in the restore;
- boot verification of one point, and of 4 points at once.

    sudo .venv/bin/python bench/recovery.py                   # 1 GiB and 8 GiB
    sudo .venv/bin/python bench/recovery.py --sizes-gib 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Table, ratio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from diskvault.tools import qemu_img  # noqa: E402
from support.boot_env import cleanup_layers, pxe_vm, tgtd_env, write_tftp  # noqa: E402
from support.jobs import wait_for  # noqa: E402
from support.linux_guest import LINUX_MARKER, build_disk  # noqa: E402
from support.qemu_vm import QemuVM  # noqa: E402
from support.server import ServerProcess  # noqa: E402
from support.targets_tgtd import kill_tgtd, tgtd_pid  # noqa: E402

GiB = 1024**3
MAC = "52:54:00:12:34:57"
PARALLEL = 4


def job(client: Any, resp: Any, timeout: float = 900) -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    done: dict[str, Any] = wait_for(client, resp.json()["id"], {"succeeded", "failed"}, timeout)
    return done


def instant(client: Any, tftp: Path, point: str, logs: Path) -> tuple[float, float]:
    started = time.monotonic()
    resp = client.post(f"/api/v1/backup/{point}/boot", json={"mac": MAC})
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    vm = pxe_vm(tftp, MAC, logs / "instant.log").start()
    login = 0.0
    try:
        while not login:
            status = client.get(f"/api/v1/targets/{rec['target_id']}/status").json()
            if status.get("initiators") or status.get("sessions"):
                login = time.monotonic() - started
            elif not vm.running or time.monotonic() - started > 300:
                raise RuntimeError("the guest never logged in")
            time.sleep(0.05)
        vm.wait_for_serial(LINUX_MARKER, timeout=300)
        marker = time.monotonic() - started
    finally:
        vm.stop()
    assert client.delete(f"/api/v1/recoveries/{rec['id']}").status_code == 204
    return login, marker


def classic(client: Any, server: ServerProcess, point: str, logs: Path) -> tuple[float, float]:
    dest = server.data_dir / "restores" / f"{point}.raw"
    started = time.monotonic()
    body = {"target": "file", "path": str(dest), "format": "raw"}
    done = job(client, client.post(f"/api/v1/backup/{point}/restore", json=body))
    assert done["status"] == "succeeded", done
    restored = time.monotonic() - started
    log = logs / "classic.log"
    args = ["-accel", "tcg", "-m", "128", "-display", "none", "-nic", "none",
            "-serial", f"file:{log}", "-drive", f"file={dest},format=raw,if=ide"]  # fmt: skip
    with QemuVM(args, serial_log=log) as vm:
        vm.wait_for_serial(LINUX_MARKER, timeout=300)
    total = time.monotonic() - started
    dest.unlink()
    return restored, total


def classic_pxe(client: Any, tftp: Path, point: str, logs: Path) -> tuple[float, float]:
    started = time.monotonic()
    body = {"target": "image", "image_name": f"restored-{point[:8]}"}
    done = job(client, client.post(f"/api/v1/backup/{point}/restore", json=body))
    assert done["status"] == "succeeded", done
    image_id = done["result"]["image_id"]
    while (row := client.get(f"/api/v1/images/{image_id}").json())["status"] != "READY":
        assert row["status"] != "ERROR", row
        time.sleep(0.05)
    restored = time.monotonic() - started
    body = {"name": "classic", "mac": MAC, "image_id": image_id, "mode": "discard"}
    resp = client.post("/api/v1/machines", json=body)
    assert resp.status_code == 201, resp.text
    vm = pxe_vm(tftp, MAC, logs / "classic-pxe.log").start()
    try:
        vm.wait_for_serial(LINUX_MARKER, timeout=300)
        total = time.monotonic() - started
    finally:
        vm.stop()
    assert client.delete(f"/api/v1/machines/{resp.json()['id']}?force=true").status_code == 204
    return restored, total


def verify_many(client: Any, points: list[str]) -> float:
    started = time.monotonic()
    responses = [client.post(f"/api/v1/backup/{p}/verify-boot") for p in points]
    for resp in responses:
        assert job(client, resp)["status"] == "succeeded"
    return time.monotonic() - started


def measure(size: int, tmp: Path, table: Table) -> None:
    env = {
        **tgtd_env(),
        "DISKVAULT_BOOT_VERIFY_ACCEL": "tcg",
        "DISKVAULT_BOOT_VERIFY_CONCURRENCY": str(PARALLEL),
        "DISKVAULT_WORKERS": str(PARALLEL + 1),
    }
    control_port = int(env["DISKVAULT_TGT_CONTROL_PORT"])
    data = tmp / "server"
    server = ServerProcess(data, env=env)
    server.start()
    try:
        with server.client(server.login()) as client:
            raw = build_disk(tmp / "guest.raw", size)
            disk = tmp / "guest.qcow2"
            qemu_img.convert(raw, "raw", disk, "qcow2")
            raw.unlink()
            body = {"name": "guest", "kind": "qcow2", "disks": [str(disk)]}
            assert client.post("/api/v1/sources", json=body).status_code == 201
            points = []
            for kind in ["full"] + ["incremental"] * (PARALLEL - 1):
                body = {"vm_name": "guest", "backup_type": kind}
                done = job(client, client.post("/api/v1/backup/start", json=body))
                assert done["status"] == "succeeded", done
                points += done["result"]["backup_ids"]
            logs = tmp / "logs"
            logs.mkdir(exist_ok=True)
            tftp = write_tftp(tmp / "tftp", server.port)
            login, marker = instant(client, tftp, points[0], logs)
            restored, total = classic(client, server, points[0], logs)
            pxe_restored, pxe_total = classic_pxe(client, tftp, points[0], logs)
            one = verify_many(client, points[:1])
            four = verify_many(client, points)
    finally:
        server.stop()
        cleanup_layers(data / "writebacks")
        if tgtd_pid(control_port) is not None:
            kill_tgtd(control_port)
    gib = f"{size / GiB:.0f} GiB"
    table.add(f"{gib}: instant recovery, API call to iSCSI login", login, ratio(login, total))
    table.add(f"{gib}: instant recovery, API call to marker", marker, ratio(marker, total))
    table.add(f"{gib}: classic restore (raw file)", restored, ratio(restored, total))
    table.add(f"{gib}: classic restore + boot to marker", total, "1.00x")
    table.add(f"{gib}: classic restore into the library", pxe_restored, ratio(pxe_restored, total))
    table.add(f"{gib}: classic restore + PXE/iSCSI boot", pxe_total, ratio(pxe_total, total))
    like = f"{ratio(marker, pxe_total)} of the PXE/iSCSI classic path"
    table.add(f"{gib}: instant recovery to marker (like for like)", marker, like)
    table.add(f"{gib}: boot verification, 1 point", one, ratio(one, total))
    table.add(f"{gib}: boot verification, {PARALLEL} points at once", four, ratio(four, total))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gib", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    table = Table(
        ["what", "seconds", "vs classic restore + boot"],
        title="instant recovery vs restore-then-boot (QEMU TCG, Linux guest, sparse disks)",
    )
    for gib in args.sizes_gib:
        with tempfile.TemporaryDirectory(prefix="dv-bench-recovery-") as tmp:
            measure(gib * GiB, Path(tmp), table)
    table.print()


if __name__ == "__main__":
    main()
