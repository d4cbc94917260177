"""What a file is, from its content: disk image (by format), ISO, archive, or other.

Disk images go through the image inspector (:func:`inspect_file`), which reads
only bounded header ranges and never lets qemu near the file. An image the
inspector refuses is still a disk image, reported with the reason. A raw file
counts as a disk image only when it carries a partition table or a known
filesystem superblock; otherwise every byte stream would be "a raw image".

Objects without a local path (S3) are inspected through a sparse temporary
file of the object's true size holding only its head and tail, fetched with
ranged reads: the inspector reads headers at the start (up to
:data:`REMOTE_HEAD` for VHDX metadata) and footers at the end, nothing between.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from diskvault.images.errors import UnsafeImage
from diskvault.images.inspect import inspect_file
from diskvault.storage import StorageFile, StorageProvider
from diskvault.storage.base import copy_stream

DISK_IMAGE, ISO, ARCHIVE, OTHER = "disk-image", "iso", "archive", "other"
CATEGORIES = (DISK_IMAGE, ISO, ARCHIVE, OTHER)

SNIFF = 64 * 1024
REMOTE_HEAD = 4 * 1024 * 1024
REMOTE_TAIL = 64 * 1024
REMOTE_WHOLE = REMOTE_HEAD + REMOTE_TAIL

# (offset, magic, format)
ARCHIVE_MAGIC = (
    (0, b"\x1f\x8b", "gzip"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),
    (0, b"BZh", "bzip2"),
    (0, b"PK\x03\x04", "zip"),
    (0, b"PK\x05\x06", "zip"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"),
    (0, b"Rar!\x1a\x07", "rar"),
    (257, b"ustar", "tar"),
)
# Filesystems written straight to a file, with no partition table: still disk images.
FILESYSTEM_MAGIC = (
    (1080, b"\x53\xef", "ext"),
    (0, b"XFSB", "xfs"),
    (3, b"NTFS    ", "ntfs"),
    (0x10040, b"_BHRfS_M", "btrfs"),
)


@dataclass(frozen=True)
class Category:
    category: str
    format: str | None = None
    virtual_size: int | None = None
    note: str | None = None


def sniff_archive(head: bytes) -> str | None:
    for offset, magic, name in ARCHIVE_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "bzip2" and not head[3:4].isdigit():
                continue  # "BZh" then the block size digit
            return name
    return None


def _filesystem(path: str) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(0x10040 + 8)
    for offset, magic, name in FILESYSTEM_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def categorize_path(path: str, size: int, *, max_virtual_size: int) -> Category:
    """Categorize a local file of ``size`` bytes."""
    if size == 0:
        return Category(OTHER, note="empty")
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF)
    except OSError as exc:
        return Category(OTHER, note=f"unreadable: {exc.strerror or exc}")
    archive = sniff_archive(head)
    if archive:
        return Category(ARCHIVE, archive)
    try:
        found = inspect_file(path, max_virtual_size=max_virtual_size)
    except UnsafeImage as exc:
        return Category(DISK_IMAGE, note=f"rejected ({exc.reason}): {exc.fields.get('detail')}")
    if found.format == "iso":
        return Category(ISO, "iso", found.virtual_size)
    if found.format == "raw":
        table = found.details.get("partition_table")
        fs = None if table else _filesystem(path)
        if not (table or fs):
            return Category(OTHER)
        return Category(DISK_IMAGE, "raw", found.virtual_size, f"{table or fs}")
    return Category(DISK_IMAGE, found.format, found.virtual_size)


def _fetch(provider: StorageProvider, key: str, start: int, end: int, fd: int) -> None:
    with provider.open_read(key, start, end) as stream:
        offset = start

        def write(chunk: memoryview) -> int:
            nonlocal offset
            n = os.pwrite(fd, chunk, offset)
            offset += n
            return n

        copy_stream(stream, write)


def categorize(
    provider: StorageProvider, entry: StorageFile, *, max_virtual_size: int, temp_dir: Path
) -> Category:
    """Categorize ``entry`` in place when it is local, else via a sparse head+tail copy."""
    local = provider.local_path(entry.key)
    if local is not None:
        return categorize_path(str(local), entry.size, max_virtual_size=max_virtual_size)
    if entry.size == 0:
        return Category(OTHER, note="empty")
    temp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="categorize-", suffix=".partial", dir=temp_dir)
    try:
        os.ftruncate(fd, entry.size)
        if entry.size <= REMOTE_WHOLE:
            _fetch(provider, entry.key, 0, entry.size, fd)
        else:
            _fetch(provider, entry.key, 0, REMOTE_HEAD, fd)
            _fetch(provider, entry.key, entry.size - REMOTE_TAIL, entry.size, fd)
        return categorize_path(name, entry.size, max_virtual_size=max_virtual_size)
    finally:
        os.close(fd)
        os.unlink(name)
