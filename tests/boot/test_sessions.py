"""Booted machines: sessions recorded and ended, 409s while connected, a full writeback disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from diskvault.boot import sessions, writeback
from support.boot_env import (
    BootApp,
    MakeMachine,
    boot_app,
    insert_golden,
    machine_factory,
    read_sector,
    sha256,
    write_sector,
)
from support.boot_sectors import marker_sector, writer_sector
from support.http import assert_problem
from support.iscsi import IscsiSession, read_lun

MiB = 1024 * 1024


def login(app: BootApp, machine: dict[str, str]) -> IscsiSession:
    target = app.client.get(f"/api/v1/targets/{machine['target_id']}", headers=app.headers).json()
    return IscsiSession(app.settings.ISCSI_PORTAL, target["iqn"], 1, machine["initiator_iqn"])


def session_rows(app: BootApp, machine_id: str) -> list[dict[str, str]]:
    url = f"/api/v1/machines/{machine_id}/sessions"
    items: list[dict[str, str]] = app.client.get(url, headers=app.headers).json()["items"]
    return items


def test_a_booted_machine_refuses_apply_discard_edit_and_delete(
    lab: BootApp, golden: tuple[str, Path], make_machine: MakeMachine
) -> None:
    machine = make_machine(golden[0], mode="keep")
    other_image, _ = insert_golden(lab.settings, marker_sector())
    base = f"/api/v1/machines/{machine['id']}"
    lab.client.get("/boot/ipxe", params={"mac": machine["mac"]})
    with login(lab, machine):
        detail = lab.client.get(base, headers=lab.headers).json()
        assert detail["connected"] and detail["initiators"] == [machine["initiator_iqn"]]
        body = assert_problem(lab.client.post(f"{base}/writeback/apply", headers=lab.headers), 409)
        assert "is booted" in body["detail"] and machine["initiator_iqn"] in body["detail"]
        assert_problem(lab.client.post(f"{base}/writeback/discard", headers=lab.headers), 409)
        assert_problem(lab.client.delete(base, headers=lab.headers), 409)
        edit = lab.client.patch(base, json={"image_id": other_image}, headers=lab.headers)
        assert_problem(edit, 409)
        assert lab.client.patch(base, json={"mode": "discard"}, headers=lab.headers).is_success
        sessions.check_sessions(lab.settings)
        (open_session,) = session_rows(lab, machine["id"])
        assert open_session["connected_at"] and not open_session["ended_at"]
    sessions.check_sessions(lab.settings)
    (ended,) = session_rows(lab, machine["id"])
    assert ended["ended_at"] and ended["end_reason"] == "the initiator logged out"
    resp = lab.client.post(f"{base}/writeback/apply", headers=lab.headers)
    assert resp.status_code == 202, resp.text


def test_a_boot_without_a_login_ends_after_the_timeout(
    lab: BootApp, golden: tuple[str, Path], make_machine: MakeMachine
) -> None:
    machine = make_machine(golden[0])
    lab.client.get("/boot/ipxe", params={"mac": machine["mac"]})
    sessions.check_sessions(lab.settings)
    assert not session_rows(lab, machine["id"])[0]["ended_at"]
    later = datetime.now(UTC) + timedelta(seconds=lab.settings.BOOT_SESSION_CONNECT_TIMEOUT_S + 1)
    assert sessions.check_sessions(lab.settings, now=later) >= 1
    assert session_rows(lab, machine["id"])[0]["end_reason"] == "no login to its disk was seen"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """WRITEBACK_PATH on an 8 MiB tmpfs, so it can be filled."""
    path = tmp_path / "writebacks"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_writeback_disk_is_a_clear_machine_error_and_golden_stays_intact(
    tmp_path: Path, small_disk: Path
) -> None:
    # The scheduler's own storage check would race the one made here (it would flag the
    # machine first, under load); one run an hour keeps this test's call the one that flags.
    with boot_app(
        tmp_path / "data",
        WRITEBACK_PATH=small_disk,
        BOOT_WRITEBACK_MIN_FREE_BYTES=MiB,
        BOOT_SESSION_CHECK_INTERVAL_S=3600,
    ) as app:
        image_id, golden = insert_golden(app.settings, marker_sector())
        before = sha256(golden)
        machine = machine_factory(app)(image_id, mode="keep")
        disk = small_disk / machine["id"] / "disk.raw"
        filler = small_disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\xff" * 65536)
        os.close(fd)
        with pytest.raises(OSError):  # the client's write fails: no room for the overlay
            write_sector(disk, 8 * 2048, writer_sector())
        assert sessions.check_storage(app.settings) == [machine["name"]]
        url = f"/api/v1/machines/{machine['id']}"
        flagged = app.client.get(url, headers=app.headers).json()
        assert flagged["status"] == "ERROR" and flagged["error_code"] == "storage_full"
        assert "is full" in flagged["error"] and str(small_disk) in flagged["error"]
        script = app.client.get("/boot/ipxe", params={"mac": machine["mac"]}).text
        assert "cannot boot" in script and "is full" in script and "sanboot" not in script
        assert sha256(golden) == before

        filler.unlink()
        assert sessions.check_storage(app.settings) == []
        assert app.client.get(url, headers=app.headers).json()["status"] == "READY"
        assert "sanboot iscsi:" in app.client.get("/boot/ipxe", params={"mac": machine["mac"]}).text
        write_sector(disk, 8 * 2048, writer_sector())
        assert read_sector(disk, 8 * 2048) == writer_sector()
        assert sha256(golden) == before


def test_after_a_crash_layers_and_targets_come_back_with_their_writes(
    lab: BootApp, golden: tuple[str, Path], make_machine: MakeMachine, tmp_path: Path
) -> None:
    machine = make_machine(golden[0], mode="keep")
    disk = lab.settings.writeback_dir / machine["id"] / "disk.raw"
    write_sector(disk, 9, writer_sector())
    # The server died: its daemon lives on, unowned, serving a layer nobody tracks.
    orphan = writeback._daemons.pop(disk.parent)
    sessions.startup(lab.settings)
    assert orphan._proc is not None and orphan._proc.wait(5) != 0  # killed by the clean-up
    if orphan._qmp is not None:
        orphan._qmp.close()
    after = lab.client.get(f"/api/v1/machines/{machine['id']}", headers=lab.headers).json()
    assert after["status"] == "READY" and after["layer_version"] == machine["layer_version"]
    target = lab.client.get(f"/api/v1/targets/{machine['target_id']}", headers=lab.headers).json()
    out = read_lun(
        lab.settings.ISCSI_PORTAL, target["iqn"], 1, tmp_path / "lun.raw", machine["initiator_iqn"]
    )
    assert read_sector(out, 9) == writer_sector() and read_sector(out, 0) == marker_sector()
