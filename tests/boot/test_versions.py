"""Apply, rollback and expiry of image versions, with the job worker running in-process."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from diskvault.boot import versions
from diskvault.boot.models import ImageVersion, Machine
from diskvault.db.engine import session_scope
from support.boot_env import (
    BootApp,
    MakeMachine,
    insert_golden,
    read_sector,
    sha256,
    write_sector,
)
from support.boot_sectors import marker_sector, writer_sector
from support.http import assert_problem

ZERO = bytes(512)


def wait_job(app: BootApp, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = app.client.get(f"/api/v1/jobs/{job_id}", headers=app.headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def disk_of(app: BootApp, machine: dict[str, Any]) -> Path:
    return app.settings.writeback_dir / machine["id"] / "disk.raw"


def apply(app: BootApp, machine: dict[str, Any], comment: str) -> dict[str, Any]:
    url = f"/api/v1/machines/{machine['id']}/writeback/apply"
    resp = app.client.post(url, json={"comment": comment}, headers=app.headers)
    assert resp.status_code == 202, resp.text
    return wait_job(app, resp.json()["job_id"])


def test_apply_makes_a_new_current_version_and_others_boot_it(
    lab: BootApp, make_machine: MakeMachine
) -> None:
    image_id, golden = insert_golden(lab.settings, marker_sector())
    before = sha256(golden)
    editor = make_machine(image_id, mode="keep")
    other = make_machine(image_id)
    write_sector(disk_of(lab, editor), 1, writer_sector())

    job = apply(lab, editor, "driver update")
    assert job["status"] == "succeeded", job
    assert job["result"]["version"] == 2 and job["percent"] == 100
    page = lab.client.get(f"/api/v1/images/{image_id}/versions", headers=lab.headers).json()
    newest = page["items"][0]
    assert (newest["version"], newest["is_current"], newest["parent_version"]) == (2, True, 1)
    assert newest["comment"] == "driver update" and newest["source_machine_id"] == editor["id"]
    with session_scope(lab.settings.DATABASE_URL) as s:
        v2 = versions.file_path(s, lab.settings, versions.get_version(s, image_id, 2))
    assert read_sector(v2, 1) == writer_sector() and read_sector(v2, 0) == marker_sector()
    assert sha256(golden) == before and not list(v2.parent.glob("*.partial"))

    machine = lab.client.get(f"/api/v1/machines/{editor['id']}", headers=lab.headers).json()
    assert machine["status"] == "READY" and machine["reset_pending"]
    again = lab.client.post(f"/api/v1/machines/{editor['id']}/writeback/apply", headers=lab.headers)
    assert "no writes to apply" in assert_problem(again, 409)["detail"]

    # The other machine's next boot stacks its fresh layer on version 2.
    assert read_sector(disk_of(lab, other), 1) == ZERO
    lab.client.get("/boot/ipxe", params={"mac": other["mac"]})
    assert read_sector(disk_of(lab, other), 1) == writer_sector()
    # The editor (keep mode) starts afresh on version 2 too, its writes being in it.
    lab.client.get("/boot/ipxe", params={"mac": editor["mac"]})
    edited = lab.client.get(f"/api/v1/machines/{editor['id']}", headers=lab.headers).json()
    assert edited["layer_version"] == 2 and not edited["reset_pending"]

    rolled = lab.client.post(
        f"/api/v1/images/{image_id}/versions/1/rollback", headers=lab.headers
    ).json()
    assert rolled["is_current"] and rolled["version"] == 1
    resp = lab.client.post(f"/api/v1/machines/{other['id']}/writeback/discard", headers=lab.headers)
    assert resp.json()["layer_version"] == 1
    assert read_sector(disk_of(lab, other), 1) == ZERO
    body = assert_problem(
        lab.client.delete(f"/api/v1/images/{image_id}/versions/2", headers=lab.headers), 409
    )
    assert editor["name"] in body["detail"]


def test_failed_apply_leaves_the_writeback_and_flags_the_machine(
    lab: BootApp, make_machine: MakeMachine
) -> None:
    image_id, _ = insert_golden(lab.settings, marker_sector())
    machine = make_machine(image_id, mode="keep")
    write_sector(disk_of(lab, machine), 5, writer_sector())
    versions_dir = lab.settings.image_dir / versions.VERSIONS_DIR
    versions_dir.mkdir(parents=True, exist_ok=True)
    (versions_dir / image_id).write_text("a file where the version folder must go")
    try:
        job = apply(lab, machine, "doomed")
    finally:
        (versions_dir / image_id).unlink()
    assert job["status"] == "failed"
    after = lab.client.get(f"/api/v1/machines/{machine['id']}", headers=lab.headers).json()
    assert after["status"] == "ERROR" and after["error_code"] == "apply"
    assert job["id"] in after["error"]
    lab.client.get("/boot/ipxe", params={"mac": machine["mac"]})  # keep mode: served again
    assert read_sector(disk_of(lab, machine), 5) == writer_sector()
    job = apply(lab, machine, "second try")
    assert job["status"] == "succeeded", job


def _version(session: Any, image_id: str, number: int, *, age_days: float, current: bool) -> None:
    key = f"{versions.VERSIONS_DIR}/{image_id}/v{number}.raw"
    session.add(
        ImageVersion(
            image_id=image_id,
            version=number,
            storage_key=key,
            is_current=current,
            created_at=datetime.now(UTC) - timedelta(days=age_days),
        )
    )


def test_expiry_keeps_newest_current_used_and_young_versions(
    lab: BootApp, make_machine: MakeMachine
) -> None:
    image_id, _ = insert_golden(lab.settings, marker_sector())
    user = make_machine(image_id)  # registers version 1
    folder = lab.settings.image_dir / versions.VERSIONS_DIR / image_id
    folder.mkdir(parents=True, exist_ok=True)
    with session_scope(lab.settings.DATABASE_URL) as s:
        s.query(ImageVersion).filter_by(image_id=image_id).update({"is_current": False})
        for number, age, current in [(2, 30, False), (3, 30, True), (4, 30, False),
                                     (5, 0, False), (6, 30, False), (7, 30, False)]:  # fmt: skip
            _version(s, image_id, number, age_days=age, current=current)
            (folder / f"v{number}.raw").write_bytes(b"x")
        machine = s.get(Machine, user["id"])
        assert machine is not None
        machine.layer_version = 4
    settings = lab.settings.model_copy(update={"BOOT_VERSIONS_KEEP": 2})
    removed = versions.expire(settings)
    assert sorted(v for i, v in removed if i == image_id) == [2]
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["v3.raw", "v4.raw", "v5.raw", "v6.raw", "v7.raw"]
    # Version 1 (the image's own file), 3 (current), 4 (used), 5 (young), 6-7 (newest).
    with session_scope(lab.settings.DATABASE_URL) as s:
        s.get(Machine, user["id"]).layer_version = 1  # type: ignore[union-attr]
    assert sorted(v for i, v in versions.expire(settings) if i == image_id) == [4]
