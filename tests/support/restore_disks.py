"""Guest disks for file-level restore tests: real ext4, xfs, btrfs, FAT and NTFS
filesystems with known files, in a GPT disk and a partitionless one.

Partition images are built as sparse files and copied into the disk at their
offsets; files change between restore points through a read-write loop mount
(ext4) and ``mcopy -o`` (FAT), the way a running guest would change them.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

MiB = 1024 * 1024
SECTOR = 512
GUEST_PASSWD = "root:x:0:0:the guest's root:/root:/bin/sh\n"
UNICODE_DIR = "données"
UNICODE_FILE = "日本語 ファイル.txt"
UNICODE_TEXT = "héllo wörld ✓\n"


def sh(*argv: object, timeout: float = 120) -> str:
    out = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, f"{argv}: {out.stderr}"
    return out.stdout


def sha256(data: bytes | Path) -> str:
    if isinstance(data, Path):
        h = hashlib.sha256()
        with open(data, "rb") as fh:
            while chunk := fh.read(MiB):
                h.update(chunk)
        return h.hexdigest()
    return hashlib.sha256(data).hexdigest()


def index_php(version: int) -> str:
    return f"<?php echo 'site version {version}'; ?>\n"


def note_txt(version: int) -> str:
    return f"fat note, version {version}\n"


def root_tree(tree: Path, big: Path | None, version: int) -> Path:
    """The ext4 root filesystem: nested dirs, unicode names, symlinks (some aimed
    at host files), a FIFO, an empty dir, and a big file if given."""
    for d in ("etc", "var/www/html", "deep/a/b/c/d/e", "bin", "empty", UNICODE_DIR):
        (tree / d).mkdir(parents=True, exist_ok=True)
    (tree / "etc/passwd").write_text(GUEST_PASSWD)
    (tree / "etc/hostname").write_text("guest\n")
    (tree / "var/www/index.php").write_text(index_php(version))
    (tree / "var/www/html/page.html").write_text("<h1>page</h1>\n" * 100)
    (tree / "deep/a/b/c/d/e/leaf.txt").write_text("deep leaf\n")
    (tree / UNICODE_DIR / UNICODE_FILE).write_text(UNICODE_TEXT)
    tool = tree / "bin/tool.sh"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    links = {
        "passwd-link": "/etc/passwd",  # the guest's passwd, never the host's
        "escape-link": "../../../../../../../etc/passwd",
        "shadow-link": "/etc/shadow",  # exists on the host only
        "www": "/var/www",
        "rel-link": "var/www/index.php",
        "dangling": "/nonexistent/host-only",
    }
    for name, target in links.items():
        os.symlink(target, tree / name)
    os.mkfifo(tree / "pipe")
    if big is not None:
        os.link(big, tree / "big.bin")
    return tree


def data_tree(tree: Path, fs: str, *, links: bool = True) -> Path:
    """A small tree for the other filesystems: nested dirs, a unicode name, a link."""
    (tree / "docs/nested/deeper").mkdir(parents=True)
    (tree / "docs/report.txt").write_text(f"{fs} report\n" * 20)
    (tree / "docs/nested/deeper/leaf.txt").write_text(f"{fs} leaf\n")
    (tree / UNICODE_FILE).write_text(UNICODE_TEXT)
    if links:
        os.symlink("docs/report.txt", tree / "report-link")
    return tree


# Names from an old Latin-1 system: bytes that are not UTF-8 (é is 0xE9).
LEGACY_FILE = os.fsdecode(b"caf\xe9.txt")
LEGACY_LINK = os.fsdecode(b"lien-\xe9")
LEGACY_TEXT = b"latin-1 named file\n"


def legacy_names(tree: Path) -> Path:
    """A file and a symlink (aimed at it) whose names are not valid UTF-8."""
    tree.mkdir(parents=True)
    (tree / LEGACY_FILE).write_bytes(LEGACY_TEXT)
    os.symlink(LEGACY_FILE, tree / LEGACY_LINK)
    (tree / "plain.txt").write_text("plain\n")
    return tree


def make_big(path: Path, size: int = 100 * MiB) -> Path:
    rng = random.Random(9)
    with open(path, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(rng.randbytes(MiB))
    return path


def ext4_image(path: Path, tree: Path, size: int, label: str = "ROOTFS") -> Path:
    sh("truncate", "-s", size, path)
    sh("mkfs.ext4", "-q", "-F", "-L", label, "-d", tree, path)
    return path


def loop_copy_in(path: Path, tree: Path, *, ntfs: bool = False) -> None:
    """Fill a fresh filesystem image through a read-write mount."""
    mnt = path.with_suffix(".mnt")
    mnt.mkdir()
    if ntfs:
        sh("ntfs-3g", path, mnt)
    else:
        sh("mount", "-o", "loop", path, mnt)
    try:
        shutil.copytree(tree, mnt, dirs_exist_ok=True, symlinks=True)
    finally:
        sh("umount", mnt)
        mnt.rmdir()


def xfs_image(path: Path, tree: Path) -> Path:
    sh("truncate", "-s", 300 * MiB, path)  # the smallest xfs recent xfsprogs make
    sh("mkfs.xfs", "-q", "-L", "XFSDATA", path)
    loop_copy_in(path, tree)
    return path


def btrfs_image(path: Path, tree: Path) -> Path:
    sh("truncate", "-s", 120 * MiB, path)
    sh("mkfs.btrfs", "-q", "-L", "BTRDATA", "--rootdir", tree, path)
    return path


def fat_image(path: Path, work: Path, version: int) -> Path:
    sh("truncate", "-s", 16 * MiB, path)
    sh("mkfs.vfat", "-n", "FATDATA", path)
    (work / "NOTE.TXT").write_text(note_txt(version))
    (work / "REPORT.TXT").write_text("quarterly report\n" * 50)
    sh("mmd", "-i", path, "::/DOCS")
    sh("mcopy", "-i", path, work / "NOTE.TXT", "::/NOTE.TXT")
    sh("mcopy", "-i", path, work / "REPORT.TXT", "::/DOCS/REPORT.TXT")
    return path


def ntfs_image(path: Path, tree: Path) -> Path:
    sh("truncate", "-s", 16 * MiB, path)
    sh("mkntfs", "-F", "-Q", "-q", "-L", "NTFSDATA", path)
    loop_copy_in(path, tree, ntfs=True)
    return path


def luks_image(path: Path) -> Path:
    header = bytearray(MiB)
    header[0:8] = b"LUKS\xba\xbe\x00\x01"
    header[168 : 168 + 36] = b"12345678-1234-1234-1234-123456789abc"
    path.write_bytes(bytes(header))
    return path


def broken_ext4_image(path: Path, work: Path) -> Path:
    """An ext4 superblock claiming 64 MiB in an 8 MiB partition: found, not mountable."""
    whole = work / "broken-whole.img"
    sh("truncate", "-s", 64 * MiB, whole)
    sh("mkfs.ext4", "-q", "-F", "-L", "BROKEN", whole)
    sh("truncate", "-s", 8 * MiB, whole)
    whole.rename(path)
    return path


@dataclass
class Part:
    index: int
    offset: int
    size: int


@dataclass
class GuestDisk:
    path: Path
    parts: dict[str, Part] = field(default_factory=dict)


def gpt_disk(path: Path, images: dict[str, Path | int]) -> GuestDisk:
    """A GPT disk with one partition per image (or empty partition of a size)."""
    sizes = {k: v if isinstance(v, int) else v.stat().st_size for k, v in images.items()}
    total = sum(-(-s // MiB) * MiB for s in sizes.values()) + 2 * MiB
    sh("truncate", "-s", total, path)
    args: list[object] = []
    for i, size in enumerate(sizes.values(), 1):
        args += ["-n", f"{i}:0:+{size // 1024}K"]
    sh("sgdisk", *args, path)
    starts = sh("partx", "-g", "-r", "-b", "-o", "START", path).split()
    disk = GuestDisk(path)
    for i, ((name, image), start) in enumerate(zip(images.items(), starts, strict=True), 1):
        offset = int(start) * SECTOR
        disk.parts[name] = Part(i, offset, sizes[name])
        if isinstance(image, Path):
            sh(
                "dd",
                f"if={image}",
                f"of={path}",
                "bs=1M",
                f"seek={offset}",
                "oflag=seek_bytes",
                "conv=sparse,notrunc",
                "status=none",
            )
    return disk


def rewrite_ext4_file(disk: GuestDisk, part: str, rel: str, text: str) -> None:
    """Change one file inside an ext4 partition through a read-write loop mount."""
    p = disk.parts[part]
    mnt = disk.path.with_suffix(".rw")
    mnt.mkdir(exist_ok=True)
    sh("mount", "-o", f"loop,offset={p.offset},sizelimit={p.size}", disk.path, mnt)
    try:
        (mnt / rel).write_text(text)
    finally:
        sh("umount", mnt)


def rewrite_fat_file(disk: GuestDisk, part: str, name: str, text: str, work: Path) -> None:
    src = work / name
    src.write_text(text)
    sh("mcopy", "-o", "-i", f"{disk.path}@@{disk.parts[part].offset}", src, f"::/{name}")


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def tar_file(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def zip_file(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(BytesIO(data)) as z:
        return z.read(name)
