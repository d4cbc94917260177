"""The extents digest: a SHA-256 of a file that costs its data, not its size.

A plain SHA-256 must feed every byte, holes included: a 4 TiB image holding
1 MiB of data takes an hour of CPU. The extents digest skips all-zero blocks
yet still covers every byte, because a skipped block can only be zeros:

    h = SHA-256()
    for offset in 0, 65536, 131072, ... < size:
        block = file[offset : offset + 65536]       # the last one may be shorter
        if block has a non-zero byte:
            h.update(u64be(offset) + u64be(len(block)) + block)
    h.update(u64be(size))
    digest = h.hexdigest()

It depends only on the file's content (not on how it is allocated), so anyone can
compute it with a few lines of Python (see docs/images.md). Here the blocks are
found from the file's data extents (SEEK_DATA/SEEK_HOLE) or a stream's records,
so holes are never read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Callable
from pathlib import Path

from diskvault.tools.process import Cancelled

NAME = "sha256-extents-v1"
BLOCK = 64 * 1024
READ = 8 * 1024 * 1024
_HEADER = struct.Struct(">QQ")
_SIZE = struct.Struct(">Q")
_ZEROS = bytes(BLOCK)


def data_extents(fd: int, end: int, start: int = 0) -> list[tuple[int, int]]:
    """(start, end) of the data regions in ``[start, end)``; holes between them read as zeros."""
    extents = []
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            raise
        if data >= end:
            break
        stop = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        extents.append((data, stop))
        pos = stop
    return extents


class ExtentHasher:
    """Feed data at increasing, non-overlapping offsets; anything not fed is zeros."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._block = bytearray(BLOCK)  # the block being assembled from partial pieces
        self._start: int | None = None  # its offset
        self.fed = 0  # bytes given to :meth:`update`: the cost, for tests and benches

    def update(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.fed += len(view)
        while view:
            start = offset - offset % BLOCK
            if self._start is not None and self._start != start:
                self._close(BLOCK)
            if self._start is None and offset == start and len(view) >= BLOCK:
                whole = len(view) - len(view) % BLOCK
                self._whole_blocks(offset, view[:whole])
                offset, view = offset + whole, view[whole:]
                continue
            if self._start is None:
                self._start = start
            at = offset - start
            k = min(len(view), BLOCK - at)
            self._block[at : at + k] = view[:k]
            offset, view = offset + k, view[k:]

    def _whole_blocks(self, offset: int, view: memoryview) -> None:
        for at in range(0, len(view), BLOCK):
            block = bytes(view[at : at + BLOCK])  # a copy costs far less than the hash
            if not block.startswith(_ZEROS):
                self._hash.update(_HEADER.pack(offset + at, BLOCK))
                self._hash.update(block)

    def _close(self, length: int) -> None:
        assert self._start is not None
        block = memoryview(self._block)[:length]
        if not self._block.startswith(_ZEROS[:length]):
            self._hash.update(_HEADER.pack(self._start, length))
            self._hash.update(block)
        self._block[:] = _ZEROS
        self._start = None

    def hexdigest(self, size: int) -> str:
        """The digest of a file of ``size`` bytes; ends the hasher."""
        if self._start is not None:
            self._close(min(BLOCK, size - self._start))
        self._hash.update(_SIZE.pack(size))
        return self._hash.hexdigest()


def hash_blocks(
    fd: int,
    hasher: ExtentHasher,
    start: int,
    end: int,
    progress: Callable[[int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> None:
    """Feed ``[start, end)`` of a file (``start`` block-aligned): the blocks its data touches.

    Holes are never read; ``progress`` gets the offset reached.
    """
    pos = start
    for data, stop in data_extents(fd, end, start):
        data = max(pos, data - data % BLOCK)
        stop = min(end, -(-stop // BLOCK) * BLOCK)
        while data < stop:
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            chunk = os.pread(fd, min(READ, stop - data), data)
            if not chunk:
                raise OSError(f"the file shrank while it was hashed (at {data})")
            hasher.update(data, chunk)
            data += len(chunk)
            if progress is not None:
                progress(data)
        pos = stop
    if should_cancel is not None and should_cancel():
        raise Cancelled()
    if progress is not None:
        progress(end)


def file_digest(
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[str, int]:
    """(digest, bytes read) of ``path``: only blocks that touch a data extent are read."""
    hasher = ExtentHasher()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        hash_blocks(fd, hasher, 0, size, progress, should_cancel)
    finally:
        os.close(fd)
    return hasher.hexdigest(size), hasher.fed
