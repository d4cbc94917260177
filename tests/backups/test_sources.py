"""nbd (dirty bitmap), raw (hash map) and qmp (a running process) sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from diskvault.backups import repository as repo_files
from diskvault.backups.models import BackupType
from diskvault.config import Settings
from diskvault.tools import qemu_img
from support.backups_env import (
    DISK,
    add_source,
    backup,
    create_disk,
    image,
    own_bytes,
    point,
    same,
    write_random,
)
from support.backups_servers import fake_vm, qemu_nbd, url


def snapshot(source: str, fmt: str, to: Path) -> Path:
    qemu_img.convert(source, fmt, to, "raw")
    return to


def test_nbd_source_copies_only_dirty_extents(
    bsettings: Settings, repo: str, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "vm.qcow2")
    qemu_img.bitmap(disk, "b0", "add")
    sock = tmp_path / "nbd.sock"
    add_source(bsettings, "nvm", "nbd", unverified=True, url=url(sock), bitmap="b0")
    with qemu_nbd(disk, sock, bitmap="b0"):
        full = backup(bsettings, "nvm", repo)
        at_full = snapshot(url(sock), "raw", tmp_path / "at-full.raw")
        write_random(url(sock), "raw", 0.05, seed=31)
        inc1 = backup(bsettings, "nvm", repo)
        at_inc1 = snapshot(url(sock), "raw", tmp_path / "at-inc1.raw")
        write_random(url(sock), "raw", 0.03, seed=32)
        inc2 = backup(bsettings, "nvm", repo)
        at_inc2 = snapshot(url(sock), "raw", tmp_path / "at-inc2.raw")
    assert point(bsettings, full).backup_type == BackupType.full
    for backup_id, copy in ((full, at_full), (inc1, at_inc1), (inc2, at_inc2)):
        assert same(image(bsettings, backup_id), copy, "qcow2", "raw")
    row = point(bsettings, inc1)
    assert row.backup_type == BackupType.incremental
    # Only the dirty extents (about 5%, at 64 KiB granularity) were read and written.
    assert 0 < row.bytes_transferred < 0.15 * DISK
    assert 0 < own_bytes(image(bsettings, inc1)) <= row.bytes_transferred
    assert point(bsettings, inc2).backup_type == BackupType.incremental


def test_nbd_without_bitmap_is_a_full_with_reason(
    bsettings: Settings, repo: str, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "vm.qcow2")
    sock = tmp_path / "nbd.sock"
    add_source(bsettings, "plain", "nbd", unverified=True, url=url(sock), bitmap="b0")
    with qemu_nbd(disk, sock):
        backup(bsettings, "plain", repo)
        second = point(bsettings, backup(bsettings, "plain", repo))
        assert same(image(bsettings, second.id), url(sock), "qcow2", "raw")
    assert second.backup_type == BackupType.full
    assert "qemu:dirty-bitmap:b0" in (second.reason or "")


def test_raw_source_hash_incremental(bsettings: Settings, repo: str, tmp_path: Path) -> None:
    disk = create_disk(tmp_path / "vm.raw", "raw")
    add_source(bsettings, "rvm", "raw", path=str(disk))
    full = backup(bsettings, "rvm", repo)
    at_full = tmp_path / "at-full.raw"
    at_full.write_bytes(disk.read_bytes())
    changed = write_random(disk, "raw", 0.05, seed=41)
    inc = point(bsettings, backup(bsettings, "rvm", repo))
    assert inc.backup_type == BackupType.incremental
    assert same(image(bsettings, full), at_full, "qcow2", "raw")
    assert same(image(bsettings, inc.id), disk, "qcow2", "raw")
    # Cluster-granular (64 KiB) writes of about 5% of random, unaligned changes.
    assert changed <= inc.bytes_transferred < 3 * changed
    assert repo_files.hashmap_path(image(bsettings, inc.id)).exists()
    # A damaged hash map is never trusted.
    repo_files.hashmap_path(image(bsettings, inc.id)).write_bytes(b"junk")
    write_random(disk, "raw", 0.01, seed=42)
    third = point(bsettings, backup(bsettings, "rvm", repo))
    assert third.backup_type == BackupType.full and "hash map" in (third.reason or "")
    assert same(image(bsettings, third.id), disk, "qcow2", "raw")


def test_qmp_source_push_backup_from_running_process(
    bsettings: Settings, repo: str, tmp_path: Path
) -> None:
    disk = create_disk(tmp_path / "vm.qcow2")
    with fake_vm(tmp_path / "vm", disk) as (monitor, guest):
        add_source(bsettings, "live", "qmp", socket=str(monitor), disks=[{"node": "drive0"}])
        full = backup(bsettings, "live", repo)
        at_full = snapshot(guest, "raw", tmp_path / "at-full.raw")
        write_random(guest, "raw", 0.05, seed=51)
        inc = point(bsettings, backup(bsettings, "live", repo))
        at_inc = snapshot(guest, "raw", tmp_path / "at-inc.raw")
    assert inc.backup_type == BackupType.incremental
    assert same(image(bsettings, full), at_full, "qcow2", "raw")
    assert same(image(bsettings, inc.id), at_inc, "qcow2", "raw")


@pytest.mark.parametrize("kind", ["qcow2", "raw"])
def test_disk_resize_forces_full(bsettings: Settings, repo: str, tmp_path: Path, kind: str) -> None:
    disk = create_disk(tmp_path / f"vm.{kind}", kind)
    add_source(bsettings, "grow", kind, path=str(disk))
    backup(bsettings, "grow", repo)
    qemu_img.resize(disk, kind, DISK * 2)
    second = point(bsettings, backup(bsettings, "grow", repo))
    assert second.backup_type == BackupType.full and "resized" in (second.reason or "")
    assert same(image(bsettings, second.id), disk, "qcow2", kind)
