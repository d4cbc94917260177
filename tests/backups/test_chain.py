"""Deleting and merging restore points never changes the content of another."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from diskvault.backups import chain as chains
from diskvault.backups import repository as repo_files
from diskvault.backups.errors import PointImmutable, PointInUse
from diskvault.backups.models import Backup, BackupType
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from support.backups_env import (
    add_source,
    backup,
    create_disk,
    image,
    point,
    same,
    save,
    write_random,
)


def build(
    settings: Settings, repo: str, tmp: Path, count: int, **kw: object
) -> list[tuple[str, Path]]:
    """A chain of ``count`` points, each with a saved copy of the disk at that moment."""
    disk = create_disk(tmp / "vm1.qcow2")
    add_source(settings, "vm1", "qcow2", disks=[str(disk)])
    saved = []
    for n in range(count):
        saved.append((backup(settings, "vm1", repo, **kw), save(disk, tmp / f"at-{n}.qcow2")))
        write_random(disk, "qcow2", 0.05, seed=200 + n)
    return saved


def delete(settings: Settings, backup_id: str) -> None:
    with session_scope(settings.DATABASE_URL) as s:
        chains.delete_point(s, settings, s.get(Backup, backup_id))


def chain_of(settings: Settings, backup_id: str) -> list[str]:
    with session_scope(settings.DATABASE_URL) as s:
        return [p.id for p in chains.ordered(s, point(settings, backup_id).chain_id or "")]


def all_identical(settings: Settings, saved: list[tuple[str, Path]]) -> None:
    for backup_id, copy in saved:
        assert same(image(settings, backup_id), copy), backup_id


def test_delete_middle_merges_into_child(bsettings: Settings, repo: str, tmp_path: Path) -> None:
    saved = build(bsettings, repo, tmp_path, 5)
    victim = saved[2][0]
    child_image = image(bsettings, saved[3][0])
    delete(bsettings, victim)
    rest = saved[:2] + saved[3:]
    assert chain_of(bsettings, rest[0][0]) == [i for i, _ in rest]
    assert point(bsettings, saved[3][0]).parent_backup_id == saved[1][0]
    all_identical(bsettings, rest)
    assert not any(victim in p.name for p in child_image.parent.iterdir())
    side = repo_files.read_sidecar(repo_files.sidecar_path(child_image))
    assert side["parent"]["file"] == image(bsettings, saved[1][0]).name
    # The rewritten child still verifies against its new checksums.
    from diskvault.backups import verify

    with session_scope(bsettings.DATABASE_URL) as s:
        assert verify.verify(s, bsettings, s.get(Backup, saved[4][0]))["problems"] == []


def test_delete_full_makes_child_the_full(bsettings: Settings, repo: str, tmp_path: Path) -> None:
    saved = build(bsettings, repo, tmp_path, 3)
    delete(bsettings, saved[0][0])
    new_full = point(bsettings, saved[1][0])
    assert new_full.backup_type == BackupType.full and new_full.parent_backup_id is None
    assert Path(new_full.path or "").name.startswith("full-")
    all_identical(bsettings, saved[1:])
    assert len(list(image(bsettings, saved[1][0]).parent.glob("*.qcow2"))) == 2


def test_delete_head_then_next_backup_is_a_full_with_reason(
    bsettings: Settings, repo: str, tmp_path: Path
) -> None:
    saved = build(bsettings, repo, tmp_path, 3)
    delete(bsettings, saved[2][0])
    all_identical(bsettings, saved[:2])
    nxt = point(bsettings, backup(bsettings, "vm1", repo))
    assert nxt.backup_type == BackupType.full and "missing" in (nxt.reason or "")
    assert same(image(bsettings, nxt.id), tmp_path / "vm1.qcow2")


def test_consolidation_keeps_remaining_points(
    bsettings: Settings, repo: str, tmp_path: Path
) -> None:
    saved = build(bsettings, repo, tmp_path, 6, max_chain_length=3)
    ids = [i for i, _ in saved]
    kept = chain_of(bsettings, ids[-1])
    assert kept == ids[-3:]
    assert point(bsettings, kept[0]).backup_type == BackupType.full
    all_identical(bsettings, saved[-3:])
    files = sorted(p.name for p in image(bsettings, ids[-1]).parent.glob("*.qcow2"))
    assert len(files) == 3 and files[0].startswith("full-")


@pytest.fixture
def mounted() -> Iterator[set[str]]:
    busy: set[str] = set()

    def check(session: Session, backup_id: str) -> str | None:
        return "mounted by a test" if backup_id in busy else None

    chains.register_busy_check(check)
    yield busy
    chains._busy_checks.remove(check)


def test_immutable_and_busy_points_refuse(
    bsettings: Settings, repo: str, tmp_path: Path, mounted: set[str]
) -> None:
    saved = build(bsettings, repo, tmp_path, 3, immutability_days=1.0)
    with pytest.raises(PointImmutable, match="immutable until"):
        delete(bsettings, saved[1][0])
    with session_scope(bsettings.DATABASE_URL) as s:
        for row in s.query(Backup).all():
            row.immutable_until = None
    mounted.add(saved[2][0])
    with pytest.raises(PointInUse, match="mounted by a test"):
        delete(bsettings, saved[1][0])
    all_identical(bsettings, saved)
    mounted.clear()
    delete(bsettings, saved[1][0])
    all_identical(bsettings, [saved[0], saved[2]])


def test_max_length_with_immutable_points_cuts_chain_with_full(
    bsettings: Settings, repo: str, tmp_path: Path
) -> None:
    saved = build(bsettings, repo, tmp_path, 4, max_chain_length=3, immutability_days=1.0)
    rows = [point(bsettings, i) for i, _ in saved]
    assert [r.backup_type for r in rows] == [BackupType.full] + [BackupType.incremental] * 2 + [
        BackupType.full
    ]
    assert "immutable" in (rows[3].reason or "") and "new full" in (rows[3].reason or "")
    all_identical(bsettings, saved)
