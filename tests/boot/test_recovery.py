"""Instant recovery and boot verification, in-process: a real QSD, tgtd and QEMU.

The restore points hold the hand-made boot sectors. Guest writes are made
straight into the FUSE disk the recovery's target serves (the iPXE boot of a
real guest is in tests/e2e/test_recovery_qemu.py).
"""

from __future__ import annotations

import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from diskvault.backups import repository as repo_files
from diskvault.backups.models import Backup, BackupStatus
from diskvault.boot import sessions, verify, verify_policy, writeback
from diskvault.boot.errors import BootVerifyUnavailable
from diskvault.boot.recovery import layer_key
from diskvault.config import load_settings
from diskvault.db.engine import session_scope
from diskvault.jobs.models import Job, JobStatus
from diskvault.tools import qemu_img
from support.backups_env import add_repo, add_source, backup, image
from support.boot_env import (
    BootApp,
    MakeMachine,
    boot_app,
    new_mac,
    read_sector,
    sha256,
    write_sector,
)
from support.boot_sectors import MARKER, marker_sector, write_disk, writer_sector
from support.http import assert_problem

ZERO = bytes(512)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootApp]:
    with boot_app(
        tmp_path_factory.mktemp("recovery"), BOOT_VERIFY_TIMEOUT_S=30, BOOT_VERIFY_ACCEL="tcg"
    ) as app:
        yield app


def _disk(path: Path, sector: bytes) -> Path:
    raw = write_disk(path.with_suffix(".raw"), sector)
    qemu_img.create(path, "qcow2", raw.stat().st_size)
    qemu_img.convert(raw, "raw", path, "qcow2")
    return path


class Points:
    """A qcow2 source per boot sector, backed up into one repository."""

    def __init__(self, lab: BootApp, root: Path) -> None:
        self.lab, self.root = lab, root
        root.mkdir(parents=True, exist_ok=True)
        self.repo = add_repo(lab.settings, "recovery-repo", root / "repo")
        self.count = 0

    def make(self, sector: bytes, **config: Any) -> str:
        self.count += 1
        name = f"src{self.count}"
        disk = _disk(self.root / f"{name}.qcow2", sector)
        add_source(self.lab.settings, name, "qcow2", disks=[str(disk)], **config)
        return backup(self.lab.settings, name, self.repo, "full")


@pytest.fixture(scope="module")
def points(lab: BootApp, tmp_path_factory: pytest.TempPathFactory) -> Points:
    return Points(lab, tmp_path_factory.mktemp("sources"))


def _chain_sums(lab: BootApp, backup_id: str) -> dict[str, str]:
    folder = image(lab.settings, backup_id).parent
    return {p.name: sha256(p) for p in sorted(folder.iterdir()) if not p.name.endswith(".png")}


def _boot(lab: BootApp, backup_id: str, **body: Any) -> Any:
    return lab.client.post(f"/api/v1/backup/{backup_id}/boot", json=body, headers=lab.headers)


def _wait_job(lab: BootApp, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = lab.client.get(f"/api/v1/jobs/{job_id}", headers=lab.headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def _disk_of(lab: BootApp, recovery_id: str) -> Path:
    return writeback.layer_paths(lab.settings, layer_key(recovery_id)).disk


def test_recovered_writes_land_in_the_overlay_and_promote_carries_them(
    lab: BootApp, points: Points
) -> None:
    point = points.make(writer_sector())
    before = _chain_sums(lab, point)
    resp = _boot(lab, point, mac="52:54:00:12:34:57", mode="keep")
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert rec["temporary_machine"] is True and rec["backup_id"] == point
    disk = _disk_of(lab, rec["id"])
    assert read_sector(disk, 0) == writer_sector()

    script = lab.client.get("/boot/ipxe", params={"mac": "52-54-00-12-34-57"}).text
    assert "sanboot iscsi:" in script and "instant recovery" in script

    # A guest write (as the INT 13h writer does: its own sector to LBA 1).
    write_sector(disk, 1, writer_sector())
    listed = lab.client.get("/api/v1/recoveries", headers=lab.headers).json()["items"]
    assert [r["id"] for r in listed] == [rec["id"]]
    assert listed[0]["overlay_bytes"] > 0

    # The booted point cannot be deleted, and the MAC cannot boot another point.
    refused = assert_problem(lab.client.delete(f"/api/v1/backup/{point}", headers=lab.headers), 409)
    assert rec["id"] in refused["detail"]
    other = points.make(marker_sector())
    assert rec["id"] in assert_problem(_boot(lab, other, mac="52:54:00:12:34:57"), 409)["detail"]

    # Promote to a file: the point plus the write; and to a new library image.
    dest = lab.settings.restore_roots[0] / "recovered.raw"
    body = {"to": "file", "path": str(dest), "format": "raw"}
    url = f"/api/v1/recoveries/{rec['id']}/promote"
    job = _wait_job(lab, lab.client.post(url, json=body, headers=lab.headers).json()["id"])
    assert job["status"] == "succeeded", job
    assert read_sector(dest, 0) == writer_sector() and read_sector(dest, 1) == writer_sector()
    assert qemu_img.compare(dest, disk, "raw", "raw")
    resp = lab.client.post(url, json={"to": "image", "name": "recovered"}, headers=lab.headers)
    job = _wait_job(lab, resp.json()["id"])
    assert job["status"] == "succeeded", job
    image_id = job["result"]["image_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = lab.client.get(f"/api/v1/images/{image_id}", headers=lab.headers).json()
        if row["status"] in ("READY", "ERROR", "FAILED"):
            break
        time.sleep(0.2)
    assert row["status"] == "READY", row
    stored = next((lab.settings.image_dir / image_id).glob("*"))
    assert qemu_img.compare(stored, dest, None, "raw")

    # Nothing was written into the chain.
    assert _chain_sums(lab, point) == before
    assert qemu_img.compare(image(lab.settings, point), points.root / "src1.raw", "qcow2", "raw")

    # Stop: the overlay is gone and the point can be deleted again.
    resp = lab.client.delete(f"/api/v1/recoveries/{rec['id']}", headers=lab.headers)
    assert resp.status_code == 204, resp.text
    assert not writeback.layer_paths(lab.settings, layer_key(rec["id"])).root.exists()
    assert lab.client.get("/api/v1/recoveries", headers=lab.headers).json()["items"] == []
    assert "sanboot" not in lab.client.get("/boot/ipxe", params={"mac": "52:54:00:12:34:57"}).text
    resp = lab.client.delete(f"/api/v1/backup/{point}", headers=lab.headers)
    assert resp.status_code == 202, resp.text


def _wait_ready(lab: BootApp, image_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row: dict[str, Any] = lab.client.get(
            f"/api/v1/images/{image_id}", headers=lab.headers
        ).json()
        if row["status"] in ("READY", "ERROR", "FAILED"):
            return row
        time.sleep(0.2)
    raise AssertionError(f"image {image_id} did not finish processing")


def _promote(lab: BootApp, recovery_id: str, **body: Any) -> dict[str, Any]:
    url = f"/api/v1/recoveries/{recovery_id}/promote"
    resp = lab.client.post(url, json=body, headers=lab.headers)
    assert resp.status_code == 202, resp.text
    return _wait_job(lab, resp.json()["id"])


def _stop_then_boot_machine(lab: BootApp, recovery_id: str, mac: str) -> None:
    # While the recovery lives, the MAC still boots the restore point.
    assert "instant recovery" in lab.client.get("/boot/ipxe", params={"mac": mac}).text
    resp = lab.client.delete(f"/api/v1/recoveries/{recovery_id}", headers=lab.headers)
    assert resp.status_code == 204, resp.text
    script = lab.client.get("/boot/ipxe", params={"mac": mac}).text
    assert "sanboot iscsi:" in script and "instant recovery" not in script, script


def test_promote_moves_the_machine_onto_a_new_version_or_image(
    lab: BootApp, points: Points, golden: tuple[str, Path], make_machine: MakeMachine
) -> None:
    image_id, _ = golden
    machine = make_machine(image_id, mode="keep")
    machine_disk = writeback.layer_paths(lab.settings, machine["id"]).disk
    point = points.make(writer_sector())
    before = _chain_sums(lab, point)

    # A MAC-only recovery has no machine to move.
    temporary = _boot(lab, point, mac=new_mac()).json()
    url = f"/api/v1/recoveries/{temporary['id']}/promote"
    refused = lab.client.post(url, json={"to": "version"}, headers=lab.headers)
    assert "temporary machine" in assert_problem(refused, 409)["detail"]
    assert lab.client.delete(url.removesuffix("/promote"), headers=lab.headers).status_code == 204

    # to: version, the new current version of the machine's golden image.
    rec = _boot(lab, point, machine=machine["name"], mode="keep").json()
    write_sector(_disk_of(lab, rec["id"]), 1, writer_sector())
    job = _promote(lab, rec["id"], to="version", comment="pc restored from backup")
    assert job["status"] == "succeeded", job
    listed = lab.client.get(f"/api/v1/images/{image_id}/versions", headers=lab.headers).json()
    current = next(v for v in listed["items"] if v["is_current"])
    assert current["version"] == job["result"]["version"] > 1
    assert current["comment"] == "pc restored from backup"
    _stop_then_boot_machine(lab, rec["id"], machine["mac"])
    assert read_sector(machine_disk, 0) == writer_sector()
    assert read_sector(machine_disk, 1) == writer_sector()

    # to: image with switch: the machine now boots the new library image.
    rec = _boot(lab, point, machine=machine["name"], mode="keep").json()
    write_sector(_disk_of(lab, rec["id"]), 2, marker_sector())
    job = _promote(lab, rec["id"], to="image", name="pc-recovered", switch=True)
    assert job["status"] == "succeeded", job
    new_image = job["result"]["image_id"]
    assert _wait_ready(lab, new_image)["format"] == "raw"
    row = lab.client.get(f"/api/v1/machines/{machine['id']}", headers=lab.headers).json()
    assert row["image_id"] == new_image
    _stop_then_boot_machine(lab, rec["id"], machine["mac"])
    assert read_sector(machine_disk, 0) == writer_sector()
    assert read_sector(machine_disk, 1) == ZERO  # the point's own sector 1, not the version's
    assert read_sector(machine_disk, 2) == marker_sector()

    # Nothing was written into the chain.
    assert _chain_sums(lab, point) == before


def test_bad_boot_requests(lab: BootApp, points: Points) -> None:
    point = points.make(marker_sector())
    assert_problem(_boot(lab, point), 422)
    assert_problem(_boot(lab, point, mac="01:00:5e:00:00:01"), 422)
    assert_problem(_boot(lab, point, mac=new_mac(), extra=1), 422)
    assert_problem(_boot(lab, "0" * 32, mac=new_mac()), 404)
    with session_scope(lab.settings.DATABASE_URL) as s:
        row = s.get(Backup, point)
        assert row is not None
        row.verify_status, row.verify_detail = "corrupt", "checksum mismatch"
    assert "damage" in assert_problem(_boot(lab, point, mac=new_mac()), 409)["detail"]
    with session_scope(lab.settings.DATABASE_URL) as s:
        row = s.get(Backup, point)
        assert row is not None
        row.verify_status = None
        s.add(Job(kind="backup-delete", status=JobStatus.queued, params={"backup_id": point}))
    assert "being deleted" in assert_problem(_boot(lab, point, mac=new_mac()), 409)["detail"]
    with session_scope(lab.settings.DATABASE_URL) as s:
        for job in s.query(Job).filter(Job.kind == "backup-delete"):
            job.status = JobStatus.cancelled
        row = s.get(Backup, point)
        assert row is not None
        row.status = BackupStatus.running
    assert_problem(_boot(lab, point, mac=new_mac()), 409)
    with session_scope(lab.settings.DATABASE_URL) as s:
        row = s.get(Backup, point)
        assert row is not None
        row.status = BackupStatus.completed
    assert lab.client.get("/api/v1/recoveries", headers=lab.headers).json()["items"] == []


def _png_colours(path: Path) -> int:
    """Distinct byte values of the decoded pixel rows (1 for a blank screen)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    (width,) = struct.unpack(">I", data[16:20])
    raw = zlib.decompress(idat)
    stride = 1 + width * 3
    pixels = b"".join(raw[i + 1 : i + stride] for i in range(0, len(raw), stride))
    return len(set(pixels))


def _verify(lab: BootApp, point: str) -> tuple[dict[str, Any], dict[str, Any]]:
    resp = lab.client.post(f"/api/v1/backup/{point}/verify-boot", headers=lab.headers)
    assert resp.status_code == 202, resp.text
    job = _wait_job(lab, resp.json()["id"])
    shown = lab.client.get(f"/api/v1/backup/{point}", headers=lab.headers).json()
    return job, shown


def test_verify_boot_passes_a_good_point_and_fails_a_zeroed_mbr(
    lab: BootApp, points: Points
) -> None:
    good = points.make(marker_sector(), boot_check=MARKER.decode())
    job, shown = _verify(lab, good)
    assert job["status"] == "succeeded", (job["error"], shown)
    assert shown["boot_status"] == "passed" and MARKER.decode() in shown["boot_detail"]
    assert shown["boot_method"].startswith("direct/")
    assert shown["boot_screenshot_url"] == f"/api/v1/backup/{good}/boot-screenshot"

    bad = points.make(ZERO, boot_check=MARKER.decode())
    before = _chain_sums(lab, bad)
    job, shown = _verify(lab, bad)
    assert job["status"] == "failed"
    assert shown["boot_status"] == "failed"
    assert "bootable" in shown["boot_detail"], shown
    assert "did not boot" in job["error"]
    shot = lab.client.get(shown["boot_screenshot_url"], headers=lab.headers)
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/png"
    png = repo_files.screenshot_path(image(lab.settings, bad))
    assert _png_colours(png) > 1
    assert _chain_sums(lab, bad) == before
    # Nothing left running or on disk.
    assert [p.name for p in verify.work_root(lab.settings).iterdir()] == ["slots"]

    # Deleting the point takes its screenshot with it.
    resp = lab.client.delete(f"/api/v1/backup/{bad}", headers=lab.headers)
    assert resp.status_code == 202, resp.text
    assert _wait_job(lab, resp.json()["id"])["status"] == "succeeded"
    assert not png.exists()


def test_judge() -> None:
    pattern = verify.DEFAULT_CHECK
    assert verify.judge("", "", pattern, finished=None) is None
    assert verify.judge("debian login: ", "", pattern, finished=None) == verify.Verdict(
        "passed", "console matched 'login:'"
    )
    failed = verify.judge("", "Boot failed: not a bootable disk", pattern, finished=None)
    assert failed is not None and failed.status == "failed"
    panic = verify.judge("Kernel panic - not syncing\nlogin:", "", pattern, finished=None)
    assert panic is not None and panic.status == "failed"
    silent = verify.judge("", "", pattern, finished="in 5 s")
    assert silent == verify.Verdict("failed", "no console output in 5 s")


SILENT = bytes.fromhex("F4EBFD") + bytes(507) + b"\x55\xaa"  # hlt; jmp $-1: never prints


def test_a_silent_guest_fails_with_a_screenshot_and_cancel_leaves_nothing(
    lab: BootApp, points: Points
) -> None:
    quiet = points.make(SILENT, boot_timeout_s=2)
    job, shown = _verify(lab, quiet)
    assert job["status"] == "failed"
    assert shown["boot_detail"] == "no console output in 2 s"
    assert repo_files.screenshot_path(image(lab.settings, quiet)).stat().st_size > 0

    slow = points.make(SILENT, boot_timeout_s=600)
    resp = lab.client.post(f"/api/v1/backup/{slow}/verify-boot", headers=lab.headers)
    job_id = resp.json()["id"]
    work = verify.work_root(lab.settings) / job_id
    deadline = time.monotonic() + 60
    while not (work / "qemu.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int((work / "qemu.pid").read_text())
    cancel = lab.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=lab.headers)
    assert cancel.status_code in (200, 202), cancel.text
    assert _wait_job(lab, job_id)["status"] == "cancelled"
    assert not Path(f"/proc/{pid}").exists() and not work.exists()


def test_stale_verification_qemu_is_killed_at_start_up(lab: BootApp, tmp_path: Path) -> None:
    """What a killed worker leaves: its QEMU and folder; the next start-up removes both."""
    work = verify.work_root(lab.settings) / "crashed-job"
    work.mkdir(parents=True)
    disk = write_disk(tmp_path / "silent.raw", SILENT)
    qemu_img.create(work / "overlay.qcow2", "qcow2", None, backing=disk, backing_fmt="raw")
    cmd = verify.qemu_command(lab.settings, "qemu-system-x86_64", work, "tcg")
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (work / "qemu.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert verify.cleanup_stale(lab.settings) == 1
        assert proc.wait(10) is not None
        assert not work.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_qemu_names_the_package(tmp_path: Path) -> None:
    settings = load_settings(DATA_DIR=tmp_path, QEMU_SYSTEM_PATH="/nonexistent/qemu-system-x86_64")
    with pytest.raises(BootVerifyUnavailable, match="qemu-system-x86"):
        verify.boot_and_judge(
            settings,
            tmp_path / "none.qcow2",
            tmp_path / "work",
            pattern="x",
            timeout=1,
            screenshot=tmp_path / "s.png",
            should_cancel=lambda: False,
        )


def test_a_bad_boot_check_is_refused(lab: BootApp, tmp_path: Path) -> None:
    body = {"name": "badcheck", "kind": "qcow2", "disks": [str(tmp_path / "x.qcow2")]}
    resp = lab.client.post("/api/v1/sources", json={**body, "boot_check": "("}, headers=lab.headers)
    assert "boot_check" in assert_problem(resp, 422)["detail"]


def test_full_writeback_storage_is_an_error_on_the_recovery(lab: BootApp, points: Points) -> None:
    point = points.make(marker_sector())
    before = _chain_sums(lab, point)
    rec = _boot(lab, point, mac=new_mac()).json()
    url = f"/api/v1/recoveries/{rec['id']}"
    full = lab.settings.model_copy(update={"BOOT_WRITEBACK_MIN_FREE_BYTES": 1 << 62})
    assert f"recovery {rec['id']}" in sessions.check_storage(full)
    error = lab.client.get(url, headers=lab.headers).json()["error"]
    assert "is full" in error and "chain is untouched" in error
    sessions.check_storage(lab.settings)
    assert lab.client.get(url, headers=lab.headers).json()["error"] is None
    assert lab.client.delete(url, headers=lab.headers).status_code == 204
    assert _chain_sums(lab, point) == before


def test_a_policy_schedules_boot_verification_of_new_points(lab: BootApp, points: Points) -> None:
    first = points.make(marker_sector(), boot_check=MARKER.decode())
    source = f"src{points.count}"
    body = {
        "name": "boot-checked",
        "sources": [source],
        "repository": "recovery-repo",
        "verify_boot_schedule": "* * * * *",
        "verify_boot": "all-new",
    }
    resp = lab.client.post("/api/v1/policies", json=body, headers=lab.headers)
    assert resp.status_code == 201, resp.text
    assert resp.json()["verify_boot"] == "all-new"
    new = backup(lab.settings, source, points.repo, "incremental")
    later = datetime.now(UTC) + timedelta(minutes=2)
    (job_id,) = verify_policy.tick(lab.settings, now=later)
    job = _wait_job(lab, job_id)
    assert job["status"] == "succeeded" and job["params"] == {"backup_id": new}
    assert verify_policy.tick(lab.settings, now=later) == []  # not due again yet
    shown = lab.client.get(f"/api/v1/backup/{new}", headers=lab.headers).json()
    assert shown["boot_status"] == "passed"
    untouched = lab.client.get(f"/api/v1/backup/{first}", headers=lab.headers).json()
    assert untouched["boot_status"] is None


def test_an_immutable_point_boots(lab: BootApp, points: Points) -> None:
    point = points.make(writer_sector())
    files = sorted(image(lab.settings, point).parent.iterdir())
    flagged = repo_files.set_immutable(files, on=True)
    with session_scope(lab.settings.DATABASE_URL) as s:
        row = s.get(Backup, point)
        assert row is not None
        row.immutable_until = datetime.now(UTC) + timedelta(days=1)
        row.immutable_flag = flagged
    try:
        before = _chain_sums(lab, point)
        rec = _boot(lab, point, mac=new_mac())
        assert rec.status_code == 201, rec.text
        disk = _disk_of(lab, rec.json()["id"])
        write_sector(disk, 1, writer_sector())
        assert read_sector(disk, 1) == writer_sector()
        url = f"/api/v1/recoveries/{rec.json()['id']}"
        assert lab.client.delete(url, headers=lab.headers).status_code == 204
        assert _chain_sums(lab, point) == before
    finally:
        repo_files.set_immutable(files, on=False)
