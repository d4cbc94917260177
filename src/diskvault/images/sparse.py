"""The sparse upload stream: only a file's data travels, holes and zero blocks are implied.

A disk image is mostly holes or zeros. ``diskvault image upload`` sends
``Content-Type: application/vnd.diskvault.sparse`` instead of multipart: a
sequence of records, each a 16-byte header (offset and length, unsigned 64-bit
big-endian) followed by ``length`` bytes of data. Offsets only increase and
records never overlap; the bytes between records are zeros. A last record with
length 0 carries the file's size in its offset. ovirt-imageio's upload client
skips holes the same way, with one request per extent; one stream keeps the file
in order, so the server still computes the whole file's SHA-256 as it arrives.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Iterator

from diskvault.images.errors import InvalidUpload, UploadTooLarge
from diskvault.images.files import data_extents

CONTENT_TYPE = "application/vnd.diskvault.sparse"
HEADER = struct.Struct(">QQ")
MiB = 1024 * 1024
# Zero detection granularity, and how much the client reads at once.
UNIT = MiB
READ = 8 * MiB


def encode(
    path: os.PathLike[str] | str, progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The stream for ``path``; ``progress`` gets the file offset covered so far."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        for start, end in data_extents(fd, size):
            pos = start
            while pos < end:
                data = os.pread(fd, min(READ, end - pos), pos)
                if not data:
                    raise OSError(f"{path} shrank while it was being uploaded")
                yield from _records(data, pos)
                pos += len(data)
                if progress is not None:
                    progress(pos)
        yield HEADER.pack(size, 0)
        if progress is not None:
            progress(size)
    finally:
        os.close(fd)


def _records(data: bytes, offset: int) -> Iterator[bytes]:
    """Records for the non-zero runs of ``data`` (read at ``offset``), zero units dropped."""
    for start, end in nonzero_runs(data, len(data), UNIT):
        yield HEADER.pack(offset + start, end - start)
        yield data[start:end]  # the whole read (no copy) when it holds no zero unit


@functools.cache
def _zeros(block: int) -> bytes:
    return bytes(block)


def nonzero_runs(data: bytes | bytearray, n: int, block: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the runs of ``data[:n]`` left once all-zero ``block``s are dropped."""
    zeros = _zeros(block)
    run = None
    for start in range(0, n + block, block):
        end = min(start + block, n)
        zero = start >= n or data.startswith(
            zeros if end - start == block else zeros[: end - start], start
        )
        if not zero and run is None:
            run = start
        elif zero and run is not None:
            yield run, min(start, n)
            run = None


class Decoder:
    """Turns stream chunks into zero runs (``int``) and data (``memoryview``), in file order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size: int | None = None  # set by the end record
        self._pos = 0  # end of the last record
        self._left = 0  # data bytes still to come in the current record
        self._head = bytearray()

    def feed(self, chunk: bytes) -> Iterator[int | memoryview]:
        view = memoryview(chunk)
        while view:
            if self._left:
                n = min(self._left, len(view))
                yield view[:n]
                self._left -= n
                view = view[n:]
                continue
            if self.size is not None:
                raise InvalidUpload("the sparse stream has bytes after its end record")
            need = HEADER.size - len(self._head)
            self._head += view[:need]
            view = view[need:]
            if len(self._head) < HEADER.size:
                return
            offset, length = HEADER.unpack(self._head)
            self._head.clear()
            if offset < self._pos:
                raise InvalidUpload(
                    f"sparse record at {offset} starts before the previous one ends ({self._pos});"
                    " records must be in increasing order and must not overlap"
                )
            if offset + length > self.limit:
                raise UploadTooLarge(size=offset + length, limit=self.limit)
            if offset > self._pos:
                yield offset - self._pos
            self._pos = offset + length
            if length == 0:
                self.size = offset
            self._left = length

    def finish(self) -> int:
        """The file's size; raises if the stream stopped short."""
        if self.size is None or self._left or self._head:
            raise InvalidUpload(
                "the sparse stream ended before its end record; the upload was cut short,"
                " upload again"
            )
        return self.size
