"""Where a source image holds data, so that work skips the rest of its virtual size.

``qemu-img map`` answers for most formats, but qemu's VHDX driver reports every
byte as data: a 4 TiB VHDX holding 1 MiB would be read (as zeros) in full. For
VHDX the block allocation table is read here instead. Only call this on a file
that :func:`diskvault.images.inspect.inspect_file` accepted.
"""

from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path

from diskvault.images import formats
from diskvault.images.reader import Reader
from diskvault.tools import qemu_img

# VHDX BAT entry states (low 3 bits) whose block holds data; the others read as zeros.
VHDX_PAYLOAD_PRESENT = (6, 7)  # fully, partially present
VHDX_LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F").bytes_le
BAT_READ = 8 * 1024 * 1024


def data_ranges(path: Path, fmt: str, *, binary: str) -> list[tuple[int, int]]:
    """(start, end) ranges of the guest disk that may hold data; everything else is zeros."""
    if fmt == "vhdx":
        return _vhdx_ranges(path)
    return [
        (e["start"], e["start"] + e["length"])
        for e in qemu_img.map(path, fmt, binary=binary)
        if e.get("data") and not e.get("zero")
    ]


def _vhdx_ranges(path: Path) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        r = Reader(fd, os.fstat(fd).st_size)
        (count,) = struct.unpack("<I", r.at(formats.VHDX_REGION_TABLE + 8, 4))
        table = r.at(formats.VHDX_REGION_TABLE + 16, 32 * count)
        regions = {}
        for i in range(count):
            guid, offset, length, _ = struct.unpack_from("<16sQII", table, 32 * i)
            regions[guid] = (offset, length)
        items = formats.vhdx_metadata_items(r, *regions[formats.VHDX_REGION_METADATA])
        (size,) = struct.unpack("<Q", r.at(items[formats.VHDX_VIRTUAL_DISK_SIZE], 8))
        (block,) = struct.unpack("<I", r.at(items[formats.VHDX_FILE_PARAMETERS], 4))
        sector = 512
        if VHDX_LOGICAL_SECTOR in items:
            (sector,) = struct.unpack("<I", r.at(items[VHDX_LOGICAL_SECTOR], 4))
        if not block or block & (block - 1) or sector not in (512, 4096):
            raise formats.UnsafeImage(
                formats.Reason.INVALID_HEADER, f"VHDX block size {block} or sector {sector}"
            )
        bat_offset, bat_length = regions[formats.VHDX_REGION_BAT]
        # A sector bitmap entry follows every ``chunk`` payload entries.
        chunk = max(1, (1 << 23) * sector // block)
        blocks = -(-size // block)
        entries = blocks + (blocks - 1) // chunk
        if entries * 8 > bat_length:
            raise formats.UnsafeImage(
                formats.Reason.INVALID_HEADER, "the VHDX block table is too small"
            )
        return _present(fd, bat_offset, entries, chunk, block, size)
    finally:
        os.close(fd)


def _present(
    fd: int, bat_offset: int, entries: int, chunk: int, block: int, size: int
) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for first in range(0, entries, BAT_READ // 8):
        want = min(BAT_READ, (entries - first) * 8)
        raw = os.pread(fd, want, bat_offset + first * 8)
        if len(raw) != want:
            raise OSError(f"the VHDX block table is cut short at entry {first}")
        for k, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
            index = first + k
            if (index + 1) % (chunk + 1) == 0 or entry & 7 not in VHDX_PAYLOAD_PRESENT:
                continue  # a sector bitmap entry, or a block that reads as zeros
            payload = index - index // (chunk + 1)
            start, end = payload * block, min(size, (payload + 1) * block)
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((start, end))
    return ranges
