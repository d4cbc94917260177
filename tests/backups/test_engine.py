"""qcow2 sources: a full and incrementals through persistent dirty bitmaps."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from diskvault.backups import repository as repo_files
from diskvault.backups.models import Backup, BackupStatus, BackupType
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.tools import qemu_img
from diskvault.tools.process import Cancelled
from support.backups_env import (
    DISK,
    MiB,
    add_source,
    backup,
    create_disk,
    image,
    own_bytes,
    point,
    same,
    save,
    write_random,
)


def bitmaps(path: Path) -> list[str]:
    data = qemu_img.info(path, "qcow2", force_share=True)["format-specific"]["data"]
    return [b["name"] for b in data.get("bitmaps", [])]


def test_full_then_five_incrementals_each_point_identical(
    bsettings: Settings, repo: str, disk: Path, tmp_path: Path
) -> None:
    saved: list[tuple[str, Path]] = []
    for n in range(6):
        new = backup(bsettings, "vm1", repo)
        saved.append((new, save(disk, tmp_path / f"at-{n}.qcow2")))
        if n < 5:
            write_random(disk, "qcow2", 0.05, seed=100 + n)
    first, *rest = (point(bsettings, i) for i, _ in saved)
    assert first.backup_type == BackupType.full and first.reason
    assert all(p.backup_type == BackupType.incremental and p.reason is None for p in rest)
    assert [p.parent_backup_id for p in rest] == [i for i, _ in saved[:-1]]
    for backup_id, copy in saved:
        assert same(image(bsettings, backup_id), copy), backup_id
    # An incremental holds the changed clusters only: about 5% of the disk.
    layer = own_bytes(image(bsettings, saved[3][0]))
    assert 0 < layer < 0.12 * DISK
    # Only the newest point's bitmap is left in the source.
    assert bitmaps(disk) == [f"dv-{saved[-1][0]}"]
    directory = image(bsettings, saved[0][0]).parent
    names = sorted(p.name for p in directory.glob("*.qcow2"))
    assert len(names) == 6 and names[0].startswith("full-") and names[1].startswith("incr-")
    side = repo_files.read_sidecar(repo_files.sidecar_path(image(bsettings, saved[2][0])))
    assert side["parent"] == {"id": saved[1][0], "file": image(bsettings, saved[1][0]).name}
    assert side["tracking"] == {"kind": "bitmap", "bitmap": f"dv-{saved[2][0]}"}
    assert side["checksums"][image(bsettings, saved[2][0]).name]["algo"] == "xxh3_128"


def test_missing_bitmap_forces_full_with_reason(
    bsettings: Settings, repo: str, disk: Path, tmp_path: Path
) -> None:
    first = backup(bsettings, "vm1", repo)
    qemu_img.bitmap(disk, f"dv-{first}", "remove")
    write_random(disk, "qcow2", 0.05, seed=7)
    second = backup(bsettings, "vm1", repo, "incremental")
    row = point(bsettings, second)
    assert row.backup_type == BackupType.full
    assert row.reason and f"dv-{first}" in row.reason and "missing" in row.reason
    assert same(image(bsettings, second), disk)


def test_cancel_keeps_bitmap_so_next_incremental_covers_everything(
    bsettings: Settings, repo: str, disk: Path, tmp_path: Path
) -> None:
    first = backup(bsettings, "vm1", repo)
    at_first = save(disk, tmp_path / "at-first.qcow2")
    write_random(disk, "qcow2", 0.2, seed=8)
    seen: list[int] = []
    with pytest.raises(Cancelled):
        backup(
            bsettings,
            "vm1",
            repo,
            speed=4 * MiB,
            progress=lambda done, total, label: seen.append(done),
            cancel=lambda: bool(seen),
        )
    directory = image(bsettings, first).parent
    assert sorted(p.name for p in directory.iterdir() if "partial" in p.name) == []
    assert bitmaps(disk) == [f"dv-{first}"]
    write_random(disk, "qcow2", 0.02, seed=9)
    third = backup(bsettings, "vm1", repo)
    row = point(bsettings, third)
    assert row.backup_type == BackupType.incremental and row.parent_backup_id == first
    assert same(image(bsettings, third), disk)
    assert same(image(bsettings, first), at_first)


def test_failed_point_is_recorded(bsettings: Settings, repo: str, tmp_path: Path) -> None:
    add_source(bsettings, "gone", "qcow2", unverified=True, disks=[str(tmp_path / "nope.qcow2")])
    with pytest.raises(Exception, match="does not exist"):
        backup(bsettings, "gone", repo)
    with session_scope(bsettings.DATABASE_URL) as s:
        (row,) = s.scalars(select(Backup).where(Backup.vm_name == "gone")).all()
        assert row.status == BackupStatus.failed and "does not exist" in (row.error or "")


def test_every_disk_of_a_source(bsettings: Settings, repo: str, tmp_path: Path) -> None:
    disks = [create_disk(tmp_path / f"d{n}.qcow2", size=8 * MiB, seed=n) for n in range(2)]
    add_source(bsettings, "two", "qcow2", disks=[str(d) for d in disks])
    from diskvault.backups import engine
    from diskvault.backups.locks import local_holder

    ids = engine.run(bsettings, engine.RunRequest("two", repo, holder=local_holder(bsettings)))
    rows = [point(bsettings, i) for i in ids]
    assert [r.disk_index for r in rows] == [0, 1]
    for backup_id, disk in zip(ids, disks, strict=True):
        assert same(image(bsettings, backup_id), disk)
    assert image(bsettings, ids[1]).parent.name == "disk-1"
