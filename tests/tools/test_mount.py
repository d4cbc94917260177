"""Loop devices and safe read-only mounts of a disk exported by QSD over FUSE."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from diskvault.tools import mount
from diskvault.tools.mount import Partition, UnsupportedFilesystem
from diskvault.tools.process import run
from diskvault.tools.qsd import QsdServer

MiB = 1024 * 1024
SECTOR = 512

pytestmark = pytest.mark.skipif(
    not (mount.loop_available() and mount.fuse_available()), reason="needs loop devices and FUSE"
)


def sh(*argv: object) -> None:
    run([str(a) for a in argv], timeout=60)


def ext4_image(path: Path, tree: Path) -> Path:
    (tree / "sub").mkdir(parents=True)
    (tree / "hello.txt").write_text("hello from ext4\n")
    (tree / "sub" / "nested.txt").write_text("nested\n")
    sh("truncate", "-s", 8 * MiB, path)
    sh("mkfs.ext4", "-q", "-L", "ROOTFS", "-d", tree, path)
    return path


def fat_image(path: Path, work: Path) -> Path:
    sh("truncate", "-s", 8 * MiB, path)
    sh("mkfs.vfat", "-n", "DATA", path)
    (work / "FAT.TXT").write_text("hello from fat\n")
    sh("mcopy", "-i", path, work / "FAT.TXT", "::/FAT.TXT")
    return path


def ntfs_image(path: Path, work: Path) -> Path:
    sh("truncate", "-s", 8 * MiB, path)
    sh("mkntfs", "-F", "-Q", "-q", "-L", "WIN", path)
    (work / "ntfs.txt").write_text("hello from ntfs\n")
    sh("ntfscp", "-f", path, work / "ntfs.txt", "readme.txt")
    return path


def luks_header(path: Path) -> Path:
    header = bytearray(MiB)
    header[0:8] = b"LUKS\xba\xbe\x00\x01"
    header[168 : 168 + 36] = b"12345678-1234-1234-1234-123456789abc"
    path.write_bytes(bytes(header))
    return path


def gpt_disk(path: Path, parts: list[Path]) -> list[int]:
    """A GPT disk holding each image in its own partition; returns the offsets."""
    sh("truncate", "-s", 32 * MiB, path)
    args: list[object] = []
    for i, part in enumerate(parts, 1):
        args += ["-n", f"{i}:0:+{part.stat().st_size // 1024}K"]
    sh("sgdisk", *args, path)
    out = run(["partx", "-g", "-r", "-b", "-o", "START", str(path)], timeout=10).stdout
    offsets = [int(s) * SECTOR for s in out.split()]
    with open(path, "r+b") as disk:
        for offset, part in zip(offsets, parts, strict=True):
            disk.seek(offset)
            disk.write(part.read_bytes())
    return offsets


@dataclass
class Attached:
    root: Path
    loop: str
    parts: list[Partition]
    offsets: list[int]
    fs_image: Path


@pytest.fixture(scope="module")
def attached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attached]:
    """The disk, as qcow2, exported read-only by QSD over FUSE and on a loop device."""
    root = tmp_path_factory.mktemp("mount")
    work = root / "work"
    work.mkdir()
    fs_image = ext4_image(root / "ext4.img", work / "tree")
    images = [fs_image, fat_image(root / "fat.img", work), ntfs_image(root / "ntfs.img", work)]
    offsets = gpt_disk(root / "disk.raw", [*images, luks_header(root / "luks.img")])
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", root / "disk.raw", root / "disk.qcow2")
    qsd = QsdServer(root / "qsd", name="mount-test")
    loop = None
    try:
        qsd.start()
        export = qsd.export_image_fuse(root / "disk.qcow2", "qcow2", root / "disk.fuse")
        loop = mount.losetup_attach(export.path)
        yield Attached(root, loop, mount.partitions(loop), offsets, fs_image)
    finally:
        for m in mount.list_mounts(root):
            mount.umount(m.mountpoint)
        if loop is not None:
            mount.losetup_detach(loop)
        qsd.stop()


def mounted(where: Path) -> mount.Mount:
    (found,) = [m for m in mount.list_mounts(where) if m.mountpoint == where]
    return found


def test_availability() -> None:
    assert mount.fuse_available()
    assert mount.loop_available()
    mount.require_mount_support()


def test_partitions_in_userspace(attached: Attached) -> None:
    parts = attached.parts
    assert [p.index for p in parts] == [1, 2, 3, 4]
    assert [p.fstype for p in parts] == ["ext4", "vfat", "ntfs", "crypto_LUKS"]
    assert [p.label for p in parts] == ["ROOTFS", "DATA", "WIN", None]
    assert [p.offset for p in parts] == attached.offsets
    assert [p.size for p in parts] == [8 * MiB, 8 * MiB, 8 * MiB, MiB]
    assert parts[3].uuid == "12345678-1234-1234-1234-123456789abc"
    stacked = [d for d in mount.list_loop_devices() if d.back_file == attached.loop]
    assert {d.name for d in stacked} == {p.device for p in parts}
    assert all(d.read_only for d in stacked)


def test_mount_ext4_read_only_safe(attached: Attached) -> None:
    part = attached.parts[0]
    where = attached.root / "m-ext4"
    mount.mount_readonly(part.device, where, part.fstype)
    try:
        assert (where / "hello.txt").read_text() == "hello from ext4\n"
        assert (where / "sub" / "nested.txt").read_text() == "nested\n"
        m = mounted(where)
        assert m.fstype == "ext4"
        assert {"ro", "nosuid", "nodev", "noexec"} <= m.options
        with pytest.raises(OSError):
            (where / "new.txt").write_text("no")
    finally:
        mount.umount(where)
    assert not mount.list_mounts(where)


def test_mount_fat_via_fusefat(attached: Attached) -> None:
    part = attached.parts[1]
    where = attached.root / "m-fat"
    mount.mount_readonly(part.device, where, part.fstype)
    try:
        assert (where / "FAT.TXT").read_text() == "hello from fat\n"
        m = mounted(where)
        assert m.fstype == "fuse.fusefat"
        assert {"ro", "nosuid", "nodev", "noexec"} <= m.options
    finally:
        mount.umount(where)
    assert not mount.list_mounts(where)


def test_mount_ntfs_via_ntfs3g(attached: Attached) -> None:
    part = attached.parts[2]
    where = attached.root / "m-ntfs"
    mount.mount_readonly(part.device, where, part.fstype)
    try:
        assert (where / "readme.txt").read_text() == "hello from ntfs\n"
        m = mounted(where)
        assert m.fstype == "fuseblk"
        assert {"ro", "nosuid", "nodev", "noexec"} <= m.options
    finally:
        mount.umount(where)


@pytest.mark.parametrize(
    ("fstype", "reason"),
    [("crypto_LUKS", "LUKS-encrypted"), ("BitLocker", "BitLocker"), (None, "no filesystem")],
)
def test_refuses_encrypted_and_unknown(attached: Attached, fstype: str | None, reason: str) -> None:
    with pytest.raises(UnsupportedFilesystem, match=reason) as info:
        mount.mount_readonly(attached.parts[3].device, attached.root / "m-bad", fstype)
    assert info.value.status == 422


def test_refuses_filesystem_without_driver(attached: Attached) -> None:
    assert "exfat" not in mount.kernel_filesystems()
    with pytest.raises(UnsupportedFilesystem, match="no driver for exfat"):
        mount.mount_readonly(attached.parts[3].device, attached.root / "m-bad", "exfat")


def test_whole_disk_filesystem_and_detach(tmp_path: Path, attached: Attached) -> None:
    image = tmp_path / "fs.img"
    shutil.copy(attached.fs_image, image)
    loop = mount.losetup_attach(image)
    try:
        assert [d.name for d in mount.list_loop_devices(tmp_path)] == [loop]
        (part,) = mount.partitions(loop)
        assert (part.index, part.device, part.fstype, part.size) == (0, loop, "ext4", 8 * MiB)
    finally:
        mount.losetup_detach(loop)
    assert mount.list_loop_devices(tmp_path) == []


def test_detach_removes_partition_loops(attached: Attached, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    shutil.copy(attached.root / "disk.raw", disk)
    loop = mount.losetup_attach(disk)
    parts = mount.partitions(loop)
    assert len(parts) == 4
    assert mount.partitions(loop) == parts  # no second set of loops
    mount.losetup_detach(loop)
    names = {d.name for d in mount.list_loop_devices()}
    assert loop not in names
    assert not names & {p.device for p in parts}


def test_umount_lazy_fallback_when_busy(attached: Attached) -> None:
    part = attached.parts[0]
    where = attached.root / "m-busy"
    mount.mount_readonly(part.device, where, part.fstype)
    with open(where / "hello.txt") as busy:
        mount.umount(where)
        assert not mount.list_mounts(where)
        assert busy.read() == "hello from ext4\n"
