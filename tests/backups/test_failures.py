"""Failures leave every earlier restore point intact and the next incremental correct."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from diskvault.backups import verify
from diskvault.backups.errors import RepositoryFull
from diskvault.backups.models import Backup, BackupStatus, BackupType
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.tools import qemu_img
from support.backups_env import (
    MiB,
    add_repo,
    add_source,
    backup,
    create_disk,
    image,
    point,
    same,
    save,
    write_random,
)
from support.backups_servers import qemu_nbd, url


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_source_vanishes_mid_backup(bsettings: Settings, repo: str, tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "vm.qcow2")
    qemu_img.bitmap(disk, "b0", "add")
    sock = tmp_path / "nbd.sock"
    add_source(bsettings, "nvm", "nbd", unverified=True, url=url(sock), bitmap="b0")
    with qemu_nbd(disk, sock, bitmap="b0"):
        first = backup(bsettings, "nvm", repo)
    at_first = save(disk, tmp_path / "at-first.qcow2")
    with qemu_nbd(disk, sock, bitmap="b0") as server:
        write_random(url(sock), "raw", 0.05, seed=61)

        def kill_server(done: int, total: int, label: str) -> None:
            if done > 0:
                server.terminate()

        with pytest.raises(Exception, match=r"(?i)input/output|connection|nbd|unavailable"):
            backup(bsettings, "nvm", repo, "full", speed=8 * MiB, progress=kill_server)
    assert leftovers(image(bsettings, first).parent) == []
    failed = [
        p
        for p in image(bsettings, first).parent.glob("*.qcow2")
        if p.name != image(bsettings, first).name
    ]
    assert failed == []
    assert same(image(bsettings, first), at_first)
    with qemu_nbd(disk, sock, bitmap="b0"):
        nxt = point(bsettings, backup(bsettings, "nvm", repo))
        assert nxt.backup_type == BackupType.incremental and nxt.parent_backup_id == first
        assert same(image(bsettings, nxt.id), url(sock), "qcow2", "raw")


def test_repository_full(bsettings: Settings, tmp_path: Path, small_fs: Path) -> None:
    repo = add_repo(bsettings, "small", small_fs / "repo")
    disk = tmp_path / "vm.qcow2"
    qemu_img.create(disk, "qcow2", 64 * MiB)
    write_random(disk, "qcow2", 0.1, seed=71)
    add_source(bsettings, "vm1", "qcow2", disks=[str(disk)])
    first = backup(bsettings, "vm1", repo)
    at_first = save(disk, tmp_path / "at-first.qcow2")
    ballast = small_fs / "ballast"
    subprocess.run(["fallocate", "-l", "20M", str(ballast)], check=False, timeout=10)
    write_random(disk, "qcow2", 0.3, seed=72)
    with pytest.raises(RepositoryFull, match="ran out of space") as info:
        backup(bsettings, "vm1", repo)
    assert info.value.status == 507
    directory = image(bsettings, first).parent
    assert leftovers(directory) == [] and len(list(directory.glob("*.qcow2"))) == 1
    assert same(image(bsettings, first), at_first)
    with session_scope(bsettings.DATABASE_URL) as s:
        failed = s.query(Backup).filter(Backup.status == BackupStatus.failed).one()
        assert "space" in (failed.error or "")
    ballast.unlink()
    nxt = point(bsettings, backup(bsettings, "vm1", repo))
    assert nxt.backup_type == BackupType.incremental and nxt.parent_backup_id == first
    assert same(image(bsettings, nxt.id), disk)


def flip_data_byte(path: Path) -> int:
    """Flip one byte inside a data cluster this layer owns; return its file offset."""
    extent = next(e for e in qemu_img.map(path, "qcow2") if e["depth"] == 0 and e["data"])
    offset = int(extent["offset"]) + 12345
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return offset


def test_corrupted_chain_file_found_by_verify(
    bsettings: Settings, repo: str, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "vm.qcow2")
    add_source(bsettings, "vm1", "qcow2", disks=[str(disk)])
    saved = []
    for n in range(3):
        saved.append((backup(bsettings, "vm1", repo), save(disk, tmp_path / f"at-{n}.qcow2")))
        write_random(disk, "qcow2", 0.05, seed=80 + n)
    victim = image(bsettings, saved[1][0])
    offset = flip_data_byte(victim)
    with session_scope(bsettings.DATABASE_URL) as s:
        result = verify.verify(s, bsettings, s.get(Backup, saved[2][0]))
        earlier = verify.verify(s, bsettings, s.get(Backup, saved[0][0]))
    assert result["status"] == "corrupt"
    (problem,) = result["problems"]
    block = offset // MiB * MiB
    assert f"{victim.name} at offset {block} " in problem
    assert earlier["status"] == "ok"
    assert point(bsettings, saved[1][0]).verify_status == "corrupt"
    assert same(image(bsettings, saved[0][0]), saved[0][1])
    nxt = point(bsettings, backup(bsettings, "vm1", repo))
    assert nxt.backup_type == BackupType.full and "damaged" in (nxt.reason or "")
    assert same(image(bsettings, nxt.id), disk)
    write_random(disk, "qcow2", 0.05, seed=90)
    after = point(bsettings, backup(bsettings, "vm1", repo))
    assert after.backup_type == BackupType.incremental and after.parent_backup_id == nxt.id
    assert same(image(bsettings, after.id), disk)
