"""Mount lifecycle through the service: what gets mounted and how, expiry,
crash recovery, failures, concurrency, and that nothing is left behind."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from diskvault.backups.chain import busy_reason
from diskvault.config import Settings
from diskvault.db.engine import session_scope
from diskvault.restore import mounts, service
from diskvault.restore.errors import MountFailed, MountNotActive, MountNotFound
from diskvault.restore.models import MountStatus, RestoreMount
from diskvault.tools import mount as mount_tool
from support.restore_disks import GUEST_PASSWD, index_php, note_txt
from support.restore_world import World

SAFE = {"ro", "nosuid", "nodev", "noexec"}


def do_mount(world: World, backup_id: str, settings: Settings | None = None) -> RestoreMount:
    with session_scope(world.settings.DATABASE_URL) as s:
        row = service.mount(s, settings or world.settings, backup_id, "tester")
        s.expunge(row)
        return row


def do_unmount(world: World, mount_id: str) -> RestoreMount:
    with session_scope(world.settings.DATABASE_URL) as s:
        row = service.unmount(s, world.settings, mount_id)
        s.expunge(row)
        return row


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def assert_gone(row: RestoreMount) -> None:
    workdir = Path(row.workdir)
    assert not mount_tool.list_mounts(workdir)
    names = {d.name for d in mount_tool.list_loop_devices()}
    assert not names & set(row.loop_devices)
    assert not workdir.exists()
    assert row.qsd_pid is not None and not pid_alive(row.qsd_pid)


def part(row: RestoreMount, index: int) -> dict[str, Any]:
    return next(p for p in row.partitions if p["index"] == index)


def test_gpt_point_mounts_every_supported_filesystem_safely(world: World) -> None:
    row = do_mount(world, world.gpt_points[-1])
    try:
        workdir = Path(row.workdir)
        got = {p["index"]: (p["fstype"], p["label"], p["mounted"]) for p in row.partitions}
        assert got == {
            1: ("ext4", "ROOTFS", True),
            2: ("xfs", "XFSDATA", True),
            3: ("btrfs", "BTRDATA", True),
            4: ("vfat", "FATDATA", True),
            5: ("ntfs", "NTFSDATA", True),
            6: ("crypto_LUKS", None, False),
            7: ("ext4", "BROKEN", False),
            8: (None, None, False),
        }
        assert "LUKS-encrypted" in part(row, 6)["reason"]
        assert "failed to mount" in part(row, 7)["reason"]
        assert "no filesystem was recognised" in part(row, 8)["reason"]
        assert all(p["reason"] is None for p in row.partitions if p["mounted"])
        found = {m.mountpoint.name: m for m in mount_tool.list_mounts(workdir)}
        assert set(found) == {"disk", "p1", "p2", "p3", "p4", "p5"}
        assert {found[f"p{i}"].fstype for i in range(1, 6)} == {
            "ext4",
            "xfs",
            "btrfs",
            "fuse.fusefat",
            "fuseblk",
        }
        for i in range(1, 6):
            assert found[f"p{i}"].options >= SAFE, found[f"p{i}"]
        assert "noload" in found["p1"].options or "norecovery" in found["p1"].options
        assert "norecovery" in found["p2"].options
        assert (workdir / "p1/etc/passwd").read_text() == GUEST_PASSWD
        assert (workdir / "p1/var/www/index.php").read_text() == index_php(3)
        assert (workdir / "p4/NOTE.TXT").read_text() == note_txt(3)
        assert (workdir / "p2/docs/nested/deeper/leaf.txt").read_text() == "xfs leaf\n"
        assert (workdir / "p5/docs/nested/deeper/leaf.txt").read_text() == "ntfs leaf\n"
        with pytest.raises(OSError):
            (workdir / "p1/new.txt").write_text("no")
        loops = [d for d in mount_tool.list_loop_devices() if d.name in row.loop_devices]
        assert len(loops) == 9 and all(d.read_only for d in loops)
        assert row.qsd_pid is not None and pid_alive(row.qsd_pid)
    finally:
        gone = do_unmount(world, row.id)
    assert gone.status == MountStatus.unmounted and gone.reason == "unmounted on request"
    assert_gone(row)
    assert do_unmount(world, row.id).status == MountStatus.unmounted  # idempotent


def test_partitionless_disk_and_each_point_its_own_version(world: World) -> None:
    first, last = (do_mount(world, b) for b in world.flat_points)
    try:
        assert [(p["index"], p["fstype"], p["mounted"]) for p in first.partitions] == [
            (0, "ext4", True)
        ]
        assert (Path(first.workdir) / "p0/version.txt").read_text() == "flat version 1\n"
        assert (Path(last.workdir) / "p0/version.txt").read_text() == "flat version 2\n"
    finally:
        for row in (first, last):
            assert_gone(do_unmount(world, row.id))


def test_concurrent_mounts_are_independent(world: World) -> None:
    wanted = [*world.flat_points, world.gpt_points[0], world.gpt_points[-1], world.gpt_points[-1]]
    with ThreadPoolExecutor(len(wanted)) as pool:
        rows = list(pool.map(lambda b: do_mount(world, b), wanted))
    try:
        assert len({r.id for r in rows}) == 5 and len({r.workdir for r in rows}) == 5
        assert all(r.status == MountStatus.mounted for r in rows)
        assert len({d for r in rows for d in r.loop_devices}) == sum(
            len(r.loop_devices) for r in rows
        )
        versions = [(Path(r.workdir) / "p1/var/www/index.php").read_text() for r in rows[2:]]
        assert versions == [index_php(1), index_php(3), index_php(3)]
        # Two mounts of one point: unmounting one leaves the other working.
        assert_gone(do_unmount(world, rows[3].id))
        assert (Path(rows[4].workdir) / "p1/var/www/index.php").read_text() == index_php(3)
        with session_scope(world.settings.DATABASE_URL) as s:
            assert busy_reason(s, world.gpt_points[-1]) == (
                f"mounted by restore mount {rows[4].id}; unmount it first (diskvault backup umount)"
            )
    finally:
        for row in rows:
            do_unmount(world, row.id)
    with session_scope(world.settings.DATABASE_URL) as s:
        assert busy_reason(s, world.gpt_points[-1]) is None


def test_access_extends_and_idle_mounts_expire(world: World) -> None:
    row = do_mount(world, world.flat_points[0])
    url = world.settings.DATABASE_URL
    with session_scope(url) as s:
        live = s.get(RestoreMount, row.id)
        live.expires_at = live.last_access = live.last_access - timedelta(hours=2)
    assert service.expire_idle(world.settings) == [row.id]  # idle: gone
    with session_scope(url) as s:
        ended = s.get(RestoreMount, row.id)
        assert ended.status == MountStatus.unmounted and "expired after" in ended.reason
        with pytest.raises(MountNotActive, match="mount the restore point again"):
            service.get_mounted(s, world.settings, row.id)
    assert_gone(row)
    again = do_mount(world, world.flat_points[0])
    with session_scope(url) as s:
        live = s.get(RestoreMount, again.id)
        live.expires_at = live.last_access = live.last_access - timedelta(seconds=30)
    with session_scope(url) as s:
        touched = service.get_mounted(s, world.settings, again.id)  # an access
        timeout = timedelta(seconds=world.settings.RESTORE_IDLE_TIMEOUT_S)
        assert touched.expires_at - touched.last_access == timeout
        assert touched.expires_at > again.expires_at
    assert service.expire_idle(world.settings) == []
    do_unmount(world, again.id)


def test_recover_cleans_what_a_dead_process_left(world: World) -> None:
    row = do_mount(world, world.gpt_points[0])
    # The process that made it is gone: only the work directory tells what it owned.
    orphan = mounts._servers.pop(row.workdir)
    assert service.recover(world.settings) == 1
    assert_gone(row)
    orphan.stop()  # only closes our side of its QMP socket: the daemon is already dead
    with session_scope(world.settings.DATABASE_URL) as s:
        ended = s.get(RestoreMount, row.id)
        assert ended.status == MountStatus.unmounted and "start-up" in ended.reason
    assert service.recover(world.settings) == 0


def test_failed_mount_leaves_nothing(world: World) -> None:
    broken = world.settings.model_copy(update={"QEMU_STORAGE_DAEMON_PATH": "/nonexistent/qsd"})
    before = set(os.listdir(world.settings.mount_root))
    with pytest.raises(MountFailed, match="/nonexistent/qsd") as info:
        do_mount(world, world.flat_points[0], broken)
    assert info.value.status == 500
    assert set(os.listdir(world.settings.mount_root)) == before
    with session_scope(world.settings.DATABASE_URL) as s:
        row = s.query(RestoreMount).order_by(RestoreMount.created_at.desc()).first()
        assert row is not None and row.status == MountStatus.failed
        assert busy_reason(s, world.flat_points[0]) is None
        with pytest.raises(MountNotFound):
            service.get(s, "nope")


def test_idle_expiry_runs_as_a_per_node_periodic_task(world: World) -> None:
    from diskvault.jobs.scheduler import PERIODIC
    from diskvault.restore import tasks  # noqa: F401 - registers the task

    task = PERIODIC["restore-expire-idle"]
    assert task.per_node
    assert task.interval_s(world.settings) == world.settings.RESTORE_SWEEP_INTERVAL_S
    row = do_mount(world, world.flat_points[-1])
    with session_scope(world.settings.DATABASE_URL) as s:
        live = s.get(RestoreMount, row.id)
        assert live is not None
        live.expires_at = live.expires_at - timedelta(hours=2)
    task.fn(world.settings)
    assert_gone(row)
